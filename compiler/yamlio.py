"""Reading input files and writing run configs: bounded, located, atomic.

Input files must be regular files no larger than the size cap (:func:`max_file_size`,
64 MiB unless ``--max-file-size`` / ``MTL_MAX_FILE_SIZE`` raise it), UTF-8 text without NUL
bytes. YAML is read by :mod:`compiler.yamlload` (plain data only, located errors) and written
by :mod:`compiler.yamlemit`. Line numbers are worked out only when needed (an error or
``--explain``), by walking the file's YAML events again, so the common path stays fast.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .yamlemit import emit

try:  # CPython's own SHA-256: hashlib would load OpenSSL first, a few ms of every start-up
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other Pythons (3.12+ name it _sha2)
    from hashlib import sha256
from .yamlload import key_lines, load

#: Default cap on the size of each input file and of the compiled output.
DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024
MAX_FILE_SIZE_ENV = "MTL_MAX_FILE_SIZE"
_max_file_size: ContextVar[int] = ContextVar("max_file_size", default=DEFAULT_MAX_FILE_SIZE)


def max_file_size() -> int:
    """The size cap in bytes for each input file and for the output."""
    return _max_file_size.get()


@contextmanager
def file_size_cap(limit: int) -> Iterator[None]:
    """Use ``limit`` bytes as the size cap inside the ``with`` block."""
    token = _max_file_size.set(limit)
    try:
        yield
    finally:
        _max_file_size.reset(token)


def parse_size(text: str) -> int:
    """``67108864``, ``64M``, ``64MiB``, ``1G``, ``512k`` -> bytes (binary units)."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(raw[-1:], 1)
    digits = raw[:-1] if scale > 1 else raw
    if not digits.isdigit() or len(digits) > 15 or int(digits) < 1:
        raise ValueError(f"{text!r} is not a size (a positive number of bytes, or like 64M, 1G)")
    return int(digits) * scale


class Source:
    """One input file: its path, text, parsed document and hash."""

    def __init__(
        self, path: Path, text: str, sha256: str, doc: Any = None, raw: Any = None
    ) -> None:
        self.path = path
        self.text = text
        self.sha256 = sha256
        self.doc = doc
        #: The document as parsed, before placeholders were substituted (for ``--explain``).
        self.raw = raw
        #: How numbers were read: "1.2" (native) or "1.1" (rslearn, as PyYAML).
        self.schema = "1.2"
        self._lines: dict[tuple, int] | None = None

    def _key_lines(self) -> dict[tuple, int]:
        if self._lines is None:
            self._lines = key_lines(self.text, self.schema)
        return self._lines

    def line_of(self, key: tuple) -> int | None:
        """1-based line where the key path ``key`` is written in this file, if it is."""
        lines = self._key_lines()
        while key:
            if key in lines:
                return lines[key]
            key = key[:-1]
        return None

    def error(self, key: tuple, message: str) -> ConfigError:
        """A ``ConfigError`` located at key path ``key`` of this file."""
        return ConfigError(message, file=self.path, line=self.line_of(key), key=key)

    def has(self, key: tuple) -> bool:
        """Whether the key path is written (exactly) in this file."""
        return key in self._key_lines()


def resolve_path(folder: Path, name: str) -> Path:
    """A path named in a file, relative to that file's folder (tidied, links kept)."""
    return Path(os.path.normpath(folder / Path(name).expanduser()))


def read_source(path: Path, what: str = "file") -> Source:
    """Read a text file: a regular file within the size cap, UTF-8, without NUL bytes.

    Devices (``/dev/zero``), FIFOs, sockets and folders are refused before anything is read;
    a FIFO is opened non-blocking, so it cannot hang the compile.
    """
    limit = max_file_size()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", file=path) from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"{what} path contains a NUL byte", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", file=path) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{what} is a directory, not a YAML file", file=path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} is not a regular file (a device, FIFO or socket)", file=path)
        if info.st_size > limit:
            raise ConfigError(_too_big(what, info.st_size, limit), file=path)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", file=path) from None
    finally:
        os.close(fd)
    if len(raw) > limit:  # grew while read
        raise ConfigError(_too_big(what, len(raw), limit), file=path)
    if b"\0" in raw:
        raise ConfigError(f"{what} is not a text file (it contains NUL bytes)", file=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} is not UTF-8 text (bad byte at offset {exc.start})", file=path
        ) from None
    return Source(path=path, text=text, sha256=sha256(raw).hexdigest())


def _too_big(what: str, size: int, limit: int) -> str:
    return (
        f"{what} is {size:,} bytes, over the size cap of {limit:,} bytes (raise it with "
        f"--max-file-size or {MAX_FILE_SIZE_ENV})"
    )


def parse(text: str, path: Path, schema: str = "1.2") -> Any:
    """Parse YAML text as plain data; every problem becomes a located ``ConfigError``."""
    return load(text, path, schema)


def load_source(path: Path, what: str = "file", schema: str = "1.2") -> Source:
    """Read and parse one YAML file."""
    src = read_source(path, what)
    src.schema = schema
    src.doc = src.raw = parse(src.text, path, schema)
    return src


def dump(doc: Any) -> str:
    """Serialize a document deterministically: insertion key order, block style, no aliases."""
    return emit(doc)
