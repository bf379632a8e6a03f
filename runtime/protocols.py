"""The optional capabilities of the parts a run config wires together, as ``typing.Protocol``s.

A part (an encoder layer, a trunk, a head, a scheduler, a data module, a Lightning module or
callback) that offers one of these declares it by having the member; the code that uses it
asks ``isinstance(part, Protocol)`` here instead of probing with ``getattr``, so each contract
is written once, with its types and its meaning. Members are checked by name at run time
(``runtime_checkable``); their types are for readers and type checkers. Standard library
only, so the companion commands' light paths may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing this module costs no torch
    from torch import Tensor, nn


# ---- model parts ----------------------------------------------------------------------------
@runtime_checkable
class TaskConditioned(Protocol):
    """A layer whose forward takes the task embedding, ``layer(x, embedding)``, when its
    ``task_conditioned`` is true (encoder layers, trunks, MoE blocks)."""

    task_conditioned: bool


def is_task_conditioned(part: object) -> bool:
    """Whether ``part`` is called with the task embedding."""
    return isinstance(part, TaskConditioned) and bool(part.task_conditioned)


@runtime_checkable
class EmbeddingConsumer(Protocol):
    """A part that sizes itself to the task embedding once the model knows its dimension."""

    def bind_embedding(self, embedding_dim: int) -> None: ...


@runtime_checkable
class AddsEmbedding(Protocol):
    """A trunk that adds the task embedding to the features (it then needs one)."""

    add_embedding: bool


@runtime_checkable
class AuxLossSource(Protocol):
    """A module with an auxiliary loss of its last forward (e.g. MoE load balancing), added to
    the training loss; None when it has none this step."""

    def aux_loss(self) -> Tensor | None: ...


@runtime_checkable
class PerTaskParameters(Protocol):
    """A module holding one row per task (dim 0 follows the model's ``task_names``) in the
    tensors it names, so they can be copied or cut by task name (``init_from``,
    ``mtl-unmerge``)."""

    per_task_parameters: tuple[str, ...]


@runtime_checkable
class SizedHead(Protocol):
    """An output layer that tells how many outputs it produces."""

    num_outputs: int


@runtime_checkable
class EmbeddingSource(Protocol):
    """A module that read a precomputed task-embedding file (recorded in ``run_info.json``);
    ``source_metadata`` is None when it did not."""

    source_metadata: dict[str, Any] | None


@runtime_checkable
class Mergeable(Protocol):
    """A peft-wrapped model whose adapters can be folded into the base weights."""

    def merge_and_unload(self) -> nn.Module: ...


@runtime_checkable
class LearnsFromTrainingLabels(Protocol):
    """A task that sets something (class weights) from the training split's labels."""

    def needs_training_labels(self) -> bool: ...

    def fit_training_labels(self, labels: Tensor) -> None: ...


# ---- Lightning module, data, scheduler, callbacks ------------------------------------------
@runtime_checkable
class HasTasks(Protocol):
    """A Lightning module that knows its tasks (``MultiTaskModule``)."""

    tasks: Mapping[str, Any]


@runtime_checkable
class NamesTasks(Protocol):
    """A model that knows its task names, in output order (``MultiTaskModel``)."""

    task_names: list[str]


@runtime_checkable
class PreparesFit(Protocol):
    """A Lightning module with work to do before a fit writes anything (``init_from``)."""

    def prepare_fit(self, resuming: bool) -> None: ...


@runtime_checkable
class RecordsConfusion(Protocol):
    """A Lightning module that keeps confusion matrices per stage prefix and task."""

    confusion_matrices: Mapping[str, Mapping[str, Tensor]]


@runtime_checkable
class KnowsDatasetTasks(Protocol):
    """A data module that tells which tasks each dataset's batches carry."""

    dataset_tasks: Mapping[str, list[str]]


@runtime_checkable
class HasBatchSizes(Protocol):
    """A data module with a batch size per dataset (named in out-of-memory advice)."""

    batch_sizes: Mapping[str, int]


@runtime_checkable
class BatchFetching(Protocol):
    """A dataset that returns a whole batch for a list of indices at once."""

    def get_batch(self, indices: list[int]) -> Any: ...


@runtime_checkable
class DerivesTotalSteps(Protocol):
    """A scheduler whose length, when not given (``total_steps`` None), is the fit's number
    of optimizer steps, known once the trainer is set up."""

    total_steps: int | None

    def derive_total_steps(self, total_steps: int) -> None: ...


@runtime_checkable
class ParamGroupSplitter(Protocol):
    """Something that splits a module's trainable parameters into optimizer groups (e.g.
    ``FineTuneStages``, which attaches itself to the module in its ``setup`` hook)."""

    def param_groups(self, module: Any) -> list[dict[str, Any]]: ...


@runtime_checkable
class TakesParamGroups(Protocol):
    """A Lightning module whose optimizer takes the groups of a :class:`ParamGroupSplitter`
    attached to it (``MultiTaskModule``)."""

    param_group_splitter: ParamGroupSplitter | None


@runtime_checkable
class ScalesBaseLrs(Protocol):
    """A learning-rate scheduler that computes each group's rate from ``base_lrs`` (torch's
    ``LRScheduler``s; not ``ReduceLROnPlateau``)."""

    base_lrs: list[float]


@runtime_checkable
class WrapsModel(Protocol):
    """A Lightning module around the ``nn.Module`` that holds the weights (``.model``)."""

    model: nn.Module


def inner_model(module: Any) -> Any:
    """The wrapped model of a Lightning module, else the module itself."""
    return module.model if isinstance(module, WrapsModel) else module
