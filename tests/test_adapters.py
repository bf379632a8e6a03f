"""Per-task bottleneck adapters (runtime.adapters) and the sequence transformer they sit in."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from runtime.adapters import BottleneckAdapter, TaskAdapters
from runtime.encoders import MLPEncoder, SequenceTransformer
from runtime.heads import ClassificationHead
from runtime.lora import StaticLoRA, adapter_switches
from runtime.model import MultiTaskModel

D, LAYERS, BOTTLENECK = 16, 2, 4
TASKS = ["a", "b", "c"]


def model(tasks: list[str] | None = None, lora: bool = False, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    encoder = SequenceTransformer(6, d_model=D, num_layers=LAYERS, num_heads=2, patch_len=2)
    return MultiTaskModel(
        encoder=[encoder],
        decoders={t: [ClassificationHead(D, 3)] for t in TASKS},
        task_adapters=TaskAdapters(["attn", "ff"], bottleneck=BOTTLENECK, tasks=tasks),
        static_lora=StaticLoRA(["q_proj", "v_proj", "linear2"], rank=2) if lora else None,
    ).eval()


def perturb(adapters: nn.Module) -> None:
    """Move adapters away from their identity start (``up`` is zero at initialisation)."""
    with torch.no_grad():
        for p in adapters.parameters():
            p.add_(torch.randn_like(p) * 0.5)


INPUTS = torch.randn(4, 8, 6)


def outputs(m: MultiTaskModel) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return m(INPUTS, TASKS)


def test_adapters_follow_every_target_layer_and_start_as_identity() -> None:
    m = model()
    assert sorted(m.task_adapters.layer_names) == [
        "0.blocks.0.attn",
        "0.blocks.0.ff",
        "0.blocks.1.attn",
        "0.blocks.1.ff",
    ]
    assert m.task_conditioned
    assert m.task_conditioned_encoder
    before = outputs(m)
    m.task_adapters.set_enabled(False)
    plain = outputs(m)
    for task in TASKS:
        torch.testing.assert_close(before[task], plain[task])


def test_switching_one_tasks_adapters_changes_only_that_task() -> None:
    m = model()
    base = outputs(m)
    perturb(m.task_adapters.adapters["b"])
    after = outputs(m)
    assert not torch.allclose(after["b"], base["b"])
    torch.testing.assert_close(after["a"], base["a"])
    torch.testing.assert_close(after["c"], base["c"])
    m.task_adapters.set_enabled(False)  # switched off: every task is the plain encoder again
    torch.testing.assert_close(outputs(m)["b"], base["b"])


def test_only_the_listed_tasks_get_adapters_and_the_counts_match() -> None:
    per_layer = D * BOTTLENECK + BOTTLENECK + BOTTLENECK * D + D
    everyone = model()
    assert everyone.task_adapters.adapted_tasks == TASKS
    count = sum(p.numel() for p in everyone.task_adapters.parameters())
    assert count == len(TASKS) * 2 * LAYERS * per_layer
    some = model(tasks=["c"])
    assert some.task_adapters.adapted_tasks == ["c"]
    assert sum(p.numel() for p in some.task_adapters.parameters()) == 2 * LAYERS * per_layer
    base = outputs(some)
    perturb(some.task_adapters)
    after = outputs(some)
    assert not torch.allclose(after["c"], base["c"])
    torch.testing.assert_close(after["a"], base["a"])  # no adapter: the plain encoder


def test_adapters_sit_on_peft_lora_layers_and_both_train() -> None:
    m = model(lora=True)
    assert len(m.task_adapters.layer_names) == 2 * LAYERS
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any("task_adapters" in n for n in trainable)
    assert not any(n.endswith("q_proj.base_layer.weight") for n in trainable)  # peft froze it
    m.train()
    loss = sum(o.sum() for o in m(INPUTS, TASKS).values())
    loss.backward()
    grads = [p.grad for n, p in m.named_parameters() if "adapters.a." in n and "up" in n]
    assert grads
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_state_dict_round_trip_keeps_per_task_weights_and_the_switch() -> None:
    m = model(lora=True)
    perturb(m.task_adapters)
    m.task_adapters.set_enabled(False)
    state = m.state_dict()
    assert "task_adapters.adapters.b.3.up.weight" in state
    assert "task_adapters.enabled" in state
    fresh = model(lora=True, seed=1)
    fresh.load_state_dict(state)
    assert not fresh.task_adapters.is_enabled
    fresh.task_adapters.set_enabled(True)
    m.task_adapters.set_enabled(True)
    for task, value in outputs(m).items():
        torch.testing.assert_close(outputs(fresh)[task], value)
    assert fresh.task_adapters in adapter_switches(fresh)  # fine-tuning stages switch it too


def test_bottleneck_adapter_is_residual() -> None:
    adapter = BottleneckAdapter(5, 2)
    x = torch.randn(3, 5)
    torch.testing.assert_close(adapter(x), x)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"target_modules": []}, "at least one encoder layer"),
        ({"target_modules": ["net"], "bottleneck": 0}, "bottleneck must be >= 1"),
        ({"target_modules": ["nope"]}, "adapter target 'nope' matches no"),
        ({"target_modules": ["net.0"], "tasks": ["a", "zz"]}, "names ['zz'], which are not tasks"),
        ({"target_modules": ["net.1"]}, "cannot tell the output size"),
    ],
)
def test_bad_adapter_settings_are_named(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        MultiTaskModel(
            encoder=[MLPEncoder(4, [8])],
            decoders={"a": [ClassificationHead(8, 2)]},
            task_adapters=TaskAdapters(**kwargs),
        )
