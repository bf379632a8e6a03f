"""Training losses kept on the device between log intervals, and the non-finite-loss check.

A ``self.log`` call per task per step costs about half a millisecond on CPU and launches
small kernels on a GPU. :class:`StepStats` instead keeps each step's losses as one stacked
device tensor and folds them, a few dozen steps at a time and without reading anything back
to the host, into weighted sums (per task, the total and the mixture-of-experts auxiliary
loss) for the current log interval and the current epoch. The module reads them back only
where a host sync happens anyway: at a log interval, before validation, before a checkpoint
is written and at the epoch end. The same pass records, still on the device, the first
non-finite value (step and task), so a NaN or infinite loss is reported at the next of
those points. Sums and counts are saved in checkpoints, so a run resumed mid-epoch reports
the same epoch means as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from compiler import exitcodes

NonFinitePolicy = Literal["stop", "skip"]
#: the key of the saved state in a checkpoint
CHECKPOINT_KEY = "train_loss_stats"
#: "no non-finite value seen" in the device-side first-bad code
_NONE = torch.iinfo(torch.int64).max
#: pending steps folded into the sums at once (bounds memory when logging is rare)
_FOLD_EVERY = 64


class NonFiniteLossError(exitcodes.NonFiniteLoss):
    """A training loss was NaN or infinite (``run`` stops with its own exit code)."""

    def __init__(self, step: int, what: str, epoch: int) -> None:
        self.step, self.what, self.epoch = step, what, epoch
        super().__init__(
            f"non-finite training loss (NaN or infinite) at step {step} (epoch {epoch}), "
            f"{what}. Training stopped before any checkpoint with non-finite weights was "
            "written. Usual causes: a learning rate far too high (lower "
            "model.init_args.optimizer.init_args.lr), NaN or infinite values in the inputs, "
            "or float16 overflow (use bf16-mixed). Resume from the last good checkpoint with "
            "--resume, or set model.init_args.non_finite_loss: skip to skip such updates."
        )


class StepStats:
    """Batch-size-weighted sums of the training losses of one epoch and one log interval.

    Slots: one per task (in ``tasks`` order), then the total loss, then the auxiliary loss.
    Sums and weights (batch sizes of the finite values) live on the device of the losses, as
    a ``[2, slots]`` tensor; the host only counts which slots have values. ``policy`` "stop"
    never syncs in :meth:`add`; "skip" must look at each step's losses on the host to skip
    its update (one sync per step, like AMP's scaler).
    """

    def __init__(self, tasks: list[str], policy: NonFinitePolicy = "stop") -> None:
        self.tasks = list(tasks)
        self.total, self.aux = len(self.tasks), len(self.tasks) + 1
        self._slot = {name: i for i, name in enumerate(self.tasks)}
        self.policy = policy
        self.skipped = 0
        self._first_skip: tuple[int, str] | None = None
        self.reset(epoch=0)

    @property
    def size(self) -> int:
        return len(self.tasks) + 2

    def describe(self, slot: int) -> str:
        if slot == self.total:
            return "in the total loss"
        if slot == self.aux:
            return "in the mixture-of-experts auxiliary loss"
        return f"task '{self.tasks[slot]}'"

    def reset(self, epoch: int) -> None:
        """Start an epoch: empty sums and counts."""
        self.epoch = epoch
        self._sums: dict[str, Tensor] = {}
        self.counts = {"epoch": [0.0] * self.size, "interval": [0.0] * self.size}
        self._first_bad: Tensor | None = None
        self._pending: list[Tensor] = []
        self._meta: list[tuple[int, int, float]] = []  # (slot, step, weight) per pending value

    # ---- per step (no host sync in "stop") -------------------------------------------------
    def add(
        self,
        step: int,
        task_losses: Mapping[str, Tensor],
        total: Tensor,
        aux: Tensor | None,
        weight: float,
        task_weights: Mapping[str, float] | None = None,
    ) -> bool:
        """Record one step; False when the update must be skipped (policy "skip").

        ``weight`` is the step's batch size; ``task_weights`` overrides it per task for a
        step whose tasks saw different numbers of samples (an ``all_datasets`` step)."""
        slots = [self._slot[name] for name in task_losses] + [self.total]
        values = [*task_losses.values(), total]
        per_task = task_weights or {}
        weights = [float(per_task.get(name, weight)) for name in task_losses]
        weights.append(float(weight))
        if aux is not None:
            slots.append(self.aux)
            values.append(aux)
            weights.append(float(weight))
        stacked = torch.stack([v.detach().float() for v in values])
        if self.policy == "skip" and not bool(torch.isfinite(stacked).all()):
            bad = torch.isfinite(stacked).logical_not().nonzero()[0, 0]
            self.skipped += 1
            if self._first_skip is None:
                self._first_skip = (step, self.describe(slots[int(bad)]))
            return False
        self._pending.append(stacked)
        self._meta += [(slot, step, w) for slot, w in zip(slots, weights, strict=True)]
        for counts in self.counts.values():
            for slot, w in zip(slots, weights, strict=True):
                counts[slot] += w
        if len(self._pending) >= _FOLD_EVERY:
            self._fold()
        return True

    def _fold(self) -> None:
        """Add the pending steps to the sums and the first-bad code, on the device."""
        if not self._pending:
            return
        values = torch.cat(self._pending)
        device = values.device
        meta = torch.tensor([(s, st) for s, st, _ in self._meta], dtype=torch.int64)
        weights = torch.tensor([w for *_, w in self._meta], dtype=torch.float32)
        if device.type == "cuda":  # pinned + non_blocking: the copy does not wait for the GPU
            meta = meta.pin_memory().to(device, non_blocking=True)
            weights = weights.pin_memory().to(device, non_blocking=True)
        slots, steps = meta[:, 0], meta[:, 1]
        finite = torch.isfinite(values)
        kept = torch.where(finite, weights, 0.0)
        both = torch.stack([torch.where(finite, values, 0.0) * weights, kept])
        for key in ("epoch", "interval"):
            if key not in self._sums:
                self._sums[key] = torch.zeros(2, self.size, dtype=torch.float32, device=device)
            self._sums[key] = self._sums[key].to(device).index_add_(1, slots, both)
        code = torch.where(finite, _NONE, steps * self.size + slots).min()
        first = self._first_bad
        self._first_bad = code if first is None else torch.minimum(first.to(device), code)
        self._pending, self._meta = [], []

    # ---- at sync points --------------------------------------------------------------------
    def first_non_finite(
        self, reduce_min: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[int, str] | None:
        """(step, what) of the first non-finite loss recorded so far (one host sync)."""
        self._fold()
        if self._first_bad is None:
            return None
        code = self._first_bad if reduce_min is None else reduce_min(self._first_bad)
        value = int(code)
        if value == _NONE:
            return None
        return value // self.size, self.describe(value % self.size)

    def check(self, reduce_min: Callable[[Tensor], Tensor] | None = None) -> None:
        """Raise :class:`NonFiniteLossError` if a non-finite loss was recorded."""
        found = self.first_non_finite(reduce_min)
        if found is not None:
            raise NonFiniteLossError(found[0], found[1], self.epoch)

    def skip_report(self) -> str | None:
        """What "skip" skipped since the last report (then forgotten)."""
        if not self.skipped:
            return None
        step, what = self._first_skip or (0, "")
        text = (
            f"skipped {self.skipped} update(s) with a non-finite training loss; the first "
            f"at step {step}, {what}"
        )
        self.skipped, self._first_skip = 0, None
        return text

    def means(
        self,
        key: Literal["epoch", "interval"],
        reduce_sum: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[int, Tensor]:
        """Slot -> mean loss of the epoch or the log interval (slots with no value left out);
        ``reduce_sum`` adds sums and counts over processes."""
        self._fold()
        both = self._sums.get(key)
        if both is None:
            return {}
        counts = self.counts[key]
        if reduce_sum is not None:
            both = reduce_sum(both.clone())
            counts = both[1].tolist()  # every process's weights
        return {
            slot: both[0, slot] / both[1, slot] for slot in range(self.size) if counts[slot] > 0
        }

    def logged(
        self,
        key: Literal["epoch", "interval"],
        reduce_sum: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The names and values to log: per log interval ``train/loss_step`` (the mean over
        the interval's steps); per epoch ``train/loss_epoch`` and ``train/<task>/loss``
        (plus ``train/moe_aux_loss_step|epoch`` for models with an auxiliary loss)."""
        suffix = "step" if key == "interval" else "epoch"
        names = {self.total: f"train/loss_{suffix}", self.aux: f"train/moe_aux_loss_{suffix}"}
        if key == "epoch":
            names.update({i: f"train/{task}/loss" for i, task in enumerate(self.tasks)})
        return {
            names[slot]: value
            for slot, value in self.means(key, reduce_sum).items()
            if slot in names
        }

    def reset_interval(self) -> None:
        self._fold()
        if "interval" in self._sums:
            self._sums["interval"].zero_()
        self.counts["interval"] = [0.0] * self.size

    # ---- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._fold()
        return {
            "epoch": self.epoch,
            "tasks": list(self.tasks),
            "sums": {k: v.detach().cpu().clone() for k, v in self._sums.items()},
            "counts": {k: list(v) for k, v in self.counts.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore saved sums (ignored when the run's tasks changed)."""
        if list(state.get("tasks", [])) != self.tasks:
            return
        self.reset(int(state["epoch"]))
        self._sums = {k: v.clone() for k, v in state["sums"].items()}
        self.counts = {k: list(v) for k, v in state["counts"].items()}
