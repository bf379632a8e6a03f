"""Studies: a maker's ``sweep:`` section, expanded into one run config per combination.

``mtl-make-config maker.yaml --sweep -o studies/NAME`` crosses task groups (an explicit list,
``all``, ``leave_one_out``, ``pairs``, ``singles``), a ``set:`` grid of ``--set`` keys or
substitutions and ``seeds:``. Every combination is compiled before anything is written, so one
bad combination leaves nothing behind. Identical combinations (same datasets, values and seed;
or the same run config) are kept once. The study folder holds ``configs/<run>.yaml`` per
combination and ``study.yaml``, the manifest ``mtl-study`` launches and reports from.

A group compiles like ``--single-task`` does for one dataset: the maker's base,
substitutions and overrides, with overrides aimed at absent tasks or datasets dropped, so
every group is measured under the same rules as its baselines.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, did_you_mean, format_key
from .sweep_schema import SCHEMA
from .tree import get_path, parse_key, set_dotted

if TYPE_CHECKING:
    from .build import Compiled
    from .yamlio import Source

MANIFEST = "study.yaml"
CONFIGS = "configs"
RUNS = "runs"
#: Most combinations one sweep may expand to (bounds the cost of a mistyped grid).
MAX_RUNS = 2000
_MAX_NAME = 120
_GROUP_FLAGS = ("all", "leave_one_out", "pairs", "singles")

KEYS = tuple(SCHEMA["properties"])


class Group:
    """Datasets trained together (indices in maker order) and the axes that asked for them."""

    def __init__(self, indices: tuple[int, ...], kinds: list[str], key: tuple) -> None:
        self.indices = indices
        self.kinds = kinds
        self.key = key  # where in the maker it was asked for (for error lines)


class Run:
    """One combination of the study, compiled."""

    def __init__(
        self,
        name: str,
        group: Group,
        values: dict[str, Any],
        seed: int | None,
        compiled: Compiled,
        text: str = "",
    ) -> None:
        self.name = name
        self.group = group
        self.values = values
        self.seed = seed
        self.compiled = compiled
        self.text = text


class Study:
    """A whole expanded sweep, ready to be written (nothing is written before)."""

    def __init__(
        self,
        maker: Path,
        out_dir: Path,
        datasets: dict[str, list[str]],
        axes: dict[str, Any],
        runs: list[Run],
        duplicates: list[dict[str, str]] | None = None,
    ) -> None:
        self.maker = maker
        self.out_dir = out_dir
        self.datasets = datasets
        self.axes = axes
        self.runs = runs
        self.duplicates = duplicates if duplicates is not None else []

    def manifest(self) -> dict[str, Any]:
        from . import __version__

        names = list(self.datasets)
        return {
            "study": self.out_dir.name,
            "generated_by": f"mtl-make-config {__version__}",
            "maker": os.path.relpath(self.maker.resolve(), self.out_dir.resolve()).replace(
                os.sep, "/"
            ),
            "datasets": self.datasets,
            "axes": self.axes,
            "runs": [
                {
                    "name": run.name,
                    "group": [names[i] for i in run.group.indices],
                    "kinds": run.group.kinds,
                    "tasks": [t for ds in run.compiled.datasets for t in ds.tasks],
                    "set": run.values,
                    "seed": run.seed,
                    "config": f"{CONFIGS}/{run.name}.yaml",
                    "run_dir": f"{RUNS}/{run.name}",
                }
                for run in self.runs
            ],
            "duplicates": self.duplicates,
        }


def _sweep_section(src: Source) -> dict[str, Any]:
    """The checked ``sweep:`` mapping of a maker (located errors for every bad entry)."""
    doc = src.doc.get("sweep") if isinstance(src.doc, dict) else None
    if doc is None:
        raise ConfigError(
            "the maker has no 'sweep:' section (task groups, set: grid, seeds:) "
            "to expand; see docs/studies.md",
            file=src.path,
        )
    if not isinstance(doc, dict):
        raise src.error(
            ("sweep",),
            "'sweep' must be a mapping (groups, leave_one_out, pairs, singles, all, set, seeds)",
        )
    for key in doc:
        if key not in KEYS:
            raise src.error(
                ("sweep", key),
                f"unknown sweep key '{key}'"
                f"{did_you_mean(str(key), KEYS)}; allowed: {', '.join(KEYS)}",
            )
    for flag in _GROUP_FLAGS:
        if flag in doc and not isinstance(doc[flag], bool):
            raise src.error(("sweep", flag), f"'{flag}' must be true or false")
    groups = doc.get("groups")
    if groups is not None:
        if not isinstance(groups, list) or not groups:
            raise src.error(
                ("sweep", "groups"), "'groups' must be a non-empty list of dataset-name lists"
            )
        for i, group in enumerate(groups):
            if (
                not isinstance(group, list)
                or not group
                or not all(isinstance(n, str) and n for n in group)
            ):
                raise src.error(
                    ("sweep", "groups", i), "a group must be a non-empty list of dataset names"
                )
    grid = doc.get("set")
    if grid is not None:
        if not isinstance(grid, dict) or not grid:
            raise src.error(
                ("sweep", "set"),
                "'set' must be a mapping of --set keys or substitution names to lists of values",
            )
        for key, values in grid.items():
            if not isinstance(key, str) or not key:
                raise src.error(("sweep", "set"), f"'{key}' is not a key or substitution name")
            if not isinstance(values, list) or not values:
                raise src.error(
                    ("sweep", "set", key),
                    f"'{key}' must be a non-empty list of values (an empty grid gives no runs)",
                )
    seeds = doc.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise src.error(
            ("sweep", "seeds"), "'seeds' must be a non-empty list of non-negative integers"
        )
    return doc


def _groups(doc: dict[str, Any], names: list[str], src: Source) -> list[Group]:
    """Every requested group once (maker order inside), with the axes that asked for it."""
    n = len(names)
    wanted: list[tuple[tuple[int, ...], str, tuple]] = []
    if doc.get("all") or not any(doc.get(k) for k in ("groups", *_GROUP_FLAGS)):
        wanted.append((tuple(range(n)), "all", ("sweep", "all")))
    for i, group in enumerate(doc.get("groups") or []):
        indices = []
        for j, name in enumerate(group):
            if name not in names:
                raise src.error(
                    ("sweep", "groups", i, j),
                    f"unknown dataset '{name}'"
                    f"{did_you_mean(name, names)}; the maker's datasets: "
                    f"{', '.join(names)}",
                )
            if names.index(name) in indices:
                raise src.error(
                    ("sweep", "groups", i, j), f"dataset '{name}' is twice in this group"
                )
            indices.append(names.index(name))
        wanted.append((tuple(sorted(indices)), "group", ("sweep", "groups", i)))
    for flag, size in (("leave_one_out", n - 1), ("pairs", 2)):
        if doc.get(flag):
            if n < 2:
                raise src.error(
                    ("sweep", flag),
                    f"'{flag}' needs at least two datasets; the maker has one ({names[0]})",
                )
            kind = "pair" if flag == "pairs" else flag
            wanted += [(c, kind, ("sweep", flag)) for c in itertools.combinations(range(n), size)]
    if doc.get("singles"):
        wanted += [((i,), "single", ("sweep", "singles")) for i in range(n)]
    found: dict[tuple[int, ...], Group] = {}
    for indices, kind, key in wanted:
        group = found.setdefault(indices, Group(indices, [], key))
        if kind not in group.kinds:
            group.kinds.append(kind)
    return list(found.values())


def _check_grid_keys(grid: dict[str, Any], full: Compiled, src: Source) -> None:
    """Refuse set: keys that cannot mean anything: unused substitutions and key typos."""
    from .substitute import _PLACEHOLDER

    used = set(full.maker.substitutions)
    for source in full.inputs:
        for match in _PLACEHOLDER.finditer(source.text):
            used.update(re.findall(r"[A-Za-z_]\w*", match.group(1) or ""))
    for key in grid:
        where = ("sweep", "set", key)
        if "." not in key:
            if key not in used:
                raise src.error(
                    where,
                    f"unknown substitution '{key}'"
                    f"{did_you_mean(key, sorted(used))}: no input uses ${{{key}}} "
                    "(a dotted key path like trainer.max_epochs sets a config key)",
                )
            continue
        try:
            path = parse_key(key)
        except ConfigError as exc:
            raise src.error(where, exc.message) from None
        node = full.run
        for depth, part in enumerate(path):
            child = get_path(node, (part,), _ABSENT)
            if child is _ABSENT:
                hint = (
                    did_you_mean(str(part), [str(k) for k in node])
                    if isinstance(node, dict)
                    else ""
                )
                if hint:  # a close sibling exists: a typo, not a new key
                    raise src.error(
                        where,
                        f"unknown key '{format_key(path[: depth + 1])}'{hint} in the run config",
                    )
                break
            node = child


_ABSENT = object()


def _label(value: Any) -> str:
    """A short readable form of a grid value for run names."""
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        value = value["class_path"]
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", value):
        return value.rsplit(".", 1)[1]  # a class path: its class name
    if isinstance(value, (str, int, float)):
        return str(value)
    return _digest(value)


def _digest(value: Any) -> str:
    import hashlib  # json and hashlib only for studies: a plain compile never loads them
    import json

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def _safe(text: str) -> str:
    """Letters, digits and ``._+=-`` only; never a hidden or relative-looking name."""
    return re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).strip("-.") or "run"


def _value_labels(grid: dict[str, list[Any]]) -> dict[str, dict[str, str]]:
    """key -> canonical value -> ``short_key=short_value``, unique within the study."""
    shorts = [k.rsplit(".", 1)[-1] for k in grid]
    out: dict[str, dict[str, str]] = {}
    for key, short in zip(grid, shorts, strict=True):
        name = short if shorts.count(short) == 1 else key
        labels = {_canon(v): _safe(f"{name}={_label(v)}") for v in grid[key]}
        taken = list(labels.values())
        out[key] = {
            c: f"{label}-{_digest(_uncanon(c))}" if taken.count(label) > 1 else label
            for c, label in labels.items()
        }  # values that read the same get digests
    return out


def _canon(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _uncanon(text: str) -> Any:
    import json

    return json.loads(text)


def _group_label(indices: tuple[int, ...], names: list[str]) -> str:
    if len(indices) == len(names) > 1:
        return "all"
    missing = [names[i] for i in range(len(names)) if i not in indices]
    if len(indices) > 2 and len(missing) < len(indices):
        return "all-but-" + "+".join(missing)
    return "+".join(names[i] for i in indices)


def _run_name(parts: list[str]) -> str:
    name = _safe("__".join(parts))
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 9].rstrip("-.") + "-" + _digest(name)
    return name


def _describe(group: Group, names: list[str], values: dict[str, Any], seed: int | None) -> str:
    parts = [f"group [{', '.join(names[i] for i in group.indices)}] ({', '.join(group.kinds)})"]
    parts += [f"{k}={_canon(v)}" for k, v in values.items()]
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


def expand_sweep(
    maker_path: str | Path,
    out_dir: str | Path,
    *,
    dialect: str | None = None,
    sets: tuple[str, ...] = (),
) -> Study:
    """Compile every combination of the maker's sweep (nothing is written)."""
    from .build import compile_maker
    from .yamlio import dump

    maker_path, out_dir = Path(maker_path), Path(out_dir)
    full = compile_maker(maker_path, dialect=dialect, sets=sets)
    src = full.maker.source
    doc = _sweep_section(src)
    names = [ds.name for ds in full.datasets]
    groups = _groups(doc, names, src)
    grid: dict[str, list[Any]] = {
        k: list({_canon(v): v for v in vs}.values()) for k, vs in (doc.get("set") or {}).items()
    }
    _check_grid_keys(grid, full, src)
    seeds: list[int | None] = list(dict.fromkeys(doc.get("seeds") or [])) or [None]
    combos = len(groups) * len(seeds)
    for values in grid.values():
        combos *= len(values)
    if combos > MAX_RUNS:
        raise src.error(
            ("sweep",),
            f"the sweep expands to {combos} runs (at most {MAX_RUNS}); "
            "split it into several studies",
        )
    labels = _value_labels(grid)
    runs: list[Run] = []
    by_text: dict[str, Run] = {}
    duplicates: list[dict[str, str]] = []
    for group in groups:
        subset = None if len(group.indices) == len(names) else group.indices
        options: dict[str, Any] = {"dialect": dialect, "sets": sets}
        if subset is not None and len(subset) == 1:
            options["single"] = subset[0]  # exactly --single-task's compile
        elif subset is not None:
            options["subset"] = subset
        try:  # the group alone first: its errors are the group's, not the grid's
            alone = compile_maker(maker_path, **options)
        except ConfigError as exc:
            raise ConfigError(
                f"sweep combination {_describe(group, names, {}, None)} does not compile: {exc}",
                file=src.path,
                line=src.line_of(group.key),
            ) from None
        for chosen in itertools.product(*grid.values()):
            values = dict(zip(grid, chosen, strict=True))
            items = (*sets, *(f"{k}={_canon(v)}" for k, v in values.items()))
            try:
                compiled = (
                    compile_maker(maker_path, **{**options, "sets": items}) if values else alone
                )
            except ConfigError as exc:
                key = ("sweep", "set", next(iter(grid))) if grid else group.key
                raise ConfigError(
                    f"sweep combination {_describe(group, names, values, None)} "
                    f"does not compile: {exc}",
                    file=src.path,
                    line=src.line_of(key),
                ) from None
            for seed in seeds:
                parts = [
                    _group_label(group.indices, names),
                    *(labels[k][_canon(v)] for k, v in values.items()),
                ]
                run_doc = compiled.run
                if seed is not None:
                    parts.append(f"seed{seed}")
                    run_doc = set_dotted(run_doc, ("seed_everything",), seed)
                text = dump(run_doc)
                if text in by_text:
                    duplicates.append(
                        {
                            "combination": _describe(group, names, values, seed),
                            "same_as": by_text[text].name,
                        }
                    )
                    continue
                one = _copy(compiled, run_doc, out_dir / CONFIGS)
                run = Run(_run_name(parts), group, values, seed, one, text)
                by_text[text] = run
                runs.append(run)
    _unique_names(runs)
    for run in runs:
        run.compiled.output_path = out_dir / CONFIGS / f"{run.name}.yaml"
    axes = {
        "groups": [{"datasets": [names[i] for i in g.indices], "kinds": g.kinds} for g in groups],
        "set": grid,
        "seeds": [s for s in seeds if s is not None],
    }
    datasets = {ds.name: list(ds.tasks) for ds in full.datasets}
    return Study(maker_path, out_dir, datasets, axes, runs, duplicates)


