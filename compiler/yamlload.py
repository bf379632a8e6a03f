"""A strict, bounded YAML reader for plain data, built on libyaml's event stream.

Why not ``yaml.safe_load``: it accepts duplicate keys (the last wins), reads ``1e-3`` as a
string, lets ``!!set`` make the output depend on the hash seed, crashes on ``!!int abc`` or a
5000-digit integer, recurses (so deep nesting costs a traceback) and composes a node tree first
(slow on large files). This reader walks libyaml's events once, with an explicit stack, and
builds dicts, lists and scalars directly. Every refusal is a :class:`ConfigError` with the file,
the line and the key path.

Schemas: ``"1.2"`` reads numbers as the YAML 1.2 core schema does (``1e-3`` is a float, ``012``
is twelve, ``1_000`` and ``1:30`` are strings); ``"1.1"`` reads them as PyYAML does (the
rslearn dialect, which must read files exactly as upstream). Both read booleans, null and
timestamps as PyYAML does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from .errors import ConfigError

#: Deepest nesting of lists and mappings a file (or a compiled run config) may have.
MAX_DEPTH = 100
#: Most nodes the aliases of one file may add when expanded (guards against "billion laughs").
MAX_ALIAS_NODES = 2_000_000
#: Most decimal digits of an integer (Python's own int/str conversion limit).
MAX_INT_DIGITS = 4300
SCHEMAS = ("1.1", "1.2")

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP, _MAP, _SEQ = (
    _TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq")
)
_NOT_PLAIN = {
    _TAG + "set": "!!set is not allowed (its order would depend on the hash seed; use a list)",
    _TAG + "omap": "!!omap is not allowed (a mapping keeps its order already)",
    _TAG + "pairs": "!!pairs is not allowed (use a list of mappings)",
    _TAG + "binary": "!!binary is not allowed (a config holds text, not bytes)",
}

_BOOLS = {
    "yes": True,
    "Yes": True,
    "YES": True,
    "true": True,
    "True": True,
    "TRUE": True,
    "on": True,
    "On": True,
    "ON": True,
    "no": False,
    "No": False,
    "NO": False,
    "false": False,
    "False": False,
    "FALSE": False,
    "off": False,
    "Off": False,
    "OFF": False,
}
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_TIMESTAMP_RE = re.compile(
    r"[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
    r"|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?"
    r":[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?"
)
# YAML 1.1 as PyYAML resolves it.
_INT11 = re.compile(
    r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+"
)
_FLOAT11 = re.compile(
    r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
# YAML 1.2 core schema.
_INT12 = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT12 = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
#: First characters a plain scalar needs to be anything but a string.
_NUMERIC_START = frozenset("0123456789+-.")
_SPECIAL_START = frozenset("~nNtTfFyYoO<") | _NUMERIC_START


class _Merge:
    """The plain key ``<<``: merge the mappings it names into this one."""


MERGE = _Merge()
_NOKEY = object()  # no key read yet in the mapping being built


def _int11(text: str) -> int:
    value = text.replace("_", "")
    sign = -1 if value[0] == "-" else 1
    if value[0] in "+-":
        value = value[1:]
    if value == "0":
        return 0
    if value.startswith("0b"):
        return sign * int(value[2:], 2)
    if value.startswith("0x"):
        return sign * int(value[2:], 16)
    if value[0] == "0":
        return sign * int(value, 8)
    if ":" in value:
        total = 0
        for part in value.split(":"):
            total = total * 60 + int(part)
        return sign * total
    return sign * _decimal(value)


def _int12(text: str) -> int:
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return _decimal(text)


def _decimal(digits: str) -> int:
    if len(digits.lstrip("+-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer with more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _float(text: str) -> float:
    value = text.replace("_", "").lower()
    sign = -1.0 if value[0] == "-" else 1.0
    if value[0] in "+-":
        value = value[1:]
    if value == ".inf":
        return sign * math.inf
    if value == ".nan":
        return math.nan
    if ":" in value:
        total = 0.0
        for part in value.split(":"):
            total = total * 60 + float(part)
        return sign * total
    if len(value) > MAX_INT_DIGITS + 20:  # float() of a huge literal is quadratic
        raise ValueError(f"a number with more than {MAX_INT_DIGITS} digits")
    return sign * float(value)


def _timestamp(text: str) -> Any:
    node = yaml.ScalarNode(_TIMESTAMP, text)
    return yaml.constructor.SafeConstructor().construct_yaml_timestamp(node)


def _check_int(value: int) -> int:
    if value.bit_length() > MAX_INT_DIGITS * 3.33:
        raise ValueError(f"an integer with more than {MAX_INT_DIGITS} digits")
    return value


class Schema:
    """How plain scalars resolve, and how explicitly tagged scalars are read."""

    def __init__(self, name: str) -> None:
        if name not in SCHEMAS:
            raise ValueError(f"unknown YAML schema {name!r}")
        self.name = name
        self._int_re, self._float_re = (_INT12, _FLOAT12) if name == "1.2" else (_INT11, _FLOAT11)
        self._int = _int12 if name == "1.2" else _int11

    def plain(self, text: str) -> Any:
        """The value of an untagged plain scalar (raises ValueError on an oversized number)."""
        if not text:
            return None
        first = text[0]
        if first not in _SPECIAL_START:
            return text
        if first in _NUMERIC_START:
            if self._int_re.fullmatch(text):
                return _check_int(self._int(text))
            if self._float_re.fullmatch(text):
                return _float(text)
            if first.isdigit() and _TIMESTAMP_RE.fullmatch(text):
                return _timestamp(text)
            return text
        if text in _BOOLS:
            return _BOOLS[text]
        if text in _NULLS:
            return None
        if text == "<<":
            return MERGE
        return text

    def tagged(self, tag: str, text: str) -> Any:
        """The value of a scalar with an explicit tag; ValueError says why it is refused."""
        if tag == _STR:
            return text
        if tag == _INT:
            if self._int_re.fullmatch(text):
                return _check_int(self._int(text))
            raise ValueError(f"!!int {text!r} is not an integer")
        if tag == _FLOAT:
            if self._int_re.fullmatch(text):
                return float(_check_int(self._int(text)))
            try:
                return _float(text)
            except (ValueError, IndexError):
                raise ValueError(f"!!float {text!r} is not a number") from None
        if tag == _BOOL:
            if text.lower() in _BOOLS:
                return _BOOLS[text.lower()]
            raise ValueError(f"!!bool {text!r} is not true or false")
        if tag == _NULL:
            if text in _NULLS:
                return None
            raise ValueError(f"!!null {text!r} is not null")
        if tag == _TIMESTAMP:
            if _TIMESTAMP_RE.fullmatch(text):
                return _timestamp(text)
            raise ValueError(f"!!timestamp {text!r} is not a date or time")
        raise ValueError(_tag_refusal(tag))


def _tag_refusal(tag: str) -> str:
    if tag in _NOT_PLAIN:
        return _NOT_PLAIN[tag]
    shown = "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag
    return (
        f"the tag {shown} is not allowed: a config holds plain data only (strings, "
        "numbers, booleans, null, dates, lists and mappings)"
    )


_SCHEMAS = {name: Schema(name) for name in SCHEMAS}


def schema(name: str) -> Schema:
    return _SCHEMAS[name]


class _Refusal(Exception):
    """A located refusal raised inside the builder (converted to ConfigError at the top)."""

    def __init__(self, message: str, line: int, duplicate: Any = _NOKEY) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.duplicate = duplicate


def _events(text: str) -> Iterator[Any]:
    parser = _Parser(text)
    try:
        get = parser.get_event
        while True:
            event = get()
            yield event
            if type(event) is StreamEndEvent:
                return
    finally:
        parser.dispose()


def load(text: str, path: Any, schema_name: str = "1.2") -> Any:
    """Parse one YAML document of plain data; refusals are located ``ConfigError``s."""
    builder = _Builder(schema(schema_name))
    try:
        parser = _Parser(text)
    except UnicodeEncodeError:
        raise ConfigError("the text is not valid UTF-8", file=path) from None
    try:
        return builder.run(parser.get_event)
    except _Refusal as exc:
        key = builder.path()
        message = exc.message
        if exc.duplicate is not _NOKEY:
            key = (*key, exc.duplicate)
            first = key_lines(text, schema_name).get(key)
            message = (
                f"duplicate key {exc.duplicate!r}: first at line {first}, again at line "
                f"{exc.line}; a key may appear once per mapping"
            )
        raise ConfigError(message, file=path, line=exc.line, key=key or None) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or str(exc)
        if exc.context:
            reason = f"{exc.context}: {reason}"
        raise ConfigError(
            f"invalid YAML: {reason}", file=path, line=mark.line + 1 if mark is not None else None
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=path) from None
    finally:
        parser.dispose()


class _Builder:
    """Turns an event stream into plain data (one instance per document).

    The hot loop keeps the container being built in local variables and handles scalars
    (most events) on a path of their own: a plain string that cannot be anything else is
    taken as is, without the resolver, and a line number is only worked out for a refusal.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        #: At a refusal: (container, is_map, key) of every container being built, outermost
        #: first (for :meth:`path`).
        self.open: list[tuple[Any, bool, Any]] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.alias_nodes = 0

    def path(self) -> tuple:
        """Key path of the node being built (for error messages)."""
        out: list = []
        for obj, is_map, key in self.open:
            if is_map:
                if key is not _NOKEY and key is not MERGE:
                    out.append(key)
            else:
                out.append(len(obj))
        return tuple(out)

    def run(self, get_event: Callable[[], Any]) -> Any:
        get_event()  # stream start
        if type(get_event()) is StreamEndEvent:
            return None
        # The container being built: obj (None at the root), is_map, key (_NOKEY while a
        # key is expected), merges (<< sources), anchor, size (nodes, for the alias bound).
        obj: Any = None
        is_map = False
        key: Any = _NOKEY
        merges: list | None = None
        anchor: str | None = None
        size = 1
        stack: list[tuple] = []  # the enclosing containers' state, outermost first
        root: Any = _NOKEY
        anchors = self.anchors
        plain = self.schema.plain
        tagged = self.schema.tagged
        special = _SPECIAL_START
        event = None
        try:
            while True:
                event = get_event()
                kind = type(event)
                if kind is ScalarEvent:
                    value = event.value
                    tag = event.tag
                    if tag is None:
                        if value and value[0] not in special:
                            pass  # a string, plain or quoted
                        elif event.implicit[0]:
                            try:
                                value = plain(value)
                            except ValueError as exc:
                                raise _Refusal(str(exc), _line(event)) from None
                    elif tag != "!":
                        try:
                            value = tagged(tag, value)
                        except ValueError as exc:
                            raise _Refusal(str(exc), _line(event)) from None
                    if event.anchor is not None:
                        anchors[event.anchor] = (value, 1)
                    value_size = 1
                elif kind is MappingEndEvent or kind is SequenceEndEvent:
                    value, value_size = obj, size
                    if merges is not None:
                        value = _merged(merges, value)
                    if anchor is not None:
                        anchors[anchor] = (value, value_size)
                    obj, is_map, key, merges, anchor, size = stack.pop()
                    if is_map and key is _NOKEY:
                        raise _Refusal(_NOT_A_KEY, _line(event))
                elif kind is MappingStartEvent or kind is SequenceStartEvent:
                    new_map = kind is MappingStartEvent
                    tag = event.tag
                    if tag is not None and tag != "!" and tag != (_MAP if new_map else _SEQ):
                        raise _Refusal(_tag_refusal(tag), _line(event))
                    if len(stack) >= MAX_DEPTH:
                        raise _Refusal(f"nested more than {MAX_DEPTH} levels deep", _line(event))
                    if event.anchor is not None:
                        anchors.pop(event.anchor, None)  # not usable inside itself
                    stack.append((obj, is_map, key, merges, anchor, size))
                    obj, is_map, key = ({} if new_map else []), new_map, _NOKEY
                    merges, anchor, size = None, event.anchor, 1
                    continue
                elif kind is AliasEvent:
                    found = anchors.get(event.anchor)
                    if found is None:
                        raise _Refusal(
                            f"alias *{event.anchor} names no complete anchor before it "
                            "(undefined, or a node that contains itself)",
                            _line(event),
                        )
                    value, value_size = found
                    self.alias_nodes += value_size
                    if self.alias_nodes > MAX_ALIAS_NODES:
                        raise _Refusal(
                            f"YAML aliases expand to more than {MAX_ALIAS_NODES:,} "
                            "nodes (an alias bomb?)",
                            _line(event),
                        )
                    if is_map and key is _NOKEY and isinstance(value, (dict, list)):
                        raise _Refusal(_NOT_A_KEY, _line(event))
                elif kind is DocumentStartEvent:
                    raise _Refusal("expected a single YAML document, found another", _line(event))
                elif kind is StreamEndEvent:
                    break
                else:  # document end
                    continue
                # The value (a scalar, a finished list or mapping, an alias's) goes in place.
                if is_map:
                    if key is _NOKEY:
                        if value is MERGE:
                            if merges is not None:
                                raise _Refusal("duplicate key", _line(event), "<<")
                        elif value in obj:
                            raise _Refusal("duplicate key", _line(event), value)
                        key = value
                        continue
                    if key is MERGE:
                        merges = _merge_sources(value, _line(event))
                    else:
                        obj[key] = "<<" if value is MERGE else value
                    key = _NOKEY
                    size += value_size
                elif obj is not None:
                    obj.append("<<" if value is MERGE else value)
                    size += value_size
                else:
                    root = "<<" if value is MERGE else value
        except _Refusal:
            frames = [(o, m, k) for o, m, k, *_ in stack[1:]]
            if obj is not None:
                frames.append((obj, is_map, key))
            self.open = frames
            raise
        return None if root is _NOKEY else root


