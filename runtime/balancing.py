"""Task balancing: how the per-task losses of a training step become one update.

``model.init_args.balancer`` takes one of the classes below (a ``class_path`` block); without
it a step minimises ``sum(loss_weight * loss)``, exactly as before balancing existed.

Every balancer receives each task's loss already multiplied by its ``loss_weight`` (so
``loss_weight`` is a fixed prior on top of whatever the balancer decides) and returns the loss
to backpropagate. Auxiliary losses of the model (mixture-of-experts load balancing) are added
after balancing, unweighted, and reach every parameter they depend on. Two kinds:

* **loss weightings** (``Static``, ``Uncertainty``, ``DWA``, ``RandomWeighting``,
  ``GeometricMean``, ``FAMO``, ``GradNorm``): the step's loss is a weighted combination of the
  task losses; one backward pass as usual (GradNorm adds one small backward per task through
  the heads to the last shared layer).
* **gradient methods** (``Aggregate`` around any ``torchjd.aggregation`` aggregator): the
  per-task gradients of the *shared* parameters (a Jacobian, one row per task) are combined by
  the aggregator; every other parameter (the heads) gets the gradient of the plain sum.
  The step returns a linear surrogate loss whose gradient is exactly that, so Lightning's
  automatic optimization, precision plugins, gradient clipping, EMA, schedulers and DDP's
  gradient all-reduce apply unchanged. Under DDP the Jacobian is averaged over ranks before
  aggregating, so every rank applies the same update (torchjd's ``mtl_backward`` would bypass
  DDP's all-reduce).

State that decides a step's weights (uncertainty log-variances, DWA's loss history, FAMO's
logits and its Adam, GradNorm's weights, the random generators) lives in the module's
``state_dict`` (``balancer.*`` keys, partly as extra state), so checkpoints carry it and
``--resume`` continues exactly. Statistics that update such state are averaged over DDP ranks
first, so ranks never drift apart.

torchjd's scalarizers take one fixed-shape vector holding every task, while a per-dataset
step (``sample_mode`` other than ``all_datasets``) holds only its dataset's tasks and random
weighting must draw from a generator the checkpoint can carry: the one-line formulas of
uncertainty weighting, DWA, random weighting and the geometric mean are therefore written here
(and tested against torchjd's on full vectors); FAMO and every aggregator are torchjd's.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from lightning.pytorch import Callback
from torch import Tensor, nn

from runtime import compat
from runtime.stages import select
from runtime.step_stats import StepStats
from runtime.tasks import multitask_loss

EXTRA_HINT = 'pip install "mtl-toolkit[balancing]"'
_EPS = 1e-8


def _detached(state: Any) -> Any:
    """Copies of the tensors in a nested state (optimizer states hand out live tensors)."""
    if isinstance(state, Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _detached(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_detached(v) for v in state)
    return state


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sum_over_ranks(value: Tensor) -> Tensor:
    """``value`` summed over DDP ranks (itself in a single process)."""
    if _world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out


def mean_over_ranks(value: Tensor) -> Tensor:
    """``value`` averaged over DDP ranks (itself in a single process)."""
    world = _world_size()
    return value if world == 1 else sum_over_ranks(value) / world


@dataclass
class StepContext:
    """What a balancer may use besides the losses: the parameters it treats as shared, every
    other trainable parameter, and the optimizer step about to be taken."""

    shared: list[nn.Parameter]
    others: list[nn.Parameter]
    step: int


class Balancer(nn.Module):
    """Base class: turns the present tasks' losses (a vector, ``present`` gives their indices
    in ``task_names``) into the loss to backpropagate and records the weights it used.

    Args:
        warmup_steps: optimizer steps of plain summing (equal weighting) before balancing
            starts; the balancer sees nothing of them.
    """

    #: whether every task must be in every step (``sample_mode: all_datasets``)
    needs_all_tasks: ClassVar[bool] = False
    #: whether each step's state update assumes one batch per optimizer step
    supports_accumulation: ClassVar[bool] = True
    #: whether ``after_step`` needs the losses recomputed on the step's batch
    recompute_after_step: ClassVar[bool] = False
    #: whether ``combine`` reads ``StepContext.shared`` and ``others`` (left empty otherwise:
    #: listing the parameters every step costs more than a whole loss weighting)
    needs_parameters: ClassVar[bool] = False
    #: whether :meth:`epoch_losses` is called at each training epoch's end
    needs_epoch_losses: ClassVar[bool] = False
    kind: ClassVar[str] = "loss weighting"

    def __init__(self, warmup_steps: int = 0) -> None:
        super().__init__()
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.task_names: list[str] = []
        self.weights: Tensor
        self.register_buffer("weights", torch.ones(0), persistent=False)

    def bind(self, task_names: Sequence[str], model: nn.Module) -> None:
        """Called once by ``MultiTaskModule`` with its tasks (in model order) and model."""
        self.task_names = list(task_names)
        #: task name -> its index in ``task_names``
        self.position = {name: i for i, name in enumerate(self.task_names)}
        self._present: dict[tuple[str, ...], Tensor] = {}
        self.weights = torch.ones(len(self.task_names))
        self.setup(model)

    def present(self, names: Sequence[str]) -> Tensor:
        """The indices of a step's tasks (``names``, in model order) in ``task_names``: made
        once per set of tasks, not on every step."""
        key = tuple(names)
        found = self._present.get(key)
        if found is None:
            found = torch.tensor([self.position[t] for t in key], dtype=torch.long)
            self._present[key] = found
        return found

    def setup(self, model: nn.Module) -> None:
        """Per-task state once the tasks are known."""

    def loss(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        """The loss of one step (``values[i]`` is task ``present[i]``'s weighted loss)."""
        if self.needs_all_tasks and len(present) != len(self.task_names):
            missing = sorted(set(self.task_names) - {self.task_names[i] for i in present})
            raise ValueError(
                f"{type(self).__name__} needs every task in every step, but this step has no "
                f"batch for {', '.join(missing)}: use data.init_args.sample_mode: all_datasets"
            )
        if context.step < self.warmup_steps:
            self.weights[present] = 1.0
            loss = values.sum()
        else:
            loss = self.combine(values, present, context)
        touch = self.touch()
        return loss if touch is None else loss + touch

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        raise NotImplementedError

    def touch(self) -> Tensor | None:
        """Zero that depends on every trainable parameter of the balancer (None when it has
        none): DDP expects each trainable parameter to get a gradient in every step (also in
        warm-up, or when a per-dataset step leaves a task's parameter out)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        return sum((0.0 * p.sum() for p in params), 0.0)

    def after_step(self, values: Tensor) -> None:
        """After the optimizer step, with its batch's losses recomputed (if asked for)."""

    def epoch_losses(self, means: Tensor) -> None:
        """At the end of a training epoch (if :attr:`needs_epoch_losses`), before
        :meth:`epoch_end`: each task's mean training loss over the epoch, in ``task_names``
        order, as logged in ``train/<task>/loss`` (NaN for a task without a batch)."""

    def epoch_end(self) -> dict[str, Tensor]:
        """At the end of a training epoch; returns figures to log (e.g. gradient cosines)."""
        return {}


class Static(Balancer):
    """Fixed weights per task: loss = sum_i w_i * L_i (tasks not named keep weight 1).

    Args:
        weights: task name -> weight.
    """

    def __init__(self, weights: dict[str, float], warmup_steps: int = 0) -> None:
        super().__init__(warmup_steps)
        self.given = dict(weights)
        self.fixed: Tensor
        self.register_buffer("fixed", torch.ones(0), persistent=False)

    def setup(self, model: nn.Module) -> None:
        unknown = sorted(set(self.given) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"Static.weights names unknown tasks {unknown}; tasks: {', '.join(self.task_names)}"
            )
        self.fixed = torch.tensor([float(self.given.get(t, 1.0)) for t in self.task_names])

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        weights = self.fixed[present].to(values.dtype)
        self.weights[present] = weights
        return (weights * values).sum()


class Uncertainty(Balancer):
    """Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): a learned log-variance
    s_i = log sigma_i^2 per task, loss = sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i. The s_i are
    trained by the run's optimizer with the model (initialised to 0: equal weights)."""

    def setup(self, model: nn.Module) -> None:
        self.log_var = nn.Parameter(torch.zeros(len(self.task_names)))

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        s = self.log_var[present]
        weights = 0.5 * torch.exp(-s)
        self.weights[present] = weights.detach()
        return (weights * values + 0.5 * s).sum()


class DWA(Balancer):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019): at epoch t,
    lambda_k = K * softmax_k(w(t-1) / T) with w_k(t-1) = L_k(t-1) / L_k(t-2), the ratio of task
    k's mean training losses over the two previous epochs; equal weights (1) until two epochs
    are complete. A task absent from a whole epoch keeps its previous mean (ratio 1).

    The epoch means are the run's own (``train/<task>/loss``, kept on the device by
    ``runtime.step_stats`` for every run, summed over DDP ranks, carried by mid-epoch
    checkpoints) and the weights are worked out once per epoch, so a step costs what a static
    weighting costs. A ratio of means does not depend on ``loss_weight``.

    Args:
        temperature: T; larger means more uniform weights (the paper uses 2).
    """

    needs_epoch_losses = True

    def __init__(self, temperature: float = 2.0, warmup_steps: int = 0) -> None:
        super().__init__(warmup_steps)
        if not temperature > 0:
            raise ValueError(f"DWA.temperature must be positive, got {temperature}")
        self.temperature = temperature

    def setup(self, model: nn.Module) -> None:
        m = len(self.task_names)
        self.history: Tensor
        self.current: Tensor
        self.register_buffer("history", torch.full((2, m), float("nan"), dtype=torch.float64))
        self.register_buffer("current", torch.ones(m))

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        weights = self.current[present].to(values.dtype)
        self.weights[present] = weights
        return (weights * values).sum()

    def epoch_losses(self, means: Tensor) -> None:
        means = means.to(self.history)
        newest = torch.where(torch.isnan(means), self.history[1], means)
        self.history = torch.stack([self.history[1], newest])
        older, newer = self.history
        weights = len(self.task_names) * torch.softmax(newer / older / self.temperature, dim=0)
        # NaN until two epochs are complete: equal weights (no host sync to find out)
        self.current = torch.where(torch.isnan(weights), 1.0, weights).float()


class _Generator(Balancer):
    """A balancer drawing random numbers from its own seeded generator, saved in checkpoints
    (the same on every DDP rank, and independent of the global RNG)."""

    def __init__(self, seed: int = 0, warmup_steps: int = 0) -> None:
        super().__init__(warmup_steps)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class RandomWeighting(_Generator):
    """Random loss weighting (Lin et al., TMLR 2022, "Reasonable Effectiveness of Random
    Weighting"): each step lambda = softmax(z), z ~ N(0, I) over the step's tasks;
    loss = sum_i lambda_i * L_i (the weights sum to 1).

    Args:
        seed: seed of the balancer's own generator.
    """

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        z = torch.randn(len(present), generator=self.generator)
        weights = torch.softmax(z, dim=0).to(values.device, values.dtype)
        self.weights[present] = weights
        return (weights * values).sum()


class GeometricMean(Balancer):
    """Geometric loss strategy, GLS (Chennupati et al., CVPRW 2019): loss = (prod_i L_i)^(1/K)
    over the step's K tasks; task i's effective weight is loss / (K * L_i)."""

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        total = torch.exp(torch.log(values.clamp(min=_EPS)).mean())
        self.weights[present] = (total / (len(values) * values.clamp(min=_EPS))).detach()
        return total


class FAMO(Balancer):
    """Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023), torchjd's
    ``torchjd.scalarization.FAMO``: loss = c * sum_i z_i log(L_i - b_i + eps), z = softmax(w),
    c = 1 / sum_i z_i / (L_i - b_i + eps); after each optimizer step the losses are recomputed
    on the same batch and an internal Adam moves w towards the tasks that improved least.
    Needs every task in every step.

    Args:
        lr: learning rate of the internal Adam on the logits w (paper: 0.025).
        weight_decay: its weight decay (paper: 1e-3).
        min_losses: b_i per task name (default 0; losses must stay above them).
    """

    needs_all_tasks = True
    supports_accumulation = False
    recompute_after_step = True

    def __init__(
        self,
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        min_losses: dict[str, float] | None = None,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__(warmup_steps)
        self.lr, self.weight_decay = lr, weight_decay
        self.min_losses = dict(min_losses or {})

    def setup(self, model: nn.Module) -> None:
        from torchjd.scalarization import FAMO as TorchjdFAMO

        unknown = sorted(set(self.min_losses) - set(self.task_names))
        if unknown:
            raise ValueError(f"FAMO.min_losses names unknown tasks {unknown}")
        bounds = torch.tensor([float(self.min_losses.get(t, 0.0)) for t in self.task_names])
        # Kept out of the module tree: its logits are stepped by its own Adam only, never by
        # the run's optimizer, and DDP must not expect gradients for them.
        self.__dict__["famo"] = TorchjdFAMO(
            len(self.task_names), min_losses=bounds, lr=self.lr, weight_decay=self.weight_decay
        )

    def _apply(self, fn: Any, recurse: bool = True) -> FAMO:
        super()._apply(fn, recurse)
        if "famo" in self.__dict__:
            compat.apply_to_tensors(self.famo, fn)
        return self

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        famo = self.famo
        total = famo(values)
        # the same w update on every rank
        compat.set_famo_previous_losses(famo, mean_over_ranks(values.detach()))
        z = torch.softmax(compat.famo_logits(famo).detach(), dim=0)
        shifted = values.detach() - famo.min_losses + _EPS
        self.weights[present] = (z / shifted) / (z / shifted).sum()
        return total

    def after_step(self, values: Tensor) -> None:
        if compat.famo_previous_losses(self.famo) is not None:
            self.famo.update(mean_over_ranks(values.detach()))

    def get_extra_state(self) -> dict[str, Any]:
        famo = self.famo
        adam = compat.famo_adam_state(famo)
        prev = compat.famo_previous_losses(famo)
        return _detached({"w": compat.famo_logits(famo), "prev": prev, "adam": adam})

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # FAMO's own Adam on its logits (torchjd builds it lazily)
        compat.load_famo_state(self.famo, state["w"], state["prev"], state["adam"])


def shared_parameters(model: nn.Module, selectors: Sequence[str] | None) -> list[str]:
    """Names of the shared parameters: those ``selectors`` pick (``runtime.stages.select``
    syntax), by default every parameter outside the decoders (the heads)."""
    if selectors is None:
        names = [n for n, _ in model.named_parameters() if not n.startswith("decoders.")]
    else:
        names = []
        for selector in selectors:
            found = select(model, selector)
            if not found:
                top = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
                raise ValueError(
                    f"balancer shared: {selector!r} matches no parameter of the "
                    f"model (its parts: {', '.join(top)})"
                )
            names += [n for n in found if n not in names]
    if not names:
        raise ValueError(
            "balancer: no shared parameters (the model has only heads); give `shared` selectors"
        )
    return names


class _SharedBalancer(Balancer):
    """A balancer that looks at gradients of shared parameters."""

    def __init__(self, shared: list[str] | None = None, warmup_steps: int = 0) -> None:
        super().__init__(warmup_steps)
        self.shared = shared
        self.shared_names: list[str] = []

    def setup(self, model: nn.Module) -> None:
        self.shared_names = shared_parameters(model, self.shared)


class GradNorm(_SharedBalancer):
    """GradNorm (Chen et al., ICML 2018): loss = sum_i w_i L_i with learned weights. Each step,
    with G_i = w_i * ||grad_W L_i|| on the last shared layer W, r_i = (L_i / L_i(0)) /
    mean_j (L_j / L_j(0)) and target_i = mean_j G_j * r_i^alpha (a constant), an internal
    Adam takes a step on sum_i |G_i - target_i| with respect to w, then w is renormalised to
    sum to the number of tasks. Needs every task in every step.

    Args:
        alpha: restoring-force strength (paper: 0.5 to 3; 1.5 is common).
        lr: learning rate of the internal Adam on w.
        layer: the parameter (name in the model) whose gradient norms are compared; default:
            the last shared weight matrix.
        shared: selectors of the shared parameters (default: all but the decoders).
    """

    needs_all_tasks = True
    supports_accumulation = False

    def __init__(
        self,
        alpha: float = 1.5,
        lr: float = 0.025,
        layer: str | None = None,
        shared: list[str] | None = None,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__(shared, warmup_steps)
        self.alpha, self.lr, self.layer = alpha, lr, layer
        self._adam: torch.optim.Optimizer | None = None
        self._adam_state: dict[str, Any] | None = None

    def setup(self, model: nn.Module) -> None:
        super().setup(model)
        params = dict(model.named_parameters())
        if self.layer is None:
            matrices = [n for n in self.shared_names if params[n].dim() >= 2]
            self.layer = (matrices or self.shared_names)[-1]
        elif self.layer not in params:
            raise ValueError(f"GradNorm.layer: {self.layer!r} is not a parameter of the model")
        m = len(self.task_names)
        self.task_weights: Tensor
        self.initial: Tensor
        self.register_buffer("task_weights", torch.ones(m))
        self.register_buffer("initial", torch.full((m,), float("nan")))
        self.__dict__["layer_param"] = params[self.layer]

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        weights = self.task_weights.clone()
        self.weights[present] = weights
        if not self.layer_param.requires_grad:  # frozen by a fine-tuning stage: no update
            return (weights.to(values.dtype) * values).sum()
        grads = [torch.autograd.grad(v, self.layer_param, retain_graph=True)[0] for v in values]
        norms = mean_over_ranks(torch.stack([g.norm() for g in grads]).detach().float())
        losses = mean_over_ranks(values.detach().float())
        self.initial.copy_(torch.where(torch.isnan(self.initial), losses, self.initial))
        ratio = losses / self.initial
        relative = ratio / ratio.mean()
        scaled = self.task_weights * norms
        target = scaled.mean() * relative**self.alpha
        w = self.task_weights
        w.grad = torch.sign(scaled - target) * norms
        if self._adam is None or self._adam.param_groups[0]["params"][0] is not w:
            # built lazily: moving the module to a device replaces the buffer
            self._adam = torch.optim.Adam([w], lr=self.lr)
            if self._adam_state is not None:
                self._adam.load_state_dict(self._adam_state)
                self._adam_state = None
        self._adam.step()
        w.grad = None
        with torch.no_grad():
            w.clamp_(min=_EPS)
            w.mul_(len(w) / w.sum())
        return (weights.to(values.dtype) * values).sum()

    def get_extra_state(self) -> dict[str, Any]:
        return _detached(
            {"adam": self._adam_state if self._adam is None else self._adam.state_dict()}
        )

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._adam, self._adam_state = None, state["adam"]


class Aggregate(_SharedBalancer):
    """A gradient method: the per-task gradients of the shared parameters (a Jacobian with one
    row per task, averaged over DDP ranks) are combined by a ``torchjd.aggregation``
    aggregator (UPGrad, MGDA, PCGrad, IMTLG, AlignedMTL, CAGrad, NashMTL, DualProj, GradDrop,
    GradVac, ConFIG, ...); every other parameter gets the gradient of the plain sum of the
    task losses. Needs every task in every step; costs one backward per task. The pairwise
    cosine of the task gradients is logged per epoch as ``train/grad_cos/<a>~<b>``.

    Args:
        aggregator: the aggregator (``class_path`` block).
        shared: selectors of the shared parameters (default: all but the decoders).
        seed: seed of the generator that randomised aggregators (PCGrad, GradDrop) draw from.
    """

    needs_all_tasks = True
    supports_accumulation = False
    needs_parameters = True
    kind = "gradient method"

    def __init__(
        self, aggregator: Any, shared: list[str] | None = None, seed: int = 0, warmup_steps: int = 0
    ) -> None:
        super().__init__(shared, warmup_steps)
        # Plain attribute: aggregators hold no trainable parameters; their state is saved as
        # extra state below.
        self.__dict__["aggregator"] = aggregator
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._last_weights: Tensor | None = None
        weighting = getattr(aggregator, "weighting", None)
        if isinstance(weighting, nn.Module):
            weighting.register_forward_hook(self._keep_weights)

    def _keep_weights(self, module: nn.Module, args: Any, output: Tensor) -> None:
        self._last_weights = output.detach()

    def setup(self, model: nn.Module) -> None:
        super().setup(model)
        m = len(self.task_names)
        self.cos_sum: Tensor
        self.cos_count: Tensor
        self.register_buffer("cos_sum", torch.zeros(m, m), persistent=False)
        self.register_buffer("cos_count", torch.zeros(()), persistent=False)

    def combine(self, values: Tensor, present: Tensor, context: StepContext) -> Tensor:
        from torchjd.autojac import jac

        shared = context.shared
        if not shared:  # every shared parameter frozen (e.g. a FineTuneStages stage)
            return values.sum()
        rows = jac(values, shared, retain_graph=True)
        matrix = mean_over_ranks(torch.cat([r.reshape(len(values), -1) for r in rows], dim=1))
        self._track_cosines(matrix)
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        self._last_weights = None
        # full precision, outside any mixed-precision autocast (solvers take float64 arrays)
        with torch.random.fork_rng(devices=[]), torch.autocast(matrix.device.type, enabled=False):
            torch.manual_seed(seed)
            direction = self.aggregator(matrix.float())
        if self._last_weights is not None:
            self.weights[present] = self._last_weights.to(self.weights)
        head_grads = torch.autograd.grad(
            values.sum(), context.others, retain_graph=True, allow_unused=True
        )
        surrogate = values.new_zeros(())
        offset = 0
        for param in shared:
            n = param.numel()
            grad = direction[offset : offset + n].view_as(param).to(param.dtype)
            surrogate = surrogate + (grad.detach() * param).sum()
            offset += n
        for param, grad in zip(context.others, head_grads, strict=True):
            if grad is None:
                surrogate = surrogate + 0.0 * param.sum()
            else:
                surrogate = surrogate + (grad.detach() * param).sum()
        return surrogate

    def _track_cosines(self, matrix: Tensor) -> None:
        with torch.no_grad():
            unit = matrix / matrix.norm(dim=1, keepdim=True).clamp(min=_EPS)
            self.cos_sum += (unit @ unit.T).to(self.cos_sum)
            self.cos_count += 1

    def epoch_end(self) -> dict[str, Tensor]:
        if float(self.cos_count) == 0:
            return {}
        mean = self.cos_sum / self.cos_count
        out = {
            f"train/grad_cos/{a}~{b}": mean[i, j]
            for i, a in enumerate(self.task_names)
            for j, b in enumerate(self.task_names)
            if i < j
        }
        self.cos_sum.zero_()
        self.cos_count.zero_()
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return _detached(
            {"generator": self.generator.get_state(), "aggregator": plain_state(self.aggregator)}
        )

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        load_plain_state(self.aggregator, state["aggregator"])


# ---- state torchjd keeps outside state_dict --------------------------------------------------
_SKIP = {"training", "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"}


def _plain(value: Any) -> Any:
    """``value`` as checkpoint-safe data (tensors, numbers, strings, lists), else a marker."""
    if value is None or isinstance(
        value, (bool, int, float, str, Tensor, torch.dtype, torch.device)
    ):
        return value
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return {"__ndarray__": torch.from_numpy(np.array(value))}
    except ImportError:  # pragma: no cover - numpy is a runtime dependency
        pass
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _NOT_PLAIN if any(i is _NOT_PLAIN for i in items) else type(value)(items)
    return _NOT_PLAIN


_NOT_PLAIN = object()


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    return value


def plain_state(module: nn.Module) -> dict[str, dict[str, Any]]:
    """The data attributes and buffers of every submodule (e.g. GradVac's
    running cosine targets, NashMTL's previous weights), which ``state_dict`` leaves out."""
    out: dict[str, dict[str, Any]] = {}
    for name, sub in module.named_modules():
        attrs = compat.module_buffers(sub)  # aggregators are kept out of the state_dict
        for key, value in vars(sub).items():
            if (
                key in _SKIP
                or key.startswith(("_forward", "_backward"))
                or key.endswith("hooks")
                or "hook" in key
            ):
                continue
            plain = _plain(value)
            if plain is not _NOT_PLAIN:
                attrs[key] = plain
        out[name] = attrs
    return out


def load_plain_state(module: nn.Module, state: Mapping[str, Mapping[str, Any]]) -> None:
    subs = dict(module.named_modules())
    for name, attrs in state.items():
        for key, value in attrs.items():
            setattr(subs[name], key, _unplain(value))
        compat.rebuild_solver_problem(subs[name])  # NashMTL's cvxpy problem


# ---- config checks ---------------------------------------------------------------------------
def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _build(value: Any) -> Any:
    """Instantiate a parsed ``class_path`` block (nested blocks first)."""
    if hasattr(value, "class_path") or (isinstance(value, dict) and "class_path" in value):
        data = _as_dict(value)
        args = data.get("init_args") or {}
        return _import(str(data["class_path"]))(**{k: _build(v) for k, v in args.items()})
    if isinstance(value, list):
        return [_build(v) for v in value]
    return value


def _as_dict(value: Any) -> dict[str, Any]:
    """A parsed config node (jsonargparse Namespace or dict) as a plain dict."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return dict(value) if isinstance(value, Mapping) else dict(vars(value))


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if node is None:
            return None
        node = node.get(key) if isinstance(node, dict) else getattr(node, key, None)
    return node


def check_run_config(config: Any) -> str | None:
    """Why a parsed run config's balancer cannot run (None when it can): a missing solver
    package, gradient accumulation with a per-step method, or a method that needs every task
    in every step with a one-dataset-per-step sampling mode."""
    spec = _get(config, "model", "init_args", "balancer")
    if spec is None:
        return None
    key = "model.init_args.balancer"
    class_path = str(_get(spec, "class_path"))
    try:
        balancer = _build(spec)
    except ImportError as err:
        return (
            f"{key}: {class_path} needs optional solver packages ({err}); install them "
            f"with: {EXTRA_HINT}"
        )
    except (TypeError, ValueError, AttributeError) as err:
        return f"{key}: cannot build {class_path}: {err}"
    if not isinstance(balancer, Balancer):
        return f"{key}: {class_path} is not a runtime.balancing balancer"
    name = type(balancer).__name__
    accumulate = _get(config, "trainer", "accumulate_grad_batches") or 1
    if accumulate != 1 and not balancer.supports_accumulation:
        return (
            f"{key}: {name} balances each optimizer step's own batch and cannot "
            f"combine with trainer.accumulate_grad_batches={accumulate}; remove it (use "
            "larger batch sizes instead) or pick a loss weighting such as Uncertainty"
        )
    data_args = _get(config, "data", "init_args")
    mode = _get(data_args, "sample_mode")
    datasets = _get(data_args, "data_modules")
    count = len(_as_dict(datasets)) if datasets is not None else 0
    if balancer.needs_all_tasks and mode not in (None, "all_datasets") and count > 1:
        return (
            f"{key}: {name} compares every task in every step, but "
            f"data.init_args.sample_mode is {mode!r} (one dataset per step); set "
            "data.init_args.sample_mode: all_datasets"
        )
    return None


def describe(config: Any) -> dict[str, Any] | None:
    """The balancer block of a parsed run config as plain data (for ``run_info.json``)."""
    spec = _get(config, "model", "init_args", "balancer")
    return None if spec is None else _json_safe(_as_dict(spec))


def _json_safe(value: Any) -> Any:
    """Plain JSON data; anything else (e.g. GradDrop's default function) by its name."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    name = getattr(value, "__qualname__", None)
    return f"{getattr(value, '__module__', '')}.{name}" if name else repr(value)


# ---- the training step ---------------------------------------------------------------------
def _parts(batch: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-dataset batches of a step (``all_datasets`` steps hold several)."""
    return list(batch["parts"]) if "parts" in batch else [batch]


@dataclass
class StepLosses:
    """The losses of one training step: ``weighted`` (``loss_weight * loss`` per task, what
    the balancer combines), ``raw`` (each task's unweighted loss, the sample-weighted mean
    over the step's datasets that feed it, what ``train/<task>/loss`` reports), ``sizes``
    (samples behind each task's loss), the summed auxiliary loss or None, and the samples."""

    weighted: dict[str, Tensor]
    raw: dict[str, Tensor]
    sizes: dict[str, int]
    aux: Tensor | None
    samples: int


def task_losses(module: Any, batch: Mapping[str, Any]) -> StepLosses:
    """The losses of a step; a task fed by several of the step's datasets gets the sum of
    their weighted losses."""
    losses: dict[str, Tensor] = {}
    raw_sums: dict[str, Tensor] = {}
    sizes: dict[str, int] = {}
    aux: Tensor | None = None
    samples = 0
    for part in _parts(batch):
        targets: Mapping[str, Tensor] = part["targets"]
        outputs = module.model(part["inputs"], targets.keys())
        inputs = part["inputs"]
        size = (inputs if isinstance(inputs, Tensor) else next(iter(targets.values()))).shape[0]
        samples += size
        _, raw = multitask_loss(module.tasks, outputs, targets)
        for name, loss in raw.items():
            weighted = loss * module.tasks[name].loss_weight
            losses[name] = weighted if name not in losses else losses[name] + weighted
            raw_sums[name] = loss * size if name not in raw_sums else raw_sums[name] + loss * size
            sizes[name] = sizes.get(name, 0) + size
        found = module.model.aux_losses()
        if found:
            part_aux = torch.stack(list(found.values())).sum()
            aux = part_aux if aux is None else aux + part_aux
    raw_means = {name: value / sizes[name] for name, value in raw_sums.items()}
    return StepLosses(losses, raw_means, sizes, aux, samples)


def _context(module: Any, balancer: Balancer) -> StepContext:
    step = int(module.trainer.global_step)
    if not balancer.needs_parameters:
        return StepContext(shared=[], others=[], step=step)
    named = dict(module.model.named_parameters())  # walked once per step, not twice
    names = getattr(balancer, "shared_names", ())
    wanted = set(names)
    shared = [named[n] for n in names if named[n].requires_grad]
    others = [p for n, p in named.items() if p.requires_grad and n not in wanted]
    return StepContext(shared=shared, others=others, step=step)


def _step_tasks(module: Any, batch: Mapping[str, Any]) -> list[str]:
    """The tasks of a step, in model order (whatever the batch order)."""
    names = {name for part in _parts(batch) for name in part["targets"]}
    return [name for name in module.model.task_names if name in names]


def training_step(module: Any, batch: Mapping[str, Any]) -> Tensor | None:
    """``MultiTaskModule.training_step`` with a balancer or an ``all_datasets`` batch; its
    losses go to the module's ``step_stats`` like a plain step's (``None``: the update is
    skipped, ``non_finite_loss: skip``), before the balancer sees them."""
    step = task_losses(module, batch)
    if not step.weighted:
        raise ValueError("a training step without targets")
    names = _step_tasks(module, batch)
    values = torch.stack([step.weighted[t] for t in names])
    total = values.sum() if step.aux is None else values.sum() + step.aux
    raw = {t: step.raw[t] for t in names}
    if not module.step_stats.add(
        module.global_step, raw, total, step.aux, step.samples, step.sizes
    ):
        return None
    balancer: Balancer | None = module.balancer
    if balancer is None:
        return total
    loss = balancer.loss(values, balancer.present(names), _context(module, balancer))
    return loss if step.aux is None else loss + step.aux


def epoch_task_means(stats: StepStats, task_names: Sequence[str]) -> Tensor:
    """The epoch's mean training loss of each task (summed over DDP ranks, as logged),
    in ``task_names`` order, NaN for a task without a batch."""
    means = stats.means("epoch", sum_over_ranks)
    slots = {name: i for i, name in enumerate(stats.tasks)}
    values = [means.get(slots[name]) for name in task_names]
    device = next((v.device for v in values if v is not None), None)
    return torch.stack(
        [torch.tensor(float("nan"), device=device) if v is None else v.float() for v in values]
    )


class BalancingHooks(Callback):
    """The Lightning hooks a balancer needs around the step (``MultiTaskModule`` adds this
    callback through ``configure_callbacks`` when it has a balancer)."""

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        balancer: Balancer = pl_module.balancer
        accumulate = trainer.accumulate_grad_batches
        if accumulate != 1 and not balancer.supports_accumulation:
            raise ValueError(
                f"{type(balancer).__name__} cannot combine with "
                f"accumulate_grad_batches={accumulate}: its state follows every "
                "optimizer step's batch"
            )

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not outputs:  # the update was skipped (non-finite loss): the balancer saw nothing
            return
        balancer: Balancer = pl_module.balancer
        # the weights of the step Lightning writes to the logger, not one log call per step
        if compat.should_update_logs(trainer):
            weights, position = balancer.weights, balancer.position
            pl_module.log_dict(
                {
                    f"train/weight/{name}": weights[position[name]].detach().clone()
                    for name in _step_tasks(pl_module, batch)
                },
                on_step=True,
                on_epoch=False,
            )
        if not balancer.recompute_after_step or trainer.global_step <= balancer.warmup_steps:
            return
        with torch.no_grad():
            weighted = task_losses(pl_module, batch).weighted
        balancer.after_step(torch.stack([weighted[t] for t in balancer.task_names]))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        balancer: Balancer = pl_module.balancer
        if balancer.needs_epoch_losses and trainer.global_step > balancer.warmup_steps:
            # (an epoch wholly in warm-up is not seen; one where warm-up ends counts whole)
            balancer.epoch_losses(epoch_task_means(pl_module.step_stats, balancer.task_names))
        figures = balancer.epoch_end()
        if figures:
            pl_module.log_dict(figures, on_step=False, on_epoch=True)