def _copy(compiled: Compiled, run_doc: dict, folder: Path) -> Compiled:
    copied = copy.copy(compiled)
    copied.run, copied.output_path = run_doc, folder / "run.yaml"
    return copied


def _unique_names(runs: list[Run]) -> None:
    """Names are unique by construction; sanitising could still merge two: add a digest."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in runs:
        if seen[run.name] > 1:
            run.name = _run_name([run.name, _digest(run.text)])


def write_study(study: Study) -> None:
    """Write every run config, then the manifest (last, so a study.yaml means complete).

    Run directories are never touched: recompiling a study keeps its finished runs.
    """
    from .files import atomic_write
    from .yamlio import dump, load_source

    out = study.out_dir
    manifest_path = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise ConfigError("--sweep writes a study folder, but this is a file", file=out)
    if out.is_dir() and any(out.iterdir()) and not manifest_path.is_file():
        raise ConfigError(
            "this folder is not empty and holds no study.yaml; refusing to write "
            "a study into it (give a new folder)",
            file=out,
        )
    old: list[str] = []
    if manifest_path.is_file():
        previous = load_source(manifest_path, "study manifest").doc
        runs = previous.get("runs") if isinstance(previous, dict) else None
        old = [
            r["config"]
            for r in runs or []
            if isinstance(r, dict) and isinstance(r.get("config"), str)
        ]
    try:
        for run in study.runs:
            atomic_write(run.compiled.output_path, run.compiled.text())
        header = (
            "# Study manifest written by mtl-make-config --sweep; mtl-study run/status/"
            "report read it.\n# Recompile the maker instead of editing this file.\n"
        )
        atomic_write(manifest_path, header + dump(study.manifest()))
    except OSError as exc:
        raise ConfigError(
            f"cannot write the study: {exc.strerror}", file=exc.filename or out
        ) from None
    kept = {f"{CONFIGS}/{run.name}.yaml" for run in study.runs}
    for name in old:  # configs of combinations the maker no longer has
        stale = out / name
        if name not in kept and stale.parent == out / CONFIGS and stale.is_file():
            stale.unlink()


def run_sweep_command(
    maker: Path,
    output: Path | None,
    dialect: str,
    sets: tuple[str, ...],
    quiet: bool,
    report: Callable[[Compiled, bool], None],
) -> None:
    """``mtl-make-config MAKER --sweep -o DIR``: expand, then write (``report`` prints the
    compile warnings the way the plain command does)."""
    import click

    out_dir = output or Path("studies") / maker.stem
    study = expand_sweep(maker, out_dir, dialect=dialect, sets=sets)
    warned: set[str] = set()
    for i, run in enumerate(study.runs):
        fresh = [w for w in run.compiled.warnings if w not in warned]
        warned.update(fresh)
        run.compiled.dialect.warnings[:] = fresh
        report(run.compiled, quiet or i > 0)
    write_study(study)
    if not quiet:
        axes = study.axes
        shape = [f"{len(axes['groups'])} group{'s' * (len(axes['groups']) != 1)}"]
        shape += [f"{len(v)} {k}" for k, v in axes["set"].items()]
        if axes["seeds"]:
            shape.append(f"{len(axes['seeds'])} seeds")
        dup = (
            f"; {len(study.duplicates)} duplicate combinations compiled once"
            if study.duplicates
            else ""
        )
        click.echo(
            f"mtl-make-config: wrote {out_dir}/{MANIFEST} and {len(study.runs)} run "
            f"configs ({' x '.join(shape)}{dup}); launch with: mtl-study run {out_dir}",
            err=True,
        )