_NOT_A_KEY = "a mapping key must be a scalar, not a list or mapping"


def _line(event: Any) -> int:
    """1-based line where an event starts."""
    return event.start_mark.line + 1


def _merge_sources(value: Any, line: int) -> list[dict]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return list(value)
    raise _Refusal("the merge key << takes a mapping or a list of mappings", line)


def _merged(sources: list[dict], explicit: dict) -> dict:
    """PyYAML's merge: earlier sources win over later ones, explicit keys over all."""
    out: dict = {}
    for source in reversed(sources):
        out.update(source)
    out.update(explicit)
    return out


_OTHER = object()  # a key that is not a scalar (only met in files that fail to load)


def _key_value(sch: Schema, event: ScalarEvent) -> Any:
    tag = event.tag
    try:
        if tag is None:
            return sch.plain(event.value) if event.implicit[0] else event.value
        if tag == "!":
            return event.value
        return sch.tagged(tag, event.value)
    except ValueError:
        return event.value


def key_lines(text: str, schema_name: str = "1.2") -> dict[tuple, int]:
    """Map every key path written in a YAML text to the 1-based line of its (first) key.

    Walks the event stream (no objects are built), so it copes with any construct: merge
    keys, tags, anchors, aliases. A text that does not parse maps what precedes the error.
    """
    sch = schema(schema_name)
    lines: dict[tuple, int] = {}
    # Frames: [path, is_map, key (or _NOKEY while a key is expected), next list index].
    stack: list[list] = []

    def advance() -> None:
        if stack:
            top = stack[-1]
            if top[1]:
                top[2] = _OTHER if top[2] is _NOKEY else _NOKEY
            else:
                top[3] += 1

    try:
        for event in _events(text):
            kind = type(event)
            if kind is MappingEndEvent or kind is SequenceEndEvent:
                stack.pop()
                advance()
                continue
            if (
                kind is not ScalarEvent
                and kind is not AliasEvent
                and kind is not MappingStartEvent
                and kind is not SequenceStartEvent
            ):
                continue
            top = stack[-1] if stack else None
            if top is not None and top[1] and top[2] is _NOKEY and kind is ScalarEvent:
                key = _key_value(sch, event)
                key = "<<" if key is MERGE else key
                lines.setdefault((*top[0], key), event.start_mark.line + 1)
                top[2] = key
                continue
            if kind is MappingStartEvent or kind is SequenceStartEvent:
                if top is None:
                    path: tuple = ()
                elif top[1]:
                    path = (*top[0], top[2] if top[2] is not _NOKEY else _OTHER)
                else:
                    path = (*top[0], top[3])
                stack.append([path, kind is MappingStartEvent, _NOKEY, 0])
                continue
            advance()
    except yaml.YAMLError:
        pass
    return lines


