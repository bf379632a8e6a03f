"""Rebuilding a part exported by ``mtl-ckpt-convert`` from its ``config.json`` and weights.

An export folder holds the weights (a DCP checkpoint, ``<part>.safetensors`` or ``<part>.pt``)
and ``config.json``, which names the part's classes and init args as in the run config:
``"encoder"`` is the encoder list (rebuilt as ``torch.nn.Sequential``), ``"model"`` the
``MultiTaskModel``; an encoder export also records the model's ``static_lora`` (peft layers it
injects into the encoder). With ``"adapters": {"merged": true}`` the rebuilt modules get the same
adapter merge before the weights load, so tensor names line up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from runtime.init_checkpoint import load_init_checkpoint
from runtime.merge_adapters import merge_adapters

EXPORT_CONFIG = "config.json"
#: ``MultiTaskModel`` init args whose modules inject layers into the encoder list
#: (``attach(encoder)``): an encoder export records them so the tensor names can be rebuilt
ENCODER_ATTACHMENTS = ("static_lora",)


def instantiate(spec: dict[str, Any] | list[dict[str, Any]]) -> nn.Module:
    """A module (or ``nn.Sequential`` of a list) from ``class_path`` / ``init_args`` specs."""
    from jsonargparse import ArgumentParser

    many = isinstance(spec, list)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--part", type=list[nn.Module] if many else nn.Module)
    built = parser.instantiate_classes(parser.parse_object({"part": spec})).part
    return nn.Sequential(*built) if many else built


def build_exported(folder: str | Path) -> nn.Module:
    """The exported part, built from ``config.json`` with the exported weights loaded."""
    folder = Path(folder)
    config = json.loads((folder / EXPORT_CONFIG).read_text())
    module = instantiate(config[config["part"]])
    for key in ENCODER_ATTACHMENTS:  # model-level adapters injected into the encoder list
        if config["part"] == "encoder" and config.get(key):
            instantiate(config[key]).attach(module)
    if config.get("adapters", {}).get("merged"):
        module, _ = merge_adapters(module)
    load_init_checkpoint(module, folder / config["weights"])
    return module.eval()
