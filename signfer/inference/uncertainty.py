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


def rank_uncertain(table: pd.DataFrame, n: int, method: str = "entropy") -> pd.DataFrame:
    """The ``n`` face frames the model is least sure of, most uncertain first.

    Args:
        table: a per-frame table (see :mod:`signfer.inference.schema`).
        n: how many frames to return (fewer when the video has fewer faces).
        method: ``"entropy"`` (highest first) or ``"margin"`` (smallest first).

    Returns:
        The selected rows, with ``entropy`` and ``margin`` columns added; the
        original index is kept so rows can be found in ``table``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    columns = prob_columns(table)
    if not columns:
        raise ValueError("the table has no prob_<class> columns")
    probs = table[columns].to_numpy(dtype=float)
    scored = table.assign(entropy=entropy(probs), margin=margin(probs))
    faces = scored[~np.isnan(probs).any(axis=1)]
    # A stable sort keeps ties in time order, so results are reproducible.
    if method == "entropy":
        ranked = faces.sort_values("entropy", ascending=False, kind="stable")
    else:
        ranked = faces.sort_values("margin", ascending=True, kind="stable")
    return ranked.head(int(n))
