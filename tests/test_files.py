"""The toolkit's one atomic writer (``compiler.files``): failed writes, killed writers' leftovers,
the output-path check."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from merged_runs import fake_run, merged_config

from compiler.errors import ConfigError
from compiler.files import (
    WriteError,
    atomic_dir,
    atomic_file,
    atomic_write,
    check_output,
    json_text,
    remove_stale_temps_in,
    write_json,
)


@pytest.fixture(scope="module")
def dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(child.stdout)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG])
def test_a_failed_write_is_a_write_error_and_keeps_the_old_file(tmp_path, code):
    path = tmp_path / "best.ckpt"
    path.write_bytes(b"old and good")

    def write_half() -> None:
        with atomic_file(path) as handle:
            handle.write(b"half of the new")
            raise OSError(code, os.strerror(code))

    with pytest.raises(WriteError, match=os.strerror(code)) as info:
        write_half()
    assert isinstance(info.value, ConfigError)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]


def test_a_torch_save_that_fails_underneath_is_a_write_error(tmp_path):
    """torch reports a failed write as a RuntimeError whose context is the OSError."""
    path = tmp_path / "x.ckpt"

    def save() -> None:
        with atomic_file(path):
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    with pytest.raises(WriteError, match="No space left"):
        save()
    assert list(tmp_path.iterdir()) == []


def test_killed_writers_temporaries_are_removed_live_ones_kept(tmp_path, dead_pid):
    stale_file = tmp_path / f".last.ckpt.{dead_pid}.0.tmp"
    stale_dir = tmp_path / f".export.{dead_pid}.3.tmp"
    live = tmp_path / f".last.ckpt.{os.getppid()}.0.tmp"
    for path in (stale_file, live):
        path.write_bytes(b"cut short")
    stale_dir.mkdir()
    (stale_dir / "weights.pt").write_bytes(b"cut short")
    atomic_write(tmp_path / "last.ckpt", b"new")  # a write of that name cleans up after it
    assert not stale_file.exists()
    assert live.exists()
    assert stale_dir.exists()
    remove_stale_temps_in(tmp_path)
    assert not stale_dir.exists()
    assert live.exists()
    remove_stale_temps_in(tmp_path, any_owner=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_an_original_parked_by_a_writer_killed_mid_swap_is_put_back(tmp_path, dead_pid):
    parked = tmp_path / f".export.{dead_pid}.0.old.tmp"
    parked.mkdir()
    (parked / "config.json").write_text("{}")
    remove_stale_temps_in(tmp_path)
    assert (tmp_path / "export/config.json").read_text() == "{}"


def test_names_near_the_limit_get_temporaries_and_their_leftovers_are_found(tmp_path, dead_pid):
    """Temporaries carry a shortened name; a killed writer's one is still found by the
    target's name, and a folder whose name is near the file-system limit is still written."""
    long_file = tmp_path / ("f" * 200)
    killed = tmp_path / f".{'f' * 64}.{dead_pid}.0.tmp"
    killed.write_bytes(b"cut short")
    atomic_write(long_file, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [long_file.name]
    long_dir = tmp_path / ("d" * 250)
    with atomic_dir(long_dir) as folder:
        (folder / "x").write_text("1")
    assert (long_dir / "x").read_text() == "1"
    parked = tmp_path / f".{'d' * 64}.{dead_pid}.0.old.tmp"
    parked.mkdir()
    remove_stale_temps_in(tmp_path)  # no name given: a shortened original is left alone
    assert parked.exists()


def test_ckpt_convert_removes_its_killed_exports_hidden_folder(tmp_path, dead_pid):
    from scripts.ckpt_convert import main as ckpt_convert

    run = fake_run(tmp_path / "run", merged_config())
    leftover = tmp_path / f".export.{dead_pid}.0.tmp"
    leftover.mkdir()
    (leftover / "encoder.pt").write_bytes(b"cut short")
    result = CliRunner().invoke(
        ckpt_convert, [str(run), "--to", "torch", "-o", str(tmp_path / "export")]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]


def test_a_directory_is_never_replaced_by_a_file_nor_a_file_by_a_directory(tmp_path):
    folder, file = tmp_path / "folder", tmp_path / "file"
    folder.mkdir()
    file.write_text("x")
    with pytest.raises(ConfigError, match="directory"):
        atomic_write(folder, "text")
    with pytest.raises(ConfigError, match="file"), atomic_dir(file):
        pass
    with pytest.raises(ConfigError, match="is a file"):
        check_output(file / "sub" / "out.json")
    assert folder.is_dir()
    assert file.read_text() == "x"


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_with_non_finite_floats_as_null(tmp_path):
    data = {"a": [1.5, float("nan"), (float("inf"), -float("inf"))], "b": {"c": None, "d": "x"}}
    assert _strict(json_text(data)) == {"a": [1.5, None, [None, None]], "b": {"c": None, "d": "x"}}
    write_json(tmp_path / "r.json", {"loss": float("nan")})
    assert _strict((tmp_path / "r.json").read_text()) == {"loss": None}
    assert not [p for p in tmp_path.iterdir() if p.name != "r.json"]  # no temporary left
