"""Optional capabilities are the Protocols of runtime/protocols.py: the toolkit's own parts
satisfy them, parts without a capability do not, and no module probes a capability's member
by name with getattr/hasattr any more."""

from __future__ import annotations

import ast

import pytest
import torch
from helpers import REPO
from merged_runs import merged_config
from runtime_toy import toy_config
from torch import nn

from runtime import protocols as P
from runtime.heads import ClassificationHead
from runtime.moe import MoEFeedForward, MoETransformerBlock
from runtime.rundir import build_objects
from runtime.schedulers import WarmupCosine
from runtime.stages import FineTuneStage, FineTuneStages
from runtime.task_embedding import TaskEmbedding
from runtime.trunk import TaskTrunk


def test_the_toolkits_parts_declare_their_capabilities():
    module, _ = build_objects(toy_config())
    _, data = build_objects(merged_config())
    for protocol in (P.HasTasks, P.PreparesFit, P.RecordsConfusion, P.TakesParamGroups):
        assert isinstance(module, protocol), protocol
    assert P.inner_model(module) is module.model
    assert isinstance(module.model, P.NamesTasks)
    for protocol in (P.KnowsDatasetTasks, P.HasBatchSizes):
        assert isinstance(data, protocol), protocol
    assert isinstance(ClassificationHead(4, 3), P.SizedHead)
    trunk = TaskTrunk(8, [MoETransformerBlock(8, num_heads=2, route_by="task")])
    assert P.is_task_conditioned(trunk)
    assert isinstance(trunk, P.AddsEmbedding)
    assert isinstance(trunk, P.EmbeddingConsumer)
    moe = MoEFeedForward(8)
    assert isinstance(moe, P.AuxLossSource)
    assert isinstance(moe, P.EmbeddingConsumer)
    embedding = TaskEmbedding(dim=4)
    assert isinstance(embedding, P.PerTaskParameters)
    assert isinstance(embedding, P.EmbeddingSource)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = WarmupCosine(optimizer)
    assert isinstance(scheduler, P.DerivesTotalSteps)
    assert isinstance(scheduler, P.ScalesBaseLrs)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    assert not isinstance(plateau, P.DerivesTotalSteps)
    assert isinstance(FineTuneStages([FineTuneStage(epoch=0)]), P.ParamGroupSplitter)


@pytest.mark.parametrize("part", [nn.Linear(2, 2), nn.Identity(), object()])
def test_plain_parts_have_no_capability(part):
    assert not P.is_task_conditioned(part)
    for protocol in (P.AuxLossSource, P.EmbeddingConsumer, P.PerTaskParameters, P.SizedHead):
        assert not isinstance(part, protocol)
    assert P.inner_model(part) is part


def test_a_false_flag_is_not_task_conditioned():
    class Off(nn.Module):
        task_conditioned = False

    assert isinstance(Off(), P.TaskConditioned)
    assert not P.is_task_conditioned(Off())


def _capability_members() -> set[str]:
    members: set[str] = set()
    for value in vars(P).values():
        if isinstance(value, type) and getattr(value, "_is_protocol", False):
            members |= {
                name
                for name in {*value.__dict__, *getattr(value, "__annotations__", {})}
                if not name.startswith("_")
            }
    return members


def test_no_module_probes_a_capability_by_name():
    """``getattr(x, "aux_loss", ...)`` / ``hasattr(x, "bind_embedding")`` would bypass the
    Protocols: every capability member is asked for with isinstance."""
    members = _capability_members()
    assert {"task_conditioned", "aux_loss", "per_task_parameters", "derive_total_steps"} <= members
    assert {"prepare_fit", "param_groups", "dataset_tasks", "batch_sizes"} <= members
    found = []
    for package in ("runtime", "scripts"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr")
                    and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in members
                ):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.args[1].value}")
    assert found == []
