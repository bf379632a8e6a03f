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
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
            node = node[key]
        else:
            return default
    return node


def set_path(tree: Any, path: tuple, value: Any, create: bool = True) -> Any:
    """A copy of ``tree`` with ``value`` at ``path``; missing mappings are created."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(tree, list):
        if not isinstance(key, int) or not -len(tree) <= key < len(tree):
            raise KeyError(key)
        out = list(tree)
        out[key] = set_path(tree[key], rest, value, create)
        return out
    if tree is None and create:
        tree = {}
    if not isinstance(tree, dict):
        raise KeyError(key)
    if key not in tree and not create:
        raise KeyError(key)
    out = dict(tree)
    out[key] = set_path(tree.get(key), rest, value, create)
    return out


def parse_key(text: str) -> tuple:
    """``a.b.0.c`` -> ('a', 'b', 0, 'c'); numeric parts become list indices."""
    if not text or any(not part for part in text.split(".")):
        raise ConfigError(f"'{text}' is not a dotted key path like model.init_args.lr")
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in text.split("."))


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
        hint = did_you_mean(str(path[-1]), [str(k) for k in parent]) if isinstance(
            parent, dict
        ) else ""
        raise ConfigError(f"cannot set '{format_key(path)}': no such key{hint}") from None
