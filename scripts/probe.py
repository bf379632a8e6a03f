"""``mtl-probe``: how few labels a pretrained encoder needs (label-efficiency curves).

For each pretrained run, its encoder (and trunk) is frozen and a linear probe (logistic
regression on the pooled features) is trained on nested, class-stratified subsets of a
labelled downstream dataset's training split at each label fraction and seed; ``--finetune``
also trains the whole encoder with a new linear layer, and the same encoder architecture
trained from random weights under the same budget is the reference ("scratch"). Scores are
accuracy and macro-F1 on the downstream test (or validation) split. Outputs, written at once
into ``--out``: ``probe.json`` (every score and the summary), ``probe.md`` (the tables also
printed), ``curve.png`` (scores against the fraction, spread over seeds) and
``embedding.png`` (each encoder's features in 2-D by PCA or t-SNE, coloured by class).
Every input is checked before anything is trained or written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from compiler.command import CONTEXT_SETTINGS, version_option
from compiler.errors import ConfigError, did_you_mean
from compiler.files import atomic_dir, check_output, json_text
from compiler.keypaths import MODULE_ARGS, TASKS
from scripts.common import FiniteFloat, bad_input_exits, device_option, note
from scripts.probe_plots import REFERENCE

if TYPE_CHECKING:
    import numpy as np
    import torch

    from runtime.model import MultiTaskModel

PROG = "mtl-probe"
DEFAULT_FRACTIONS = "0.01,0.05,0.1,0.25,1"
MODES = {"linear": "linear", "finetune": "fine-tune", "scratch": "scratch"}
SCRATCH = REFERENCE

EXAMPLES = """\b
Examples:
  mtl-probe runs/ssl_all --data dataset_configs/activity.yaml -o probes/ssl
  mtl-probe multitask=runs/ssl_all contrastive=runs/ssl_contrastive \\
      --data dataset_configs/activity.yaml --seeds 0,1,2 --finetune -o probes/ssl
  mtl-probe runs/ssl_all --data dataset_configs/activity.yaml --fractions 0.1,1 \\
      --embedding tsne --ckpt last -o probes/quick
"""


# ---- arguments --------------------------------------------------------------------------
def parse_fractions(text: str) -> list[float]:
    """Label fractions in (0, 1], from ``0.01,0.1,1`` (or percentages ``1%,10%,100%``)."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = float(item[:-1]) / 100 if item.endswith("%") else float(item)
        except ValueError:
            raise ConfigError(
                f"--fractions: {item!r} is not a number (give fractions in (0, 1], "
                "e.g. 0.01,0.1,1, or percentages like 10%)"
            ) from None
        if not 0 < value <= 1:  # also refuses NaN
            raise ConfigError(
                f"--fractions: {item} is outside (0, 1]: a label fraction is a share of the "
                "labelled training samples, e.g. 0.05 for 5 %"
            )
        values.append(value)
    return sorted(set(values))


MAX_SEED = 2**32 - 1  # scikit-learn's random_state takes no more (numpy's legacy seeding)


