"""Plain-text tables of per-task figures, shared by ``mtl-eval`` and ``mtl-compare``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: metric columns first in this order; others follow alphabetically; ``loss`` last
PREFERRED = ("accuracy", "macro_f1", "mae", "rmse")


def metric_columns(reports: Iterable[dict[str, float]]) -> list[str]:
    """Summary metrics present in any report (per-class ``f1_<class>`` left out)."""
    names = {k for report in reports for k in report if not k.startswith("f1_")}
    ordered = [m for m in PREFERRED if m in names]
    rest = sorted(names - set(ordered) - {"loss"})
    return ordered + rest + (["loss"] if "loss" in names else [])


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns left-aligned, numbers
    right-aligned."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(table[0]), rule, *(line(r) for r in table[1:])])


def task_table(report: dict[str, dict[str, float]]) -> str:
    """One row per task, one column per summary metric."""
    columns = metric_columns(report.values())
    rows = [[task, *(number(metrics.get(c)) for c in columns)] for task, metrics in report.items()]
    return format_table(["task", *columns], rows)
