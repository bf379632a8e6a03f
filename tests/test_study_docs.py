"""docs/studies.md runs as written: its example blocks, in order, in a copy of the repository.

(The same convention as the docs-example runner of the docs suite: a marker comment above each
block says whether it runs and with which exit code.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from study_helpers import REPO

PAGE = REPO / "docs" / "studies.md"
_BLOCK = re.compile(
    r"<!-- (example(?: exit=(\d+))?(?: slow)?) -->\n```(bash|sh)\n(.*?)```", re.DOTALL
)


def examples() -> list[tuple[int, str]]:
    return [(int(m[2] or 0), m[4]) for m in _BLOCK.finditer(PAGE.read_text())]


@pytest.mark.slow
def test_studies_page_examples_run_as_written(tmp_path):
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tmp_path / name)
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        CUDA_VISIBLE_DEVICES="",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    blocks = examples()
    assert len(blocks) >= 5
    for code, script in blocks:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == code, f"{script}\n{done.stdout}\n{done.stderr}"
    report = (tmp_path / "studies" / "smoke" / "report.md").read_text()
    assert "| digits_low+parity | 1/2 |" in report  # seed 0 of 2
    assert (tmp_path / "studies" / "smoke" / "affinity.png").is_file()
    assert "not finished" in report  # the smoke run trains 3 of the 14 runs
