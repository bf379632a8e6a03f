"""How to read a task's figures: its primary metric, the metrics it is compared on and which
way each is better, recorded per task in ``summary.json`` beside the figures.

Written by ``mtl-run fit`` from the task (``Task.metric_record``), read by ``mtl-compare`` and
``mtl-study report``, so those need no task class. Kept free of torch imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.errors import ConfigError

PRIMARY_KEY = "primary_metric"
COMPARED_KEY = "comparison_metrics"
DIRECTION_KEY = "higher_is_better"
#: the record's keys in a task's ``summary.json`` entry (the rest: figures, epoch, step)
RECORD_KEYS = (PRIMARY_KEY, COMPARED_KEY, DIRECTION_KEY)
#: non-metric entries of a task's figures
WHEN_KEYS = ("epoch", "step")


@dataclass(frozen=True)
class MetricRecord:
    """A task's primary metric, the metrics it is compared on (``mtl-compare``'s delta-m),
    and the direction of each of them."""

    primary_metric: str
    metrics: tuple[str, ...]
    higher_is_better: Mapping[str, bool]

    def sign(self, metric: str) -> int:
        """+1 where higher is better, -1 where lower is."""
        return 1 if self.higher_is_better[metric] else -1

    def to_json(self) -> dict[str, Any]:
        return {
            PRIMARY_KEY: self.primary_metric,
            COMPARED_KEY: list(self.metrics),
            DIRECTION_KEY: dict(self.higher_is_better),
        }

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], where: Path, task: str) -> MetricRecord:
        """The record in a task's ``summary.json`` entry; a ``ConfigError`` naming the file
        and task when it is missing (a run written before records existed) or malformed."""
        if not any(key in entry for key in RECORD_KEYS):
            raise ConfigError(
                f"{where}: task '{task}' has no metric record ({', '.join(RECORD_KEYS)}): "
                "the run was trained before mtl-run recorded them. Add them to the task's "
                'entry by hand (e.g. "primary_metric": "accuracy", "comparison_metrics": '
                '["accuracy", "macro_f1"], "higher_is_better": {"accuracy": true, '
                '"macro_f1": true}; see docs/file-formats.md) or train the run again'
            )
        primary = entry.get(PRIMARY_KEY)
        compared = entry.get(COMPARED_KEY)
        directions = entry.get(DIRECTION_KEY)
        ok = (
            isinstance(primary, str)
            and isinstance(compared, list)
            and compared
            and all(isinstance(m, str) for m in compared)
            and isinstance(directions, dict)
            and all(isinstance(v, bool) for v in directions.values())
            and all(m in directions for m in (primary, *compared))
        )
        if not ok:
            raise ConfigError(
                f"{where}: task '{task}': malformed metric record: expected "
                f'"{PRIMARY_KEY}": "<metric>", "{COMPARED_KEY}": ["<metric>", ...] and '
                f'"{DIRECTION_KEY}": {{"<metric>": true|false}} covering both'
            )
        return cls(primary, tuple(compared), dict(directions))


def figures(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A task's ``summary.json`` entry without its metric record: what was measured (and
    ``epoch``/``step``)."""
    return {k: v for k, v in entry.items() if k not in RECORD_KEYS}


def scored(entry: Mapping[str, Any]) -> bool:
    """Whether a task's entry holds any measured value (absent metrics are null)."""
    return any(v is not None for k, v in figures(entry).items() if k not in WHEN_KEYS)
