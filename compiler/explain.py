"""``--explain KEY``: the final value of a run-config key and the chain of places that set it."""

from __future__ import annotations

import re
from typing import Any

from .build import Compiled, Contribution
from .errors import ConfigError, format_key
from .keypaths import DECODERS, MODEL_ARGS
from .tree import get_path, parse_key
from .yamlio import Source, dump

_MISSING = object()
_NAME = re.compile(r"[A-Za-z_]\w*")


def _written(src: Source, key: tuple) -> tuple | None:
    """The key (or the ancestor replacing it, or its ``+`` form) written in ``src``, if any."""
    for n in range(len(key), 0, -1):
        prefix = key[:n]
        if src.has(prefix):
            if n == len(key) or not isinstance(get_path(src.raw, prefix), dict):
                return prefix
            return None
        last = prefix[-1]
        if isinstance(last, str) and src.has((*prefix[:-1], last + "+")):
            return (*prefix[:-1], last + "+")
    return None


def _aliases(compiled: Compiled, key: tuple) -> list[tuple]:
    """Pre-merge forms of a key under a merged decoder (one per task it serves)."""
    n = len(DECODERS)
    targets = get_path(compiled.run, (*MODEL_ARGS, "decoder_to_target")) or {}
    if key[:n] == DECODERS and len(key) > n and key[n] in targets:
        return [(*DECODERS, task, *key[n + 1 :]) for task in targets[key[n]]]
    return [key]


def _substitution_note(compiled: Compiled, value: Any) -> str:
    if not isinstance(value, str) or "${" not in value:
        return ""
    notes = []
    maker = compiled.maker
    for name in dict.fromkeys(_NAME.findall(value)):
        key = ("substitutions", name)
        if name in compiled.set_names:
            notes.append(f"{name} <- --set {name}={compiled.set_names[name]!r}")
        elif maker.source.has(key):
            notes.append(f"{name} <- {maker.path}:{maker.source.line_of(key)}")
    return f"  (from {value}{': ' + '; '.join(notes) if notes else ''})"


def _contribution_line(compiled: Compiled, contribution: Contribution, key: tuple) -> str | None:
    src = contribution.source
    if src is None:
        return None
    n = len(contribution.run_key)
    if key[:n] != contribution.run_key:
        return None
    written = _written(src, (*contribution.source_key, *key[n:]))
    if written is None:
        return None
    note = _substitution_note(compiled, get_path(src.raw, written))
    if written[-1] != (*contribution.source_key, *key[n:])[len(written) - 1]:
        note += f"  (appended by '{format_key(written)}')"
    return f"  {contribution.label:<16} {src.path}:{src.line_of(written)}{note}"


def explain_key(compiled: Compiled, text: str) -> str:
    """Human-readable provenance of one key path of the run config."""
    key = parse_key(text, "--explain")
    value = get_path(compiled.run, key, _MISSING)
    if value is _MISSING:
        raise ConfigError(f"--explain: '{text}' is not a key of the compiled run config")
    shown = dump(value).strip()
    head = (
        f"{text} = {shown}"
        if "\n" not in shown
        else f"{text} =\n" + "\n".join("    " + line for line in shown.splitlines())
    )
    lines = [head]
    aliases = _aliases(compiled, key)
    for contribution in compiled.contributions:
        for alias in aliases:
            line = _contribution_line(compiled, contribution, alias)
            if line and line not in lines:
                lines.append(line)
    if len(aliases) > 1:
        lines.append(
            "  label merging    merged decoder of tasks "
            + ", ".join(k[len(DECODERS)] for k in aliases)
        )
    for set_key, set_value in compiled.sets.items():
        if key[: len(set_key)] == set_key:
            lines.append(f"  --set            {format_key(set_key)}={set_value!r} (command line)")
    if len(lines) == 1:
        lines.append("  (set by the compiler itself)")
    return "\n".join(lines)
