"""Small helpers to read and edit nested config trees by key path.

Trees built by the compiler may share sub-trees with its inputs (merging is functional), so
edits copy every container along the path instead of mutating in place.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError, did_you_mean, format_key

_MISSING = object()


def get_path(tree: Any, path: tuple, default: Any = None) -> Any:
    """Value at ``path`` (dict keys and list indices), or ``default`` when absent."""
    node = tree
    for key in path:
        if (isinstance(node, dict) and key in node) or (
            isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node)
        ):
            node = node[key]
        else:
            return default
    return node


class PathError(ConfigError, KeyError):
    """A key path runs into a value that cannot hold it (its ``key`` says where)."""

    def __str__(self) -> str:
        return ConfigError.__str__(self)


def set_path(tree: Any, path: tuple, value: Any, create: bool = True, _at: tuple = ()) -> Any:
    """A copy of ``tree`` with ``value`` at ``path``; missing mappings are created.

    A value on the way that is neither a mapping nor (for an index) a list raises
    :class:`PathError` located at that value's key path.
    """
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(tree, list):
        if not isinstance(key, int) or not -len(tree) <= key < len(tree):
            raise PathError(f"a list of {len(tree)} items has no item {key!r}", key=_at)
        out = list(tree)
        out[key] = set_path(tree[key], rest, value, create, (*_at, key))
        return out
    if tree is None and create:
        tree = {}
    if not isinstance(tree, dict):
        raise PathError(f"must be a mapping (to hold '{key}'), got {_kind(tree)}", key=_at)
    if key not in tree and not create:
        raise PathError(f"has no key '{key}'", key=_at)
    out = dict(tree)
    out[key] = set_path(tree.get(key), rest, value, create, (*_at, key))
    return out


def _kind(value: Any) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{type(value).__name__} {shown}"


def parse_key(text: str, what: str = "key") -> tuple:
    """``a.b.0.c`` -> ('a', 'b', 0, 'c'); numeric parts become list indices.

    ``what`` names where the key came from (``--explain``, ``--set``) in the error.
    """
    from .yamlload import MAX_DEPTH

    parts = text.split(".")
    if not text.strip():
        raise ConfigError(
            f"{what}: the key is empty; give a dotted key path like model.init_args.lr"
        )
    if any(not part for part in parts):
        raise ConfigError(
            f"{what} '{text}': not a dotted key path like model.init_args.lr "
            "(an empty part between dots)"
        )
    if len(parts) > MAX_DEPTH:
        raise ConfigError(f"{what}: the key path has more than {MAX_DEPTH} parts")
    return tuple(int(p) if p.lstrip("-").isdigit() and len(p) < 10 else p for p in parts)


def set_dotted(tree: Any, path: tuple, value: Any) -> Any:
    """Set a user-given key path, explaining clearly where it stops matching the tree."""
    node = tree
    for depth, key in enumerate(path[:-1]):
        child = get_path(node, (key,), _MISSING)
        if child is _MISSING and isinstance(node, dict):
            break  # the rest is created
        if child is _MISSING or not isinstance(child, (dict, list)):
            here = format_key(path[: depth + 1])
            if isinstance(node, list):
                reason = f"'{format_key(path[:depth])}' is a list of {len(node)} items"
            else:
                reason = f"'{here}' is a {type(child).__name__}, not a mapping or list"
            raise ConfigError(f"cannot set '{format_key(path)}': {reason}")
        node = child
    try:
        return set_path(tree, path, value)
    except KeyError:
        parent = get_path(tree, path[:-1])
        hint = (
            did_you_mean(str(path[-1]), [str(k) for k in parent])
            if isinstance(parent, dict)
            else ""
        )
        raise ConfigError(f"cannot set '{format_key(path)}': no such key{hint}") from None
