"""Temporal smoothing of per-frame class probabilities.

Expressions last longer than a frame, so a centred moving average removes
single-frame flicker before segments are cut for ELAN.
"""

from __future__ import annotations

import numpy as np


def smooth_probs(probs: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``probs`` over time, skipping no-face rows.

    The window is counted in rows (kept frames), centred on each row: rows
    ``i - (window - 1) // 2`` to ``i + window // 2``, cut at the ends of the
    video. Rows that are all NaN (no face) take no part in any average and
    stay NaN, so a face frame is averaged only with the face frames inside
    its window and a gap never pulls probabilities towards zero. Averages of
    probability vectors still sum to 1.

    Args:
        probs: T x C array, one row per frame, NaN rows for frames without a face.
        window: window length in frames; 1 returns a copy unchanged.

    Returns:
        T x C float array.

    >>> smooth_probs(np.array([[1., 0.], [0., 1.], [np.nan, np.nan], [1., 0.]]), 3)
    array([[0.5, 0.5],
           [0.5, 0.5],
           [nan, nan],
           [1. , 0. ]])
    """
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2:
        raise ValueError(f"probs must be T x C, got shape {probs.shape}")
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive whole number, got {window!r}")
    window = int(window)
    if window == 1 or len(probs) == 0:
        return probs.copy()
    valid = ~np.isnan(probs).any(axis=1)
    values = np.where(valid[:, None], probs, 0.0)
    # Prefix sums give every window's sum and face count in O(T).
    sums = np.vstack([np.zeros((1, probs.shape[1])), np.cumsum(values, axis=0)])
    counts = np.concatenate([[0], np.cumsum(valid)])
    t = np.arange(len(probs))
    lo = np.clip(t - (window - 1) // 2, 0, len(probs))
    hi = np.clip(t + window // 2 + 1, 0, len(probs))
    n = counts[hi] - counts[lo]
    out = np.full_like(probs, np.nan)
    out[valid] = (sums[hi] - sums[lo])[valid] / n[valid, None]
    return out
