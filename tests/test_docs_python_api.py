"""Every example of docs/python-api.md runs, as the docs convention says: in a temporary copy of
the repository, blocks in order (later blocks see earlier outputs), each as its own process
(python blocks with this interpreter, bash blocks with ``bash -euo pipefail``), the
interpreter's ``bin/`` first on PATH, ``HF_HUB_OFFLINE=1``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs/python-api.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!-- (example(?: exit=(\d+))?|example slow|output|not-run: [^>]+) -->")
RUNNABLE = ("python", "bash", "sh", "console")


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(marker, language, code) of every fenced block; the marker is the line just above."""
    found = []
    for match in FENCE.finditer(text):
        above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(above.strip())
        found.append((marker.group(1) if marker else "", match.group(1), match.group(2)))
    return found


def repo_copy(target: Path) -> Path:
    """The repository's tracked files (the working tree's version of each), in ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_every_runnable_block_of_the_page_has_a_marker():
    found = blocks(PAGE.read_text())
    assert any(m == "example" and lang == "python" for m, lang, _ in found)
    for marker, lang, code in found:
        if lang in RUNNABLE:
            assert marker and marker != "output", f"no marker above:\n{code[:200]}"


@pytest.mark.slow
def test_the_examples_of_the_python_api_page_run(tmp_path):
    root = repo_copy(tmp_path / "repo")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    for index, (marker, lang, code) in enumerate(blocks(PAGE.read_text())):
        if not marker.startswith("example") or lang not in RUNNABLE:
            continue
        expected = int(marker.split("exit=")[1]) if "exit=" in marker else 0
        command = (
            [sys.executable, "-c", code]
            if lang == "python"
            else ["bash", "-euo", "pipefail", "-c", code]
        )
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == expected, (
            f"block {index} ({lang}) exited {done.returncode}:\n{code}\n--- stdout\n"
            f"{done.stdout[-2000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )
