"""The training runtime behind ``mtl-run``.

The Python API (:mod:`runtime.api`) is also reachable from here, imported on first use so that
``import runtime`` stays light: ``import runtime as mtl; mtl.train(mtl.make_config(...))``.
"""

from __future__ import annotations

from typing import Any

#: Names of runtime.api served lazily by ``runtime.<name>`` (none is a submodule's name).
API = (
    "make_config",
    "train",
    "load",
    "multitask_loss",
    "TrainResult",
    "TrainedModel",
    "ConfigError",
)


def __getattr__(name: str) -> Any:
    if name in API:
        from runtime import api

        return getattr(api, name)
    raise AttributeError(f"module 'runtime' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
