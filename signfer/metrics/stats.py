"""Paired comparisons of configurations over the same cross-validation folds.

Folds are the unit of pairing: configuration A on fold 3 is compared with
configuration B on fold 3, because both saw the same training and test frames.
Comparing unpaired means would throw away that shared variation.

With K = 5 folds the smallest two-sided exact Wilcoxon signed-rank p-value is
2 / 2**5 = 0.0625 (all five differences with the same sign), so the Wilcoxon
test can never reach p < 0.05 on 5-fold CV. The paired t-test can, at the
price of assuming normally distributed differences. Read both as descriptive.

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
    "n_pairs", "mean_diff", "wilcoxon_p", "ttest_p", "note",
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


def _compare_to_best(table: pd.DataFrame, units: list) -> list[dict]:
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
        rows.append({
            "unit": unit, "best_unit": best, "n_pairs": int(len(pair)),
            "mean_diff": float(np.mean(x - y)) if len(pair) else float("nan"),
            "wilcoxon_p": wp, "ttest_p": tp, "note": note,
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
    Wilcoxon signed-rank test and the two-sided paired t-test.

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
        folds, so usually negative), ``wilcoxon_p``, ``ttest_p`` and ``note``
        (why a p-value is NaN or fixed at 1). The best configuration itself
        gets no row.

    Raises:
        SignferError: if ``metric`` or a key column is missing.
    """
    results = dedupe_folds(results)
    if metric not in results.columns:
        raise SignferError(f"results table lacks metric column {metric!r}")
    results = results.assign(**{metric: pd.to_numeric(results[metric], errors="coerce")})
    rows = []
    for arch in ordered_unique(results["arch"]):
        sub = results[results["arch"] == arch]
        table = sub.pivot(index="fold", columns="config", values=metric)
        for r in _compare_to_best(table, ordered_unique(sub["config"])):
            rows.append({"scope": "arch", "arch": arch, "config": r.pop("unit"),
                         "best_arch": arch, "best": r.pop("best_unit"), "metric": metric, **r})
    if overall:
        units = list(dict.fromkeys(zip(results["config"], results["arch"])))
        table = results.pivot(index="fold", columns=["config", "arch"], values=metric)
        for r in _compare_to_best(table, units):
            (config, arch), (best, best_arch) = r.pop("unit"), r.pop("best_unit")
            rows.append({"scope": "overall", "arch": arch, "config": config,
                         "best_arch": best_arch, "best": best, "metric": metric, **r})
    return pd.DataFrame(rows, columns=COLUMNS)
