"""Writing plain data as block-style YAML that reads back identically under YAML 1.1 and 1.2.

PyYAML's dumper resolves every scalar through a Python representer and resolver; on a 50 MB
run config that is most of the compile. Run configs hold plain data only (the reader in
:mod:`compiler.yamlload` refuses anything else), so this writer is a short walk: a string is
written plain only when both PyYAML (the runtime's reader, YAML 1.1) and the compiler (YAML
1.2) read it back as that same string, and double-quoted otherwise. The layout follows
PyYAML's (``sort_keys=False``, block style, sequences in mappings not indented).
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

import yaml

from .yamlload import _SPECIAL_START, schema

#: A string that may be written plain: no indicator first, no ': ', ' #', trailing space.
_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./+()=-]*(?: [A-Za-z0-9_./+()=-]+)*")
#: Characters a double-quoted scalar must escape (YAML's non-printables and line breaks).
_ESCAPE = re.compile(
    '[\\x00-\\x1f"\\\\\\x7f-\\x9f\\u2028\\u2029\\ud800-\\udfff\\ufeff\\ufffe\\uffff]'
)
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\", "\0": "\\0"}
#: Longest key written as an implicit ``key: value`` (YAML allows 1024 characters).
_MAX_SIMPLE_KEY = 1000
_READERS = (schema("1.1").plain, schema("1.2").plain)


def _escape(match: re.Match) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\u{ord(char):04x}"


def _reads_as_itself(text: str) -> bool:
    if text[0] not in _SPECIAL_START:  # only these can start a non-string plain scalar
        return True
    try:
        return all(read(text) == text for read in _READERS)
    except ValueError:  # e.g. a date-like string with month 13
        return False


def _string(text: str) -> str:
    if _PLAIN.fullmatch(text) and _reads_as_itself(text):
        return text
    return '"' + _ESCAPE.sub(_escape, text) + '"'


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value).lower()
    if "." not in text and "e" in text:  # YAML 1.1 floats need a dot: 1e-05 -> 1.0e-05
        text = text.replace("e", ".0e", 1)
    return text


def scalar(value: Any) -> str:
    """The YAML text of one scalar."""
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    raise yaml.representer.RepresenterError(f"cannot write {type(value).__name__} as YAML")


def _plain_word(text: str) -> bool:
    """Whether ``text`` is an ASCII identifier that no reader takes for anything but itself:
    the common case, told apart without the regex and the resolvers (a fast path only)."""
    return text.isascii() and text.isidentifier() and text[0] not in _SPECIAL_START


def _mapping(node: dict, indent: str, out: list[str], first: str) -> None:
    lead = first
    append = out.append
    for key, value in node.items():
        text = key if type(key) is str and _plain_word(key) else scalar(key)
        if len(text) > _MAX_SIMPLE_KEY:
            append(f"{lead}? {text}\n")
            lead, text = indent, ""
            sep = ":"
        else:
            sep = text + ":"
        if type(value) is str:
            append(f"{lead}{sep} {value if _plain_word(value) else _string(value)}\n")
        elif isinstance(value, dict) and value:
            append(f"{lead}{sep}\n")
            _mapping(value, indent + "  ", out, indent + "  ")
        elif isinstance(value, list) and value:
            append(f"{lead}{sep}\n")
            if text:
                _sequence(value, indent, out, indent)
            else:  # after an explicit key, indent the sequence
                _sequence(value, indent + "  ", out, indent + "  ")
        else:
            append(f"{lead}{sep} {scalar(value)}\n")
        lead = indent


def _sequence(node: list, indent: str, out: list[str], first: str) -> None:
    lead = first
    append = out.append
    for value in node:
        if type(value) is str:
            append(f"{lead}- {value if _plain_word(value) else _string(value)}\n")
        elif isinstance(value, dict) and value:
            _mapping(value, indent + "  ", out, lead + "- ")
        elif isinstance(value, list) and value:
            _sequence(value, indent + "  ", out, lead + "- ")
        else:
            append(f"{lead}- {scalar(value)}\n")
        lead = indent


def emit(doc: Any) -> str:
    """``doc`` as block-style YAML text (insertion key order, no aliases)."""
    out: list[str] = []
    if isinstance(doc, dict) and doc:
        _mapping(doc, "", out, "")
    elif isinstance(doc, list) and doc:
        _sequence(doc, "", out, "")
    else:
        out.append(scalar(doc) + "\n")
    return "".join(out)
