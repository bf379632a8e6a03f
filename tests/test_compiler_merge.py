"""Deep merge: replace / recurse / ``+`` append / ``~`` delete, and purity."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import ConfigError
from compiler.merge import deep_merge

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)
)
plain_keys = st.text(alphabet="abcxyz", min_size=1, max_size=3)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(plain_keys, children, max_size=4)
    ),
    max_leaves=20,
)
mappings = st.dictionaries(plain_keys, trees, max_size=5)


def test_mappings_recurse_scalars_and_lists_replace():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    out = deep_merge(base, {"a": {"y": [3], "z": 2}, "b": {"now": "dict"}})
    assert out == {"a": {"x": 1, "y": [3], "z": 2}, "b": {"now": "dict"}}


def test_append_extends_creates_and_keeps_order():
    base = {"cb": [1, 2]}
    assert deep_merge(base, {"cb+": [3]}) == {"cb": [1, 2, 3]}
    assert deep_merge({}, {"cb+": [3]}) == {"cb": [3]}
    # plain key first, then the append: ``cb: [9]`` with ``cb+: [3]`` gives [9, 3]
    assert deep_merge(base, {"cb+": [3], "cb": [9]}) == {"cb": [9, 3]}


def test_append_to_non_list_is_an_error_with_key_path():
    with pytest.raises(ConfigError) as err:
        deep_merge({"t": {"cb": 5}}, {"t": {"cb+": [1]}})
    assert err.value.key == ("t", "cb+")
    assert "not a list" in err.value.message
    with pytest.raises(ConfigError, match="must be a list"):
        deep_merge({"cb": []}, {"cb+": 1})


def test_delete_then_set_replaces_whole_subtree():
    base = {"enc": {"a": 1, "b": 2}, "keep": 1}
    assert deep_merge(base, {"~enc": None}) == {"keep": 1}
    assert deep_merge(base, {"~enc": None, "enc": {"c": 3}}) == {"enc": {"c": 3}, "keep": 1}
    assert deep_merge(base, {"~missing": None}) == base


def test_markers_inside_new_subtrees_are_resolved():
    out = deep_merge({}, {"a": {"l+": [1], "~gone": None, "n": [{"m+": [2]}]}})
    assert out == {"a": {"l": [1], "n": [{"m": [2]}]}}


@settings(max_examples=200, deadline=None)
@given(mappings, mappings)
def test_merge_is_pure_and_deterministic(base, override):
    before_b, before_o = copy.deepcopy(base), copy.deepcopy(override)
    first = deep_merge(base, override)
    assert base == before_b
    assert override == before_o
    assert deep_merge(base, override) == first
    assert deep_merge(copy.deepcopy(base), copy.deepcopy(override)) == first


@settings(max_examples=200, deadline=None)
@given(mappings, mappings)
def test_every_override_key_wins_and_other_keys_survive(base, override):
    out = deep_merge(base, override)
    for key, value in override.items():
        if not isinstance(value, dict) or not isinstance(base.get(key), dict):
            assert out[key] == deep_merge({}, {key: value})[key]
    for key in base:
        if key not in override:
            assert out[key] == base[key]


@settings(max_examples=100, deadline=None)
@given(mappings, plain_keys, st.lists(scalars, max_size=3), st.lists(scalars, max_size=3))
def test_append_and_delete_semantics(base, key, existing, extra):
    base = {**base, key: existing}
    assert deep_merge(base, {key + "+": extra})[key] == existing + extra
    assert key not in deep_merge(base, {"~" + key: None})


@settings(max_examples=200, deadline=None)
@given(mappings)
def test_identity_and_idempotence(tree):
    """Merging nothing changes nothing; merging a tree onto itself gives it back."""
    assert deep_merge(tree, {}) == tree
    assert deep_merge({}, tree) == tree
    assert deep_merge(tree, tree) == tree
