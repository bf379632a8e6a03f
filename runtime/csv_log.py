"""``metrics.csv`` in the run directory, continued (not restarted) by ``--resume``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from compiler.files import atomic_write
from runtime.compat import ExperimentWriterHooks, tensorboard_available
from runtime.config_errors import ConfigError


def kept_rows(path: Path, keep_until_step: int) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows up to ``keep_until_step``) of a ``metrics.csv``; a last line cut short
    by a killed process is dropped, any other damage is a ``ConfigError`` naming the line."""
    fix = "repair or delete it, then resume again"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (bad byte at offset {exc.start}); {fix}"
        ) from None
    if "\0" in text:
        raise ConfigError(f"{path}: not a text file (it contains NUL bytes); {fix}")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # cut short while being written
    reader = csv.DictReader(io.StringIO("".join(lines)))
    try:
        fields = list(reader.fieldnames or [])
        if "step" not in fields:
            raise ConfigError(f"{path}:1: the header has no 'step' column; {fix}")
        rows = []
        for row in reader:
            try:
                if None in row or None in row.values():
                    raise ValueError("wrong number of columns")
                step = int(float(row["step"]))
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{path}:{reader.line_num}: not a metrics row ({exc}); {fix}"
                ) from None
            if step <= keep_until_step:
                rows.append(row)
    except csv.Error as exc:
        raise ConfigError(f"{path}:{reader.line_num}: not CSV ({exc}); {fix}") from None
    return fields, rows


class _ContinuingWriter(ExperimentWriterHooks, ExperimentWriter):
    """Keeps the rows of an earlier attempt up to ``keep_until_step`` (rows logged after the
    checkpoint being resumed would otherwise appear twice); Lightning's writer deletes them."""

    keep_until_step: int | None = None

    def on_existing_metrics_file(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self.keep_until_step is None:
            path.unlink()
            return
        fields, rows = kept_rows(path, self.keep_until_step)
        _write_table(path, fields, rows)
        self.metrics_keys = sorted(fields)

    def rewrite_with_header(self, fieldnames: list[str]) -> None:
        """Lightning truncates the file and writes it again in place; a kill then loses it."""
        path = Path(self.metrics_file_path)
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        _write_table(path, fieldnames, rows)


def _write_table(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, out.getvalue())


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


def tensorboard_logger(folder: Path) -> Logger:
    """TensorBoard event files in ``folder`` (``RUN_DIR/tensorboard/``, with
    ``run.tensorboard: true``), beside
    ``metrics.csv``; view them with ``tensorboard --logdir RUN_DIR/tensorboard``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if not tensorboard_available():
        raise ConfigError(
            "run.tensorboard: true needs the tensorboard package: "
            "pip install 'mtl-toolkit[tensorboard]'"
        )
    return TensorBoardLogger(
        save_dir=str(folder.parent), name=folder.name, version="", default_hp_metric=False
    )
