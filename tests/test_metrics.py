"""Tests for signfer.metrics.core and signfer.metrics.stats: pure functions on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from signfer.errors import SignferError
from signfer.metrics import aggregate, compute_metrics, paired_tests

# ---------------------------------------------------------------- compute_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compute_metrics_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    classes = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    y_true = rng.integers(0, 7, size=300)
    # Mostly right, partly random, so that every score is strictly between 0 and 1.
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 7, size=300))
    m = compute_metrics(y_true, y_pred, classes)

    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m["macro_recall"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))
    assert m["confusion"] == confusion_matrix(y_true, y_pred, labels=range(7)).tolist()
    per_class_recall = recall_score(y_true, y_pred, average=None, labels=range(7))
    assert [m["per_class"][c]["recall"] for c in classes] == pytest.approx(per_class_recall)
    assert [m["per_class"][c]["support"] for c in classes] == np.bincount(y_true, minlength=7).tolist()
    assert m["classes"] == classes and m["n"] == 300
    # Must survive the runner's json.dump unchanged.
    assert json.loads(json.dumps(m)) == m


def test_compute_metrics_hand_checked():
    # true a a a b b c / pred a a b b a c
    m = compute_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 2], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # 13/18
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 1 * 1) / 6)  # 2/3
    assert m["macro_recall"] == pytest.approx(13 / 18)
    assert m["n"] == 6


def test_macro_averages_skip_classes_absent_from_truth_and_predictions():
    # d occurs nowhere: left out. c is predicted but never true: counts with recall 0.
    m = compute_metrics([0, 0, 1, 1], [0, 0, 1, 2], ["a", "b", "c", "d"])
    # over {a, b, c}: (1 + 0.5 + 0) / 3. All four classes would give 0.375,
    # classes of y_true only (balanced accuracy) 0.75.
    assert m["macro_recall"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # The full-size per-class table and confusion still list d, so folds can be summed.
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert np.array(m["confusion"]).shape == (4, 4)
    assert m["confusion"][3] == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "y_true, y_pred",
    [([0, 1], [0]), ([], []), ([0, 3], [0, 1]), ([0, -1], [0, 1]), ([0.0, 1.0], [0, 1])],
)
def test_compute_metrics_rejects_bad_input(y_true, y_pred):
    with pytest.raises(ValueError):
        compute_metrics(np.asarray(y_true), np.asarray(y_pred), ["a", "b", "c"])


# ---------------------------------------------------------------- aggregate


def _results(rows):
    return pd.DataFrame(rows, columns=["config", "arch", "fold", "accuracy", "macro_f1"])


def test_aggregate_mean_sd_and_grid_order():
    df = _results([
        ("zeta", "m", 0, 0.5, 0.4), ("zeta", "m", 1, 0.6, 0.5), ("zeta", "m", 2, 0.7, 0.9),
        ("alpha", "m", 0, 0.9, 0.8),
    ])
    agg = aggregate(df, ["accuracy", "macro_f1"])
    # First appearance, not alphabetical.
    assert agg["config"].tolist() == ["zeta", "alpha"]
    z = agg.iloc[0]
    assert z["n_folds"] == 3
    assert z["accuracy_mean"] == pytest.approx(0.6)
    assert z["accuracy_sd"] == pytest.approx(0.1)  # ddof=1; ddof=0 would be 0.0816
    assert z["macro_f1_mean"] == pytest.approx(0.6)
    assert z["macro_f1_sd"] == pytest.approx(np.std([0.4, 0.5, 0.9], ddof=1))
    assert agg.iloc[1]["n_folds"] == 1 and np.isnan(agg.iloc[1]["accuracy_sd"])


def test_aggregate_counts_a_repeated_fold_once_keeping_the_last():
    df = _results([("a", "m", 0, 0.1, 0.1), ("a", "m", 1, 0.5, 0.5), ("a", "m", 0, 0.3, 0.3)])
    row = aggregate(df, ["accuracy"]).iloc[0]
    assert row["n_folds"] == 2
    assert row["accuracy_mean"] == pytest.approx(0.4)


def test_aggregate_missing_metric_is_an_error():
    with pytest.raises(SignferError, match="weighted_f1"):
        aggregate(_results([("a", "m", 0, 0.5, 0.5)]))


# ---------------------------------------------------------------- paired_tests

A = [0.60, 0.62, 0.61, 0.65, 0.63]
GAIN = [0.05, 0.10, 0.02, 0.08, 0.04]  # B beats A on every fold, by varying amounts


def _two_configs(a, b, arch="m", folds=range(5)):
    rows = [("A", arch, f, x, x) for f, x in zip(folds, a)]
    rows += [("B", arch, f, x, x) for f, x in zip(folds, b)]
    return _results(rows)


def test_paired_tests_better_config_on_every_fold():
    b = [x + g for x, g in zip(A, GAIN)]
    out = paired_tests(_two_configs(A, b), overall=False)
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["arch"], row["config"], row["best"], row["n_pairs"]) == ("m", "A", "B", 5)
    assert row["mean_diff"] == pytest.approx(-np.mean(GAIN))
    # Five same-sign differences: the exact two-sided Wilcoxon floor.
    assert row["wilcoxon_p"] == pytest.approx(0.0625)
    assert 0.0 < row["ttest_p"] < 0.05


def test_paired_tests_pair_by_fold_not_by_row_order():
    b = [x + g for x, g in zip(A, GAIN)]
    df = _two_configs(A, b)
    shuffled = df.sample(frac=1.0, random_state=3)
    ref = paired_tests(df, overall=False).iloc[0]
    got = paired_tests(shuffled, overall=False).iloc[0]
    assert got["mean_diff"] == pytest.approx(ref["mean_diff"])
    assert got["ttest_p"] == pytest.approx(ref["ttest_p"])


def test_paired_tests_use_the_intersection_of_folds():
    b = [x + g for x, g in zip(A, GAIN)]
    df = _two_configs(A, b)
    df = df[~((df["config"] == "A") & (df["fold"] == 4))]
    row = paired_tests(df, overall=False).iloc[0]
    assert row["n_pairs"] == 4
    assert row["mean_diff"] == pytest.approx(-np.mean(GAIN[:4]))


def test_paired_tests_identical_configs_give_p_one():
    row = paired_tests(_two_configs(A, A), overall=False).iloc[0]
    assert row["best"] == "A"  # tie: first in grid order
    assert row["mean_diff"] == 0.0
    assert row["wilcoxon_p"] == 1.0 and row["ttest_p"] == 1.0
    assert "zero" in row["note"]


def test_paired_tests_mixed_differences_are_not_significant():
    b = [x + g for x, g in zip(A, [0.02, -0.01, 0.03, -0.02, 0.01])]
    row = paired_tests(_two_configs(A, b), overall=False).iloc[0]
    assert 0.0625 < row["wilcoxon_p"] <= 1.0
    assert 0.05 < row["ttest_p"] <= 1.0


def test_paired_tests_overall_scope_compares_architectures():
    b = [x + g for x, g in zip(A, GAIN)]
    df = pd.concat([_two_configs(A, b, arch="mobilenet"),
                    _two_configs([x + 0.1 for x in A], [x + 0.1 for x in b], arch="effnet")])
    out = paired_tests(df, metric="macro_f1")
    within = out[out["scope"] == "arch"]
    assert within.set_index("arch")["best"].to_dict() == {"mobilenet": "B", "effnet": "B"}
    overall = out[out["scope"] == "overall"]
    assert len(overall) == 3  # four candidates, minus the best
    assert set(zip(overall["best"], overall["best_arch"])) == {("B", "effnet")}
    assert (overall["mean_diff"] < 0).all()
    assert (out["metric"] == "macro_f1").all()


def test_paired_tests_missing_metric_is_an_error():
    with pytest.raises(SignferError, match="macro_recall"):
        paired_tests(_two_configs(A, A), metric="macro_recall")


# ---------------------------------------------------------------- corrected resampled t-test

def _t4_two_sided_p(t: float) -> float:
    """Two-sided p of Student's t with 4 degrees of freedom, from its closed-form CDF:
    F(t) = 1/2 + 3/8 * u * (1 - t^2 / (12 w)), with w = 1 + t^2/4 and u = t / sqrt(w)."""
    w = 1 + t * t / 4
    return 1 - 2 * (3 / 8) * (abs(t) / np.sqrt(w)) * (1 - t * t / (12 * w))


def test_corrected_resampled_ttest_by_hand():
    from signfer.metrics.stats import corrected_resampled_ttest

    d = [0.01, 0.02, 0.03, 0.04, 0.05]  # mean 0.03, sample variance 0.00025
    # K = 5 folds, n_test/n_train = 1/4: variance x (1/5 + 1/4) = 0.45
    t = 0.03 / np.sqrt(0.45 * 0.00025)  # = 2 * sqrt(2)
    assert t == pytest.approx(2 * np.sqrt(2))
    assert _t4_two_sided_p(t) == pytest.approx(0.04742, abs=1e-5)
    assert corrected_resampled_ttest(d, 0.25) == pytest.approx(_t4_two_sided_p(t), rel=1e-9)
    # ratio 0 is the plain one-sample t-test of the differences: t = 0.03 / sqrt(0.00025 / 5)
    assert corrected_resampled_ttest(d, 0.0) == pytest.approx(_t4_two_sided_p(3 * np.sqrt(2)), rel=1e-9)
    assert corrected_resampled_ttest([-x for x in d], 0.25) == pytest.approx(_t4_two_sided_p(t))
    # degenerate cases
    assert corrected_resampled_ttest([0.0, 0.0, 0.0], 0.5) == 1.0
    assert np.isnan(corrected_resampled_ttest([0.02, 0.02, 0.02], 0.5))
    assert np.isnan(corrected_resampled_ttest([0.02], 0.5))


def test_paired_tests_corrected_p_uses_fold_sizes_and_exceeds_the_plain_one():
    b = [x + g for x, g in zip(A, GAIN)]
    df = _two_configs(A, b)
    d = np.asarray(A) - np.asarray(b)
    # Without fold sizes: K-fold's n_test/n_train = 1/(K-1) = 1/4.
    row = paired_tests(df, overall=False).iloc[0]
    assert row["test_train_ratio"] == pytest.approx(0.25)
    t = d.mean() / np.sqrt((1 / 5 + 1 / 4) * d.var(ddof=1))
    assert row["corrected_t_p"] == pytest.approx(_t4_two_sided_p(t), rel=1e-9)
    assert row["corrected_t_p"] > row["ttest_p"]
    # With them: n_test / (n_train + n_val), the training side of the fold: 30 / (100 + 20).
    sized = df.assign(n_test=30, n_train=100, n_val=20)
    row = paired_tests(sized, overall=False).iloc[0]
    assert row["test_train_ratio"] == pytest.approx(0.25)
    sized = df.assign(n_test=20, n_train=50, n_val=10)
    row = paired_tests(sized, overall=False).iloc[0]
    assert row["test_train_ratio"] == pytest.approx(1 / 3)
    t = d.mean() / np.sqrt((1 / 5 + 1 / 3) * d.var(ddof=1))
    assert row["corrected_t_p"] == pytest.approx(_t4_two_sided_p(t), rel=1e-9)


def test_plain_t_test_is_the_paired_one():
    import scipy.stats

    b = [x + g for x, g in zip(A, GAIN)]
    row = paired_tests(_two_configs(A, b), overall=False).iloc[0]
    assert row["ttest_p"] == pytest.approx(scipy.stats.ttest_rel(A, b).pvalue, rel=1e-12)
