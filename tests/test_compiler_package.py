"""Packaging promises: light imports, --help, and the shipped quickstart compiles."""

from __future__ import annotations

import subprocess
import sys

import yaml
from helpers import REPO

from compiler.build import compile_maker


def test_compiler_never_imports_heavy_modules():
    code = (
        "import sys\n"
        "from compiler.cli import main\n"
        "from compiler.build import compile_maker\n"
        f"compile_maker({str(REPO / 'maker_configs/quickstart.yaml')!r})\n"
        "heavy = [m for m in ('torch', 'lightning', 'jsonargparse', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_help_lists_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "compiler", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for option in ("--output", "--dialect", "--set", "--explain", "--print", "--schema"):
        assert option in out


def test_quickstart_compiles_to_merged_heads():
    run = compile_maker(REPO / "maker_configs/quickstart.yaml").run
    args = run["model"]["init_args"]["model"]["init_args"]
    assert args["decoder_to_target"] == {
        "ClassificationHead": ["digits_high", "digits_low", "parity"]
    }
    assert args["decoders"]["ClassificationHead"][-1]["init_args"]["num_outputs"] == 12
    assert set(run["data"]["init_args"]["data_modules"]) == {"digits_low", "digits_high", "parity"}
    assert yaml.safe_load(yaml.safe_dump(run)) == run


def test_a_plain_compile_imports_only_what_compiling_needs(tmp_path):
    """mtl-make-config's start-up is most of its time (docs/performance.md): a plain compile
    loads neither click nor the modules the compiler has no use for (dataclasses pulls in
    inspect, ast, dis and tokenize; JSON is written by other commands)."""
    code = (
        "import sys\n"
        "from compiler.launch import main\n"
        f"sys.argv = ['mtl-make-config', {str(REPO / 'maker_configs/quickstart.yaml')!r}, "
        f"'-o', {str(tmp_path / 'run.yaml')!r}, '-q']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "unwanted = ('click', 'dataclasses', 'inspect', 'json', 'torch')\n"
        "print(','.join(m for m in unwanted if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
    assert (tmp_path / "run.yaml").is_file()
