"""``mtl-ckpt-convert``: export a run's encoder (or whole model) in a standard checkpoint format.

Other harnesses read torch.distributed.checkpoint folders, ``.safetensors`` files or plain
``torch.save`` state dicts, not Lightning checkpoints. The run is loaded with the runtime's own
code (:func:`runtime.rundir.load_run`); tensor names are the exported module's own
``state_dict()`` names, and ``config.json`` beside the weights names its classes and init args
so :func:`runtime.exported.build_exported` (or an encoder's ``init_checkpoint``) rebuilds it.
Heavy imports happen inside functions so ``--help`` is fast.
"""

from __future__ import annotations

import warnings
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from compiler.command import CONTEXT_SETTINGS, version_option
from compiler.errors import ConfigError
from compiler.files import atomic_dir, atomic_write, check_output, write_json
from runtime.protocols import inner_model
from scripts.common import bad_input_exits, note

if TYPE_CHECKING:
    from torch import Tensor, nn

PROG = "mtl-ckpt-convert"
FORMATS = ("dcp", "safetensors", "torch")
PARTS = ("encoder", "model")
SUFFIX = {"safetensors": ".safetensors", "torch": ".pt"}
EPILOG = """\b
Examples:
  mtl-ckpt-convert runs/quickstart --to safetensors -o exports/qs-encoder
  mtl-ckpt-convert runs/quickstart --to dcp --part model --ckpt last -o exports/qs-dcp
  mtl-ckpt-convert runs/quickstart --to torch --merge-adapters -o exports/qs-merged --force

\b
OUT is a folder: the weights (DCP files, <part>.safetensors or <part>.pt) and config.json.
Start a new run from it with the encoder's init arg `init_checkpoint: OUT`.
"""


def _note(message: str) -> None:
    note(PROG, message)


def _without_init_checkpoint(spec: Any) -> Any:
    """The spec with every ``init_checkpoint`` cleared: the exported weights supersede it."""
    if isinstance(spec, list):
        return [_without_init_checkpoint(s) for s in spec]
    if not isinstance(spec, dict):
        return spec
    return {
        k: None if k == "init_checkpoint" else _without_init_checkpoint(v) for k, v in spec.items()
    }


def part_of(module: Any, config: dict[str, Any], part: str) -> tuple[nn.Module, dict[str, Any]]:
    """(module to export, the config.json entries that rebuild it: its class_path/init_args
    spec from the run config, and for the encoder the model's adapters injected into it)."""
    from runtime.exported import ENCODER_ATTACHMENTS
    from runtime.model import MultiTaskModel

    model = inner_model(module)
    try:
        model_spec = config["model"]["init_args"]["model"]
        model_args = model_spec["init_args"]
        spec = model_spec if part == "model" else model_args["encoder"]
    except (KeyError, TypeError):
        spec = None
    if not isinstance(model, MultiTaskModel) or spec is None:
        raise ConfigError(
            "the run's model is not a MultiTaskModule over a MultiTaskModel "
            "(model.init_args.model.init_args.encoder is missing); nothing to export"
        )
    entries = {part: _without_init_checkpoint(spec)}
    if part == "encoder":
        entries.update({k: model_args[k] for k in ENCODER_ATTACHMENTS if model_args.get(k)})
        for name, what in (("task_lora", "task LoRA"), ("task_adapters", "per-task adapters")):
            if getattr(model, name) is not None:  # a MultiTaskModel has both attributes
                _note(
                    f"{what} live beside the encoder (model.{name}) and are not in an "
                    "encoder export; use --part model to keep them"
                )
    return (model if part == "model" else model.encoder), entries


def plain_state(module: nn.Module) -> dict[str, Tensor]:
    """The module's state dict as independent contiguous CPU tensors (safetensors needs it)."""
    from torch import Tensor

    state = module.state_dict()
    odd = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if odd:
        raise ConfigError(f"the state dict holds non-tensor entries ({', '.join(odd[:4])})")
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def write_weights(state: dict[str, Tensor], fmt: str, folder: Path, part: str) -> str:
    """Write the weights into ``folder``; the name config.json records (``.`` for DCP)."""
    if fmt == "dcp":
        import torch.distributed.checkpoint as dcp

        from runtime.init_checkpoint import SINGLE_PROCESS_WARNING

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=SINGLE_PROCESS_WARNING)
            dcp.save(state, checkpoint_id=str(folder), no_dist=True)
        return "."
    name = f"{part}{SUFFIX[fmt]}"
    if fmt == "safetensors":
        from safetensors.torch import save

        atomic_write(folder / name, save(state, metadata={"format": "pt"}))
    else:
        import torch

        torch.save(state, folder / name)
    return name


