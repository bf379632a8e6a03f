"""Task conditioning: task embeddings, the MoE trunk, task / static LoRA, fine-tuning stages
and isolate fine-tune (``runtime.task_embedding``, ``moe``, ``trunk``, ``lora``, ``stages``,
``init_from`` and the maker key ``finetune_from``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from runtime_toy import toy_config
from torch import nn

from runtime.config_errors import ConfigError
from runtime.embeds_file import encode
from runtime.encoders import MLPEncoder, TransformerEncoder
from runtime.heads import ClassificationHead
from runtime.lora import StaticLoRA, TaskLoRA
from runtime.model import MultiTaskModel
from runtime.moe import MoEFeedForward, MoETransformerBlock
from runtime.rundir import build_objects
from runtime.stages import FineTuneStage, FineTuneStages
from runtime.task_embedding import TaskEmbedding
from runtime.trunk import TaskTrunk

TASKS = ["ta", "tb"]


def write_embeds(path: Path, tasks: list[str], dim: int = 6, seed: int = 0) -> torch.Tensor:
    """An mtl-task-embeds file without a sentence model: rows sorted by task name."""
    names = sorted(tasks)
    table = torch.randn(len(names), dim, generator=torch.Generator().manual_seed(seed))
    path.write_bytes(encode(table, names, {"model": "test", "dimension": dim}))
    return table


def model(tasks: list[str] = TASKS, seed: int = 0, **kwargs: Any) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(
        [MLPEncoder(8, [16, 16])], {t: [ClassificationHead(16, 3)] for t in tasks}, **kwargs
    )


def conditioned_config(
    max_epochs: int = 1,
    embedding: dict | None = None,
    lora: dict | None = None,
    tasks: dict | None = None,
) -> dict:
    """The toy run with a task embedding, task LoRA and a task-routed MoE trunk."""
    config = toy_config(
        datasets=tasks or {"a": ["ta"], "b": ["tb"]}, merged=False, max_epochs=max_epochs
    )
    args = config["model"]["init_args"]["model"]["init_args"]
    args["task_embedding"] = {
        "class_path": "runtime.task_embedding.TaskEmbedding",
        "init_args": embedding or {"dim": 5},
    }
    args["task_lora"] = {
        "class_path": "runtime.lora.TaskLoRA",
        "init_args": {"target_modules": ["0.net.0"], "rank": 2, "hidden_size": 8, **(lora or {})},
    }
    args["trunk"] = {
        "class_path": "runtime.trunk.TaskTrunk",
        "init_args": {
            "in_features": 16,
            "layers": [
                {
                    "class_path": "runtime.moe.MoETransformerBlock",
                    "init_args": {
                        "d_model": 16,
                        "num_heads": 2,
                        "num_experts": 3,
                        "top_k": 2,
                        "route_by": "task",
                    },
                }
            ],
        },
    }
    return config


def trainer(tmp_path: Path, max_epochs: int, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks or [],
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )


# ---- task embeddings ---------------------------------------------------------------------------
def test_precomputed_embeddings_load_offline_in_task_order(tmp_path: Path) -> None:
    path = tmp_path / "tasks.safetensors"
    table = write_embeds(path, ["tc", "ta", "tb"])  # file rows: ta, tb, tc
    first = model(["tb", "ta"], task_embedding=TaskEmbedding(path=str(path)))
    second = model(["tb", "ta"], seed=1, task_embedding=TaskEmbedding(path=str(path)))
    emb = first.task_embedding
    assert emb.dim == 6
    assert emb.task_names == ["tb", "ta"]
    assert torch.equal(emb.weight, table[[1, 0]])
    assert torch.equal(emb.weight, second.task_embedding.weight)  # deterministic
    assert "task_embedding.weight" in first.state_dict()  # travels with checkpoints
    assert not any(n.startswith("task_embedding") for n, _ in first.named_parameters())
    trainable = model(task_embedding=TaskEmbedding(path=str(path), trainable=True))
    assert trainable.task_embedding.weight.requires_grad


def test_missing_task_in_embeddings_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tasks.safetensors"
    write_embeds(path, ["ta"])
    with pytest.raises(
        ConfigError,
        match=r"no embedding for task 'tb'.*tasks.safetensors|"
        r"tasks.safetensors.*no embedding for task 'tb'",
    ):
        model(task_embedding=TaskEmbedding(path=str(path)))


def test_learned_embeddings_are_per_task_rows() -> None:
    m = model(task_embedding=TaskEmbedding(dim=4))
    assert m.task_embedding.weight.shape == (2, 4)
    assert m.task_embedding.weight.requires_grad
    assert m.task_embedding.per_task_parameters == ("weight",)
    with pytest.raises(ValueError, match="task_embedding"):
        model(trunk=TaskTrunk(16))  # a trunk that adds the embedding needs one


# ---- trunk and mixture of experts --------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 16), (5, 7, 16)])
def test_trunk_adds_projected_embedding_and_keeps_shapes(shape: tuple[int, ...]) -> None:
    trunk = TaskTrunk(16, [MoETransformerBlock(16, num_heads=2, num_experts=3, top_k=1)])
    trunk.bind_embedding(4)
    assert isinstance(trunk.project, nn.Linear)
    x, e = torch.randn(*shape), torch.randn(4)
    assert trunk(x, e).shape == shape
    bare = TaskTrunk(16)
    bare.bind_embedding(16)
    assert isinstance(bare.project, nn.Identity)
    assert torch.equal(bare(x, torch.ones(16)), x + 1)


def test_top_k_routes_each_token_to_k_experts() -> None:
    moe = MoEFeedForward(8, num_experts=5, top_k=2)
    moe(torch.randn(32, 8))
    gates = moe.last_gates
    assert ((gates > 0).sum(dim=1) == 2).all()
    assert torch.allclose(gates.sum(dim=1), torch.ones(32))
    single = MoEFeedForward(8, num_experts=5, top_k=1)
    single(torch.randn(32, 8))
    assert ((single.last_gates > 0).sum(dim=1) == 1).all()


def test_soft_routing_weights_sum_to_one() -> None:
    moe = MoEFeedForward(8, num_experts=4)
    out = moe(torch.randn(3, 6, 8))
    assert out.shape == (3, 6, 8)
    assert (moe.last_gates > 0).all()
    assert torch.allclose(moe.last_gates.sum(dim=1), torch.ones(18))


def test_task_routing_differs_by_task_and_is_shared_within_a_task() -> None:
    m = model(
        task_embedding=TaskEmbedding(dim=6),
        trunk=TaskTrunk(16, [MoETransformerBlock(16, num_heads=2, num_experts=4, route_by="task")]),
    )
    moe = m.trunk.layers[0].moe
    gates = {}
    for task in TASKS:
        m(torch.randn(10, 8), [task])
        gates[task] = moe.last_gates
        assert torch.allclose(gates[task], gates[task][:1].expand(10, -1))  # one route per task
    assert not torch.allclose(gates["ta"][0], gates["tb"][0])


def test_aux_loss_reaches_the_training_loss_and_the_router(tmp_path: Path) -> None:
    module, data = build_objects(conditioned_config())
    batch = data.make_batch("train", "a", torch.arange(16))
    torch.manual_seed(0)
    outputs = module.model(batch["inputs"], ["ta"])
    task_loss = module.tasks["ta"].loss(outputs["ta"], batch["targets"]["ta"])
    aux = module.model.aux_losses()
    assert set(aux) == {"trunk.layers.0.moe"}
    assert float(aux["trunk.layers.0.moe"].detach()) > 0
    assert module.model.aux_losses() == {}  # read once
    router = module.model.trunk.layers[0].moe.router
    aux["trunk.layers.0.moe"].backward()
    assert router.weight.grad is not None
    assert router.weight.grad.abs().sum() > 0

    torch.manual_seed(0)
    total = module.training_step(batch, 0)
    aux_mean = module.step_stats.logged("epoch")["train/moe_aux_loss_epoch"]  # one step
    assert torch.allclose(total, task_loss + aux_mean)
    assert float(aux_mean) > 0


# ---- LoRA ----------------------------------------------------------------------------------------
def test_task_lora_starts_as_the_plain_encoder_then_differs_by_task() -> None:
    x = torch.randn(4, 8)
    plain = model()
    lora = TaskLoRA(["0.net.0", "0.net.2"], rank=2, hidden_size=8)
    m = model(task_embedding=TaskEmbedding(dim=5), task_lora=lora)
    for task in TASKS:
        assert torch.equal(m(x, [task])[task], plain(x, [task])[task])
    nn.init.normal_(lora.to_b.weight)
    eval_out = {}
    m.eval()
    with torch.no_grad():
        for task in TASKS:
            eval_out[task] = m.encode(x, task)
        assert not torch.allclose(eval_out["ta"], eval_out["tb"])
        assert not torch.allclose(eval_out["ta"], m.encoder(x))
        lora.set_enabled(False)
        assert torch.equal(m.encode(x, "ta"), plain.encoder(x))


def test_task_lora_applies_inside_transformer_layers_in_eval_mode() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(4, d_model=16, num_layers=1, num_heads=2, dropout=0.0)
    m = MultiTaskModel(
        [encoder],
        {t: [ClassificationHead(16, 3)] for t in TASKS},
        task_embedding=TaskEmbedding(dim=5),
        task_lora=TaskLoRA(["linear1", "linear2"], rank=2, hidden_size=8),
    )
    assert m.task_lora.layer_names == ["0.layers.layers.0.linear1", "0.layers.layers.0.linear2"]
    x = torch.randn(3, 6, 4)
    m.eval()
    with torch.no_grad():
        plain = encoder(x)
        assert torch.allclose(m.encode(x, "ta"), plain, atol=1e-6)
        nn.init.normal_(m.task_lora.to_b.weight)
        assert not torch.allclose(m.encode(x, "ta"), plain, atol=1e-3)  # fused path is off
    with pytest.raises(ValueError, match="matches no Linear layer"):
        MultiTaskModel(
            [MLPEncoder(8, [16])],
            {"ta": [ClassificationHead(16, 3)]},
            task_embedding=TaskEmbedding(dim=5),
            task_lora=TaskLoRA(["linear9"]),
        )


def test_static_lora_through_peft() -> None:
    from peft.tuners.lora import LoraLayer

    x = torch.randn(4, 8)
    plain = model()
    m = model(static_lora=StaticLoRA(["0.net.0"], rank=2))
    layer = m.encoder[0].net[0]
    assert isinstance(layer, LoraLayer)
    assert torch.equal(m(x)["ta"], plain(x)["ta"])  # peft's B starts at zero
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert "encoder.0.net.0.lora_A.default.weight" in trainable
    assert not any(n.startswith("encoder.") and "lora_" not in n for n in trainable)
    nn.init.normal_(layer.lora_B["default"].weight)
    assert not torch.allclose(m(x)["ta"], plain(x)["ta"])
    m.static_lora.set_enabled(False)
    assert torch.equal(m(x)["ta"], plain(x)["ta"])
    # the switch is saved: a rebuilt model loading this state has its adapters off too
    again = model(static_lora=StaticLoRA(["0.net.0"], rank=2))
    again.load_state_dict(m.state_dict())
    assert not again.static_lora.is_enabled
    assert layer.disable_adapters
    base = model(static_lora=StaticLoRA(["0.net.0"], rank=2, train_base=True))
    assert base.encoder[0].net[0].base_layer.weight.requires_grad


# ---- fine-tuning stages ------------------------------------------------------------------------
class Probe(L.Callback):
    """Records trainable flags, adapter switches and group learning rates at epoch starts."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[str, Any]] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        model = module.model
        optimizer = trainer.optimizers[0]
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        self.seen[trainer.current_epoch] = {
            "encoder": all(p.requires_grad for p in model.encoder.parameters()),
            "decoder_ta": all(p.requires_grad for p in model.decoders["ta"].parameters()),
            "adapters": model.task_lora.is_enabled,
            "base_lrs": {
                g["stage_group"]: b
                for g, b in zip(optimizer.param_groups, scheduler.base_lrs, strict=True)
            },
        }


