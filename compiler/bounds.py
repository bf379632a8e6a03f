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
    """(lower bound of the YAML text length, nesting depth) of ``tree``.

    Counts each scalar's text, a few characters per node, and the indentation of nested
    blocks (two spaces per level, as written); shared sub-trees are measured once.
    """
    memo: dict[int, tuple[int, int, int]] = {}

    def walk(node: Any) -> tuple[int, int, int]:
        """(characters, lines, depth)."""
        if isinstance(node, str):
            return len(node) + _NODE_OVERHEAD, 1, 0
        if isinstance(node, int):
            return node.bit_length() * 3 // 10 + _NODE_OVERHEAD, 1, 0
        if not isinstance(node, (dict, list)) or not node:
            return 2 + _NODE_OVERHEAD, 1, 0
        known = memo.get(id(node))
        if known is not None:
            return known
        size = lines = depth = 0
        is_map = isinstance(node, dict)
        for key, value in node.items() if is_map else enumerate(node):
            chars, child_lines, child_depth = walk(value)
            indented = not is_map or isinstance(value, dict)
            size += chars + (2 * child_lines if indented else 0)
            if is_map:
                size += walk(key)[0]
            lines += child_lines
            depth = max(depth, child_depth)
        memo[id(node)] = result = (size, lines, depth + 1)
        return result

    size, _, depth = walk(tree)
    return size, depth


def check_bounds(
    tree: Any,
    what: str,
    file: Path | str | None = None,
    line: int | None = None,
    key: tuple | None = None,
) -> int:
    """Refuse ``tree`` (``what`` names it) if it nests too deeply or writes out too large;
    return its measured size."""
    try:
        size, depth = measure(tree)
    except RecursionError:
        size, depth = 0, MAX_DEPTH + 1
    if depth > MAX_DEPTH:
        raise ConfigError(
            f"{what} is nested more than {MAX_DEPTH} levels deep", file=file, line=line, key=key
        )
    if size > max_file_size():
        raise size_error(what, size, file, line, key)
    return size


def size_error(
    what: str,
    size: int,
    file: Path | str | None = None,
    line: int | None = None,
    key: tuple | None = None,
) -> ConfigError:
    """The error for a tree whose YAML would be over the size cap."""
    return ConfigError(
        f"{what} would be over {size:,} bytes as YAML, over the size cap of "
        f"{max_file_size():,} bytes (shared values such as ${{big}} count once per use; raise "
        f"the cap with --max-file-size or {MAX_FILE_SIZE_ENV})",
        file=file,
        line=line,
        key=key,
    )
