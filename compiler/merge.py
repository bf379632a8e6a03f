"""Deep merge of config trees, with list-append (``key+``) and delete (``~key``) keys.

Built on ``deepmerge``'s strategy dispatch. Merging is purely functional: inputs are never
mutated; the result may share unchanged sub-trees with its inputs, so nothing downstream may
mutate a merged tree in place (the compiler copies before editing).

Rules: mappings merge recursively; scalars and lists replace; ``key+: [...]`` appends to the
list under ``key`` (creating it when absent); ``~key`` deletes ``key``. Within one mapping,
deletions apply first, then plain keys, then appends, so ``~key`` next to ``key`` replaces a
whole sub-tree instead of merging into it.
"""

from __future__ import annotations

from typing import Any

from deepmerge import Merger

from .errors import ConfigError

APPEND_SUFFIX = "+"
DELETE_PREFIX = "~"


def _is_append(key: Any) -> bool:
    return isinstance(key, str) and len(key) > 1 and key.endswith(APPEND_SUFFIX)


def _is_delete(key: Any) -> bool:
    return isinstance(key, str) and len(key) > 1 and key.startswith(DELETE_PREFIX)


def normalize(value: Any, path: list | tuple = ()) -> Any:
    """Resolve ``+`` / ``~`` keys of a tree that is merged onto nothing."""
    if isinstance(value, dict):
        return _merge_dicts(_MERGER, list(path), {}, value)
    if isinstance(value, list):
        return [normalize(v, [*path, i]) for i, v in enumerate(value)]
    return value


def _merge_dicts(merger: Merger, path: list, base: dict, nxt: dict) -> dict:
    out = dict(base)
    appends = []
    for key in nxt:
        if _is_delete(key):
            out.pop(key[1:], None)
    for key, value in nxt.items():
        if _is_delete(key):
            continue
        if _is_append(key):
            appends.append((key, value))
        elif key in out:
            out[key] = merger.value_strategy([*path, key], out[key], value)
        else:
            out[key] = normalize(value, [*path, key])
    for key, value in appends:
        target = key[: -len(APPEND_SUFFIX)]
        if not isinstance(value, list):
            raise ConfigError(
                f"'{key}' appends to a list, so its value must be a list "
                f"(got {type(value).__name__})",
                key=[*path, key],
            )
        current = out.get(target, [])
        if not isinstance(current, list):
            raise ConfigError(
                f"'{key}' appends to '{target}', which holds {current!r}, not a list",
                key=[*path, key],
            )
        out[target] = current + normalize(value, [*path, key])
    return out


def _replace(merger: Merger, path: list, base: Any, nxt: Any) -> Any:
    return normalize(nxt, path)


_MERGER = Merger(
    [(dict, [_merge_dicts]), (list, [_replace])],
    [_replace],
    [_replace],
)


def deep_merge(base: Any, override: Any, path: tuple = ()) -> Any:
    """Merge ``override`` over ``base`` and return the result (inputs are left untouched).

    ``path`` is where the two trees sit in a larger document; it prefixes error key paths.
    """
    return _MERGER.value_strategy(list(path), base, override)
