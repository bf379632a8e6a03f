"""The companion commands' shared plumbing: the exit-code table, atomic outputs."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from compiler import exitcodes
from compiler.errors import ConfigError
from compiler.files import atomic_dir, atomic_file, check_output
from scripts.common import bad_input_exits


def _command(exc: BaseException) -> click.Command:
    @click.command()
    def cmd() -> None:
        with bad_input_exits("mtl-x"):
            raise exc

    return cmd


def test_bad_input_exits_two_without_traceback():
    result = CliRunner().invoke(_command(ConfigError("broken thing", file="f.yaml", line=3)), [])
    assert result.exit_code == exitcodes.BAD_INPUT == 2
    assert "mtl-x: error: f.yaml:3: broken thing" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (exitcodes.Terminated(), 143, "terminated"),
        (ZeroDivisionError("boom"), 1, "this is a bug"),
    ],
)
def test_exit_codes_of_the_table(exc, code, text):
    result = CliRunner().invoke(_command(exc), [])
    assert result.exit_code == code
    assert text in result.output


def test_a_bug_prints_its_traceback(capsys):
    with pytest.raises(SystemExit) as info, bad_input_exits("mtl-x"):
        raise ZeroDivisionError("boom")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "ZeroDivisionError: boom" in err


def test_check_output_needs_force_to_replace(tmp_path):
    out = tmp_path / "out"
    check_output(out, "dir", replace=False)
    out.mkdir()
    with pytest.raises(ConfigError, match="--force"):
        check_output(out, "dir", replace=False)
    check_output(out, "dir", replace=True)


@pytest.mark.parametrize("directory", [False, True])
def test_atomic_output_replaces_on_success_and_keeps_old_on_failure(tmp_path, directory):
    out = tmp_path / "result"

    def write(text: str, crash: bool = False) -> None:
        if directory:
            with atomic_dir(out) as target:
                (target / "f").write_text(text)
                if crash:
                    raise RuntimeError("crash mid-write")
        else:
            with atomic_file(out, binary=False) as handle:
                handle.write(text)
                if crash:
                    raise RuntimeError("crash mid-write")

    def read() -> str:
        return (out / "f" if directory else out).read_text()

    write("one")
    assert read() == "one"
    with pytest.raises(RuntimeError):
        write("two", crash=True)
    assert read() == "one"
    write("three")
    assert read() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