def stages() -> FineTuneStages:
    return FineTuneStages(
        [
            FineTuneStage(epoch=0, freeze=["encoder"], adapters=False),
            FineTuneStage(
                epoch=1,
                unfreeze=["encoder"],
                freeze=["decoders.ta"],
                lr_scale={"encoder": 0.1},
                adapters=True,
            ),
        ]
    )


def test_stage_state_survives_resume(tmp_path: Path) -> None:
    config = conditioned_config()
    module, data = build_objects(config)
    first = trainer(tmp_path, 2, [stages(), probe := Probe()])
    first.fit(module, datamodule=data)
    assert probe.seen[0]["encoder"] is False
    assert probe.seen[0]["adapters"] is False
    assert probe.seen[1] == {
        "encoder": True,
        "decoder_ta": False,
        "adapters": True,
        "base_lrs": {"encoder": pytest.approx(0.002), "*": 0.02},
    }
    ckpt = tmp_path / "mid.ckpt"
    first.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["callbacks"]["FineTuneStages"] == {"applied": 2, "scales": {"encoder": 0.1}}

    module, data = build_objects(config)  # fresh objects: everything trainable, adapters on
    fresh = stages()
    second = trainer(tmp_path, 3, [fresh, probe := Probe()])
    second.fit(module, datamodule=data, ckpt_path=ckpt, weights_only=True)
    assert fresh.applied == 2
    assert probe.seen[2] == {
        "encoder": True,
        "decoder_ta": False,
        "adapters": True,
        "base_lrs": {"encoder": pytest.approx(0.002), "*": 0.02},
    }


