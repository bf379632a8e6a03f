"""The task-embeddings file: one safetensors file, one row per task, metadata in its header.

Layout (format ``mtl-task-embeds/1``):

* one float32 tensor ``embeddings`` of shape ``[n_tasks, D]``, rows sorted by task name;
* header metadata (safetensors allows only str -> str, so every value is JSON text):
  ``format``, ``model``, ``dimension``, ``options`` (anchor, instruct, prompt, template,
  truncate), ``tasks`` (the row order), ``text_sha256`` (task -> sha256 of the exact text
  embedded), ``source_kind``.

The safetensors library writes header keys in hash-map order, which changes from run to run,
so :func:`encode` rewrites the header with sorted keys: the same input gives the same bytes.
:func:`load_task_embeddings` is the reader the runtime uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from compiler.errors import ConfigError

FORMAT = "mtl-task-embeds/1"
TENSOR = "embeddings"


class TaskEmbeddingsError(ConfigError):
    """A task-embeddings file that is missing, malformed or lacks a task that is asked for."""


def canonical(blob: bytes) -> bytes:
    """The same safetensors bytes with the JSON header's keys sorted (deterministic output)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors does
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def encode(embeddings: torch.Tensor, tasks: Sequence[str], metadata: dict[str, Any]) -> bytes:
    """The file's bytes: ``embeddings`` rows in ``tasks`` order, ``metadata`` as JSON values."""
    if embeddings.ndim != 2 or embeddings.shape[0] != len(tasks):
        raise ValueError(f"need one row per task: {len(tasks)} tasks, shape {embeddings.shape}")
    meta = {"format": FORMAT, **metadata, "tasks": list(tasks)}
    header = {key: json.dumps(value, sort_keys=True) for key, value in meta.items()}
    tensor = embeddings.detach().to("cpu", torch.float32).contiguous()
    return canonical(save({TENSOR: tensor}, metadata=header))


def _decode(raw: dict[str, str], path: Path) -> dict[str, Any]:
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            raise TaskEmbeddingsError(
                f"metadata '{key}' is not JSON; was this file written by mtl-task-embeds?",
                file=path,
            ) from None
    return meta


def read_task_embeddings(path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """The whole table (rows in the file's ``tasks`` order) and the decoded metadata."""
    path = Path(path)
    if not path.is_file():
        raise TaskEmbeddingsError(
            "task embeddings file not found (make one with mtl-task-embeds SOURCE -o FILE)",
            file=path,
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
            if TENSOR not in fh.keys():  # noqa: SIM118 - safe_open is not iterable
                raise TaskEmbeddingsError(
                    f"no '{TENSOR}' tensor in this safetensors file (it holds: "
                    f"{', '.join(fh.keys()) or 'nothing'})",
                    file=path,
                )
            table = fh.get_tensor(TENSOR)
    except SafetensorError as exc:
        raise TaskEmbeddingsError(f"not a readable safetensors file ({exc})", file=path) from None
    meta = _decode(raw, path)
    names = meta.get("tasks")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TaskEmbeddingsError("the header has no 'tasks' list naming the rows", file=path)
    if table.ndim != 2 or table.shape[0] != len(names) or len(set(names)) != len(names):
        raise TaskEmbeddingsError(
            f"'{TENSOR}' has shape {list(table.shape)} but the header names "
            f"{len(names)} task(s) ({len(set(names))} distinct)",
            file=path,
        )
    return table.float(), meta


def load_task_embeddings(
    path: str | Path, tasks: Sequence[str]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Rows for ``tasks`` in that order (``[len(tasks), D]`` float32) and the metadata.

    Raises :class:`TaskEmbeddingsError` naming the file and every task it lacks.
    """
    path = Path(path)
    table, meta = read_task_embeddings(path)
    names = meta["tasks"]
    missing = [t for t in tasks if t not in names]
    if missing:
        listed = ", ".join(f"'{t}'" for t in missing)
        raise TaskEmbeddingsError(
            f"no embedding for task{'s' if len(missing) > 1 else ''} {listed}; the file holds "
            f"{', '.join(names) or 'no tasks'} (re-run mtl-task-embeds on a source that "
            "describes every task of the run)",
            file=path,
        )
    index = torch.tensor([names.index(t) for t in tasks], dtype=torch.long)
    return table.index_select(0, index).contiguous(), meta