def parse_seeds(text: str) -> list[int]:
    """Distinct seeds in [0, 2**32 - 1], from ``0,1,2``."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds: {text!r} is not a comma-separated list of integers") from None
    wrong = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if wrong:
        raise ConfigError(f"--seeds: {wrong[0]} is not a seed (give integers 0 to {MAX_SEED})")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: {text} repeats a seed")
    return seeds


def parse_runs(items: Sequence[str]) -> list[tuple[str, Path]]:
    """``NAME=RUN_DIR`` or ``RUN_DIR`` (named after its folder); a name may repeat (runs of
    one pretraining under several seeds: their scores are pooled)."""
    runs = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name or item, item
        if not name or not path:
            raise ConfigError(f"run {item!r}: give RUN_DIR or NAME=RUN_DIR")
        if name == SCRATCH:
            raise ConfigError(f"run {item!r}: the name {SCRATCH!r} is the reference's")
        runs.append((name, Path(path)))
    return runs


# ---- the downstream dataset --------------------------------------------------------------
@dataclass
class Downstream:
    """A labelled downstream task: its training and evaluation splits as whole tensors."""

    path: Path
    task: str
    class_names: list[str]
    train_x: torch.Tensor
    train_y: np.ndarray
    eval_x: torch.Tensor
    eval_y: np.ndarray


def _placeholders(node: Any, key: tuple) -> tuple[tuple, str] | None:
    if isinstance(node, dict):
        for k, v in node.items():
            found = _placeholders(v, (*key, k))
            if found:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = _placeholders(v, (*key, i))
            if found:
                return found
    elif isinstance(node, str) and "${" in node:
        return key, node
    return None


def _whole_split(dataset: Any, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    from runtime.data.base import batch_fetcher

    batch = batch_fetcher(dataset)(torch.arange(len(dataset)))
    return batch["inputs"], batch["targets"][task]


_SELF_SUPERVISED = (
    "the dataset config has no labels: its data module derives its targets from the inputs "
    "(self-supervised); give a labelled downstream dataset config"
)


def load_downstream(path: Path, task: str | None, split: str) -> Downstream:
    """The labelled task of a dataset config (its ``data`` and ``model.init_args.tasks``),
    set up and checked: a classification task with labels in both splits."""
    import numpy as np
    from jsonargparse import ArgumentParser

    from compiler.yamlio import load_source
    from runtime.config_errors import explain_argument_error
    from runtime.data.base import DatasetModule
    from runtime.data.ssl import SelfSupervisedModule
    from runtime.tasks import ClassificationTask, PerPositionClassificationTask, Task

    source = load_source(path, "dataset config")
    doc = source.doc
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise ConfigError(
            "not a dataset config: it has no 'data' section (the labelled dataset's module)",
            file=path,
        )
    if str(doc["data"].get("class_path", "")).endswith(".SelfSupervisedModule"):
        raise source.error(("data", "class_path"), _SELF_SUPERVISED)
    model = doc.get("model")
    tasks = (model or {}).get("init_args", {}).get("tasks") if isinstance(model, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise source.error(
            ("model",),
            "the dataset config has no labels to probe: it defines no task under "
            "model.init_args.tasks (give a labelled classification task)",
        )
    sections = {"data": doc["data"], "tasks": tasks}
    found = _placeholders(sections, ())
    if found:
        where = found[0] if found[0][0] == "data" else (*MODULE_ARGS, *found[0])
        raise source.error(
            where,
            f"{'.'.join(map(str, where))} is the placeholder {found[1]!r}; mtl-probe reads "
            "the dataset config as it is, so its data and tasks need literal values",
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(DatasetModule, "data", required=True)
    parser.add_argument("--tasks", type=dict[str, Task], default={})
    try:
        objects = parser.instantiate_classes(parser.parse_object(sections))
    except Exception as exc:  # jsonargparse and constructors: bad config
        raise ConfigError(
            f"cannot build its data/tasks: {explain_argument_error(exc, sections)}", file=path
        ) from None
    datamodule, defined = objects.data, objects.tasks
    if isinstance(datamodule, SelfSupervisedModule):
        raise source.error(("data",), _SELF_SUPERVISED)
    served = list(datamodule.tasks)
    usable = [
        name
        for name, t in defined.items()
        if name in served
        and isinstance(t, ClassificationTask)
        and not isinstance(t, PerPositionClassificationTask)
    ]
    if task is None:
        if len(usable) != 1:
            reason = "none" if not usable else f"several ({', '.join(usable)}): pick one"
            raise source.error(
                TASKS,
                "the dataset config has no labels to probe: a classification task whose "
                f"labels its data module serves is needed, found {reason} (--task NAME)",
            )
        task = usable[0]
    elif task not in usable:
        raise ConfigError(
            f"--task {task}: not a classification task served by {path}"
            f"{did_you_mean(task, usable)}; its classification tasks: {', '.join(usable) or 'none'}"
        )
    chosen = defined[task]
    datamodule.expect_targets({task: chosen.target_spec()})
    datamodule.setup("fit")
    parts = {}
    for name in ("train", split):
        dataset = datamodule.dataset_for(name)
        if dataset is None or len(dataset) == 0:
            raise source.error(("data",), f"the dataset has no {name} split to probe with")
        x, y = _whole_split(dataset, task)
        labels = y.numpy()
        if labels.ndim != 1:
            raise source.error(
                ("data",), f"task '{task}' has one label per position, not per sample"
            )
        if not (labels >= 0).any():
            raise source.error(
                ("data",), f"the {name} split has no labels for task '{task}' (all missing)"
            )
        parts[name] = (x, labels)
    if len(np.unique(parts["train"][1][parts["train"][1] >= 0])) < 2:
        raise source.error(("data",), f"task '{task}' has fewer than two classes with labels")
    keep = parts[split][1] >= 0
    return Downstream(
        path=path,
        task=task,
        class_names=list(chosen.class_names),
        train_x=parts["train"][0],
        train_y=parts["train"][1],
        eval_x=parts[split][0][keep],
        eval_y=parts[split][1][keep],
    )


# ---- pretrained encoders -----------------------------------------------------------------
@dataclass
class Pretrained:
    name: str
    run: Path
    model: MultiTaskModel
    config: dict[str, Any]


def load_encoder(name: str, run: Path, ckpt: str, device: torch.device) -> Pretrained:
    """A run's model, on ``device``, refused unless it has an encoder with weights."""
    from runtime.module import MultiTaskModule
    from runtime.rundir import load_run

    loaded = load_run(run, ckpt=ckpt, with_data=False)
    module = loaded.module
    if not isinstance(module, MultiTaskModule):
        raise ConfigError(
            f"{run}: the model is a {type(module).__name__}, not a MultiTaskModule: "
            "it has no encoder to probe"
        )
    encoder = module.model.encoder
    if len(encoder) == 0 or not any(True for _ in encoder.parameters()):
        raise ConfigError(
            f"{run}: the run has no encoder (model.init_args.model.init_args.encoder is "
            "empty or has no weights): there is nothing pretrained to probe"
        )
    return Pretrained(name, run, module.model.to(device), loaded.config)


