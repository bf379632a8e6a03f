"""Label-space merging of task heads (``merge_options``).

Decoders whose head (last layer) has the same class merge into one decoder. With
``merge_task_labels`` its output layer gets one block of labels per task (tasks in one
``same_label_groups`` entry share a block); without it, tasks must have equal label counts
and all sit at offset 0. The result is recorded in the model's init args as
``decoder_to_target`` and ``task_label_offsets``, so the runtime needs no side file.
"""

from __future__ import annotations

from typing import Any

from .dialect import DatasetParts, Dialect
from .errors import ConfigError
from .keypaths import DECODERS, MODEL_ARGS
from .maker import Maker
from .tree import get_path, set_path


def _head_class(task: str, decoder: list, ds: DatasetParts) -> str:
    head = decoder[-1]
    class_path = head.get("class_path") if isinstance(head, dict) else None
    if not isinstance(class_path, str) or not class_path:
        raise ds.error(
            f"the last layer of task '{task}' has no class_path, so heads cannot be merged",
            (*DECODERS, task, len(decoder) - 1),
        )
    return class_path


def _count(dialect: Dialect, task: str, decoder: list, ds: DatasetParts) -> int:
    try:
        count = dialect.num_outputs(task, decoder)
    except ConfigError as exc:
        raise ds.error(exc.message, exc.key or (*DECODERS, task)) from None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ds.error(
            f"output count of task '{task}' must be a positive integer, got {count!r}",
            (*DECODERS, task),
        )
    return count


def merge_heads(run: dict, datasets: list[DatasetParts], maker: Maker, dialect: Dialect) -> dict:
    """Return ``run`` with decoders merged by head class and label offsets recorded."""
    owner = {t: ds for ds in datasets for t in ds.tasks}
    all_tasks = list(owner)
    groups = dialect.check_groups(maker.same_label_groups, all_tasks, maker)
    decoders: dict[str, list] = get_path(run, DECODERS)
    gone = [
        t
        for t in all_tasks
        if not isinstance(decoders, dict)
        or not isinstance(decoders.get(t), list)
        or not decoders[t]
    ]
    if gone:  # possible where heads merge after global_overrides
        key = ("global_overrides", *DECODERS)
        raise maker.source.error(
            key,
            f"cannot merge heads: the decoders of {', '.join(gone)} are no longer "
            "non-empty lists after global_overrides",
        )
    by_class: dict[str, list[str]] = {}
    for task in all_tasks:
        by_class.setdefault(_head_class(task, decoders[task], owner[task]), []).append(task)

    merged: dict[str, list] = {}
    decoder_to_target: dict[str, list[str]] = {}
    offsets: dict[str, dict[str, Any]] = {}
    for class_path, tasks in by_class.items():
        name = dialect.merged_name(class_path)
        if name in merged:
            raise ConfigError(
                f"two head classes would both name the merged decoder '{name}' "
                f"({class_path} and another); rename one class",
                file=maker.path,
            )
        counts = {t: _count(dialect, t, decoders[t], owner[t]) for t in tasks}
        dialect.check_head(class_path, tasks)
        ordered = dialect.ordered_tasks(tasks, groups)
        first = dialect.head_template(ordered)
        for task in tasks:
            diff = dialect.differing_key(first, decoders[first], decoders[task])
            if diff is not None:
                dialect.decoders_differ(
                    owner[task].error(
                        f"decoders of tasks '{first}' and '{task}' (head {class_path}) differ at "
                        f"'{diff}'; merged decoders may differ only in num_outputs",
                        (*DECODERS, task),
                    )
                )
        if maker.merge_task_labels:
            total = _layout(dialect, tasks, groups, counts, offsets, maker)
        else:
            if len(set(counts.values())) > 1:
                detail = ", ".join(f"{t}: {n}" for t, n in counts.items())
                raise ConfigError(
                    f"merge_heads without merge_task_labels shares one output layer, so the "
                    f"tasks of head {class_path} need equal output counts ({detail}); "
                    "set merge_task_labels: true to give each task its own labels",
                    file=maker.path,
                    line=maker.source.line_of(("merge_options", "merge_heads")),
                )
            total = counts[first]
            for task in tasks:
                offsets[task] = dialect.offset_entry(task, 0, counts[task])
        merged[name] = dialect.with_num_outputs(first, decoders[first], total)
        decoder_to_target[name] = ordered

    run = set_path(run, DECODERS, merged)
    run = set_path(run, (*MODEL_ARGS, "decoder_to_target"), decoder_to_target)
    return set_path(run, (*MODEL_ARGS, "task_label_offsets"), dict(sorted(offsets.items())))


def _layout(
    dialect: Dialect,
    tasks: list[str],
    groups: list[list[str]],
    counts: dict[str, int],
    offsets: dict[str, dict[str, Any]],
    maker: Maker,
) -> int:
    """Assign label offsets for one merged decoder; return its total output count."""
    offset = 0
    for block in dialect.label_layout(tasks, groups):
        sizes = {counts[t] for t in block}
        if len(sizes) > 1:
            detail = ", ".join(f"{t}: {counts[t]}" for t in block)
            key = ("merge_options", "same_label_groups")
            raise maker.source.error(
                key, f"tasks of one label group must have the same output count ({detail})"
            )
        for task in block:
            offsets[task] = dialect.offset_entry(task, offset, counts[task])
        offset += counts[block[0]]
    return offset
