"""Runs the code blocks of the Markdown docs, so the docs cannot rot.

Every fenced ``bash``/``sh``/``console``/``python`` block is preceded, on the line right above
it, by one marker comment:

- ``<!-- example -->``: run, in order, must exit 0 (``exit=N``: must exit N; ``slow``: the
  page's test is in the ``slow`` group);
- ``<!-- output -->``: a transcript, not run;
- ``<!-- not-run: REASON -->``: not runnable here; every ``--flag`` given to an ``mtl-*``
  command must appear in that command's ``--help``;
- ``<!-- quickstart:NAME -->``: run by ``.ci/run`` itself, skipped here.

A page runs in a fresh temporary copy of the repository (tracked and untracked-but-not-ignored
files), cwd = the copy's root, blocks in order; bash blocks via ``bash -euo pipefail``,
``console`` blocks' ``$ `` lines the same way, python blocks via ``python -c``; the venv's
``bin/`` is first on PATH and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RUN_LANGS = ("bash", "sh", "console", "python")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*(.*?)\s*-->\s*$")
SUBCOMMAND = re.compile(r"[a-z][a-z_-]*")  # a bare word right after the command name
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w.-]*")
BLOCK_TIMEOUT_S = 600


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    kind: str  # example | output | not-run | quickstart
    exit_code: int = 0
    slow: bool = False
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


class DocsError(Exception):
    """A page breaks the docs convention, or one of its examples failed."""


def parse_marker(text: str, where: str) -> dict[str, object]:
    """The fields of a marker comment's text (``example exit=2 slow``, ``not-run: why``, ...)."""
    if text.startswith("not-run:"):
        reason = text.removeprefix("not-run:").strip()
        if not reason:
            raise DocsError(f"{where}: `not-run:` needs a reason")
        return {"kind": "not-run", "reason": reason}
    if text == "output":
        return {"kind": "output"}
    if text.startswith("quickstart:"):
        return {"kind": "quickstart"}
    words = text.split()
    if not words or words[0] != "example":
        raise DocsError(
            f"{where}: unknown docs marker <!-- {text} -->; use example, "
            "example exit=N, example slow, output or not-run: REASON"
        )
    fields: dict[str, object] = {"kind": "example"}
    for word in words[1:]:
        if word == "slow":
            fields["slow"] = True
        elif re.fullmatch(r"exit=\d+", word):
            fields["exit_code"] = int(word.split("=")[1])
        else:
            raise DocsError(f"{where}: unknown word {word!r} in <!-- {text} -->")
    return fields


def parse_page(page: Path, root: Path | None = None) -> list[Block]:
    """The page's marked code blocks; a runnable-language block without a marker is an error."""
    shown = page.relative_to(root) if root else page
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening.group(1), opening.group(2), opening.group(3).lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence[0] * len(fence))
            and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise DocsError(f"{shown}:{i + 1}: code block never closed")
        where = f"{shown}:{i + 1}"
        above = MARKER.match(lines[i - 1]) if i else None
        if lang in RUN_LANGS:
            if not above:
                raise DocsError(
                    f"{where}: a ```{lang} block needs a marker on the line above "
                    "(<!-- example -->, <!-- output -->, <!-- not-run: REASON -->)"
                )
            fields = parse_marker(above.group(1), where)
            blocks.append(Block(shown, i + 1, lang, "\n".join(body) + "\n", **fields))  # type: ignore[arg-type]
        elif above and not above.group(1).startswith("quickstart:"):
            parse_marker(above.group(1), where)  # a typo in a marker is still an error
        i = j + 1
    return blocks


def docs_pages(root: Path) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def page_is_slow(page: Path) -> bool:
    """Whether the page has a slow example (a page that does not parse is not: its test then
    fails with the parse error instead of breaking collection)."""
    try:
        return any(b.slow for b in parse_page(page))
    except DocsError:
        return False


