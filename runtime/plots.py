"""Small helpers shared by the toolkit's matplotlib figures (kept free of torch imports)."""

from __future__ import annotations

import textwrap


def fit_title(title: str, width_inches: float, fontsize: float = 9) -> str:
    """``title`` wrapped into lines that fit a figure ``width_inches`` wide, so it is never
    clipped at the figure's edge."""
    chars = max(12, int(width_inches * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(title, chars, break_on_hyphens=False)) or title
