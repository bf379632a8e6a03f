"""Every page of the docs (README.md, docs/**/*.md): its examples run as written, in order,
in a fresh copy of the repository, and its not-run blocks use only options that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_runner import docs_pages, page_is_slow, run_page

ROOT = Path(__file__).resolve().parents[1]


def _pages() -> list:
    return [
        pytest.param(
            page,
            id=str(page.relative_to(ROOT)),
            marks=[pytest.mark.slow] if page_is_slow(page) else [],
        )
        for page in docs_pages(ROOT)
    ]


@pytest.mark.parametrize("page", _pages())
def test_docs_page(page: Path, tmp_path: Path) -> None:
    run_page(page, ROOT, tmp_path)