def copy_repository(root: Path, dest: Path) -> None:
    """The files git tracks or would track (untracked but not ignored), nothing else."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = root / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def example_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTHONPATH", None)
    return env


def command_of(block: Block) -> list[str]:
    if block.lang == "python":
        return [sys.executable, "-c", block.code]
    script = block.code
    if block.lang == "console":
        script = "".join(
            line[2:] + "\n" for line in block.code.splitlines() if line.startswith("$ ")
        )
    return ["bash", "-euo", "pipefail", "-c", script]


def run_example(block: Block, cwd: Path, env: dict[str, str]) -> None:
    try:
        done = subprocess.run(
            command_of(block),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise DocsError(f"{block.where}: example still running after {exc.timeout} s") from None
    transcripts = os.environ.get("DOCS_TRANSCRIPTS")  # a folder: keep what each block printed
    if transcripts:
        name = f"{str(block.page).replace('/', '_')}-{block.line:04d}.txt"
        Path(transcripts).mkdir(parents=True, exist_ok=True)
        (Path(transcripts) / name).write_text(
            f"$ exit {done.returncode}\n{block.code}--- stdout\n{done.stdout}--- stderr\n"
            f"{done.stderr}"
        )
    if done.returncode != block.exit_code:
        raise DocsError(
            f"{block.where}: example exited with {done.returncode}, the docs say "
            f"{block.exit_code}\n--- block ---\n{block.code}--- stdout (tail) ---\n"
            f"{done.stdout[-3000:]}\n--- stderr (tail) ---\n{done.stderr[-3000:]}"
        )


def logical_lines(code: str) -> list[str]:
    """Shell lines with ``\\`` continuations joined."""
    return code.replace("\\\n", " ").splitlines()


def command_flags(code: str) -> list[tuple[str, str]]:
    """(command, --flag) for every ``--flag`` given to an ``mtl-*`` command in shell code."""
    found: list[tuple[str, str]] = []
    for line in logical_lines(code):
        line = line.removeprefix("$ ")
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            tokens = line.split()
        command: list[str] | None = None
        for token in tokens:
            name = Path(token.rstrip(")")).name
            if name.startswith("mtl-"):
                command = [name]
            elif command and len(command) == 1 and SUBCOMMAND.fullmatch(token):
                command = [*command, token]  # `mtl-run fit`, `mtl-study run`: its own --help
            elif token in ("|", "||", "&&", ";") or token.endswith(";"):
                command = None
            elif command and token.startswith("--"):
                found.append((" ".join(command), token.split("=", 1)[0]))
    return found


@functools.cache
def help_flags(command: str) -> frozenset[str]:
    """Every ``--flag`` that ``COMMAND --help`` prints (mtl-run: its short and full help)."""
    argv = command.split()
    helps = [[*argv, "--help"]]
    if argv[0] == "mtl-run":
        helps = [
            ["mtl-run", "--help"],
            [*argv[:2], "--help"] if len(argv) > 1 else ["mtl-run", "fit", "--help"],
        ]
    bin_dir = Path(sys.executable).parent
    flags: set[str] = set()
    for help_argv in helps:
        executable = bin_dir / help_argv[0]
        if not executable.exists():
            raise DocsError(f"the docs use {help_argv[0]}, which is not installed")
        done = subprocess.run(
            [str(executable), *help_argv[1:]],
            capture_output=True,
            text=True,
            env=example_env(),
            timeout=120,
        )
        flags |= set(FLAG.findall(done.stdout))
    return frozenset(flags)


def check_not_run(block: Block) -> None:
    """Every flag of a not-run block's mtl-* commands exists in that command's --help."""
    for command, flag in command_flags(block.code):
        known = help_flags(command)
        if flag in known:
            continue
        root = flag.split(".", 1)[0]
        if command.startswith("mtl-run") and root in ("--model", "--data") and root in known:
            continue  # the model's and data's keys depend on the config's classes
        raise DocsError(
            f"{block.where}: `{command} {flag}` is not an option of {command} "
            f"(not in `{command} --help`)"
        )


def run_page(page: Path, root: Path, workdir: Path) -> int:
    """Check and run one page; returns how many examples ran."""
    blocks = parse_page(page, root)
    for block in blocks:
        if block.kind == "not-run" and block.lang != "python":
            check_not_run(block)
    examples = [b for b in blocks if b.kind == "example"]
    if not examples:
        return 0
    copy = workdir / "repo"
    copy_repository(root, copy)
    env = example_env()
    for block in examples:
        run_example(block, copy, env)
    return len(examples)
