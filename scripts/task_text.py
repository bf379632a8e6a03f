"""Short text summaries of tasks, built from description files or from configs.

A task embedding should say *what the task is* (its type, label names, input kind), never how
a run is wired (file paths, worker counts, batch sizes), so two configs of the same task give
the same text. Everything here is pure Python (no torch) so the summaries can be inspected
and tested without loading a model.

Sources understood (see :func:`load_summaries`):

* a task-descriptions YAML: ``task: free text`` or ``task: {type, classes, inputs, domain,
  description}``;
* a maker config (``dataset_cfgs``), through the compiler's :func:`compiler.maker.load_maker`;
  each dataset's files are deep-merged in order, as the compiler does;
* a dataset config or a compiled run config, native (tasks under ``model.init_args.tasks``)
  or rslearn-style (tasks under ``data.init_args.task.init_args.tasks``, or
  ``model.init_args.task.init_args.tasks`` in an rslearn run config);
* a folder of such dataset configs (files without tasks are skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.errors import ConfigError, did_you_mean
from compiler.keypaths import DATA_ARGS, DECODERS, MODULE_ARGS, TASKS
from compiler.maker import load_maker
from compiler.merge import deep_merge
from compiler.tree import get_path
from compiler.yamlio import parse, read_source

#: Fields a task description may give, in the order they are written into the summary.
DESCRIPTION_FIELDS = ("type", "classes", "inputs", "domain", "description")
#: Summary lines: field key -> label. ``target`` only comes from configs.
_LABELS = {
    "type": "Type",
    "classes": "Classes",
    "inputs": "Inputs",
    "target": "Target",
    "domain": "Domain",
    "description": "Description",
}
#: Longest label list written out in full; longer ones end in "(+N more)".
MAX_CLASSES = 40

# Where configs keep their task definitions (native, rslearn dataset config, rslearn run).
_TASK_PLACES = (
    TASKS,
    (*DATA_ARGS, "task", "init_args", "tasks"),
    (*MODULE_ARGS, "task", "init_args", "tasks"),
)
# Data-module arguments that describe the data itself; the rest (paths, workers, splits,
# seeds, batch sizes) describe a run and are left out on purpose.
_DATA_KEYS = ("dataset", "subset", "input_shape", "inputs")
# rslearn-style placeholders such as {PATCH_SIZE} or {256/PATCH_SIZE} (not ${name}).
_UPPER_PLACEHOLDER = re.compile(r"(?<!\$)\{(?:[0-9]+/)?[A-Z][A-Z0-9_]*\}")
# Task class-name fragments -> task type, most specific first.
_TYPE_WORDS = (
    ("multilabel", "multi-label classification"),
    ("perposition", "per-position classification"),
    ("segment", "segmentation"),
    ("detect", "detection"),
    ("regress", "regression"),
    ("classif", "classification"),
)

SOURCE_KINDS = "a task-descriptions YAML, a maker config, a dataset config or a folder of them"


@dataclass(frozen=True)
class TaskSummary:
    """One task: its name, the summary fields (in order) and the file it came from."""

    name: str
    fields: tuple[tuple[str, str], ...]
    origin: Path

    @property
    def text(self) -> str:
        return render(self.name, dict(self.fields))

    @property
    def anchor(self) -> str:
        """This summary with every value blanked (``Task: . Type: . Classes: .``): the
        boilerplate it shares with other tasks, removed by ``--anchor``."""
        return render("", {key: "" for key, _ in self.fields})


def render(name: str, fields: dict[str, str]) -> str:
    """``Task: NAME. Type: ... . Classes: ...`` with the known fields in a fixed order."""
    parts = [f"Task: {name}."]
    parts += [_sentence(f"{label}: {fields[k]}") for k, label in _LABELS.items() if k in fields]
    return " ".join(parts)


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def _words(class_name: str) -> str:
    """``MarineInfraTask`` -> ``marine infra``."""
    short = class_name.rsplit(".", 1)[-1].removesuffix("Task")
    return " ".join(w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", short))


def task_type(class_path: str, init_args: dict[str, Any]) -> str:
    """The kind of task a task class stands for, from its name (or detection's box_size)."""
    short = class_path.rsplit(".", 1)[-1].lower().replace("_", "")
    for fragment, kind in _TYPE_WORDS:
        if fragment in short:
            return kind
    if "box_size" in init_args:
        return "detection"
    return _words(class_path) or "task"


def _join(values: list[Any], limit: int | None = None) -> str:
    shown = values if limit is None else values[:limit]
    text = ", ".join(str(v) for v in shown)
    if len(values) > len(shown):
        text += f" (+{len(values) - len(shown)} more)"
    return text


def _classes(args: dict[str, Any], head: dict[str, Any] | None) -> str | None:
    for key in ("class_names", "classes", "label_names"):
        if isinstance(args.get(key), list) and args[key]:
            return _join(args[key], MAX_CLASSES)
    counts = [args.get(k) for k in ("num_classes", "num_labels")]
    counts.append(get_path(head, ("init_args", "num_outputs")) if isinstance(head, dict) else None)
    for count in counts:
        if isinstance(count, int) and not isinstance(count, bool):
            return f"{count} classes"
    return None


def _rslearn_inputs(inputs: dict[str, Any]) -> str | None:
    """``raster landsat (11 bands); raster sentinel2 (12 bands, 4 time steps)``: layers, not
    paths. Groups are sorted so a dataset config and its compiled run config read the same."""
    groups: dict[tuple[str, str], list[int]] = {}
    for name, spec in inputs.items():
        if not isinstance(spec, dict) or spec.get("is_target") or name == "targets":
            continue
        layers = spec.get("layers") or [name]
        layer = str(layers[0]).split(".", 1)[0]
        bands = spec.get("bands")
        key = (str(spec.get("data_type", "input")), layer)
        groups.setdefault(key, []).append(len(bands) if isinstance(bands, list) else 0)
    parts = []
    for (kind, layer), bands in sorted(groups.items()):
        notes = []
        if bands[0]:
            notes.append(f"{bands[0]} band{'s' if bands[0] != 1 else ''}")
        if len(bands) > 1:
            notes.append(f"{len(bands)} time steps")
        parts.append(f"{kind} {layer}" + (f" ({', '.join(notes)})" if notes else ""))
    return "; ".join(parts) or None


def _native_inputs(data: dict[str, Any]) -> str | None:
    """``sklearn data: dataset digits, subset 0, 1, 2``: the data module and what it reads."""
    class_path = data.get("class_path")
    args = data.get("init_args") if isinstance(data.get("init_args"), dict) else {}
    kind = _words(str(class_path).removesuffix("Module").removesuffix("Data")) if class_path else ""
    details = []
    for key in _DATA_KEYS:
        value = args.get(key)
        if value is None or isinstance(value, dict):
            continue
        details.append(f"{key} {_join(value) if isinstance(value, list) else value}")
    text = f"{kind} data" if kind else "data"
    return f"{text}: {', '.join(details)}" if details else (text if kind else None)


def _data_for(doc: dict[str, Any], task: str) -> dict[str, Any]:
    """The data module that serves ``task`` (a run config keeps one per dataset)."""
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    modules = get_path(doc, (*DATA_ARGS, "data_modules"))
    if not isinstance(modules, dict):
        return data
    owners = get_path(doc, (*DATA_ARGS, "dataset_tasks"))
    for dataset, tasks in owners.items() if isinstance(owners, dict) else ():
        if isinstance(tasks, list) and task in tasks and isinstance(modules.get(dataset), dict):
            return modules[dataset]
    return modules[task] if isinstance(modules.get(task), dict) else {}


def _task_fields(doc: dict[str, Any], task: str, spec: Any) -> tuple[tuple[str, str], ...]:
    spec = spec if isinstance(spec, dict) else {}
    args = spec.get("init_args") if isinstance(spec.get("init_args"), dict) else {}
    decoder = get_path(doc, (*DECODERS, task))
    head = decoder[-1] if isinstance(decoder, list) and decoder else None
    data = _data_for(doc, task)
    data_args = data.get("init_args") if isinstance(data.get("init_args"), dict) else {}
    fields = {"type": task_type(str(spec.get("class_path", "")), args)}
    classes = _classes(args, head)
    if classes:
        fields["classes"] = classes
    if isinstance(data_args.get("inputs"), dict):
        inputs = _rslearn_inputs(data_args["inputs"])
    else:
        inputs = _native_inputs(data)
    if inputs:
        fields["inputs"] = inputs
    targets = data_args.get("targets")
    target = targets.get(task) if isinstance(targets, dict) else args.get("property_name")
    if isinstance(target, (str, int)) and not isinstance(target, bool):
        fields["target"] = str(target)
    return tuple(fields.items())


def config_tasks(doc: Any) -> dict[str, Any] | None:
    """Task name -> task definition of a dataset/run config, or None if it holds none."""
    if not isinstance(doc, dict):
        return None
    for place in _TASK_PLACES:
        tasks = get_path(doc, place)
        if isinstance(tasks, dict) and tasks:
            return tasks
    return None


def summarize_config(doc: dict[str, Any], origin: Path) -> list[TaskSummary]:
    """Summaries of every task a dataset (or run) config defines."""
    tasks = config_tasks(doc) or {}
    return [TaskSummary(str(t), _task_fields(doc, t, spec), origin) for t, spec in tasks.items()]


def _field_text(value: Any, src: Path, key: tuple) -> str:
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return _join(value)
    if value is None or isinstance(value, (dict, list)):
        raise ConfigError(
            "must be text (or, for classes/inputs, a list of names)", file=src, key=key
        )
    return str(value).strip()


def summarize_descriptions(doc: dict[Any, Any], src: Path) -> list[TaskSummary]:
    """Summaries from a descriptions file: ``task: text`` or ``task: {field: value}``."""
    out = []
    for task, entry in doc.items():
        if isinstance(entry, str):
            entry = {"description": entry}
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(
                "a task description must be text or a mapping of fields "
                f"({', '.join(DESCRIPTION_FIELDS)})",
                file=src,
                key=(task,),
            )
        fields = {}
        for key, value in entry.items():
            if key not in DESCRIPTION_FIELDS:
                raise ConfigError(
                    f"unknown description field '{key}'{did_you_mean(str(key), DESCRIPTION_FIELDS)}"
                    f"; allowed: {', '.join(DESCRIPTION_FIELDS)}",
                    file=src,
                    key=(task, key),
                )
            fields[key] = _field_text(value, src, (task, key))
        ordered = tuple((k, fields[k]) for k in _LABELS if fields.get(k))
        if not ordered:
            raise ConfigError("the task description is empty", file=src, key=(task,))
        out.append(TaskSummary(str(task), ordered, src))
    return out


def read_yaml(path: Path, what: str = "file") -> Any:
    """Parse a YAML file safely; if it only parses with rslearn ``{PATCH_SIZE}``-style
    placeholders replaced by 0, read it that way (their values never reach a summary)."""
    src = read_source(path, what)
    try:
        return parse(src.text, path)
    except ConfigError as first:
        try:
            return parse(_UPPER_PLACEHOLDER.sub("0", src.text), path)
        except ConfigError:
            raise first from None


def _is_descriptions(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and bool(doc)
        and all(isinstance(v, (str, dict)) for v in doc.values())
        and not {"model", "data", "trainer", "dataset_cfgs"} & set(doc)
    )


def _merged_dataset(files: list[Path], overrides: dict[str, Any]) -> dict[str, Any]:
    doc: Any = {}
    for path in files:
        part = read_yaml(path, "dataset config")
        if not isinstance(part, dict):
            raise ConfigError("a dataset config must be a mapping", file=path)
        doc = deep_merge(doc, part)
    return deep_merge(doc, overrides) if overrides else doc


def _from_maker(path: Path) -> list[TaskSummary]:
    maker = load_maker(path)
    out = []
    for files in maker.datasets:
        summaries = summarize_config(_merged_dataset(files, maker.local_overrides), files[-1])
        if not summaries:
            raise ConfigError(
                "this dataset defines no tasks (expected model.init_args.tasks or "
                "data.init_args.task.init_args.tasks)",
                file=" + ".join(map(str, files)),
            )
        out += summaries
    return out


def _from_folder(folder: Path) -> tuple[list[TaskSummary], list[Path]]:
    """Tasks of every dataset config in a folder, and the YAML files that held none."""
    out, skipped = [], []
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        doc = read_yaml(path)
        summaries = summarize_config(doc, path) if isinstance(doc, dict) else []
        if summaries:
            out += summaries
        else:
            skipped.append(path)
    if not out:
        raise ConfigError(
            f"no dataset config in this folder defines tasks ({len(files)} YAML file(s) read; "
            "expected tasks under model.init_args.tasks or data.init_args.task.init_args.tasks)",
            file=folder,
        )
    return out, skipped


def _unique(summaries: list[TaskSummary]) -> list[TaskSummary]:
    """Sorted by task name; a task defined twice must read the same both times."""
    seen: dict[str, TaskSummary] = {}
    for s in summaries:
        other = seen.setdefault(s.name, s)
        if other.text != s.text:
            raise ConfigError(
                f"task '{s.name}' is defined differently in {other.origin} and {s.origin}",
                file=s.origin,
            )
    return [seen[name] for name in sorted(seen)]


def load_summaries(source: Path) -> tuple[str, list[TaskSummary], list[Path]]:
    """(kind, summaries sorted by task name, skipped files) for any supported SOURCE.

    ``kind`` is one of ``descriptions``, ``maker``, ``dataset config``, ``run config``,
    ``folder``. Anything else is a ``ConfigError`` naming the file.
    """
    if source.is_dir():
        summaries, skipped = _from_folder(source)
        return "folder", _unique(summaries), skipped
    doc = read_yaml(source, "source")
    if isinstance(doc, dict) and "dataset_cfgs" in doc:
        return "maker", _unique(_from_maker(source)), []
    if config_tasks(doc):
        kind = "run config" if get_path(doc, (*DATA_ARGS, "data_modules")) else "dataset config"
        return kind, _unique(summarize_config(doc, source)), []
    if _is_descriptions(doc):
        return "descriptions", _unique(summarize_descriptions(doc, source)), []
    if isinstance(doc, dict) and {"model", "data"} & set(doc):
        raise ConfigError(
            "this config defines no tasks (expected them under model.init_args.tasks, or "
            "data.init_args.task.init_args.tasks for rslearn-style configs)",
            file=source,
        )
    raise ConfigError(
        f"cannot tell what this is: expected {SOURCE_KINDS} (task descriptions map each task "
        "name to text or to fields such as type, classes, inputs, description)",
        file=source,
    )
