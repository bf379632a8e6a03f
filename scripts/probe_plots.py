"""The figures of ``mtl-probe``: label-efficiency curves and a 2-D map of encoder features.

Drawn on matplotlib's Agg canvas through ``Figure`` objects (no pyplot state, no display),
into bytes that the command writes with the toolkit's atomic writer.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from runtime.plots import fit_title

#: lines of the random-init references (drawn dashed)
REFERENCE = "random init"
METRICS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def curve_png(
    summary: Mapping[str, Mapping[float, Mapping[str, Mapping[str, float]]]],
    fractions: Sequence[float],
    title: str,
) -> bytes:
    """Accuracy and macro-F1 against the label fraction (log axis): one line per
    pretraining and mode (the mean over seeds), shaded over mean +- one standard deviation."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.4))
    axes = fig.subplots(1, 2)
    xs = np.array(sorted(fractions), dtype=float)
    for ax, (metric, label) in zip(axes, METRICS, strict=True):
        for line, by_fraction in summary.items():
            mean = np.array([by_fraction[f][metric]["mean"] for f in xs])
            std = np.array([by_fraction[f][metric]["std"] for f in xs])
            style = "--" if line.startswith(REFERENCE) else "-"
            (drawn,) = ax.plot(xs, mean, style, marker="o", markersize=3, label=line)
            ax.fill_between(xs, mean - std, mean + std, color=drawn.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{100 * f:g}%" for f in xs])
        ax.minorticks_off()
        ax.set_xlabel("labelled training samples (fraction)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(fit_title(title, 11), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def embedding_png(
    points: Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
    method: str,
    title: str,
) -> bytes:
    """One scatter per encoder of its features mapped to 2-D, coloured by class."""
    from matplotlib.figure import Figure

    count = len(points)
    cols = min(count, 3)
    rows = -(-count // cols)
    fig = Figure(figsize=(4 * cols, 3.8 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    colours = [f"C{i % 10}" for i in range(len(class_names))]
    for ax, (name, xy) in zip(axes, points.items(), strict=False):
        for c, cname in enumerate(class_names):
            mask = labels == c
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=colours[c], label=cname, alpha=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[count:]:
        ax.set_axis_off()
    axes[0].legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(fit_title(f"{title} ({method.upper()})", 4 * cols), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def project_2d(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """``[N, 2]`` coordinates: PCA, or t-SNE (scikit-learn; perplexity fitted to N)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(features)
    if scaled.shape[1] < 2:  # one feature: the second axis stays flat
        scaled = np.concatenate([scaled, np.zeros_like(scaled)], axis=1)
    if method == "pca" or len(features) < 5:
        return PCA(n_components=2, random_state=seed).fit_transform(scaled)
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        scaled
    )