def test_stage_selectors_must_match(tmp_path: Path) -> None:
    module, data = build_objects(conditioned_config())
    bad = FineTuneStages([FineTuneStage(epoch=0, freeze=["encodr"])])
    with pytest.raises(ValueError, match=r"stages\[0\].freeze: 'encodr' matches no parameter"):
        trainer(tmp_path, 1, [bad]).fit(module, datamodule=data)


# ---- isolate fine-tune ---------------------------------------------------------------------------
def test_isolate_finetune_starts_from_the_trained_weights(tmp_path: Path) -> None:
    module, data = build_objects(conditioned_config())
    source = trainer(tmp_path, 1)
    source.fit(module, datamodule=data)
    ckpt = tmp_path / "source.ckpt"
    source.save_checkpoint(ckpt)
    trained = torch.load(ckpt, weights_only=True)
    assert trained["task_names"] == ["ta", "tb"]

    config = conditioned_config(tasks={"a": ["ta"], "c": ["tc"]})
    config["model"]["init_args"]["init_from"] = {"checkpoint": str(ckpt), "task_init": {"tc": "tb"}}
    new, _ = build_objects(config)
    before = {k: v.clone() for k, v in new.model.state_dict().items()}
    new.prepare_fit(resuming=False)
    state = new.model.state_dict()
    source_state = {k[len("model.") :]: v for k, v in trained["state_dict"].items()}
    shared = [k for k in state if not k.startswith(("decoders.", "task_embedding."))]
    assert shared
    assert all(torch.equal(state[k], source_state[k]) for k in shared)
    rows = source_state["task_embedding.weight"]
    assert torch.equal(state["task_embedding.weight"][0], rows[0])  # ta kept its row
    assert torch.equal(state["task_embedding.weight"][1], rows[1])  # tc starts from tb
    assert torch.equal(
        state["decoders.ta.0.net.0.weight"], source_state["decoders.ta.0.net.0.weight"]
    )
    assert torch.equal(state["decoders.tc.0.net.0.weight"], before["decoders.tc.0.net.0.weight"])

    config["model"]["init_args"]["init_from"]["task_init"] = {"tc": "nope"}
    bad, _ = build_objects(config)
    with pytest.raises(ConfigError, match="'nope'"):
        bad.prepare_fit(resuming=False)


