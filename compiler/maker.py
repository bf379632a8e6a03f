"""The maker config: what it may contain, how it is checked, and its JSON Schema.

One declarative table (:data:`FIELDS`) drives both validation and ``--schema``, so the editor
schema and the checks can never disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean
from .finetune import SCHEMA as FINETUNE_SCHEMA
from .finetune import FinetuneFrom, load_finetune_from
from .sweep_schema import SCHEMA as SWEEP_SCHEMA
from .yamlio import Source, parse, read_source, resolve_path
from .yamlload import unknown_top_level_key

_PATH = {"type": "string", "minLength": 1}
_BOOL = {"type": "boolean"}
_GROUPS = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "description": "Tasks that share one block of labels in a merged head.",
}

#: key -> JSON Schema of its value (with a description for editors).
FIELDS: dict[str, dict[str, Any]] = {
    "base_path": {**_PATH, "description": "Base run config (relative to this file)."},
    "base_cfg": {**_PATH, "description": "Alias of base_path (upstream name)."},
    "dataset_cfgs": {
        "type": "array",
        "minItems": 1,
        "items": {
            "oneOf": [
                _PATH,
                {"type": "array", "items": _PATH, "minItems": 1},
            ]
        },
        "description": "One entry per dataset: a path, or a list of paths deep-merged in order.",
    },
    "output_path": {**_PATH, "description": "Where the run config goes (relative to this file)."},
    "substitutions": {
        "type": "object",
        "description": "Values for ${name} placeholders in the base and dataset configs.",
    },
    "local_overrides": {
        "type": "object",
        "description": "Merged into each dataset config before assembly.",
    },
    "global_overrides": {
        "type": "object",
        "description": "Merged over the assembled run config (beats local_overrides).",
    },
    "merge_options": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "merge_heads": {**_BOOL, "description": "Merge decoders whose heads share a class."},
            "merge_task_labels": {
                **_BOOL,
                "description": "Give merged heads the sum of the tasks' label counts.",
            },
            "same_label_groups": _GROUPS,
        },
    },
    "finetune_from": FINETUNE_SCHEMA,
    "sweep": SWEEP_SCHEMA,
}
MERGE_OPTIONS = tuple(FIELDS["merge_options"]["properties"])


def json_schema() -> dict[str, Any]:
    """JSON Schema of the maker format (unknown keys rejected), for editor completion."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mtl-toolkit maker config",
        "type": "object",
        "additionalProperties": False,
        "required": ["dataset_cfgs"],
        "oneOf": [{"required": ["base_path"]}, {"required": ["base_cfg"]}],
        "properties": FIELDS,
    }


class Maker:
    """A checked maker config with every path it names resolved against its own folder; the
    optional parts are set by :func:`load_maker` after the required ones."""

    def __init__(self, source: Source, base_path: Path, datasets: list[list[Path]]) -> None:
        self.source = source
        self.base_path = base_path
        self.datasets = datasets
        self.output_path: Path | None = None
        self.substitutions: dict[str, Any] = {}
        self.local_overrides: dict[str, Any] = {}
        self.global_overrides: dict[str, Any] = {}
        self.merge_heads = False
        self.merge_task_labels = False
        self.same_label_groups: list[list[str]] = []
        self.finetune_from: FinetuneFrom | None = None

    @property
    def path(self) -> Path:
        return self.source.path


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__ if value is not None else "empty"
    )


def _expect(src: Source, key: tuple, value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind) or (kind is str and not value):
        raise src.error(key, f"must be {what}, got {_type_name(value)}")
    if kind is str and "\0" in value:
        raise src.error(key, f"must be {what} without NUL bytes")


#: Makers larger than this have their top-level keys checked before they are built.
_PRESCAN_SIZE = 1 << 20


def _unknown(key: Any) -> str:
    return (
        f"unknown maker key '{key}'{did_you_mean(str(key), list(FIELDS))}; "
        f"allowed: {', '.join(FIELDS)}"
    )


