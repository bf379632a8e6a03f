"""``${...}`` placeholders: typing, arithmetic, escapes, safety, located errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.substitute import ExpressionError, Substituter, evaluate


def sub(tree, **values):
    s = Substituter(values)
    return s.tree(tree), s


def test_whole_placeholder_keeps_type_partial_becomes_text():
    out, s = sub(
        {"a": "${p}", "b": "x-${p}", "c": "${flag}", "d": "${items}"}, p=8, flag=True, items=[1, 2]
    )
    assert out == {"a": 8, "b": "x-8", "c": True, "d": [1, 2]}
    assert not s.unresolved


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("256 // p", 32),
        ("p * 2 + 1", 17),
        ("(p + 2) * 3", 30),
        ("p / 2", 4.0),
        ("p % 3", 2),
        ("-p", -8),
        ("1.5 * 2", 3.0),
        ("128//p", 16),
    ],
)
def test_arithmetic(expr, value):
    out, _ = sub("${" + expr + "}", p=8)
    assert out == value
    assert type(out) is type(value)


def test_escape_and_keys():
    out, s = sub({"$${literal}": "$${x} and ${p}", "k_${p}": 1}, p=3)
    assert out == {"${literal}": "${x} and 3", "k_3": 1}
    assert not s.unresolved


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('echo hi')",
        "p ** 2",
        "p.__class__",
        "[1]",
        "'a'",
        "p if p else 1",
        "lambda: 1",
        "p and 1",
        "f(1)",
    ],
)
def test_anything_but_arithmetic_is_refused(expr):
    out, s = sub("${" + expr + "}", p=2, f=1)
    assert out == "${" + expr + "}"
    allowed = "only names, numbers, parentheses and + - * / // % are allowed"
    assert s.failed == [(out, allowed)]
    assert s.unresolved == []


def test_division_by_zero_and_non_numbers_are_reported():
    _, s = sub({"a": "${1 // z}", "b": "${name * 2}"}, z=0, name="x")
    reasons = dict(s.failed)
    assert reasons["${1 // z}"] == "division by zero"
    assert "arithmetic needs numbers" in reasons["${name * 2}"]


def test_unresolved_are_collected():
    _, s = sub(["${a}", "${b + 1}", "ok"])
    assert s.unresolved == ["${a}", "${b + 1}"]


def test_evaluate_rejects_long_expressions():
    with pytest.raises(ExpressionError):
        evaluate("1+" * 200 + "1", {})


@given(st.integers(-(10**6), 10**6), st.integers(1, 10**6))
def test_matches_python_integer_arithmetic(a, b):
    values = {"a": a, "b": b}
    assert evaluate("a // b + a % b * 2 - (a - b)", values) == a // b + a % b * 2 - (a - b)
