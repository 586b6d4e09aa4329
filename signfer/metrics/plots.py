"""Figures for a run folder: confusion matrices and per-fold accuracy.

Figures are built with :class:`matplotlib.figure.Figure` directly rather than
through ``pyplot``: no global figure state, no GUI backend to select, and
nothing for a library import to switch behind the caller's back. Files are
written atomically so that a report never links to a half-written PNG.

Example:
    >>> plot_confusion([[8, 2], [1, 9]], ["neutral", "happiness"],
    ...                "fold sum", "/tmp/confusion.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from signfer.io import atomic_path
from signfer.metrics.core import dedupe_folds, ordered_unique


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        # format= is needed because the temporary name does not end in .png.
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def plot_confusion(
    confusion, classes: Sequence[str], title: str, path: str | os.PathLike
) -> Path:
    """Draw a row-normalised confusion matrix with the raw counts written in.

    Colour is the fraction of each true class (a row sums to 1), so that rare
    classes are as readable as the dominant one; the annotation gives the count
    and that fraction. A class with no true samples gets an empty (zero) row.

    Args:
        confusion: square counts, rows = true class, columns = predicted class.
        classes: class names in index order.
        title: figure title.
        path: PNG file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"confusion has shape {counts.shape}, expected ({k}, {k})")
    totals = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)

    side = 1.6 + 0.75 * k
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            # Dark cells need light text to stay legible.
            colour = "white" if frac[i, j] > 0.5 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{100 * frac[i, j]:.0f}%", ha="center",
                    va="center", fontsize=7, color=colour)
    return _save(fig, path)


def plot_fold_accuracy(
    results: pd.DataFrame, path: str | os.PathLike, metric: str = "accuracy"
) -> Path:
    """Plot each fold's score per configuration and architecture, with mean bars.

    One group of points per configuration (in grid order), one colour per
    architecture; each point is a fold, each short horizontal bar the mean over
    folds. Showing the folds rather than only mean and sd makes it visible when
    one configuration wins on every fold and when a mean hides one bad fold.

    Args:
        results: one row per (config, arch, fold), as in ``results.csv``, with
            the metric as a fraction in [0, 1].
        path: PNG file to write.
        metric: the column to plot (shown in percent).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    results = dedupe_folds(results)
    configs = ordered_unique(results["config"])
    archs = ordered_unique(results["arch"])
    width = 0.8 / max(len(archs), 1)
    colours = [f"C{i % 10}" for i in range(len(archs))]

    fig = Figure(figsize=(max(5.0, 1.0 + 0.9 * len(configs) * max(1, len(archs)) ** 0.5), 4.2))
    ax = fig.add_subplot()
    for a, arch in enumerate(archs):
        for c, config in enumerate(configs):
            values = pd.to_numeric(
                results.loc[(results["config"] == config) & (results["arch"] == arch), metric],
                errors="coerce",
            ).dropna().to_numpy(float) * 100
            if values.size == 0:
                continue
            x = c - 0.4 + width * (a + 0.5)
            # A small deterministic spread keeps tied folds from hiding each other.
            jitter = np.linspace(-0.15, 0.15, values.size) * width if values.size > 1 else [0.0]
            ax.scatter(x + np.asarray(jitter), values, s=18, color=colours[a], alpha=0.8,
                       label=str(arch), zorder=3)
            ax.hlines(values.mean(), x - 0.35 * width, x + 0.35 * width, color=colours[a],
                      linewidth=2.5, zorder=4)
    # One legend entry per architecture, however many configurations it ran.
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if len(unique) > 1:
        ax.legend(unique.values(), unique.keys(), title="architecture", fontsize=8)
    crowded = len(configs) > 3  # long grid names overlap unless slanted
    ax.set_xticks(range(len(configs)), labels=[str(c) for c in configs],
                  rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_xlim(-0.6, len(configs) - 0.4)
    ax.set_ylabel(f"{metric} per fold (%)")
    ax.set_xlabel("configuration")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{metric} per fold; bars are means over folds")
    return _save(fig, path)


def plot_learning_curves(curves: dict, path: str | os.PathLike) -> Path:
    """Validation accuracy after each epoch, one panel per (config, arch), one line per fold.

    Epochs run on from the head-only warm-up into the all-layers stage (a
    dashed line marks the switch); a dot marks each fold's highest accuracy.

    Args:
        curves: ``{(config, arch): [(fold, history), ...]}``; a history is the
            list of per-epoch dicts of ``history.json`` (``stage``, ``epoch``,
            ``val_accuracy``); epochs without ``val_accuracy`` are skipped.
        path: PNG file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    keys = list(curves)
    ncols = min(4, max(1, len(keys)))
    nrows = -(-len(keys) // ncols) if keys else 1
    fig = Figure(figsize=(3.4 * ncols, 2.6 * nrows + 0.4))
    for n, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, n + 1)
        switch = None
        for i, (fold, history) in enumerate(curves[key]):
            points = [h for h in history if isinstance(h, dict) and h.get("val_accuracy") is not None]
            if not points:
                continue
            y = np.asarray([float(h["val_accuracy"]) for h in points]) * 100
            x = np.arange(1, len(y) + 1)
            heads = sum(1 for h in points if h.get("stage") == "head")
            if 0 < heads < len(points):
                switch = heads + 0.5
            ax.plot(x, y, color=f"C{i % 10}", linewidth=1.2, alpha=0.85, label=f"fold {fold}")
            best = int(np.argmax(y))
            ax.scatter([x[best]], [y[best]], color=f"C{i % 10}", s=14, zorder=3)
        if switch is not None:
            ax.axvline(switch, color="0.5", linestyle="--", linewidth=0.8)
        config, arch = key
        ax.set_title(f"{config} / {arch}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch (warm-up, then all layers)", fontsize=7)
        ax.set_ylabel("inner validation accuracy (%)", fontsize=7)
        ax.grid(alpha=0.3)
        if n == 0:
            ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)
