"""The docs-example runner itself: markers, order, exit codes, not-run flag checks."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from docs_runner import DocsError, command_flags, page_is_slow, parse_page, run_page


def repo_with(tmp_path: Path, page: str) -> tuple[Path, Path]:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "README.md").write_text(textwrap.dedent(page))
    (root / "data.txt").write_text("shipped\n")
    (root / ".gitignore").write_text("ignored.txt\n")
    (root / "ignored.txt").write_text("not copied\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root, root / "README.md"


def test_a_runnable_block_without_a_marker_is_an_error(tmp_path):
    root, page = repo_with(
        tmp_path,
        """\
        # Page

        ```bash
        echo hi
        ```
        """,
    )
    with pytest.raises(DocsError, match=r"README.md:3: a ```bash block needs a marker"):
        parse_page(page, root)


@pytest.mark.parametrize(
    "marker", ["<!-- exmaple -->", "<!-- example exit=x -->", "<!-- not-run: -->"]
)
def test_a_bad_marker_is_an_error(tmp_path, marker):
    root, page = repo_with(tmp_path, f"{marker}\n```sh\ntrue\n```\n")
    with pytest.raises(DocsError, match=r"README\.md:2"):
        parse_page(page, root)


def test_markers_are_read_and_other_languages_need_none(tmp_path):
    root, page = repo_with(
        tmp_path,
        """\
        <!-- quickstart:setup -->
        ```bash
        exit 1
        ```
        ```yaml
        a: 1
        ```
        - a list item:

          <!-- example slow exit=2 -->
          ```bash
          exit 2
          ```
        <!-- output -->
        ```console
        $ mtl-run x
        ```
        <!-- not-run: needs 8 GPUs -->
        ```python
        import nothing
        ```
        """,
    )
    blocks = parse_page(page, root)
    assert [(b.kind, b.lang, b.line) for b in blocks] == [
        ("quickstart", "bash", 2),
        ("example", "bash", 11),
        ("output", "console", 15),
        ("not-run", "python", 19),
    ]
    assert blocks[1].exit_code == 2
    assert blocks[1].slow
    assert blocks[1].code == "exit 2\n"
    assert blocks[3].reason == "needs 8 GPUs"
    assert page_is_slow(page)


def test_examples_run_in_order_in_a_copy_with_exit_codes_checked(tmp_path):
    root, page = repo_with(
        tmp_path,
        """\
        <!-- example -->
        ```bash
        cat data.txt > out.txt
        test ! -e ignored.txt
        command -v mtl-run
        test "$HF_HUB_OFFLINE" = 1
        ```
        <!-- example exit=2 -->
        ```console
        $ grep -q shipped out.txt && exit 2
        not run: output
        ```
        <!-- example -->
        ```python
        from pathlib import Path
        assert Path("out.txt").read_text() == "shipped\\n"
        ```
        """,
    )
    assert run_page(page, root, tmp_path / "work") == 3
    assert not (root / "out.txt").exists()  # the repository itself is left alone


def test_a_failing_example_names_the_page_line_and_output(tmp_path):
    root, page = repo_with(
        tmp_path,
        """\
        <!-- example -->
        ```bash
        echo about to fail
        false
        echo never
        ```
        """,
    )
    with pytest.raises(DocsError, match=r"(?s)README.md:2: example exited with 1.*about to fail"):
        run_page(page, root, tmp_path / "work")


def test_an_example_that_should_be_refused_but_succeeds_fails(tmp_path):
    root, page = repo_with(tmp_path, "<!-- example exit=2 -->\n```sh\ntrue\n```\n")
    with pytest.raises(DocsError, match="exited with 0, the docs say 2"):
        run_page(page, root, tmp_path / "work")


def test_command_flags_follow_each_mtl_command():
    code = textwrap.dedent("""\
        torchrun --nnodes=2 $(which mtl-run) fit run.yaml --trainer.devices=8 \\
          --run-dir runs/x  # --not-a-flag in a comment
        mtl-make-config m.yaml --set a=1 | grep x --count && mtl-eval runs/x --json=o.json
        mtl-study run studies/x --max-parallel 2
        """)
    assert command_flags(code) == [
        ("mtl-run fit", "--trainer.devices"),
        ("mtl-run fit", "--run-dir"),
        ("mtl-make-config", "--set"),
        ("mtl-eval", "--json"),
        ("mtl-study run", "--max-parallel"),
    ]


def test_not_run_blocks_may_only_use_existing_flags(tmp_path):
    good = "<!-- not-run: full size -->\n```bash\nmtl-make-config m.yaml --set a=1 --print\n```\n"
    root, page = repo_with(tmp_path, good)
    assert run_page(page, root, tmp_path / "work") == 0
    page.write_text(good.replace("--print", "--prnt"))
    with pytest.raises(DocsError, match=r"`mtl-make-config --prnt` is not an option"):
        run_page(page, root, tmp_path / "work")