def load_maker(path: Path | Source, schema: str = "1.2") -> Maker:
    """Load and check a maker config; every problem is a located ``ConfigError``.

    ``schema`` is how a maker file's numbers are read (YAML 1.2; "1.1" for the rslearn
    dialect). A ``Source`` is a maker already parsed (the Python API's maker dicts): its paths
    resolve against the folder of its ``path``.
    """
    if isinstance(path, Source):
        src = path
    else:
        src = read_source(path, "maker config")
        if len(src.text) > _PRESCAN_SIZE:  # refuse a wrong key before building a large file
            found = unknown_top_level_key(src.text, FIELDS)
            if found is not None:
                key, line = found
                raise ConfigError(_unknown(key), file=path, line=line, key=(key,))
        src.schema = schema
        src.doc = src.raw = parse(src.text, path, schema)
    path = src.path
    doc = src.doc
    if not isinstance(doc, dict):
        raise ConfigError(
            f"a maker config must be a mapping of keys (base_path, dataset_cfgs, ...), "
            f"got {_type_name(doc)}",
            file=path,
        )
    for key in doc:
        if key not in FIELDS:
            raise src.error((key,), _unknown(key))
    if "base_path" in doc and "base_cfg" in doc:
        raise src.error(("base_cfg",), "give either 'base_path' or its alias 'base_cfg', not both")
    base_key = "base_path" if "base_path" in doc else "base_cfg"
    if base_key not in doc:
        raise ConfigError("the maker names no base config ('base_path')", file=path)
    folder = path.parent
    _expect(src, (base_key,), doc[base_key], str, "a path (string)")

    datasets = doc.get("dataset_cfgs")
    if datasets is None or datasets == []:
        raise src.error(
            ("dataset_cfgs",), "'dataset_cfgs' is empty: list at least one dataset config"
        )
    _expect(src, ("dataset_cfgs",), datasets, list, "a list of paths")
    resolved: list[list[Path]] = []
    for i, entry in enumerate(datasets):
        files = entry if isinstance(entry, list) else [entry]
        if not files:
            raise src.error(("dataset_cfgs", i), "an empty list is not a dataset")
        for j, item in enumerate(files):
            key = ("dataset_cfgs", i, j) if isinstance(entry, list) else ("dataset_cfgs", i)
            _expect(src, key, item, str, "a path (string) or a list of paths")
        resolved.append([resolve_path(folder, f) for f in files])

    maker = Maker(source=src, base_path=resolve_path(folder, doc[base_key]), datasets=resolved)
    if doc.get("output_path") is not None:
        _expect(src, ("output_path",), doc["output_path"], str, "a path (string)")
        maker.output_path = resolve_path(folder, doc["output_path"])
    for name in ("substitutions", "local_overrides", "global_overrides"):
        value = doc.get(name)
        if value is not None:
            _expect(src, (name,), value, dict, "a mapping")
            setattr(maker, name, value)
    _load_merge_options(src, doc.get("merge_options"), maker)
    if doc.get("finetune_from") is not None:
        maker.finetune_from = load_finetune_from(src, doc["finetune_from"])
    return maker


def _load_merge_options(src: Source, options: Any, maker: Maker) -> None:
    if options is None:
        return
    _expect(src, ("merge_options",), options, dict, "a mapping")
    for key, value in options.items():
        where = ("merge_options", key)
        if key not in MERGE_OPTIONS:
            raise src.error(
                where,
                f"unknown merge option '{key}'{did_you_mean(str(key), MERGE_OPTIONS)}; "
                f"allowed: {', '.join(MERGE_OPTIONS)}",
            )
        if key == "same_label_groups":
            groups = [] if value is None else value
            _expect(src, where, groups, list, "a list of task-name lists")
            for i, group in enumerate(groups):
                _expect(src, (*where, i), group, list, "a list of task names")
                if not group:
                    raise src.error((*where, i), "a label group must name at least one task")
                for j, task in enumerate(group):
                    _expect(src, (*where, i, j), task, str, "a task name")
            maker.same_label_groups = groups
        else:
            _expect(src, where, value, bool, "true or false")
            setattr(maker, key, value)