def test_finetune_from_compiles_to_the_run_directory_and_a_request(
    cli, project, tmp_path: Path
) -> None:
    """The compiler names no checkpoint file: the run directory and best|last|PATH go into
    the run config (the source need not exist yet); the runtime resolves them."""
    maker = project.standard(finetune_from={"run_dir": "../runs/src", "task_init": {"b2": "b1"}})
    out = tmp_path / "run.yaml"
    result = cli(maker, "-o", out)
    assert result.exit_code == 0, result.output
    init = yaml.safe_load(out.read_text())["model"]["init_args"]["init_from"]
    assert init == {
        "run_dir": str((project.root / "runs" / "src").absolute()),
        "checkpoint": "best",
        "task_init": {"b2": "b1"},
    }
    for given, written in (
        ("last", "last"),
        ("step-20", "step-20"),
        ("../ckpts/x.ckpt", str((project.root / "ckpts" / "x.ckpt").absolute())),
    ):
        spec = {"run_dir": "../runs/src", "checkpoint": given}
        out.unlink()
        result = cli(project.standard(finetune_from=spec), "-o", out)
        assert result.exit_code == 0, result.output
        init = yaml.safe_load(out.read_text())["model"]["init_args"]["init_from"]
        assert init["checkpoint"] == written


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"run_dir": "../runs/src", "task_init": {"zz": "a"}}, "'zz' is not a task of this run"),
        ({"run_dir": "../runs/src", "bogus": 1}, "unknown finetune_from key 'bogus'"),
        ({"run_dir": "../runs/src", "checkpoint": ""}, "must be best, last or a checkpoint"),
    ],
)
def test_finetune_from_errors(cli, project, tmp_path: Path, spec: dict, needle: str) -> None:
    from helpers import assert_bad_input

    out = tmp_path / "run.yaml"
    assert_bad_input(cli(project.standard(finetune_from=spec), "-o", out), needle, "finetune_from")
    assert not out.exists()


