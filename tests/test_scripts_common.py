"""The companion commands' shared plumbing: exit 2 on bad input, atomic outputs."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from compiler.errors import ConfigError
from scripts.common import atomic_output, bad_input_exits, refuse_existing


def test_bad_input_exits_two_without_traceback():
    @click.command()
    def cmd() -> None:
        with bad_input_exits("mtl-x"):
            raise ConfigError("broken thing", file="f.yaml", line=3)

    result = CliRunner().invoke(cmd, [])
    assert result.exit_code == 2
    assert "mtl-x: error: f.yaml:3: broken thing" in result.output
    assert "Traceback" not in result.output


def test_refuse_existing_needs_force(tmp_path):
    out = tmp_path / "out"
    refuse_existing(out, force=False)
    out.mkdir()
    with pytest.raises(ConfigError, match="--force"):
        refuse_existing(out, force=False)
    refuse_existing(out, force=True)


@pytest.mark.parametrize("directory", [False, True])
def test_atomic_output_replaces_on_success_and_keeps_old_on_failure(tmp_path, directory):
    out = tmp_path / "result"

    def fill(target, text):
        (target / "f" if directory else target).write_text(text)

    def read():
        return (out / "f" if directory else out).read_text()

    with atomic_output(out, directory) as target:
        fill(target, "one")
    assert read() == "one"
    with pytest.raises(RuntimeError), atomic_output(out, directory) as target:
        fill(target, "two")
        raise RuntimeError("crash mid-write")
    assert read() == "one"
    with atomic_output(out, directory) as target:
        fill(target, "three")
    assert read() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
