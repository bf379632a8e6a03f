"""The one description of a state dict that does not fit a model: which keys are missing,
which are unexpected, which have another shape (the first few of each, with shapes).

``mtl-run validate|test|predict --ckpt_path``, ``mtl-run --resume``, the companion commands
(through :func:`runtime.rundir.load_run`) and ``init_checkpoint`` all report a mismatch with
these words, so a user reads the same sentence wherever a checkpoint does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SHOWN = 4
"""How many names of each kind a message lists before "and N more"."""

Shapes = Mapping[str, tuple[int, ...]]


def shapes_of(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor-like entry (anything with a ``shape``) of a state dict."""
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def listing(names: list[str] | set[str], shown: int = SHOWN) -> str:
    """``a, b, c, d and 7 more`` (sorted)."""
    ordered = sorted(names)
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


def _shape(shape: tuple[int, ...]) -> str:
    return str(list(shape))


def describe_mismatch(
    expected: Shapes,
    given: Shapes,
    given_name: str = "the checkpoint",
    expected_name: str = "the model",
) -> str | None:
    """One sentence naming the first few missing, unexpected and wrongly shaped tensors of
    ``given`` against ``expected`` (name -> shape); None when they fit exactly."""
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k]) != tuple(given[k]))
    parts = []
    if wrong:
        shown = "; ".join(
            f"{k} is {_shape(given[k])} in {given_name} but {_shape(expected[k])} in "
            f"{expected_name}"
            for k in wrong[:SHOWN]
        )
        more = f" and {len(wrong) - SHOWN} more" if len(wrong) > SHOWN else ""
        parts.append(f"{len(wrong)} tensor(s) of another shape ({shown}{more})")
    if missing:
        parts.append(
            f"{len(missing)} tensor(s) of {expected_name} missing from {given_name} "
            f"({listing(missing)})"
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} tensor(s) of {given_name} unknown to {expected_name} "
            f"({listing(unexpected)})"
        )
    return "; ".join(parts) if parts else None