_COLUMN0_KEY = re.compile(r"^([A-Za-z_][\w.-]*)[ \t]*:(?=[ \t]|\r?$)", re.MULTILINE)


def unknown_top_level_key(text: str, known: Iterable[str]) -> tuple[str, int] | None:
    """The first plain top-level key of a large YAML text not in ``known``, with its line,
    found without building anything; None when there is none or it cannot be told cheaply.

    A plain ``key:`` at column 0 is a key of the top-level block mapping when everything
    before it is a complete YAML document whose root is a block mapping: libyaml checks that
    prefix in C (``raw_parse``), about three times faster than walking its events. Only an
    optimization: the full load checks every key anyway.
    """
    allowed = set(known)
    for match in _COLUMN0_KEY.finditer(text):
        if match.group(1) in allowed:
            continue
        prefix = text[: match.start()]
        try:
            head = _Parser(prefix)
            try:
                root = [head.get_event() for _ in range(3)][2]
            finally:
                head.dispose()
            if type(root) is not MappingStartEvent or root.flow_style or "\n---" in prefix:
                return None
            whole = _Parser(prefix)
            try:
                whole.raw_parse()
            finally:
                whole.dispose()
        except (yaml.YAMLError, IndexError):
            return None
        return match.group(1), prefix.count("\n") + 1
    return None


def scalars(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line, text) of every scalar (keys and values) in a YAML text."""
    try:
        for event in _events(text):
            if type(event) is ScalarEvent:
                yield event.start_mark.line + 1, event.value
    except yaml.YAMLError:
        return