def check_reads(pretrained: Pretrained, data: Downstream, device: torch.device) -> int:
    """The encoder's feature width on the downstream inputs; a ConfigError when it cannot
    read them (another input shape)."""
    from runtime.config_errors import first_line
    from scripts.probe_train import features

    try:
        return features(pretrained.model, data.train_x[:2], device).shape[1]
    except Exception as exc:  # any failure here is a shape/type mismatch
        raise ConfigError(
            f"{pretrained.run}: its encoder cannot read the inputs of {data.path} (one sample "
            f"is {list(data.train_x.shape[1:])}): {first_line(exc)}"
        ) from None


def fresh_model(pretrained: Pretrained, seed: int, device: torch.device) -> MultiTaskModel:
    """The run's model with random weights drawn under ``seed`` (the references), on
    ``device``."""
    import torch

    from runtime.rundir import build_objects

    torch.manual_seed(seed)
    module, _ = build_objects(pretrained.config, with_data=False, where=str(pretrained.run))
    return module.model.to(device)


# ---- the probe -----------------------------------------------------------------------------
@dataclass
class Settings:
    fractions: list[float]
    seeds: list[int]
    finetune: bool
    scratch: bool
    steps: int
    batch_size: int
    lr: float
    device: torch.device


def run_probe(
    runs: list[Pretrained], data: Downstream, settings: Settings
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """One record per (pretraining or scratch, mode, fraction, seed), and the evaluation
    split's features of each pretraining (its first run) and of the first seed's reference,
    for the embedding map."""
    import torch

    from scripts.probe_train import features, linear_probe, nested_subsets, scores, train_classifier

    classes = len(data.class_names)
    records: list[dict[str, Any]] = []
    train_y = torch.from_numpy(data.train_y)

    def record(name: str, run: Path | None, mode: str, fraction: float, seed: int, rows, pred):
        got = scores(data.eval_y, pred, classes)
        records.append(
            {
                "pretraining": name,
                "run": None if run is None else str(run),
                "mode": mode,
                "fraction": fraction,
                "seed": seed,
                "train_samples": len(rows),
                "accuracy": got.accuracy,
                "macro_f1": got.macro_f1,
            }
        )

    def end_to_end(model: MultiTaskModel, rows, seed: int):
        return train_classifier(
            model,
            data.train_x[rows],
            train_y[rows],
            data.eval_x,
            classes,
            steps=settings.steps,
            batch_size=settings.batch_size,
            lr=settings.lr,
            seed=seed,
            device=settings.device,
        )

    cached = {
        id(p): (features(p.model, data.train_x, settings.device),
                features(p.model, data.eval_x, settings.device))
        for p in runs
    }  # fmt: skip
    embedded: dict[str, np.ndarray] = {}
    for p in runs:
        embedded.setdefault(p.name, cached[id(p)][1])
    for seed in settings.seeds:
        subsets = nested_subsets(data.train_y, settings.fractions, seed)
        for p in runs:
            train_f, eval_f = cached[id(p)]
            start = time.perf_counter()
            for fraction, rows in subsets.items():
                pred = linear_probe(train_f[rows], data.train_y[rows], eval_f, seed)
                record(p.name, p.run, "linear", fraction, seed, rows, pred)
                if settings.finetune:
                    record(p.name, p.run, "finetune", fraction, seed, rows,
                           end_to_end(p.model, rows, seed))  # fmt: skip
            note(PROG, f"seed {seed}: {p.name} ({p.run}) probed in "
                       f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        if settings.scratch:
            fresh = fresh_model(runs[0], seed, settings.device)
            start = time.perf_counter()
            train_f = features(fresh, data.train_x, settings.device)
            eval_f = features(fresh, data.eval_x, settings.device)
            embedded.setdefault(SCRATCH, eval_f)  # the reference's start: what pretraining changed
            for fraction, rows in subsets.items():
                pred = linear_probe(train_f[rows], data.train_y[rows], eval_f, seed)
                record(SCRATCH, None, "linear", fraction, seed, rows, pred)
                record(SCRATCH, None, "scratch", fraction, seed, rows,
                       end_to_end(fresh, rows, seed))  # fmt: skip
            note(PROG, f"seed {seed}: from scratch in {time.perf_counter() - start:.1f} s")
    return records, embedded


def line_name(record: dict[str, Any]) -> str:
    return f"{record['pretraining']} ({MODES[record['mode']]})"


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[float, dict[str, dict]]]:
    """line -> fraction -> metric -> mean, std (over seeds and runs), min, max, n."""
    import numpy as np

    grouped: dict[str, dict[float, list[dict[str, Any]]]] = {}
    for r in records:
        grouped.setdefault(line_name(r), {}).setdefault(r["fraction"], []).append(r)
    summary: dict[str, dict[float, dict[str, dict]]] = {}
    for line, by_fraction in grouped.items():
        summary[line] = {}
        for fraction, rows in sorted(by_fraction.items()):
            summary[line][fraction] = {}
            for metric in ("accuracy", "macro_f1"):
                v = np.array([r[metric] for r in rows])
                summary[line][fraction][metric] = {
                    "mean": float(v.mean()),
                    "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                    "min": float(v.min()),
                    "max": float(v.max()),
                    "n": len(v),
                }
    return summary


def table(summary: dict, fractions: list[float], metric: str) -> str:
    """A Markdown table: one row per line, one column per fraction, mean +- std."""
    head = ["pretraining (mode)", *[f"{100 * f:g}%" for f in fractions]]
    rows = [head, ["---"] + ["---:"] * len(fractions)]
    for line, by_fraction in summary.items():
        cells = [
            f"{by_fraction[f][metric]['mean']:.3f} ± {by_fraction[f][metric]['std']:.3f}"
            for f in fractions
        ]
        rows.append([line, *cells])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


@click.command(context_settings=CONTEXT_SETTINGS, epilog=EXAMPLES)
@version_option(PROG)
@click.argument("runs", nargs=-1, required=True, metavar="[NAME=]RUN_DIR...")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Labelled downstream dataset config (a per-dataset YAML: its data and tasks).",
)
@click.option("--task", default=None, help="Its classification task (default: the only one).")
@click.option(
    "--fractions",
    default=DEFAULT_FRACTIONS,
    show_default=True,
    help="Label fractions in (0, 1] (or percentages, 5%); subsets are nested and stratified.",
)
@click.option(
    "--seeds",
    default="0,1,2",
    show_default=True,
    help="Distinct seeds 0 to 2**32-1 (subsets and probes).",
)
@click.option("--finetune", is_flag=True, help="Also fine-tune each encoder end to end.")
@click.option(
    "--scratch/--no-scratch",
    default=True,
    show_default=True,
    help="The references: the same encoder from random weights, linear-probed frozen and "
    "trained end to end like --finetune.",
)
@click.option(
    "--steps", default=300, show_default=True, type=click.IntRange(1), help="Training steps of "
    "fine-tuning and scratch (the same budget for both).",
)  # fmt: skip
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=1e-3, show_default=True, type=FiniteFloat(0, min_open=True))
@click.option("--ckpt", default="best", show_default=True, help="Checkpoint: best, last or a path.")
@click.option(
    "--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
    help="Downstream split the scores are measured on.",
)  # fmt: skip
@click.option(
    "--embedding", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True,
    help="2-D map of the features in embedding.png.",
)  # fmt: skip
@click.option(
    "-o", "--out", required=True, type=click.Path(path_type=Path),
    help="Output folder (probe.json, probe.md, curve.png, embedding.png).",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option(
    "--threads", default=None, type=click.IntRange(1), help="torch CPU threads (default: torch's)."
)
@device_option
def main(
    runs: tuple[str, ...],
    data_path: Path,
    task: str | None,
    fractions: str,
    seeds: str,
    finetune: bool,
    scratch: bool,
    steps: int,
    batch_size: int,
    lr: float,
    ckpt: str,
    split: str,
    embedding: str,
    out: Path,
    force: bool,
    threads: int | None,
    device: str | None,
) -> None:
    """Label-efficiency curves of pretrained encoders: linear probes (and optional
    fine-tunes) at label fractions over seeds, against the same budget from scratch.

    RUN_DIR is a run directory (NAME=RUN_DIR names it; runs sharing a name are pooled, e.g.
    one pretraining under several seeds). Writes probe.json, probe.md, curve.png and
    embedding.png into --out, and prints the tables.
    """
    with bad_input_exits(PROG):
        chosen_fractions = parse_fractions(fractions)
        chosen_seeds = parse_seeds(seeds)
        named = parse_runs(runs)
        check_output(out, "dir", flag="--out", replace=force)
        import torch

        from runtime.hardware import resolve_device

        if threads is not None:
            torch.set_num_threads(threads)
        where = resolve_device(device)
        data = load_downstream(data_path, task, split)
        pretrained = [load_encoder(name, run, ckpt, where) for name, run in named]
        for p in pretrained:
            check_reads(p, data, where)
        settings = Settings(
            chosen_fractions, chosen_seeds, finetune, scratch, steps, batch_size, lr, where
        )
        records, embedded = run_probe(pretrained, data, settings)
        write_outputs(out, pretrained, data, settings, records, embedded, embedding)


def write_outputs(
    out: Path,
    pretrained: list[Pretrained],
    data: Downstream,
    settings: Settings,
    records: list[dict[str, Any]],
    embedded: dict[str, np.ndarray],
    method: str,
) -> None:
    """The four outputs, into a folder that appears whole; the tables on stdout.
    ``embedded``: each encoder's features of the evaluation split (mapped to 2-D)."""
    from scripts.probe_plots import curve_png, embedding_png, project_2d

    summary = summarize(records)
    tables = {m: table(summary, settings.fractions, m) for m in ("accuracy", "macro_f1")}
    title = f"{data.task} of {data.path.name}: label efficiency over seeds {settings.seeds}"
    points = {name: project_2d(values, method) for name, values in embedded.items()}
    report = {
        "data": str(data.path),
        "task": data.task,
        "class_names": data.class_names,
        "fractions": settings.fractions,
        "seeds": settings.seeds,
        "eval_samples": len(data.eval_y),
        "train_samples": int((data.train_y >= 0).sum()),
        "runs": [{"name": p.name, "run": str(p.run)} for p in pretrained],
        "budget": {
            "steps": settings.steps,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "finetune": settings.finetune,
            "scratch": settings.scratch,
        },
        "summary": {
            line: {str(f): v for f, v in by_fraction.items()}
            for line, by_fraction in summary.items()
        },
        "records": records,
    }
    markdown = (
        f"# {title}\n\nAccuracy (mean ± std):\n\n{tables['accuracy']}\n\n"
        f"Macro-F1 (mean ± std):\n\n{tables['macro_f1']}\n"
    )
    with atomic_dir(out) as folder:
        (folder / "probe.json").write_text(json_text(report))
        (folder / "probe.md").write_text(markdown)
        (folder / "curve.png").write_bytes(curve_png(summary, settings.fractions, title))
        (folder / "embedding.png").write_bytes(
            embedding_png(points, data.eval_y, data.class_names, method, data.task)
        )
    click.echo(markdown.split("\n", 2)[2].rstrip())
    note(PROG, f"wrote {out}/probe.json, probe.md, curve.png, embedding.png")