def _version(dist: str) -> str | None:
    try:
        return pkg_metadata.version(dist)
    except pkg_metadata.PackageNotFoundError:
        return None


def export_config(
    part: str, entries: dict[str, Any], fmt: str, weights: str, state: dict[str, Tensor],
    loaded: Any, adapters: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """What config.json holds: how to rebuild the part, where it came from, its tensors."""
    tasks = loaded.config["model"]["init_args"].get("tasks")
    return {
        "part": part,
        **entries,
        **({"tasks": tasks} if part == "model" and tasks else {}),
        "format": fmt,
        "weights": weights,
        "tensor_names": "the exported module's own state_dict() names"
        + (" (the encoder list: 0.<name>, 1.<name>, ...)" if part == "encoder" else ""),
        "tensors": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in state.items()
        },
        "adapters": adapters,
        "source": {
            "run_dir": str(loaded.run_dir) if loaded.run_dir else None,
            "config": str(loaded.config_path),
            "checkpoint": str(loaded.checkpoint_path),
        },
        "versions": {"mtl-toolkit": _version("mtl-toolkit"), "torch": _version("torch")},
    }


def convert(
    target: Path, fmt: str, part: str, ckpt: str, out: Path, force: bool, merge: bool
) -> dict[str, Any]:
    """Export ``part`` of a run; returns the written config.json content."""
    from runtime.merge_adapters import count_adapters, merge_adapters
    from runtime.rundir import load_run

    check_output(out, "dir", flag="-o", replace=force)
    _note(f"loading {target} (checkpoint: {ckpt})")
    loaded = load_run(target, ckpt=ckpt, with_data=False)
    module, entries = part_of(loaded.module, loaded.config, part)
    present = count_adapters(module)
    adapters: dict[str, Any] = {"present": present, "merged": False}
    if merge:
        module, merged = merge_adapters(module)
        adapters["merged"] = merged > 0
        if merged == 0:
            _note("--merge-adapters: the exported part has no mergeable adapters; nothing merged")
        else:
            _note(f"--merge-adapters: folded {merged} adapter(s) into their base weights")
    elif present:
        _note(f"{present} adapter(s) exported as they are (pass --merge-adapters to fold them)")
    state = plain_state(module)
    left = sorted(k for k in state if "lora" in k.lower())
    if merge and left:
        _note(f"adapter-like tensors without a merge stay as they are: {', '.join(left[:4])}")
    with atomic_dir(out) as folder:
        weights = write_weights(state, fmt, folder, part)
        config = export_config(part, entries, fmt, weights, state, loaded, adapters)
        write_json(folder / "config.json", config)
    count = sum(v.numel() for v in state.values())
    _note(f"wrote {out} ({fmt}, {part}: {len(state)} tensors, {count:,} values)")
    return config


@click.command(
    context_settings=CONTEXT_SETTINGS,
    help="Export a run's shared encoder (default) or whole model as a torch.distributed."
    "checkpoint folder, a .safetensors file or a plain torch state dict, with a config.json "
    "to rebuild it. RUN_DIR is a run directory (or a run config with --ckpt PATH).",
    epilog=EPILOG,
)
@version_option("mtl-ckpt-convert")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--to", "fmt", required=True, type=click.Choice(FORMATS), help="Output format.")
@click.option(
    "--part",
    default="encoder",
    show_default=True,
    type=click.Choice(PARTS),
    help="encoder: the shared encoder list; model: the whole MultiTaskModel.",
)
@click.option(
    "--ckpt",
    default="best",
    show_default=True,
    help="Checkpoint: best, last (in RUN_DIR/checkpoints) or a path.",
)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (weights + config.json).",
)
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.option(
    "--merge-adapters",
    "merge",
    is_flag=True,
    help="Fold adapters (peft LoRA, merge_and_unload wrappers) into the base weights.",
)
def main(
    run_dir: Path, fmt: str, part: str, ckpt: str, out: Path, force: bool, merge: bool
) -> None:
    with bad_input_exits(PROG):
        convert(run_dir, fmt, part, ckpt, out, force, merge)


if __name__ == "__main__":
    main()
