"""Paired comparisons of configurations over the same cross-validation folds.

Folds are the unit of pairing: configuration A on fold 3 is compared with
configuration B on fold 3, because both saw the same training and test frames.
Comparing unpaired means would throw away that shared variation.

With K = 5 folds the smallest two-sided exact Wilcoxon signed-rank p-value is
2 / 2**5 = 0.0625 (all five differences with the same sign), so the Wilcoxon
test can never reach p < 0.05 on 5-fold CV. The paired t-test can, at the
price of assuming normally distributed differences, and of a second
assumption that K-fold CV breaks: the folds are not independent, because any
two training sets share (K-2)/(K-1) of their samples. The plain paired t-test
then underestimates the variance of the mean difference and finds differences
too often. The corrected resampled t-test (Nadeau & Bengio 2003, *Inference
for the generalization error*, Machine Learning 52) inflates the variance of
the K differences from ``s²/K`` to ``(1/K + n_test/n_train) s²``; it is the
one to read (:func:`corrected_resampled_ttest`). The plain one is kept beside
it for comparison. Read all of them as descriptive.

The configuration every other one is compared with is the one with the best
mean on these same test folds: picking the maximum of several noisy means
favours it (selection bias, the winner's curse), so its lead is optimistic and
the p-values of the comparisons with it are too small.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"config": ["a"] * 5 + ["b"] * 5, "arch": "m",
    ...                    "fold": list(range(5)) * 2,
    ...                    "accuracy": [.60, .62, .61, .65, .63, .70, .71, .73, .72, .74]})
    >>> paired_tests(df, overall=False)[["config", "best", "n_pairs", "wilcoxon_p"]].values.tolist()
    [['a', 'b', 5, 0.0625]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from signfer.errors import SignferError
from signfer.metrics.core import dedupe_folds, ordered_unique

#: Smallest two-sided exact Wilcoxon p with 5 pairs; quoted in reports.
MIN_WILCOXON_P_5_FOLDS = 0.0625

COLUMNS = [
    "scope", "arch", "config", "best_arch", "best", "metric",
    "n_pairs", "mean_diff", "wilcoxon_p", "corrected_t_p", "ttest_p", "test_train_ratio", "note",
]


def _best(means: pd.Series):
    """Label of the highest mean; ties go to the first in grid order."""
    means = means.dropna()
    if means.empty:
        return None
    return means.index[int(np.argmax(means.to_numpy()))]


def compare_paired(x: np.ndarray, y: np.ndarray) -> tuple[float, float, str]:
    """Wilcoxon signed-rank and paired t-test of ``x`` against ``y`` (two-sided).

    Args:
        x: metric of the configuration under test, one value per fold.
        y: metric of the reference configuration on the same folds.

    Returns:
        ``(wilcoxon_p, ttest_p, note)``. Degenerate cases get a value and a
        note instead of a warning: all differences zero gives 1.0 for both
        tests; fewer than two pairs gives NaN; constant non-zero differences
        give NaN for the t-test, whose statistic is then undefined.
    """
    # Metric values carry float noise (0.8 - 0.7 != 0.7 - 0.6); rounding keeps
    # zero differences zero and tied differences tied for the rank test.
    d = np.round(np.asarray(x, float) - np.asarray(y, float), 12)
    if d.size < 2:
        return float("nan"), float("nan"), "fewer than 2 paired folds"
    if np.all(d == 0):
        return 1.0, 1.0, "all differences zero"
    notes = []
    # zero_method="wilcox" drops zero differences; the exact distribution is
    # used when scipy can (few pairs, no ties), the normal approximation otherwise.
    wilcoxon_p = float(stats.wilcoxon(d, alternative="two-sided").pvalue)
    if np.all(d == d[0]):
        ttest_p = float("nan")
        notes.append("constant differences: t-test undefined")
    else:
        ttest_p = float(stats.ttest_rel(x, y, alternative="two-sided").pvalue)
    return wilcoxon_p, ttest_p, "; ".join(notes)


def corrected_resampled_ttest(d, test_train_ratio: float) -> float:
    """Two-sided p of the corrected resampled t-test (Nadeau & Bengio 2003) of differences ``d``.

    ``t = mean(d) / sqrt((1/k + n_test/n_train) * var(d))`` with ``k = len(d)``,
    ``var`` the sample variance (ddof=1), and ``k - 1`` degrees of freedom.
    The plain paired t-test is the same with ``n_test/n_train = 0``.

    Args:
        d: one difference per fold (configuration minus reference).
        test_train_ratio: test samples over training samples of one fold;
            ``1 / (K - 1)`` for K-fold cross-validation.

    Returns:
        The p-value; 1.0 when every difference is zero, NaN when fewer than two
        or when the differences are constant but not zero (no variance).

    Example:
        >>> round(corrected_resampled_ttest([0.01, 0.02, 0.03, 0.04, 0.05], 0.25), 4)
        0.0474
    """
    d = np.round(np.asarray(d, float), 12)
    k = d.size
    if k < 2:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    if np.all(d == d[0]):  # no variance (np.var may leave float noise here)
        return float("nan")
    var = float(np.var(d, ddof=1))
    t = float(np.mean(d)) / np.sqrt((1.0 / k + test_train_ratio) * var)
    return float(2 * stats.t.sf(abs(t), df=k - 1))


def fold_test_train_ratio(results: pd.DataFrame) -> pd.Series:
    """n_test / n_training-side per fold, from results.csv's counts; 1/(K-1) without them.

    The training side (``n_train + n_val``: the inner validation part is
    carved from it) is the same for every configuration on one fold.
    """
    folds = pd.unique(results["fold"])
    if {"n_test", "n_train", "n_val"} <= set(results.columns):
        n = results[["n_test", "n_train", "n_val"]].apply(pd.to_numeric, errors="coerce")
        ratio = (n["n_test"] / (n["n_train"] + n["n_val"].fillna(0))).groupby(results["fold"]).median()
        if ratio.notna().all() and np.isfinite(ratio).all() and (ratio > 0).all():
            return ratio
    return pd.Series(1.0 / max(len(folds) - 1, 1), index=folds)


def _compare_to_best(table: pd.DataFrame, units: list, ratio: pd.Series) -> list[dict]:
    """Compare each unit (a column of ``table``) to the best one, pairing by fold."""
    best = _best(table[units].mean())
    if best is None:
        return []
    rows = []
    for unit in units:
        if unit == best:
            continue
        pair = table[[unit, best]].dropna()
        x, y = pair[unit].to_numpy(float), pair[best].to_numpy(float)
        wp, tp, note = compare_paired(x, y)
        r = float(ratio.reindex(pair.index).mean()) if len(pair) else float("nan")
        rows.append({
            "unit": unit, "best_unit": best, "n_pairs": int(len(pair)),
            "mean_diff": float(np.mean(x - y)) if len(pair) else float("nan"),
            "wilcoxon_p": wp, "corrected_t_p": corrected_resampled_ttest(x - y, r), "ttest_p": tp,
            "test_train_ratio": r, "note": note,
        })
    return rows


def paired_tests(
    results: pd.DataFrame, metric: str = "accuracy", overall: bool = True
) -> pd.DataFrame:
    """Compare every configuration with the best one, fold by fold.

    For each architecture the best configuration is the one with the highest
    mean ``metric`` over its folds (ties: first in grid order). Each other
    configuration of that architecture is compared with it on the folds that
    both have (the intersection; ``n_pairs`` says how many), by the two-sided
    Wilcoxon signed-rank test, the corrected resampled t-test (Nadeau & Bengio
    2003: variance times ``1/K + n_test/n_train``, the training sets of CV
    folds overlapping) and the plain paired t-test. The best configuration is
    chosen on the same test means that are compared, so every comparison with
    it is biased in its favour (see the module docstring).

    With ``overall=True`` the same is done once more across the whole table,
    treating each (config, arch) pair as one candidate, so architectures are
    compared with each other too (rows with ``scope == "overall"``).

    With 5 folds the smallest possible two-sided exact Wilcoxon p is 0.0625,
    so it can never reach 0.05; see the module docstring.

    Args:
        results: one row per (config, arch, fold), as in ``results.csv``.
        metric: the column to compare.
        overall: also compare across architectures.

    Returns:
        Columns ``scope`` (``"arch"`` or ``"overall"``), ``arch``, ``config``,
        ``best_arch``, ``best`` (the best configuration), ``metric``,
        ``n_pairs``, ``mean_diff`` (mean of config minus best over the paired
        folds, so usually negative), ``wilcoxon_p``, ``corrected_t_p`` (the
        corrected resampled t-test), ``ttest_p`` (the plain paired t-test),
        ``test_train_ratio`` (the ``n_test/n_train`` it used: from the
        ``n_test``, ``n_train`` and ``n_val`` columns when present, else
        ``1/(K-1)``) and ``note`` (why a p-value is NaN or fixed at 1). The
        best configuration itself gets no row.

    Raises:
        SignferError: if ``metric`` or a key column is missing.
    """
    results = dedupe_folds(results)
    if metric not in results.columns:
        raise SignferError(f"results table lacks metric column {metric!r}")
    results = results.assign(**{metric: pd.to_numeric(results[metric], errors="coerce")})
    ratio = fold_test_train_ratio(results)
    rows = []
    for arch in ordered_unique(results["arch"]):
        sub = results[results["arch"] == arch]
        table = sub.pivot(index="fold", columns="config", values=metric)
        for r in _compare_to_best(table, ordered_unique(sub["config"]), ratio):
            rows.append({"scope": "arch", "arch": arch, "config": r.pop("unit"),
                         "best_arch": arch, "best": r.pop("best_unit"), "metric": metric, **r})
    if overall:
        units = list(dict.fromkeys(zip(results["config"], results["arch"])))
        table = results.pivot(index="fold", columns=["config", "arch"], values=metric)
        for r in _compare_to_best(table, units, ratio):
            (config, arch), (best, best_arch) = r.pop("unit"), r.pop("best_unit")
            rows.append({"scope": "overall", "arch": arch, "config": config,
                         "best_arch": best_arch, "best": best, "metric": metric, **r})
    return pd.DataFrame(rows, columns=COLUMNS)
