"""Initial weights for a module from a converted checkpoint, in any of the exported formats.

``mtl-ckpt-convert`` writes a torch.distributed.checkpoint (DCP) folder, a ``.safetensors``
file or a plain ``torch.save`` state dict; :func:`load_init_checkpoint` reads any of them back
into a module, so a fine-tuned backbone can start a new run (the runtime encoders' and
user encoders' ``init_checkpoint`` argument). The format comes from the path: a folder holding
DCP's ``.metadata`` is DCP, a folder written by ``mtl-ckpt-convert`` holds one weights file
beside its ``config.json``, a ``.safetensors`` file is safetensors, anything else is read with
``torch.load(weights_only=True)``.

Tensor names must be the module's own ``state_dict()`` names, either as they are or under one
prefix: an ``--part encoder`` export names the encoder list's modules ``0.``, ``1.``, ... and a
``--part model`` export ``encoder.0.``, ...; the prefix whose names are exactly the module's is
used. Errors are one line (constructor errors become config errors naming the key).
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor, nn

from runtime.command_line import launched_as_rank_zero
from runtime.config_errors import first_line
from runtime.state_mismatch import describe_mismatch, listing

DCP_METADATA = ".metadata"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
#: DCP warns that it assumes a single process; with ``no_dist=True`` that is the intent
SINGLE_PROCESS_WARNING = r".*assuming the intent is to (save|load) in a single process"


def checkpoint_format(path: Path) -> tuple[str, Path]:
    """``("dcp" | "safetensors" | "torch", file or folder to read)`` for a path."""
    if path.is_dir():
        if (path / DCP_METADATA).is_file():
            return "dcp", path
        weights = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if len(weights) != 1:
            raise ValueError(
                f"init checkpoint {path}: a folder must be a torch.distributed.checkpoint "
                f"(with {DCP_METADATA}) or hold exactly one weights file "
                f"({', '.join(WEIGHT_SUFFIXES)}); found {len(weights)}"
            )
        path = weights[0]
    if not path.is_file():
        raise ValueError(f"init checkpoint {path} does not exist")
    return ("safetensors" if path.suffix == ".safetensors" else "torch"), path


def _shapes(fmt: str, path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes in the file, read without loading DCP/safetensors data."""
    if fmt == "dcp":
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        meta = FileSystemReader(str(path)).read_metadata().state_dict_metadata
        return {k: tuple(m.size) for k, m in meta.items() if isinstance(m, TensorStorageMetadata)}
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    return {k: tuple(v.shape) for k, v in _torch_state(path).items()}


def _torch_state(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is bad input
        raise ValueError(
            f"init checkpoint {path}: not a loadable state dict ({first_line(exc)})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        raise ValueError(
            f"init checkpoint {path} is a Lightning checkpoint; convert it first with "
            "mtl-ckpt-convert RUN_DIR --to safetensors -o OUT"
        )
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"init checkpoint {path}: not a state dict of tensors")
    return state


def _shape_error(
    path: Path,
    prefix: str,
    wanted: dict[str, tuple[int, ...]],
    available: dict[str, tuple[int, ...]],
) -> ValueError:
    held = {prefix + n: available[prefix + n] for n in wanted}
    problem = describe_mismatch(
        {prefix + n: s for n, s in wanted.items()}, held, "the file", "the module"
    )
    return ValueError(f"init checkpoint {path} does not fit the module: {problem}")


def _prefix_counts(wanted: set[str], available: set[str]) -> Counter[str]:
    """Per prefix (cut at a dot), how many wanted names the file holds under it."""
    counts: Counter[str] = Counter()
    for key in available:
        for cut in (0, *(i + 1 for i, c in enumerate(key) if c == ".")):
            if key[cut:] in wanted:
                counts[key[:cut]] += 1
    return counts


def match_prefix(
    wanted: dict[str, tuple[int, ...]], available: dict[str, tuple[int, ...]], path: Path
) -> str:
    """The one prefix under which ``available`` holds exactly the names (and shapes) of
    ``wanted``; names decide, shapes break ties (a head may repeat an encoder's names)."""
    if not wanted:
        return ""
    counts = _prefix_counts(set(wanted), set(available))

    def under(prefix: str) -> set[str]:
        return {k[len(prefix) :] for k in available if k.startswith(prefix)}

    named = sorted(p for p, n in counts.items() if n == len(wanted) and under(p) == set(wanted))
    shaped = [p for p in named if all(available[p + n] == s for n, s in wanted.items())]
    if len(shaped) == 1:
        return shaped[0]
    if len(shaped) > 1:
        raise ValueError(
            f"init checkpoint {path} holds this module's weights under several prefixes "
            f"({', '.join(repr(p) for p in shaped)}); export only the module you want"
        )
    if named:
        raise _shape_error(path, named[0], wanted, available)
    best = min(counts, key=lambda p: (-counts[p], len(p))) if counts else ""
    held = under(best)
    missing, unexpected = set(wanted) - held, held - set(wanted)
    where = f" under prefix {best!r}" if best else ""
    problems = [
        f"{what} {len(names)} tensors ({listing(names)})"
        for what, names in (("missing", missing), ("unexpected", unexpected))
        if names
    ]
    raise ValueError(
        f"init checkpoint {path} does not fit the module{where}: {', '.join(problems)}"
    )


def read_weights(path: str | Path, template: dict[str, Tensor]) -> dict[str, Tensor]:
    """Tensors for the names of ``template`` (a module's state dict) from a checkpoint path.

    Checks names (allowing one prefix) and shapes before loading; dtypes follow the file.
    """
    fmt, source = checkpoint_format(Path(path))
    prefix = match_prefix(
        {k: tuple(v.shape) for k, v in template.items()}, _shapes(fmt, source), source
    )
    if fmt == "dcp":
        import torch.distributed.checkpoint as dcp

        state = {prefix + k: torch.empty_like(v, device="cpu") for k, v in template.items()}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=SINGLE_PROCESS_WARNING)
            dcp.load(state, checkpoint_id=str(source), no_dist=True)
    elif fmt == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(source))
    else:
        state = _torch_state(source)
    return {name: state[prefix + name] for name in template}


def load_init_checkpoint(module: nn.Module, path: str | Path | None) -> None:
    """Load a converted checkpoint (DCP folder, .safetensors, torch state dict) into ``module``.

    ``None`` keeps the random initial weights, so constructors can pass their argument as is.
    """
    if path is None:
        return
    state = read_weights(path, module.state_dict())
    module.load_state_dict(state, strict=True)
    if launched_as_rank_zero():  # say what was loaded, once per launch
        values = sum(t.numel() for t in state.values())
        print(
            f"init_checkpoint {path}: loaded {len(state)} tensors ({values:,} values) into "
            f"{type(module).__name__}",
            file=sys.stderr,
        )
