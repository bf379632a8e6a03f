"""Folding adapters (LoRA and the like) into their base weights, generically.

Two kinds of adapter are recognised: a wrapper that offers ``merge_and_unload()`` (peft's
``PeftModel`` and tuner models, or any runtime wrapper with the same method), which is replaced
by what that returns; and peft tuner layers injected into a plain module (``BaseTunerLayer``),
which are merged (``merge()``, unless switched off) and replaced by their base layer; the
runtime's ``StaticLoRA`` injects such layers. Adapters without a merge (the runtime's
``TaskLoRA``, whose update differs per task) stay as they are.
"""

from __future__ import annotations

from torch import nn

from runtime.protocols import Mergeable


def _tuner_layer_type() -> type | None:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # peft is optional: without it there are no peft layers to merge
        return None
    return BaseTunerLayer


def _mergeable(module: nn.Module, tuner_layer: type | None) -> bool:
    return isinstance(module, Mergeable) or (
        tuner_layer is not None and isinstance(module, tuner_layer)
    )


def count_adapters(module: nn.Module) -> int:
    """How many mergeable adapters (outermost ones) ``module`` holds."""
    tuner_layer = _tuner_layer_type()
    if _mergeable(module, tuner_layer):
        return 1
    return sum(count_adapters(child) for child in module.children())


def merge_adapters(module: nn.Module) -> tuple[nn.Module, int]:
    """(module with every mergeable adapter folded in, how many were merged).

    Returns a new object where ``module`` itself is an adapter wrapper; otherwise the
    submodules are replaced in place.
    """
    tuner_layer = _tuner_layer_type()
    if isinstance(module, Mergeable):
        return module.merge_and_unload(), 1
    if tuner_layer is not None and isinstance(module, tuner_layer):
        if not module.disable_adapters:  # a switched-off adapter does not change the output
            module.merge()
        return module.get_base_layer(), 1
    merged = 0
    for name, child in list(module.named_children()):
        replacement, count = merge_adapters(child)
        if replacement is not child:
            setattr(module, name, replacement)
        merged += count
    return module, merged
