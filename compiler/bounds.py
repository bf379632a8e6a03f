"""What a compiled tree may cost: its nesting depth and the size of its YAML text.

Substitutions and overrides insert shared sub-trees, so a small file can stand for a huge
run config (a ``${big}`` used fifty times). :func:`check_bounds` measures a tree as written
out, with shared sub-trees counted once per use but measured only once, so the check itself
is cheap, and refuses trees over the depth cap or whose text would exceed the size cap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError
from .yamlio import MAX_FILE_SIZE_ENV, max_file_size
from .yamlload import MAX_DEPTH

#: Characters each node adds to the text beyond its scalar (indent, "- ", ": ", newline).
_NODE_OVERHEAD = 3


def measure(tree: Any) -> tuple[int, int]:
    """(lower bound of the YAML text length, nesting depth) of ``tree``."""
    memo: dict[int, tuple[int, int]] = {}

    def walk(node: Any) -> tuple[int, int]:
        if isinstance(node, str):
            return len(node) + _NODE_OVERHEAD, 0
        if isinstance(node, int):
            return node.bit_length() * 3 // 10 + _NODE_OVERHEAD, 0
        if not isinstance(node, (dict, list)):
            return 4 + _NODE_OVERHEAD, 0
        known = memo.get(id(node))
        if known is not None:
            return known
        size, depth = 2, 0
        if isinstance(node, dict):
            for key, value in node.items():
                child, child_depth = walk(value)
                size += child + walk(key)[0]
                depth = max(depth, child_depth)
        else:
            for value in node:
                child, child_depth = walk(value)
                size += child
                depth = max(depth, child_depth)
        memo[id(node)] = result = (size, depth + 1)
        return result

    return walk(tree)


def check_bounds(tree: Any, what: str, file: Path | str | None = None,
                 line: int | None = None, key: tuple | None = None) -> None:
    """Refuse ``tree`` (``what`` names it) if it nests too deeply or writes out too large."""
    try:
        size, depth = measure(tree)
    except RecursionError:
        size, depth = 0, MAX_DEPTH + 1
    if depth > MAX_DEPTH:
        raise ConfigError(f"{what} is nested more than {MAX_DEPTH} levels deep",
                          file=file, line=line, key=key)
    limit = max_file_size()
    if size > limit:
        raise ConfigError(
            f"{what} would be over {size:,} bytes as YAML, over the size cap of {limit:,} bytes "
            f"(shared values such as ${{big}} count once per use; raise the cap with "
            f"--max-file-size or {MAX_FILE_SIZE_ENV})", file=file, line=line, key=key)
