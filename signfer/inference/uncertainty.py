"""How unsure the model is about a frame, and which frames to show a human first.

Annotators correct the frames the model is least sure of; those are the
frames most worth labelling (uncertainty sampling).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from signfer.inference.schema import prob_columns

METHODS = ("entropy", "margin")


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``probs``; NaN rows give NaN.

    0 means certain; ``log(C)`` means uniform over C classes.

    >>> entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).round(3)
    array([0.   , 0.693])
    """
    p = np.asarray(probs, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    out = terms.sum(axis=-1)
    out[np.isnan(p).any(axis=-1)] = np.nan
    return out


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row; small means unsure. NaN rows give NaN.

    >>> margin(np.array([[0.7, 0.2, 0.1]])).round(3)
    array([0.5])
    """
    p = np.asarray(probs, dtype=float)
    if p.shape[-1] < 2:
        raise ValueError("margin needs at least two classes")
    top2 = np.sort(p, axis=-1)[..., -2:]
    out = top2[..., 1] - top2[..., 0]
    out[np.isnan(p).any(axis=-1)] = np.nan
    return out


def rank_uncertain(table: pd.DataFrame, n: int, method: str = "entropy", min_gap_s: float = 0.0) -> pd.DataFrame:
    """The ``n`` face frames the model is least sure of, most uncertain first.

    Neighbouring frames of a video look alike, so ``min_gap_s`` spreads the
    choice out: a frame is skipped when it lies closer than ``min_gap_s``
    seconds (``time_s``) to a frame chosen before it.

    Args:
        table: a per-frame table (see :mod:`signfer.inference.schema`).
        n: how many frames to return (fewer when the video has fewer faces,
            or too few far enough apart).
        method: ``"entropy"`` (highest first) or ``"margin"`` (smallest first).
        min_gap_s: the least time between two chosen frames; 0 allows neighbours.

    Returns:
        The selected rows, with ``entropy`` and ``margin`` columns added; the
        original index is kept so rows can be found in ``table``.

    >>> t = pd.DataFrame({"time_s": [0.0, 0.04, 2.0], "prob_a": [0.5, 0.55, 0.8], "prob_b": [0.5, 0.45, 0.2]})
    >>> rank_uncertain(t, 2)["time_s"].tolist(), rank_uncertain(t, 2, min_gap_s=0.5)["time_s"].tolist()
    ([0.0, 0.04], [0.0, 2.0])
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not min_gap_s >= 0 or not np.isfinite(min_gap_s):
        raise ValueError(f"min_gap_s must be a finite number >= 0, got {min_gap_s}")
    columns = prob_columns(table)
    if not columns:
        raise ValueError("the table has no prob_<class> columns")
    if min_gap_s > 0 and "time_s" not in table.columns:
        raise ValueError("min_gap_s needs a time_s column")
    probs = table[columns].to_numpy(dtype=float)
    scored = table.assign(entropy=entropy(probs), margin=margin(probs))
    faces = scored[~np.isnan(probs).any(axis=1)]
    # A stable sort keeps ties in time order, so results are reproducible.
    if method == "entropy":
        ranked = faces.sort_values("entropy", ascending=False, kind="stable")
    else:
        ranked = faces.sort_values("margin", ascending=True, kind="stable")
    if min_gap_s == 0:
        return ranked.head(int(n))
    chosen: list[int] = []
    times = ranked["time_s"].to_numpy(dtype=float)
    for i, t in enumerate(times):
        if len(chosen) == n:
            break
        if not chosen or np.abs(times[chosen] - t).min() >= min_gap_s:
            chosen.append(i)
    return ranked.iloc[chosen]