def test_init_from_resolves_the_source_run_when_the_fit_starts(tmp_path: Path, capsys) -> None:
    """init_from's run directory and request go through RunDir's rule: best, else last (with
    a note), a missing run directory or checkpoint a ConfigError naming init_from."""
    module, data = build_objects(conditioned_config())
    source = trainer(tmp_path, 1)
    source.fit(module, datamodule=data)
    run_dir = tmp_path / "src"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(conditioned_config()))
    source.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    trained = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)

    def started(**init: Any) -> Any:
        config = conditioned_config()
        config["model"]["init_args"]["init_from"] = init
        new, _ = build_objects(config)
        new.prepare_fit(resuming=False)
        return new

    new = started(run_dir=str(run_dir))  # best: none recorded, so last.ckpt
    captured = capsys.readouterr()
    assert "has no best checkpoint" in captured.err
    assert "last.ckpt" in captured.err
    assert f"init_from {run_dir / 'checkpoints' / 'last.ckpt'}:" in captured.out
    weight = "encoder.0.net.0.weight"
    assert torch.equal(new.model.state_dict()[weight], trained["state_dict"][f"model.{weight}"])
    with pytest.raises(ConfigError, match=r"init_from.checkpoint: .*no step-7 checkpoint"):
        started(run_dir=str(run_dir), checkpoint="step-7")
    with pytest.raises(ConfigError, match=r"init_from\.run_dir: .*nowhere is not a run directory"):
        started(run_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"init_from\.checkpoint: --ckpt best needs a run dir"):
        started()


# ---- the example, end to end --------------------------------------------------------------------
def test_example_compiles_and_trains(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from compiler.build import compile_maker
    from runtime.cli import main

    repo = Path(__file__).resolve().parents[1]
    embeds = tmp_path / "embeds.safetensors"
    compiled = compile_maker(
        repo / "maker_configs/task_conditioned.yaml",
        sets=[f"task_embeds={embeds}"],
        output=tmp_path / "run.yaml",
    )
    compiled.output_path.write_text(compiled.text())
    flags = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=6",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    missing = main([str(compiled.output_path), "--run-dir", str(tmp_path / "r0"), *flags])
    assert missing == 2
    err = capsys.readouterr().err
    assert "task embeddings file not found" in err, err
    assert str(embeds) in err, err
    assert "Traceback" not in err
    assert "Given value" not in err
    assert not (tmp_path / "r0").exists()
    tasks = list(compiled.run["model"]["init_args"]["tasks"])
    write_embeds(embeds, tasks, dim=12)
    assert main([str(compiled.output_path), "--run-dir", str(tmp_path / "r1"), *flags]) == 0
    header = (tmp_path / "r1" / "metrics.csv").read_text().splitlines()[0]
    assert "train/moe_aux_loss_epoch" in header
    # the run records which embeddings it used
    info = json.loads((tmp_path / "r1" / "run_info.json").read_text())
    (source,) = info["task_embeddings"]
    assert source["path"] == str(embeds)
    assert source["model"] == "test"
    assert source["dimension"] == 12
    assert set(source["text_sha256"]) == set(tasks)
    assert f"task embeddings: {embeds}" in capsys.readouterr().err
