"""Errors the compiler reports to users.

Every problem with the user's input becomes a :class:`ConfigError` that names the file
(and line or key path where there is one); the command line prints it as one paragraph and
exits with code 2. Nothing else should escape to the user as a traceback.
"""

from __future__ import annotations

from pathlib import Path


def format_key(path: tuple | list) -> str:
    """Dotted form of a key path (``model.init_args.lr``; list indices as numbers)."""
    if not path:
        return "<root>"
    if len(path) > 12:  # deep nesting: the ends say where
        return ".".join([*map(str, path[:5]), "...", *map(str, path[-5:])])
    return ".".join(str(p) for p in path)


class ConfigError(Exception):
    """A problem with the user's input, located as precisely as we can."""

    def __init__(
        self,
        message: str,
        file: str | Path | None = None,
        line: int | None = None,
        key: tuple | list | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = tuple(key) if key is not None else None

    def where(self) -> str:
        """``file:line`` (or just the file) where the problem is."""
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        parts = []
        where = self.where()
        if where:
            parts.append(where + ":")
        if self.key:
            parts.append(f"at '{format_key(self.key)}':")
        parts.append(self.message)
        return " ".join(parts)


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' (did you mean X?)' suffix when a close match exists, else ''."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def shown(path: Path | str) -> str:
    """A path as text safe to print or write (undecodable bytes shown as \\xNN)."""
    import os

    return os.fsencode(path).decode("utf-8", "backslashreplace")


def print_error(prog: str, message: str, label: str = "error") -> None:
    """The toolkit's one error printer: ``PROG: error: MESSAGE`` on stderr, one paragraph,
    with bytes that are not UTF-8 (in file names) shown as ``\\xNN``."""
    import sys

    sys.stderr.write(f"{shown(f'{prog}: {label}: {message}')}\n")
    sys.stderr.flush()
