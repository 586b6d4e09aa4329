"""Metrics as pure functions on arrays, and their aggregation over folds.

Everything here is computed by scikit-learn; this module only fixes the
conventions (label order, how absent classes count, what goes into the
JSON-serialisable dict) so that every fold of every run is scored alike.

Example:
    >>> m = compute_metrics([0, 1, 1], [0, 1, 0], classes=["neutral", "happiness"])
    >>> round(m["accuracy"], 3), m["confusion"]
    (0.667, [[1, 0], [1, 1]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
)

from signfer.errors import SignferError

#: The headline metrics that the runner writes per fold into results.csv.
METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1", "macro_recall")

#: Columns that identify one fold of one configuration.
KEYS: tuple[str, ...] = ("config", "arch", "fold")


def compute_metrics(y_true, y_pred, classes: Sequence[str]) -> dict:
    """Score one fold's predictions.

    Macro averages (``macro_f1``, ``macro_recall``) run over the classes that
    occur in ``y_true`` or ``y_pred`` of this fold, which is scikit-learn's
    default when ``labels`` is not passed. A class that appears in neither is
    left out rather than counted as 0, so a fold that happens to hold no
    "fear" frames is not penalised for it. A class that is predicted but absent
    from ``y_true`` does count, with recall 0 (``zero_division=0``): the model
    invented it. ``macro_recall`` therefore equals
    :func:`sklearn.metrics.balanced_accuracy_score` only when every predicted
    class also occurs in ``y_true``.

    ``per_class`` and ``confusion`` always cover all of ``classes`` (absent
    classes get support 0 and zeros), so that folds can be summed.

    Args:
        y_true: integer class indices into ``classes``, shape (n,).
        y_pred: integer class indices into ``classes``, shape (n,).
        classes: ordered class names; index ``i`` names class ``i``.

    Returns:
        A JSON-serialisable dict with ``accuracy``, ``macro_f1``,
        ``weighted_f1``, ``macro_recall`` (floats in [0, 1]), ``per_class``
        (``{name: {precision, recall, f1, support}}``), ``confusion`` (list of
        lists of int, rows = true class, columns = predicted class),
        ``classes`` (list of str) and ``n`` (number of samples).

    Raises:
        ValueError: if the arrays are empty, differ in length, or hold an index
            outside ``range(len(classes))``.

    Example:
        >>> m = compute_metrics([0, 0, 1], [0, 1, 1], ["a", "b"])
        >>> m["per_class"]["b"]["precision"]
        0.5
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    classes = [str(c) for c in classes]
    k = len(classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} items but y_pred has {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("cannot score an empty fold")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= k:
            raise ValueError(f"{name} holds an index outside 0..{k - 1} ({k} classes)")

    labels = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # No `labels=` here on purpose: see the docstring on absent classes.
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "macro_recall": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
        "classes": classes,
        "n": int(y_true.size),
    }


def ordered_unique(values) -> list:
    """Distinct values in order of first appearance (the runner's grid order)."""
    return list(pd.unique(pd.Series(values)))


def dedupe_folds(results: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per (config, arch, fold): the last one written.

    A resumed or repeated run can append a fold twice; counting it twice would
    inflate ``n_folds`` and break the pairing by fold.
    """
    missing = [c for c in KEYS if c not in results.columns]
    if missing:
        raise SignferError(f"results table lacks column(s) {', '.join(missing)}")
    return results.drop_duplicates(subset=list(KEYS), keep="last")


def aggregate(results: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean and standard deviation over folds, per (config, arch).

    Args:
        results: one row per (config, arch, fold), as in ``results.csv``.
            Other columns are ignored.
        metrics: metric columns to summarise.

    Returns:
        One row per (config, arch), in order of first appearance, with columns
        ``config``, ``arch``, ``n_folds``, then ``<metric>_mean`` and
        ``<metric>_sd`` for each metric. ``sd`` uses ``ddof=1`` (the sample
        standard deviation across folds, as papers report it), so it is NaN
        for a single fold. Missing values (NaN) are skipped.

    Raises:
        SignferError: if a key or metric column is missing.

    Example:
        >>> df = pd.DataFrame({"config": ["a", "a"], "arch": ["m", "m"],
        ...                    "fold": [0, 1], "accuracy": [0.5, 0.7]})
        >>> aggregate(df, ["accuracy"])[["n_folds", "accuracy_mean"]].values.tolist()
        [[2.0, 0.6]]
    """
    results = dedupe_folds(results)
    missing = [m for m in metrics if m not in results.columns]
    if missing:
        raise SignferError(f"results table lacks metric column(s) {', '.join(missing)}")
    rows = []
    # sort=False keeps grid order; groupby would otherwise sort config names.
    for (config, arch), grp in results.groupby(["config", "arch"], sort=False):
        row = {"config": config, "arch": arch, "n_folds": int(len(grp))}
        for m in metrics:
            values = pd.to_numeric(grp[m], errors="coerce")
            row[f"{m}_mean"] = float(values.mean())
            row[f"{m}_sd"] = float(values.std(ddof=1))
            row[f"{m}_n"] = int(values.notna().sum())  # folds that measured it (NaN: an older fold)
        rows.append(row)
    columns = ["config", "arch", "n_folds"] + [f"{m}_{s}" for m in metrics for s in ("mean", "sd", "n")]
    return pd.DataFrame(rows, columns=columns)
