"""The ``rslearn`` dialect: makers written for upstream's ``make_multidataset_config.py``.

Upstream is rslearn_projects' joint fine-tuning compiler (Helios). This module holds only where
its semantics differ from the native dialect (:class:`compiler.dialect.Dialect`); the pipeline,
merging, errors, ``--explain`` and the output format are the core's.

Differences from native:

- **Substitution** is textual, on the raw text of the base and dataset files before parsing,
  with a fixed set of placeholders (:data:`PLACEHOLDERS`), replaced one after the other in
  upstream's order. ``${...}`` is not special. The maker's ``local_overrides`` and
  ``global_overrides`` are not substituted: their placeholders reach the run config verbatim.
- **One task per dataset**: a dataset config declares exactly one decoder, whose name is the
  task (and dataset) name. Its whole ``data`` block (``batch_size`` included) becomes
  ``data.init_args.data_modules[task]``, ``batch_size`` is also copied to
  ``data.init_args.batch_sizes[task]``, and the ``init_args`` of its ``data.init_args.task``
  are merged key by key into ``model.init_args.task`` (a ``MultiTask``). Everything else in a
  dataset config (its ``trainer``, its model's encoder, lr, ...) is dropped, as upstream does.
- **Output counts** come from the dataset-info file named by the base's
  ``all_dataset_info_path`` (relative to the base; the key is dropped from the run config): a
  task's count is its ``num_outputs``, written to the key ``num_outputs_key`` of its decoder's
  *first* layer; ``task_label_offsets`` entries carry its ``outputs_key``.
- **Label layout**: decoders keep dataset order; a merged decoder's label blocks are each
  ``same_label_groups`` entry first (in the order listed), then the remaining tasks in dataset
  order. Group members that the maker does not include are ignored. The merged decoder is the
  *last* task's decoder (upstream keeps the last one it sees), and heads merge after
  ``global_overrides`` (upstream's order).

Where upstream crashes or misbehaves, this dialect does the following instead (each is also
listed in the README, "Coming from rslearn"):

- ``merge_heads`` without ``merge_task_labels`` (upstream: ``NameError``) gets the native
  semantics: the tasks of a head share one output layer at offset 0, which needs equal output
  counts, else a clear error.
- a label group whose last listed member is absent from the maker (upstream never adds the
  group's block size, so later blocks overlap it) gets its block counted once, as intended.
- a task missing from the dataset-info file (upstream: ``KeyError``) is a clear error naming
  the task and the file; so is an entry without ``num_outputs`` / ``num_outputs_key`` /
  ``outputs_key``, and tasks of one head with different ``num_outputs_key``.
- a placeholder whose value is missing (upstream: ``KeyError`` even when no file uses it) is
  an error only when a file uses it, reported as ``file:line`` together with all the others.
- decoders to merge that differ beyond their output count: upstream silently keeps the last
  one; this dialect does the same but warns.
- errors instead of a silently odd result: a task declared by two datasets (upstream keeps the
  last), a task in two label groups, group members with different output counts (upstream
  sizes the block by the last member), two head classes with the same class name in different
  modules (upstream merges them), task ``init_args`` values other than mappings that differ
  between datasets (upstream crashes on any non-mapping); a dataset without its one decoder,
  ``batch_size`` or task definitions, a missing dataset-info file (upstream: crashes).
- merging: the core's deep merge also resolves ``key+`` in files merged onto nothing (the base,
  the first file of a dataset) and ``~key`` deletions, and replaces a non-mapping by a mapping
  where upstream crashes; upstream leaves such keys literally (the corpus configs have none).
- paths: ``all_dataset_info_path`` is relative to the base config and ``output_path`` to the
  maker (upstream: the working directory); the dataset-info file is only read when heads
  merge. The output keeps insertion order and starts with comment lines (hashes of the
  inputs); as parsed YAML it equals upstream's sorted dump.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .dialect import DatasetParts, Dialect, Placement, layer_args
from .errors import ConfigError, format_key
from .keypaths import DATA_ARGS, DECODERS, MODEL_ARGS, MODULE_ARGS
from .maker import Maker
from .tree import get_path, set_path
from .yamlio import Source, load_source, max_file_size, parse, resolve_path

#: Upstream's placeholders, in the order it replaces them: (placeholder, substitution name,
#: divisor numerator or None).
PLACEHOLDERS: tuple[tuple[str, str, int | None], ...] = (
    ("{CHECKPOINT_PATH}", "helios_checkpoint_path", None),
    ("{PATCH_SIZE}", "patch_size", None),
    ("{256/PATCH_SIZE}", "patch_size", 256),
    ("{128/PATCH_SIZE}", "patch_size", 128),
    ("{ENCODER_EMBEDDING_SIZE}", "encoder_embedding_size", None),
)
MULTI_TASK = "rslearn.train.tasks.multi_task.MultiTask"
INFO_KEY = "all_dataset_info_path"
TASK_SRC = (*DATA_ARGS, "task", "init_args")
TASK_RUN = (*MODULE_ARGS, "task")
INFO_FIELDS = ("num_outputs", "num_outputs_key", "outputs_key")


def substitute_text(text: str, values: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Upstream's textual substitution; returns the text and (placeholder, reason) problems.

    Placeholders are replaced in upstream's order, each over the whole text (so a value that
    itself contains a later placeholder is substituted again, as upstream does). A placeholder
    whose value is missing or unusable is left in place and reported.
    """
    problems: list[tuple[str, str]] = []
    if "{" not in text:
        return text, problems
    for placeholder, name, numerator in PLACEHOLDERS:
        if placeholder not in text:
            continue
        if name not in values:
            problems.append((placeholder, f"no value (set substitutions.{name} in the maker)"))
            continue
        value = values[name]
        if numerator is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append((placeholder, f"{name} is {value!r}; it must be a number"))
                continue
            if value == 0:
                problems.append((placeholder, f"{name} is 0 (division by zero)"))
                continue
            value = numerator // value
        value = str(value)
        grown = len(text) + text.count(placeholder) * (len(value) - len(placeholder))
        if grown > max_file_size():  # checked before the text is built
            problems.append(
                (
                    placeholder,
                    f"{name} used here would make the file over the size "
                    f"cap of {max_file_size():,} bytes (--max-file-size)",
                )
            )
            continue
        text = text.replace(placeholder, value)
    return text, problems


