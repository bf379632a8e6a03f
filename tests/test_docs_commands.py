"""docs/commands.md lists every option of every command, and only real ones: each
command's option table is compared with the options its ``--help`` prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "commands.md"
BIN = Path(sys.executable).parent
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")
ALWAYS = {"--help", "--version"}  # every command has them; the page says so once


def documented_options() -> dict[str, set[str]]:
    """Command -> the long options in the first column of its section's option table."""
    sections: dict[str, set[str]] = {}
    command = None
    for line in PAGE.read_text().splitlines():
        heading = re.match(r"^## `(mtl-[a-z-]+)`", line)
        if heading:
            command = heading.group(1)
            sections[command] = set()
        elif line.startswith("## "):
            command = None
        elif command and line.startswith("| `"):
            first_column = line.split("|")[1]
            sections[command] |= set(OPTION.findall(first_column))
    return sections


def help_options(command: str) -> set[str]:
    done = subprocess.run(
        [str(BIN / command), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    if "Options:" in text:  # click: only the option list, not the examples below it
        text = text.split("Options:", 1)[1].split("\n\n", 1)[0]
    else:  # mtl-run's short help: the run options
        text = text.split("run options:", 1)[1].split("\n\n", 1)[0]
    return {o for o in OPTION.findall(text) if not o.startswith("--key")} - ALWAYS


def test_every_command_has_a_section():
    installed = {p.name for p in BIN.glob("mtl-*")}
    assert set(documented_options()) == installed


@pytest.mark.parametrize("command", sorted(documented_options()))
def test_documented_options_match_help(command):
    documented = documented_options()[command]
    if command == "mtl-run":  # --trainer.KEY=VALUE, ...: overrides, not run options
        documented -= {"--trainer", "--model", "--data", "--run"}
    shown = help_options(command)
    assert documented == shown, (
        f"docs/commands.md's table for {command} differs from `{command} --help`: "
        f"undocumented {sorted(shown - documented)}, not options {sorted(documented - shown)}"
    )
