"""``${...}`` placeholders: names and safe integer/float arithmetic, never ``eval``.

A scalar that is exactly one placeholder takes the value's own type (``${patch_size}`` -> 8);
inside a longer string the value is written as text. ``$${`` escapes a literal ``${``.
Expressions allow ``+ - * / // %``, unary signs, parentheses, names and number literals; they
are parsed with :mod:`ast` and evaluated by a tiny interpreter over that whitelist.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from .errors import ConfigError
from .yamlio import max_file_size
from .yamlload import MAX_DEPTH, MAX_INT_DIGITS

_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_MAX_EXPR = 200
_MAX_INT_BITS = int(MAX_INT_DIGITS * 3.3219)
#: Unresolved placeholders listed one by one in an error; the rest are counted.
MAX_LISTED = 20
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class _Unresolved(Exception):
    """A name in an expression has no value."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _TooLong(Exception):
    """A string grows past the size cap through its placeholders."""

    def __init__(self, placeholder: str) -> None:
        super().__init__(placeholder)
        self.placeholder = placeholder


class ExpressionError(Exception):
    """An expression that cannot be parsed or evaluated (with a user-facing reason)."""


_parsed: dict[str, ast.expr] = {}


def _parse(expr: str) -> ast.expr:
    node = _parsed.get(expr)
    if node is None:
        if len(expr) > _MAX_EXPR:
            raise ExpressionError(f"expression longer than {_MAX_EXPR} characters")
        try:
            node = ast.parse(expr.strip(), mode="eval").body
        except SyntaxError:
            raise ExpressionError("not a valid expression") from None
        _check(node)
        _parsed[expr] = node
    return node


def _check(node: ast.expr) -> None:
    """Refuse anything but the whitelisted arithmetic."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check(node.left)
        _check(node.right)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        _check(node.operand)
    elif isinstance(node, ast.Name) or (
        isinstance(node, ast.Constant) and type(node.value) in (int, float)
    ):
        pass
    else:
        raise ExpressionError("only names, numbers, parentheses and + - * / // % are allowed")


def _eval(node: ast.expr, values: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise _Unresolved(node.id)
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        operand = _number(_eval(node.operand, values), node.operand)
        return _bounded(_UNARY[type(node.op)](operand))
    assert isinstance(node, ast.BinOp)
    left = _number(_eval(node.left, values), node.left)
    right = _number(_eval(node.right, values), node.right)
    try:
        return _bounded(_BINOPS[type(node.op)](left, right))
    except ZeroDivisionError:
        raise ExpressionError("division by zero") from None
    except OverflowError:
        raise ExpressionError("a number too large for floating point") from None


def _bounded(value: int | float) -> int | float:
    """Refuse results no config needs: over 4300 digits, or floats that overflowed."""
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise ExpressionError(f"the result has more than {MAX_INT_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError("the result is not a finite number (overflow)")
    return value


def _number(value: Any, node: ast.expr) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        name = node.id if isinstance(node, ast.Name) else "operand"
        raise ExpressionError(
            f"'{name}' is {type(value).__name__} {value!r}, arithmetic needs numbers"
        )
    return value


def evaluate(expr: str, values: dict[str, Any]) -> Any:
    """Value of one placeholder body (a name or an arithmetic expression)."""
    stripped = expr.strip()
    if stripped.isidentifier():
        if stripped not in values:
            raise _Unresolved(stripped)
        return values[stripped]
    return _eval(_parse(expr), values)


class Substituter:
    """Replaces placeholders in parsed trees, collecting what it could not resolve."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.unresolved: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.used: set[str] = set()
        #: Characters the placeholders add to the document as written (mappings and lists
        #: measured as YAML, shared ones once per use): bounds what substitution can build.
        self.inserted = 0
        self._room = 0
        self._sizes: dict[int, tuple[int, int]] = {}

    def check_size(self, what: str, base_size: int, file: Any, line: int | None = None) -> None:
        """Refuse a document that substitution grew past the size cap."""
        from .bounds import size_error

        if base_size + self.inserted > max_file_size():
            raise size_error(what, base_size + self.inserted, file, line)

    def string(self, text: str, depth: int = 0) -> Any:
        whole = _PLACEHOLDER.fullmatch(text)
        if whole is not None and whole.group(1) is not None:
            return self._placed(self._value(whole.group(1), text), text, depth)
        self._room = max_file_size() - len(text)
        try:
            out = _PLACEHOLDER.sub(self._text, text)
            self.inserted += len(out) - len(text)
            return out
        except _TooLong as exc:
            self.failed.append(
                (exc.placeholder, "the text it builds would exceed the size cap (--max-file-size)")
            )
            return text

    def _text(self, match: re.Match) -> str:
        if match.group(1) is None:
            return "${"
        value = self._value(match.group(1), match.group(0))
        if isinstance(value, (dict, list)):
            self.failed.append(
                (match.group(0), "a mapping or list cannot be placed inside a longer string")
            )
            return match.group(0)
        if value is None:
            text = "null"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        self._room -= len(text)
        if self._room < 0:
            raise _TooLong(match.group(0))
        return text

    def _value(self, expr: str, text: str) -> Any:
        try:
            value = evaluate(expr, self.values)
        except _Unresolved as exc:
            self.unresolved.append(f"${{{expr}}}")
            self.used.add(exc.name)
            return text
        except ExpressionError as exc:
            self.failed.append((f"${{{expr}}}", str(exc)))
            return text
        for name in re.findall(r"[A-Za-z_]\w*", expr):
            self.used.add(name)
        return value

    def tree(self, node: Any, depth: int = 0) -> Any:
        """A copy of ``node`` with every placeholder in keys and values replaced.

        ``depth`` is how deep ``node`` sits in its document: a placeholder that places a
        mapping or list there must not nest the document past the depth cap.
        """
        if isinstance(node, str):
            return self.string(node, depth) if "${" in node else node
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if isinstance(key, str) and "${" in key:
                    key = self._key(key)
                if isinstance(value, str):
                    if "${" in value:
                        value = self.string(value, depth + 1)
                elif isinstance(value, (dict, list)):
                    value = self.tree(value, depth + 1)
                out[key] = value
            return out
        if isinstance(node, list):
            return [self.tree(v, depth + 1) for v in node]
        return node

    def _placed(self, value: Any, placeholder: str, depth: int) -> Any:
        """Account for a value placed whole: its size counts toward :attr:`inserted`."""
        if isinstance(value, str):
            self.inserted += len(value)
        elif isinstance(value, (dict, list)):
            from .bounds import measure

            known = self._sizes.get(id(value))
            if known is None:
                known = self._sizes[id(value)] = measure(value)
            size, value_depth = known
            if depth + value_depth > MAX_DEPTH:
                self.failed.append(
                    (
                        placeholder,
                        f"places a value {value_depth} levels deep "
                        f"at depth {depth}, past the depth cap of "
                        f"{MAX_DEPTH}",
                    )
                )
                return placeholder
            self.inserted += size
        return value

    def _key(self, key: str) -> Any:
        value = self.string(key)
        return value if isinstance(value, (str, int)) else str(value)


