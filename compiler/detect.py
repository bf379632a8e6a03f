"""Choosing the maker dialect: asked for explicitly, or detected only when unambiguous."""

from __future__ import annotations

import re

from .dialect import Dialect
from .errors import ConfigError
from .maker import Maker
from .yamlio import read_source

DIALECTS = ("native", "rslearn")
# Each pattern starts with a literal (the "not after $" test comes after it), so that the
# regex engine scans for that literal at C speed: a lookbehind first makes it try every
# position of a 50 MB file in turn.
_UPPER_PLACEHOLDER = re.compile(r"\{(?<!\$\{)(?:[0-9]+/)?[A-Z][A-Z0-9_]*\}")
_NATIVE_PLACEHOLDER = re.compile(r"\$\{(?<!\$\$\{)")
_RSLEARN_INFO_KEY = re.compile(r"^all_dataset_info_path\s*:", re.MULTILINE)


def _make(name: str) -> Dialect:
    if name == "rslearn":
        from .rslearn import RslearnDialect

        return RslearnDialect()
    return Dialect()


def detect(maker: Maker, cache: dict | None = None) -> tuple[str, str]:
    """(dialect, reason) from the maker's base and dataset files.

    Files read here go into ``cache`` (path -> Source), so compiling does not read them again.
    """
    base = read_source(maker.base_path, "base config")
    if cache is not None:
        cache[base.path] = base
    if "all_dataset_info_path" in base.text and _RSLEARN_INFO_KEY.search(base.text):
        return "rslearn", f"{base.path} names all_dataset_info_path"
    texts = [base] + [read_source(p, "dataset config") for files in maker.datasets for p in files]
    if cache is not None:
        cache.update((s.path, s) for s in texts[1:])
    upper = [s for s in texts if _UPPER_PLACEHOLDER.search(s.text)]
    native = [s for s in texts if _NATIVE_PLACEHOLDER.search(s.text)]
    if upper and native:
        raise ConfigError(
            f"cannot tell the dialect: {upper[0].path} has rslearn placeholders like "
            f"{{PATCH_SIZE}} and {native[0].path} has native ${{name}} placeholders; "
            "pass --dialect native or --dialect rslearn",
            file=maker.path,
        )
    if upper:
        return "rslearn", f"{upper[0].path} uses {{UPPER_CASE}} placeholders"
    return "native", "no rslearn markers found"


def choose_dialect(maker: Maker, requested: str | None) -> Dialect:
    """The dialect to compile with; ``None`` or ``"auto"`` detects it."""
    cache: dict = {}
    if requested in (None, "auto"):
        name, reason = detect(maker, cache)
    elif requested in DIALECTS:
        name, reason = requested, "asked for"
    else:
        raise ConfigError(f"unknown dialect '{requested}' (choose from {', '.join(DIALECTS)})")
    dialect = _make(name)
    dialect.reason = reason
    dialect.preread = cache
    return dialect
