"""``MultiTaskModule``: the LightningModule that trains a ``MultiTaskModel`` on task batches.

Batches follow the contract ``{"dataset": str, "inputs": Tensor, "targets": {task: Tensor}}``.
Only the tasks present in ``targets`` are decoded and scored. Logged names:
``<stage>/loss``, ``<stage>/<task>/loss``, ``<stage>/<task>/<metric>`` and ``<stage>/score``
(mean over tasks of each task's primary metric, negated when lower is better).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from runtime import balancing, compat
from runtime.balancing import Balancer
from runtime.class_weights import fit_to_training_labels
from runtime.ema import EMAWeights
from runtime.init_from import ROUTING_KEY, TASKS_KEY, InitFrom, apply_init_from
from runtime.metrics import ConfusionMatrixMetrics, members, was_updated
from runtime.model import MultiTaskModel
from runtime.protocols import DerivesTotalSteps, KnowsDatasetTasks, ParamGroupSplitter
from runtime.rng import RNGResume
from runtime.step_stats import CHECKPOINT_KEY, NonFinitePolicy, StepStats
from runtime.tasks import Task, multitask_loss

SCORED_SPLITS = ("val", "test")
SCORE = "val/score"


def _batch_size(batch: Mapping[str, Any]) -> int:
    inputs = batch["inputs"]
    if isinstance(inputs, Tensor):
        return inputs.shape[0]
    return next(iter(batch["targets"].values())).shape[0]


class MultiTaskModule(LightningModule):
    """Losses, metrics, optimizer/scheduler and optional weight EMA around a ``MultiTaskModel``.

    ``optimizer`` and ``scheduler`` are callables (``class_path`` configs without the
    optimizer argument); a scheduler with ``total_steps: None`` (``WarmupCosine``) gets the
    trainer's estimated step count. With ``ema_decay`` set, validation, test, predict and the
    weights stored in checkpoints are the EMA weights (``runtime.ema.EMAWeights``, a callback
    this module adds). The global RNG states ride along in checkpoints (``runtime.rng``) so
    ``--resume`` continues exactly. ``init_from`` starts a fresh fit from a
    trained run's weights (isolate fine-tune, see ``runtime.init_from``). Auxiliary losses of
    the model (mixture-of-experts load balancing) join the training loss and are logged as
    ``train/moe_aux_loss``. ``balancer`` (``runtime.balancing``) decides how the task losses
    combine; without it a step minimises ``sum(loss_weight * loss)``. Training losses are
    summed on the device and logged once per log interval and epoch (``runtime.step_stats``);
    ``non_finite_loss`` says what a NaN or infinite training loss does: ``stop`` (the
    default, reported at the next log interval) or ``skip`` (that step's update is skipped;
    costs one host sync per step).
    """

    #: splits the trainable parameters into optimizer groups; a callback that manages its
    #: own groups (``FineTuneStages``) sets it in its ``setup`` hook
    param_group_splitter: ParamGroupSplitter | None = None

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: dict[str, Task],
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        ema_decay: float | None = None,
        init_from: InitFrom | None = None,
        balancer: Balancer | None = None,
        non_finite_loss: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__()
        missing = sorted(set(model.task_names) - set(tasks))
        extra = sorted(set(tasks) - set(model.task_names))
        if missing or extra:
            raise ValueError(
                "model.init_args.tasks must define exactly the tasks the decoders serve: "
                f"missing definitions for {missing}, definitions without a decoder for {extra}"
            )
        for name, task in tasks.items():
            width = model.task_num_outputs(name)
            if width is not None and width != task.num_outputs:
                raise ValueError(
                    f"model.init_args.tasks.{name}: its head gives {width} outputs but the task "
                    f"definition has {task.num_outputs} (check num_outputs / class names)"
                )
            try:
                task.metric_record()  # which way its metrics go: known now, not after training
            except ValueError as err:
                raise ValueError(f"model.init_args.tasks.{name}: {err}") from None
        self.model = model
        self.tasks = nn.ModuleDict(tasks)
        self.metrics = nn.ModuleDict(
            {
                s: nn.ModuleDict({n: t.make_metrics() for n, t in tasks.items()})
                for s in SCORED_SPLITS
            }
        )
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.ema = EMAWeights(self.model, ema_decay) if ema_decay is not None else None
        self.rng = RNGResume()
        #: last confusion matrix per classification task and stage (CPU), for reports
        self.confusion_matrices: dict[str, dict[str, Tensor]] = {s: {} for s in SCORED_SPLITS}
        self.init_from = init_from
        self._init_applied = False
        self.balancer = balancer
        if balancer is not None:
            balancer.bind(model.task_names, model)
        self.step_stats = StepStats(list(tasks), non_finite_loss)

    def setup(self, stage: str) -> None:
        """Once the data is set up: tasks that learn from the training labels (class weights
        from label frequencies, ``runtime.class_weights``) read them."""
        fit_to_training_labels(self.tasks, getattr(self._trainer, "datamodule", None))

    # ---- forward / steps -------------------------------------------------------------------
    def forward(self, inputs: Tensor, tasks: list[str] | None = None) -> dict[str, Tensor]:
        return self.model(inputs, tasks)

    def _step(self, batch: Mapping[str, Any], stage: str) -> Tensor | None:
        """The batch's total loss; ``None`` for a training step whose update is skipped."""
        targets: Mapping[str, Tensor] = batch["targets"]
        if not targets:
            raise ValueError(f"batch from dataset {batch.get('dataset')!r} has no targets")
        outputs = self.model(batch["inputs"], targets.keys())
        size = _batch_size(batch)
        total, losses = multitask_loss(self.tasks, outputs, targets)
        if stage != "train":
            for name, loss in losses.items():
                self.log(
                    f"{stage}/{name}/loss", loss, on_step=False, on_epoch=True, batch_size=size
                )
                self.metrics[stage][name].update(outputs[name].detach(), targets[name])
            self.log(f"{stage}/loss", total, on_epoch=True, batch_size=size)
            return total
        aux = self.model.aux_losses()
        aux_total = torch.stack(list(aux.values())).sum() if aux else None
        if aux_total is not None:
            total = total + aux_total
        if not self.step_stats.add(self.global_step, losses, total, aux_total, size):
            return None
        return total

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor | None:
        if self.balancer is None and "parts" not in batch:
            return self._step(batch, "train")
        return balancing.training_step(self, batch)

    def configure_callbacks(self) -> list[Any]:
        """The module's own callbacks: RNG states and EMA (the same objects every run, so a
        test after fit evaluates the EMA weights), the balancer's hooks."""
        callbacks: list[Any] = [self.rng]
        if self.ema is not None:
            callbacks.append(self.ema)
        if self.balancer is not None:
            callbacks.append(balancing.BalancingHooks())
        return callbacks

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._step(batch, "test")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0):
        """Per-task predictions for the tasks of the batch's dataset."""
        tasks = self._predict_tasks(batch)
        targets = batch.get("targets") or {}
        return {
            "dataset": batch.get("dataset"),
            "index": batch.get("index"),  # sample ids and true labels go into the CSVs
            "targets": {t: targets[t] for t in tasks if t in targets},
            "outputs": self.predictions(batch["inputs"], tasks),
        }

    def predictions(self, inputs: Tensor, tasks: list[str]) -> dict[str, dict[str, Tensor]]:
        """``{task: task.predict(output)}`` (labels, probabilities, values) for ``inputs``:
        what ``mtl-run predict`` writes and ``runtime.api`` returns."""
        outputs = self.model(inputs, tasks)
        return {t: self.tasks[t].predict(outputs[t]) for t in tasks}

    def _predict_tasks(self, batch: Mapping[str, Any]) -> list[str]:
        if batch.get("targets"):
            return list(batch["targets"])
        data = getattr(self.trainer, "datamodule", None)
        by_dataset = data.dataset_tasks if isinstance(data, KnowsDatasetTasks) else None
        if by_dataset and batch.get("dataset") in by_dataset:
            return list(by_dataset[batch["dataset"]])
        return self.model.task_names

    # ---- training losses: logged per interval and epoch (runtime.step_stats) ---------------
    def on_train_epoch_start(self) -> None:
        if self.step_stats.epoch != self.current_epoch:  # kept when resumed mid-epoch
            self.step_stats.reset(self.current_epoch)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning's own decision, so these rows land on the steps it writes to the logger
        if not compat.should_update_logs(self.trainer):
            return
        self._check_losses()
        skipped = self.step_stats.skip_report()
        if skipped:
            rank_zero_warn(skipped)
        self.log_dict(self.step_stats.logged("interval"), on_step=True, on_epoch=False)
        self.step_stats.reset_interval()

    def on_train_epoch_end(self) -> None:
        self._check_losses()
        self.log_dict(
            self.step_stats.logged("epoch", self._sum_over_processes), on_step=False, on_epoch=True
        )

    def _check_losses(self) -> None:
        """Raise ``NonFiniteLossError`` for a NaN/inf training loss on any process."""

        def reduce_min(code: Tensor) -> Tensor:
            return self.trainer.strategy.reduce(code, reduce_op="min")

        distributed = self.trainer.world_size > 1
        self.step_stats.check(reduce_min if distributed else None)

    def _sum_over_processes(self, values: Tensor) -> Tensor:
        if self.trainer.world_size == 1:
            return values
        return self.trainer.strategy.reduce(values, reduce_op="sum")

    # ---- epoch-end metrics -----------------------------------------------------------------
    def _log_epoch_metrics(self, stage: str) -> None:
        logged: dict[str, Tensor] = {}
        scores: list[Tensor] = []
        for name, metric in self.metrics[stage].items():
            if not was_updated(metric):
                continue  # no batch of this task in this epoch
            values = metric.compute()
            if not values:  # no labelled target this epoch: the metrics are absent, not 0
                metric.reset()
                continue
            logged.update({f"{stage}/{name}/{k}": v for k, v in values.items()})
            scores.append(self.tasks[name].score(values))
            for member in members(metric):
                if isinstance(member, ConfusionMatrixMetrics):
                    self.confusion_matrices[stage][name] = member.confusion_matrix.detach().cpu()
            metric.reset()
        if scores:
            logged[f"{stage}/score"] = torch.stack(scores).mean()
        if logged:
            self.log_dict(logged)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # ---- optimizer -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params: Any = [p for p in self.parameters() if p.requires_grad]
        if self.param_group_splitter is not None:
            params = self.param_group_splitter.param_groups(self)
        if self.optimizer_factory is None:
            optimizer = torch.optim.AdamW(params, lr=1e-3)
        else:
            optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, DerivesTotalSteps) and scheduler.total_steps is None:
            scheduler.derive_total_steps(int(self.trainer.estimated_stepping_batches))
        config: dict[str, Any] = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if isinstance(scheduler, ReduceLROnPlateau):
            config.update(monitor=SCORE, interval="epoch")
        return {"optimizer": optimizer, "lr_scheduler": config}

    # ---- validation ------------------------------------------------------------------------
    def on_validation_start(self) -> None:
        if self._fitting():
            self._check_losses()  # never validate (and select as best) non-finite weights

    # ---- checkpoints -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the task list and routing (for per-task tables and exports) and, in a fit,
        the training-loss statistics; never a checkpoint of non-finite weights."""
        checkpoint[TASKS_KEY] = list(self.model.task_names)  # row order of per-task tables
        checkpoint[ROUTING_KEY] = dict(self.model.task_to_decoder)
        if self._fitting():
            self._check_losses()  # raises before a non-finite checkpoint is written
            checkpoint[CHECKPOINT_KEY] = self.step_stats.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if CHECKPOINT_KEY in checkpoint and self._fitting():
            self.step_stats.load_state_dict(checkpoint[CHECKPOINT_KEY])

    def prepare_fit(self, resuming: bool) -> None:
        """Apply ``init_from`` before a fresh fit (``mtl-run`` calls this before it writes
        anything, so a bad source is a config error); a resumed fit restores its own weights."""
        if self.init_from is None or resuming or self._init_applied:
            return
        report = apply_init_from(self.model, self.init_from)
        self._init_applied = True
        if self._trainer is None or self.trainer.is_global_zero:
            print(report.summary())

    def on_fit_start(self) -> None:
        """``init_from`` for fits started without ``mtl-run`` (after the optimizer exists,
        before any step)."""
        self.prepare_fit(resuming=self.trainer.ckpt_path is not None)

    def _fitting(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.state.fn == "fit"
