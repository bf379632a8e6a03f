"""Dialects: where a maker dialect differs from the one compiler core.

:class:`Dialect` is the native dialect; other dialects (``compiler.rslearn``) subclass it and
override only the hooks where they differ. The core (:mod:`compiler.build`) never branches on
a dialect's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError, format_key
from .keypaths import DATA_ARGS, DECODERS, MODEL_ARGS, TASKS
from .maker import Maker
from .merge import deep_merge
from .tree import get_path
from .yamlio import Source, max_file_size, parse, read_source


class DatasetParts:
    """What assembly takes from one dataset config (filled in as its config is read)."""

    def __init__(self, name: str, sources: list[Source]) -> None:
        self.name = name
        self.sources = sources
        self.tasks: list[str] = []
        self.decoders: dict[str, list] = {}
        self.task_defs: dict[str, Any] = {}
        self.data_module: Any = None
        self.batch_size: Any = None

    def locate(self, key: tuple) -> tuple[Path, int | None]:
        """File and line that (last) sets ``key`` in this dataset's files."""
        for src in reversed(self.sources):
            if src.has(key):
                return src.path, src.line_of(key)
        src = self.sources[-1]
        return src.path, src.line_of(key)

    def error(self, message: str, key: tuple) -> ConfigError:
        path, line = self.locate(key)
        return ConfigError(message, file=path, line=line, key=key)


class Placement:
    """Where one dataset's pieces land in the run config (recorded for ``--explain``)."""

    def __init__(self, dataset_key: tuple, run_key: tuple) -> None:
        self.dataset_key = dataset_key
        self.run_key = run_key