def substitute_source(doc: Any, text: str, sub: Substituter) -> Any:
    """Substitute one file's document (cheap when the file has no placeholder at all)."""
    return sub.tree(doc) if "${" in text else doc


def placeholder_names(node: Any) -> list[str]:
    """Names used by the placeholders in a tree's strings (keys and values), in order."""
    names: dict[str, None] = {}
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "${" in item:
                for match in _PLACEHOLDER.finditer(item):
                    if match.group(1) is not None:
                        names.update(dict.fromkeys(_NAME.findall(match.group(1))))
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return list(names)


_NAME = re.compile(r"[A-Za-z_]\w*")
#: Longest chain of substitutions using one another.
MAX_CHAIN = 100


def resolve_values(
    values: dict[str, Any], where: Callable[[str], tuple[Any, int | None]]
) -> tuple[dict[str, Any], list[tuple[Any, str, int | None, str]]]:
    """Substitution values with the placeholders inside them resolved (a value may use
    another). Returns the values and the problems (file, placeholder, line, reason); a cycle
    is refused at once, naming it. ``where(name)`` gives the file and line that set ``name``.
    """
    from .bounds import check_bounds

    resolved: dict[str, Any] = {}
    problems: list[tuple[Any, str, int | None, str]] = []
    chain: list[str] = []

    def visit(name: str) -> None:
        if name in resolved:
            return
        if name in chain:
            cycle = " -> ".join([*chain[chain.index(name) :], name])
            file, line = where(name)
            raise ConfigError(
                f"substitutions form a cycle: {cycle}",
                file=file,
                line=line,
                key=("substitutions", name),
            )
        if len(chain) >= MAX_CHAIN:
            file, line = where(name)
            raise ConfigError(
                f"substitutions use one another more than {MAX_CHAIN} deep", file=file, line=line
            )
        value = values[name]
        deps = [d for d in placeholder_names(value) if d in values]
        if deps:
            chain.append(name)
            for dep in deps:
                visit(dep)
            chain.pop()
        if _mentions(value):
            sub = Substituter(resolved)
            value = sub.tree(value)
            file, line = where(name)
            reasons = dict.fromkeys(sub.unresolved, _NO_VALUE)
            reasons.update(dict(sub.failed))
            problems.extend((file, p, line, r) for p, r in reasons.items())
            check_bounds(value, f"substitution '{name}'", file=file, line=line)
        resolved[name] = value

    for name in values:
        visit(name)
    return resolved, problems


def _mentions(node: Any) -> bool:
    """Whether any string of a tree holds ``${`` (a placeholder or an escaped one)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "${" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_NO_VALUE = "no value (set it under 'substitutions' or --set)"


def located_problems(text: str, sub: Substituter) -> list[tuple[str, int | None, str]]:
    """(placeholder, line, reason) of each bad placeholder the substituter met in one file.

    One pass over the file's scalars finds the first line of every placeholder.
    """
    from .yamlload import scalars

    reasons = dict.fromkeys(sub.unresolved, _NO_VALUE)
    reasons.update(dict(sub.failed))
    first: dict[str, int] = {}
    for line, value in scalars(text):
        if "${" in value:
            for match in _PLACEHOLDER.finditer(value):
                if match.group(1) is not None:
                    first.setdefault(match.group(0), line)
    return [(p, first.get(p), reason) for p, reason in reasons.items()]


def placeholder_error(problems: list[tuple[Any, str, int | None, str]]) -> ConfigError:
    """One error listing the first bad placeholders as file:line, and how many more."""
    from .errors import shown

    items = [
        f"{shown(file)}{':' + str(line) if line else ''}: {placeholder}: {reason}"
        for file, placeholder, line, reason in problems[:MAX_LISTED]
    ]
    noun = "placeholder" if len(problems) == 1 else "placeholders"
    more = len(problems) - len(items)
    tail = f"; and {more} more" if more else ""
    return ConfigError(f"{len(problems)} unresolved {noun}: " + "; ".join(items) + tail)
