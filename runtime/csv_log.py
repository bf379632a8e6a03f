"""``metrics.csv`` in the run directory, continued (not restarted) by ``--resume``."""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from runtime.config_errors import ConfigError


class _ContinuingWriter(ExperimentWriter):
    """Keeps the rows of an earlier attempt up to ``keep_until_step`` (rows logged after the
    checkpoint being resumed would otherwise appear twice); Lightning's writer deletes them."""

    keep_until_step: int | None = None

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self.keep_until_step is None:
            path.unlink()
            return
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if int(float(r.get("step") or 0)) <= self.keep_until_step]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(fields)


class RunCSVLogger(CSVLogger):
    """CSV logger writing ``<run_dir>/metrics.csv`` (no name/version subfolders)."""

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        super().__init__(save_dir=str(run_dir), name="", version="")
        self._resume_step = resume_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            _ContinuingWriter.keep_until_step = self._resume_step
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def tensorboard_logger(run_dir: Path) -> Logger:
    """TensorBoard event files in ``RUN_DIR/tensorboard/`` (``run.tensorboard: true``), beside
    ``metrics.csv``; view them with ``tensorboard --logdir RUN_DIR/tensorboard``."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.loggers.tensorboard import _TENSORBOARD_AVAILABLE

    if not _TENSORBOARD_AVAILABLE:
        raise ConfigError("run.tensorboard: true needs the tensorboard package: "
                          "pip install 'mtl-toolkit[tensorboard]'")
    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                             default_hp_metric=False)