class Dialect:
    """The native dialect; hooks are documented where subclasses may override them."""

    name: ClassVar[str] = "native"
    #: Merge heads after ``global_overrides`` (upstream rslearn order) instead of before.
    merge_heads_after_overrides: ClassVar[bool] = False
    #: How input files read numbers (:mod:`compiler.yamlload`): YAML 1.2 for native makers.
    schema: ClassVar[str] = "1.2"

    def __init__(self) -> None:
        #: Why this dialect was chosen (set by detection, shown by ``--explain``).
        self.reason = ""
        #: Substitution problems gathered over all files, reported together.
        self.problems: list = []
        self.warnings: list[str] = []
        #: Files dialect detection already read (path -> Source), each reused once.
        self.preread: dict = {}

    # -- inputs --------------------------------------------------------------------------
    def substitution_values(self, maker: Maker, sets: dict[str, Any]) -> dict[str, Any]:
        """The maker's substitutions and ``--set NAME=VALUE``, each resolved (a value may use
        other substitutions; a cycle is refused)."""
        from .substitute import resolve_values

        def where(name: str) -> tuple[Any, int | None]:
            if name in sets:
                return "--set", None
            return maker.path, maker.source.line_of(("substitutions", name))

        values, problems = resolve_values({**maker.substitutions, **sets}, where)
        self.problems += problems
        return values

    def read(self, path: Path, what: str) -> Source:
        """Read an input file (unparsed), reusing the copy detection read, if any."""
        src = self.preread.pop(path, None)
        return src if src is not None else read_source(path, what)

    def load_input(self, path: Path, values: dict[str, Any], what: str) -> Source:
        """Read one base or dataset file and substitute its placeholders."""
        from .substitute import Substituter, located_problems, substitute_source

        src = self.read(path, what)
        src.schema = self.schema
        src.doc = src.raw = parse(src.text, path, self.schema)
        sub = Substituter(values)
        src.doc = substitute_source(src.doc, src.text, sub)
        if sub.unresolved or sub.failed:
            self.problems += [(path, *p) for p in located_problems(src.text, sub)]
        sub.check_size(f"the {what} after substitution", len(src.text), path)
        return src

    def overrides(self, maker: Maker, name: str, values: dict[str, Any]) -> dict:
        """The maker's local or global overrides, substituted (native) or verbatim."""
        from .bounds import check_bounds, size_error
        from .substitute import Substituter, located_problems

        raw = getattr(maker, name)
        sub = Substituter(values)
        out = sub.tree(raw)
        if sub.unresolved or sub.failed:
            text = maker.source.text
            self.problems += [(maker.path, *p) for p in located_problems(text, sub)]
        size = check_bounds(out, f"{name} after substitution", file=maker.path)
        if name == "local_overrides" and size * len(maker.datasets) > max_file_size():
            raise size_error(
                f"local_overrides, merged into each of {len(maker.datasets)} datasets,",
                size * len(maker.datasets),
                maker.path,
                maker.source.line_of((name,)),
            )
        return out

    # -- datasets ------------------------------------------------------------------------
    def dataset_parts(self, config: Any, sources: list[Source]) -> DatasetParts:
        """Split a merged dataset config into the pieces assembly keeps."""
        first = sources[0]
        if not isinstance(config, dict):
            raise ConfigError(
                "a dataset config must be a mapping with 'model' and 'data'", file=first.path
            )
        for key in config:
            if key not in ("name", "model", "data"):
                self.warn(
                    f"{first.path}: key '{key}' is ignored (a dataset config contributes "
                    "only 'name', its decoders, task definitions, data module and batch size)"
                )
        name = config.get("name", first.path.stem)
        parts = DatasetParts(name, sources)
        if not isinstance(name, str) or not name:
            raise parts.error("'name' must be a non-empty string", ("name",))
        decoders = get_path(config, DECODERS)
        if not isinstance(decoders, dict) or not decoders:
            raise parts.error(
                f"the dataset config declares no task: put one decoder per task under "
                f"'{format_key(DECODERS)}'",
                DECODERS,
            )
        for task, decoder in decoders.items():
            if not isinstance(task, str) or not task:
                raise parts.error(
                    f"task name {task!r} must be a non-empty string", (*DECODERS, task)
                )
            if not isinstance(decoder, list) or not decoder:
                raise parts.error(
                    f"decoder of task '{task}' must be a non-empty list of modules",
                    (*DECODERS, task),
                )
            for i, layer in enumerate(decoder):
                if (
                    isinstance(layer, dict)
                    and "class_path" in layer
                    and (not isinstance(layer["class_path"], str) or not layer["class_path"])
                ):
                    raise parts.error(
                        f"class_path of decoder layer {i} of task '{task}' must be a class "
                        f"name (string), got {layer['class_path']!r}",
                        (*DECODERS, task, i, "class_path"),
                    )
        parts.decoders = decoders
        parts.tasks = list(decoders)
        self._ignored_model_keys(config, parts)
        task_defs = get_path(config, TASKS, {}) or {}
        if not isinstance(task_defs, dict):
            raise parts.error("'tasks' must map task names to task definitions", TASKS)
        for task in task_defs:
            if task not in decoders:
                raise parts.error(
                    f"task definition '{task}' has no decoder (tasks: {', '.join(parts.tasks)})",
                    (*TASKS, task),
                )
        parts.task_defs = task_defs
        data = config.get("data")
        if not isinstance(data, dict):
            raise parts.error(
                "the dataset config has no 'data' mapping (its data module)", ("data",)
            )
        init = data.get("init_args")
        if isinstance(init, dict) and "batch_size" in init:
            parts.batch_size = init["batch_size"]
            data = {**data, "init_args": {k: v for k, v in init.items() if k != "batch_size"}}
        parts.data_module = data
        return parts

    def _ignored_model_keys(self, config: dict, parts: DatasetParts) -> None:
        """Warn about model keys a dataset sets that assembly will not take."""
        spine = {MODEL_ARGS[:n] for n in range(1, len(MODEL_ARGS) + 1)}
        kept = {DECODERS, TASKS}
        ignored = []
        stack = [(("model",), config.get("model"))]
        while stack:
            path, node = stack.pop()
            if not isinstance(node, dict):
                continue
            for key, value in node.items():
                here = (*path, key)
                if here in spine:
                    stack.append((here, value))
                elif here not in kept and key != "class_path":
                    ignored.append(format_key(here))
        if ignored:
            self.warn(
                f"{parts.sources[0].path}: {', '.join(sorted(ignored))} ignored: the model "
                "comes from the base config; a dataset gives only its decoders and task "
                "definitions"
            )

    def placements(self, parts: DatasetParts) -> list[Placement]:
        """Where each piece of a dataset goes in the run config."""
        out = [Placement((*DECODERS, t), (*DECODERS, t)) for t in parts.tasks]
        out += [Placement((*TASKS, t), (*TASKS, t)) for t in parts.task_defs]
        out.append(Placement(("data",), (*DATA_ARGS, "data_modules", parts.name)))
        out.append(Placement((*DATA_ARGS, "batch_size"), (*DATA_ARGS, "batch_sizes", parts.name)))
        return out

    def assemble(self, base: dict, datasets: list[DatasetParts]) -> dict:
        """Place every dataset's pieces into (a copy of) the base config."""
        run = dict(base)
        decoders: dict[str, Any] = {}
        task_defs: dict[str, Any] = {}
        modules: dict[str, Any] = {}
        batch_sizes: dict[str, Any] = {}
        dataset_tasks: dict[str, list[str]] = {}
        for ds in datasets:
            decoders.update(ds.decoders)
            task_defs.update(ds.task_defs)
            modules[ds.name] = ds.data_module
            if ds.batch_size is not None:
                batch_sizes[ds.name] = ds.batch_size
            dataset_tasks[ds.name] = list(ds.tasks)
        run = _fill(run, DECODERS, decoders)
        if task_defs:
            run = _fill(run, TASKS, task_defs)
        run = _fill(run, (*DATA_ARGS, "data_modules"), modules)
        run = _fill(run, (*DATA_ARGS, "batch_sizes"), batch_sizes)
        return _fill(run, (*DATA_ARGS, "dataset_tasks"), dataset_tasks)

    # -- label merging -------------------------------------------------------------------
    def output_layer(self, task: str, decoder: list) -> int:
        """Index of the decoder layer whose ``num_outputs`` is the task's label count."""
        for i in range(len(decoder) - 1, -1, -1):
            if "num_outputs" in layer_args(task, decoder, i):
                return i
        raise ConfigError(
            f"decoder of task '{task}' has no output layer: no layer has init_args.num_outputs",
            key=(*DECODERS, task),
        )

    def num_outputs(self, task: str, decoder: list) -> Any:
        i = self.output_layer(task, decoder)
        return layer_args(task, decoder, i)["num_outputs"]

    def with_num_outputs(self, task: str, decoder: list, count: int) -> list:
        """A copy of the decoder whose output layer has ``count`` outputs."""
        i = self.output_layer(task, decoder)
        out = list(decoder)
        out[i] = {**decoder[i], "init_args": {**layer_args(task, decoder, i), "num_outputs": count}}
        return out

    def differing_key(self, task: str, decoder: list, other: list) -> str | None:
        """Key path at which two decoders to merge differ (beyond output counts), if any."""
        mine = self.with_num_outputs(task, decoder, 0)
        theirs = self.with_num_outputs(task, other, 0)
        return _first_difference(mine, theirs, ())

    def head_template(self, ordered: list[str]) -> str:
        """Task whose decoder becomes the merged decoder (``ordered`` is ``ordered_tasks``)."""
        return ordered[0]

    def check_head(self, class_path: str, tasks: list[str]) -> None:
        """Validate the tasks that merge into one head (native: nothing beyond the diff)."""

    def decoders_differ(self, error: ConfigError) -> None:
        """Decoders to merge differ beyond their output counts: native refuses."""
        raise error

    def ordered_tasks(self, tasks: list[str], groups: list[list[str]]) -> list[str]:
        """Order in which a merged decoder lists tasks and lays out their label blocks."""
        return sorted(tasks)

    def label_layout(self, tasks: list[str], groups: list[list[str]]) -> list[list[str]]:
        """Label blocks of one merged decoder: each block is the tasks that share it."""
        group_of = {t: tuple(g) for g in groups for t in g}
        blocks: list[list[str]] = []
        placed: dict[tuple, list[str]] = {}
        for task in self.ordered_tasks(tasks, groups):
            group = group_of.get(task)
            if group is None:
                blocks.append([task])
            elif group in placed:
                placed[group].append(task)
            else:
                placed[group] = [task]
                blocks.append(placed[group])
        return blocks

    def check_groups(self, groups: list[list[str]], tasks: list[str], maker: Maker) -> list:
        """Validate ``same_label_groups`` before merging heads; return the groups to use."""
        self.validate_groups(groups, tasks, maker)
        return groups

    def validate_groups(self, groups: list[list[str]], tasks: list[str], maker: Maker) -> None:
        """``same_label_groups`` must name tasks of the maker, each in one group only.

        Checked on every compile, also when heads are not merged.
        """
        seen: dict[str, int] = {}
        for i, group in enumerate(groups):
            for j, task in enumerate(group):
                key = ("merge_options", "same_label_groups", i, j)
                if task not in tasks:
                    raise maker.source.error(
                        key,
                        f"label group {i} names task '{task}', which no dataset of this "
                        f"maker declares (tasks: {', '.join(tasks)})",
                    )
                if task in seen and seen[task] != i:
                    raise maker.source.error(
                        key, f"task '{task}' is in two label groups ({seen[task]} and {i})"
                    )
                seen[task] = i

    def merged_name(self, class_path: str) -> str:
        return class_path.rsplit(".", 1)[-1]

    def offset_entry(self, task: str, offset: int, count: int) -> dict[str, Any]:
        return {"offset": offset, "num_outputs": count}

    # -- output --------------------------------------------------------------------------
    def finalize(self, run: dict) -> dict:
        return run

    def provenance(self, run: dict) -> list[tuple[str, Source, tuple, tuple]]:
        """Extra (label, source, source key, run key) contributions, for ``--explain``."""
        return []

    def extra_inputs(self) -> list[Source]:
        """Input files besides maker, base and datasets (hashed into the header)."""
        return []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def layer_args(task: str, decoder: list, index: int) -> dict:
    """The ``init_args`` mapping of one decoder layer ({} when absent); a layer that is not a
    mapping, or ``init_args`` that are not one, is a ``ConfigError`` at that key path."""
    layer = decoder[index]
    key = (*DECODERS, task, index)
    if not isinstance(layer, dict):
        raise ConfigError(
            f"decoder layer {index} of task '{task}' must be a mapping "
            f"(class_path, init_args), got {type(layer).__name__}",
            key=key,
        )
    args = layer.get("init_args")
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ConfigError(
            f"init_args of decoder layer {index} of task '{task}' must be a "
            f"mapping, got {type(args).__name__}",
            key=(*key, "init_args"),
        )
    return args


def _fill(run: dict, path: tuple, value: dict) -> dict:
    """Merge ``value`` into the mapping at ``path`` (creating it)."""
    from .tree import set_path

    current = get_path(run, path)
    if isinstance(current, dict) and current:
        value = deep_merge(current, value)
    return set_path(run, path, value)


def _first_difference(a: Any, b: Any, path: tuple) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return format_key((*path, key))
            found = _first_difference(a[key], b[key], (*path, key))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return format_key(path) + f" (lengths {len(a)} and {len(b)})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, (*path, i))
            if found:
                return found
        return None
    return None if a == b else format_key(path) if path else "<value>"