def _line_of(text: str, needle: str) -> int | None:
    at = text.find(needle)
    return None if at < 0 else text.count("\n", 0, at) + 1


class RslearnDialect(Dialect):
    """Makers for upstream's ``make_multidataset_config.py`` (see the module docstring)."""

    name: ClassVar[str] = "rslearn"
    merge_heads_after_overrides: ClassVar[bool] = True
    #: Numbers are read as PyYAML reads them (YAML 1.1), as upstream does.
    schema: ClassVar[str] = "1.1"

    def __init__(self) -> None:
        super().__init__()
        self._base: Source | None = None
        self._info: Source | None = None
        self._owners: dict[str, DatasetParts] = {}

    # -- inputs --------------------------------------------------------------------------
    def load_input(self, path: Path, values: dict[str, Any], what: str) -> Source:
        """Read a base or dataset file, substitute its text, then parse it."""
        src = self.read(path, what)
        text, problems = substitute_text(src.text, values)
        for placeholder, reason in problems:
            self.problems.append((path, placeholder, _line_of(src.text, placeholder), reason))
        if len(text) > max_file_size():
            raise ConfigError(
                f"the {what} after substitution is over the size cap of "
                f"{max_file_size():,} bytes (--max-file-size)",
                file=path,
            )
        src.text = text
        src.schema = self.schema
        src.doc = src.raw = parse(text, path, self.schema)
        if what == "base config":
            self._base = src
        return src

    def overrides(self, maker: Maker, name: str, values: dict[str, Any]) -> dict:
        """Upstream never substitutes the maker's overrides: placeholders stay verbatim."""
        return getattr(maker, name)

    # -- datasets ------------------------------------------------------------------------
    def dataset_parts(self, config: Any, sources: list[Source]) -> DatasetParts:
        """One task per dataset: its decoder, data module, batch size and task init_args."""
        first = sources[0]
        if not isinstance(config, dict):
            raise ConfigError(
                "a dataset config must be a mapping with 'model' and 'data'", file=first.path
            )
        parts = DatasetParts("", sources)
        decoders = get_path(config, DECODERS)
        if not isinstance(decoders, dict) or len(decoders) != 1:
            found = f"{len(decoders)} decoders" if isinstance(decoders, dict) else "none"
            raise parts.error(
                f"an rslearn dataset config declares exactly one task: one decoder under "
                f"'{format_key(DECODERS)}' (found {found})",
                DECODERS,
            )
        ((task, decoder),) = decoders.items()
        if not isinstance(task, str) or not task:
            raise parts.error("the task (decoder) name must be a non-empty string", DECODERS)
        if not isinstance(decoder, list) or not decoder:
            raise parts.error(
                f"decoder of task '{task}' must be a non-empty list of modules", (*DECODERS, task)
            )
        first_layer = decoder[0]
        if not isinstance(first_layer, dict) or not isinstance(
            first_layer.get("init_args") or {}, dict
        ):
            raise parts.error(
                f"the first layer of task '{task}' must be a mapping with an init_args "
                "mapping (merged heads write their output count there)",
                (*DECODERS, task, 0),
            )
        data = config.get("data")
        init = data.get("init_args") if isinstance(data, dict) else None
        if not isinstance(init, dict):
            raise parts.error(
                "the dataset config has no 'data.init_args' mapping (its data module)", ("data",)
            )
        if "batch_size" not in init:
            raise parts.error(
                f"task '{task}' has no data.init_args.batch_size (upstream needs "
                "it for data.init_args.batch_sizes)",
                (*DATA_ARGS,),
            )
        task_defs = get_path(config, TASK_SRC)
        if not isinstance(task_defs, dict):
            raise parts.error(
                f"task '{task}' has no '{format_key(TASK_SRC)}' mapping (its task definitions, "
                "merged into model.init_args.task)",
                (*DATA_ARGS, "task"),
            )
        if task in self._owners:
            other = self._owners[task].sources[0].path
            raise parts.error(
                f"task '{task}' is declared twice: by {other} and by {first.path}; a task (the "
                "name of a dataset's decoder) can be listed once per maker",
                (*DECODERS, task),
            )
        parts.name = task
        parts.tasks = [task]
        parts.decoders = {task: decoder}
        parts.task_defs = task_defs
        parts.data_module = data
        parts.batch_size = init["batch_size"]
        self._owners[task] = parts
        return parts

    def placements(self, parts: DatasetParts) -> list[Placement]:
        task = parts.name
        out = [
            Placement((*DECODERS, task), (*DECODERS, task)),
            Placement(("data",), (*DATA_ARGS, "data_modules", task)),
            Placement((*DATA_ARGS, "batch_size"), (*DATA_ARGS, "batch_sizes", task)),
        ]
        out += [Placement((*TASK_SRC, k), (*TASK_RUN, "init_args", k)) for k in parts.task_defs]
        return out

    def assemble(self, base: dict, datasets: list[DatasetParts]) -> dict:
        """Upstream replaces data_modules, batch_sizes, decoders and the task outright."""
        run = {k: v for k, v in base.items() if k != INFO_KEY}
        modules: dict[str, Any] = {}
        decoders: dict[str, Any] = {}
        batch_sizes: dict[str, Any] = {}
        task_args: dict[str, Any] = {}
        for ds in datasets:
            modules[ds.name] = ds.data_module
            decoders.update(ds.decoders)
            batch_sizes[ds.name] = ds.batch_size
            for key, value in ds.task_defs.items():
                task_args[key] = _merge_task_arg(task_args, key, value, ds)
        for path, value in (
            ((*DATA_ARGS, "data_modules"), modules),
            (DECODERS, decoders),
            (TASK_RUN, {"class_path": MULTI_TASK, "init_args": task_args}),
            ((*DATA_ARGS, "batch_sizes"), batch_sizes),
        ):
            try:
                run = set_path(run, path, value)
            except KeyError:
                src = self._base
                raise ConfigError(
                    f"cannot place '{format_key(path)}': a key on the way is not a mapping "
                    "in the base config",
                    file=src.path if src else None,
                ) from None
        return run

    # -- label merging -------------------------------------------------------------------
    def num_outputs(self, task: str, decoder: list) -> Any:
        return self._entry(task)["num_outputs"]

    def with_num_outputs(self, task: str, decoder: list, count: int) -> list:
        init = layer_args(task, decoder, 0)
        key = self._entry(task)["num_outputs_key"]
        return [{**decoder[0], "init_args": {**init, key: count}}, *decoder[1:]]

    def check_head(self, class_path: str, tasks: list[str]) -> None:
        keys = {t: self._entry(t)["num_outputs_key"] for t in tasks}
        if len(set(keys.values())) > 1:
            detail = ", ".join(f"{t}: {k}" for t, k in keys.items())
            raise ConfigError(
                f"tasks merged into head {class_path} have different num_outputs_key ({detail}); "
                "one merged head has one output-count key",
                file=self._info.path if self._info else None,
            )

    def head_template(self, ordered: list[str]) -> str:
        """Upstream keeps the decoder of the last task (in dataset order) of each head."""
        return ordered[-1]

    def decoders_differ(self, error: ConfigError) -> None:
        self.warn(f"{error}; like upstream, the decoder of the head's last task is used")

    def ordered_tasks(self, tasks: list[str], groups: list[list[str]]) -> list[str]:
        """Dataset order (upstream's ``decoder_to_target``)."""
        return list(tasks)

    def label_layout(self, tasks: list[str], groups: list[list[str]]) -> list[list[str]]:
        """Groups first (as listed, present members only), then the rest in dataset order.

        Each group present in this head gets exactly one block, also when its last listed
        member is absent (upstream then forgets to count the block: a fixed bug).
        """
        present = set(tasks)
        blocks: list[list[str]] = []
        placed: set[str] = set()
        for group in groups:
            members = [t for t in dict.fromkeys(group) if t in present]
            if members:
                blocks.append(members)
                placed.update(members)
        blocks += [[t] for t in tasks if t not in placed]
        return blocks

    def check_groups(self, groups: list[list[str]], tasks: list[str], maker: Maker) -> list:
        """Called first when heads merge, so the dataset-info file is loaded here: problems
        with the file itself are reported at the base config that names it."""
        self._info_source()
        self.validate_groups(groups, tasks, maker)
        return groups

    def validate_groups(self, groups: list[list[str]], tasks: list[str], maker: Maker) -> None:
        """Group members the maker does not include are ignored (as upstream); a task in two
        groups is not."""
        seen: dict[str, int] = {}
        known = set(tasks)
        for i, group in enumerate(groups):
            for j, task in enumerate(group):
                if task not in known:
                    continue
                if task in seen and seen[task] != i:
                    key = ("merge_options", "same_label_groups", i, j)
                    raise maker.source.error(
                        key, f"task '{task}' is in two label groups ({seen[task]} and {i})"
                    )
                seen[task] = i

    def offset_entry(self, task: str, offset: int, count: int) -> dict[str, Any]:
        return {
            "offset": offset,
            "outputs_key": self._entry(task)["outputs_key"],
            "num_outputs": count,
        }

    # -- output --------------------------------------------------------------------------
    def provenance(self, run: dict) -> list[tuple[str, Source, tuple, tuple]]:
        """Label counts and outputs keys of merged heads come from the dataset-info file."""
        src = self._info
        targets = get_path(run, (*MODEL_ARGS, "decoder_to_target"))
        if src is None or not isinstance(targets, dict):
            return []
        out = []
        for tasks in targets.values():
            for task in tasks if isinstance(tasks, list) else ():
                key = self._entry(task)["num_outputs_key"]
                out.append(
                    (
                        "dataset info",
                        src,
                        (task, "num_outputs"),
                        (*DECODERS, task, 0, "init_args", key),
                    )
                )
                out.append(
                    ("dataset info", src, (task,), (*MODEL_ARGS, "task_label_offsets", task))
                )
        return out

    def extra_inputs(self) -> list[Source]:
        return [self._info] if self._info is not None else []

    # -- the dataset-info file -----------------------------------------------------------
    def _info_source(self) -> Source:
        """The dataset-info file, loaded on first use (only merging heads needs it)."""
        if self._info is not None:
            return self._info
        base = self._base
        if base is None:  # pragma: no cover - the core always loads the base first
            raise ConfigError("no base config loaded")
        name = base.doc.get(INFO_KEY) if isinstance(base.doc, dict) else None
        where = {"file": base.path, "line": base.line_of((INFO_KEY,))}
        if name is None:
            raise ConfigError(
                f"merge_heads needs output counts from a dataset-info file, but the base config "
                f"names none: add '{INFO_KEY}: PATH' (relative to the base config)",
                file=base.path,
            )
        if not isinstance(name, str) or not name or "\0" in name:
            raise ConfigError(f"'{INFO_KEY}' must be a path (string, without NUL)", **where)
        path = resolve_path(base.path.parent, name)
        try:
            src = load_source(path, "dataset-info file", self.schema)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (named by '{INFO_KEY}')", **where) from None
        if not isinstance(src.doc, dict):
            raise ConfigError(
                "the dataset-info file must map task names to "
                "{num_outputs, num_outputs_key, outputs_key}",
                file=path,
            )
        self._info = src
        return src

    def _entry(self, task: str) -> dict[str, Any]:
        src = self._info_source()
        entry = src.doc.get(task)
        if entry is None:
            raise ConfigError(
                f"task '{task}' is missing from the dataset-info file {src.path} (named by "
                f"{INFO_KEY} in the base config); add its num_outputs, num_outputs_key and "
                "outputs_key there"
            )
        missing = [k for k in INFO_FIELDS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ConfigError(
                f"task '{task}' in the dataset-info file {src.path} lacks {', '.join(missing)}",
            )
        if not isinstance(entry["num_outputs_key"], str) or not entry["num_outputs_key"]:
            raise ConfigError(
                f"task '{task}' in the dataset-info file {src.path}: num_outputs_key must be "
                "a key name (string)",
            )
        return entry


def _merge_task_arg(args: dict[str, Any], key: Any, value: Any, ds: DatasetParts) -> Any:
    """Upstream's key-by-key merge of task init_args: mappings are updated, one level deep.

    Upstream crashes on anything but mappings met twice; here equal values are kept and
    different ones are a clear error.
    """
    if key not in args:
        return value
    current = args[key]
    if isinstance(current, dict) and isinstance(value, dict):
        return {**current, **value}
    if current == value:
        return current
    raise ds.error(
        f"'{key}' of the task definitions is set by several datasets with different values "
        f"that cannot be merged key by key ({current!r} and {value!r})",
        (*TASK_SRC, key),
    )


__all__ = ["PLACEHOLDERS", "RslearnDialect", "substitute_text"]
