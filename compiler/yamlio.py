"""Safe, fast YAML reading and writing with errors that point at file and line.

Loading always goes through a *safe* loader (libyaml's C one when available): tags that would
construct Python objects are refused. Line numbers are only worked out when needed (an error
or ``--explain``), by composing the node tree again, so the common path is just libyaml.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .files import atomic_write

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: Most nodes a document may expand to through aliases (guards against "billion laughs").
MAX_EXPANDED_NODES = 2_000_000


class _Dumper(_BaseDumper):  # type: ignore[misc, valid-type]
    """Safe dumper that writes shared sub-trees out in full instead of as YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclass
class Source:
    """One input file: its path, text, parsed document and hash."""

    path: Path
    text: str
    sha256: str
    doc: Any = None
    #: The document as parsed, before placeholders were substituted (for ``--explain``).
    raw: Any = None
    _lines: dict[tuple, int] | None = field(default=None, repr=False)

    def line_of(self, key: tuple) -> int | None:
        """1-based line where the key path ``key`` is written in this file, if it is."""
        if self._lines is None:
            self._lines = key_lines(self.text)
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key[:-1]
        return None

    def error(self, key: tuple, message: str) -> ConfigError:
        """A ``ConfigError`` located at key path ``key`` of this file."""
        return ConfigError(message, file=self.path, line=self.line_of(key), key=key)

    def has(self, key: tuple) -> bool:
        """Whether the key path is written (exactly) in this file."""
        if self._lines is None:
            self._lines = key_lines(self.text)
        return key in self._lines


def resolve_path(folder: Path, name: str) -> Path:
    """A path named in a file, relative to that file's folder (tidied, links kept)."""
    return Path(os.path.normpath(folder / os.path.expanduser(name)))


def read_source(path: Path, what: str = "file") -> Source:
    """Read a text file, refusing missing files, folders and binary content clearly."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", file=path) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory, not a YAML file", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", file=path) from None
    if b"\0" in raw:
        raise ConfigError(f"{what} is not a text file (it contains NUL bytes)", file=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} is not UTF-8 text (bad byte at offset {exc.start})", file=path
        ) from None
    return Source(path=path, text=text, sha256=hashlib.sha256(raw).hexdigest())


def parse(text: str, path: Path) -> Any:
    """Parse YAML text safely; syntax errors and unsafe tags become ``ConfigError``."""
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or str(exc)
        if exc.context:
            reason = f"{exc.context}: {reason}"
        if "could not determine a constructor" in reason:
            reason = "YAML tags that construct objects are not allowed (" + reason + ")"
        raise ConfigError(f"invalid YAML: {reason}", file=path, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=path) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", file=path) from None
    if "&" in text and "*" in text:
        check_expansion(doc, path)
    return doc


def load_source(path: Path, what: str = "file") -> Source:
    """Read and parse one YAML file."""
    src = read_source(path, what)
    src.doc = src.raw = parse(src.text, path)
    return src


def check_expansion(doc: Any, path: Path) -> None:
    """Refuse documents whose aliases expand to an enormous (or cyclic) tree."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError("YAML aliases form a cycle (a node contains itself)", file=path)
        active.add(key)
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise ConfigError(
                    f"YAML aliases expand to more than {MAX_EXPANDED_NODES:,} nodes "
                    "(an alias bomb?)",
                    file=path,
                )
        active.discard(key)
        sizes[key] = total
        return total

    size(doc)


_STR_TAG = "tag:yaml.org,2002:str"
_KEYS = yaml.constructor.SafeConstructor()


def _walk_nodes(node: yaml.Node, prefix: tuple) -> Iterator[tuple[tuple, yaml.Node, yaml.Node]]:
    """Yield (key path, key node or value node, value node) for every entry of a node tree."""
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                continue
            key = knode.value if knode.tag == _STR_TAG else _KEYS.construct_object(knode)
            path = prefix + (key,)
            yield path, knode, vnode
            yield from _walk_nodes(vnode, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, vnode in enumerate(node.value):
            path = prefix + (i,)
            yield path, vnode, vnode
            yield from _walk_nodes(vnode, path)


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None


def key_lines(text: str) -> dict[tuple, int]:
    """Map every key path written in a YAML text to the 1-based line of its key."""
    root = _compose(text)
    if root is None:
        return {}
    lines: dict[tuple, int] = {}
    for path, knode, _ in _walk_nodes(root, ()):
        lines.setdefault(path, knode.start_mark.line + 1)
    return lines


def scalar_lines(text: str, wanted: Callable[[str], bool]) -> list[tuple[int, str]]:
    """(line, value) of every scalar in a YAML text whose value satisfies ``wanted``."""
    root = _compose(text)
    if root is None:
        return []
    found = []
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if wanted(node.value):
                found.append((node.start_mark.line + 1, node.value))
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.extend((k, v))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return sorted(found)


def dump(doc: Any) -> str:
    """Serialize a document deterministically: insertion key order, block style, no aliases."""
    return yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never a half-written one
    (through the toolkit's one atomic writer, :func:`compiler.files.atomic_write`)."""
    atomic_write(path, text)
