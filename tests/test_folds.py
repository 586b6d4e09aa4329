"""Fold assignment: no group straddles a split, full coverage, saved folds, inner splits.

In the manner of scikit-learn's tests/test_split.py: properties of index
arrays, on tables built in memory (no image is read here).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures import make_folder_dataset, make_manifest
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from signfer.data.folder import load_folder
from signfer.data.manifest import load_manifest
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.experiments.folds import (
    FOLDS_FILE,
    assign_folds,
    check_splittable,
    inner_split,
    load_or_make_folds,
)


def grouped_table(n_groups: int = 40, seed: int = 0, p=(0.5, 0.3, 0.2), name: str = "FePh") -> SampleTable:
    """A FePh-like table: videos of 3-8 frames, imbalanced classes, frames of a video grouped."""
    rng = np.random.default_rng(seed)
    classes = ["happiness", "neutral", "sadness"]
    rows = []
    for g in range(n_groups):
        for f in range(int(rng.integers(3, 9))):
            label = rng.choice(classes, p=p)
            rows.append((f"/data/v{g:02d}_fn{f:03d}.png", str(label), f"v{g:02d}", f"x.csv:{len(rows) + 2}"))
    return SampleTable(pd.DataFrame(rows, columns=["path", "label", "group", "source"]), name=name)


def table_of(labels, groups=None, name="toy") -> SampleTable:
    groups = groups if groups is not None else [None] * len(labels)
    rows = [(f"/data/{i:03d}.png", lab, g, f"m.csv:{i + 2}") for i, (lab, g) in enumerate(zip(labels, groups))]
    df = pd.DataFrame(rows, columns=["path", "label", "group", "source"]).astype({"group": object})
    return SampleTable(df, name=name)


@pytest.fixture(scope="module")
def table() -> SampleTable:
    return grouped_table()


# --- assign_folds -----------------------------------------------------------

@pytest.mark.parametrize("k", [3, 5])
def test_no_group_on_both_sides_of_any_split(table, k):
    fold = assign_folds(table, k, seed=0)
    groups = table.samples["group"].to_numpy()
    for f in range(k):
        test_groups = set(groups[fold == f])
        train_groups = set(groups[fold != f])
        assert test_groups and not test_groups & train_groups
    # and so each group has exactly one fold
    assert (table.samples.assign(fold=fold).groupby("group")["fold"].nunique() == 1).all()


@pytest.mark.parametrize("k", [3, 5])
def test_every_sample_tested_exactly_once(table, k):
    fold = assign_folds(table, k, seed=0)
    assert fold.shape == (len(table.samples),)
    assert set(fold.tolist()) == set(range(k))
    tests = np.concatenate([np.flatnonzero(fold == f) for f in range(k)])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(table.samples)))


def test_stratification_roughly_holds(table):
    k = 5
    fold = assign_folds(table, k, seed=0)
    y = table.y()
    overall = np.bincount(y) / len(y)
    for f in range(k):
        share = np.bincount(y[fold == f], minlength=len(overall)) / (fold == f).sum()
        assert (share > 0).all(), f"fold {f} lacks a class"
        assert np.abs(share - overall).max() < 0.1, (f, share, overall)
    # folds are of similar size (videos are 3-8 frames, 40 of them)
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 0.3 * sizes.mean()


def test_same_seed_same_folds_other_seed_other_folds(table):
    a = assign_folds(table, 5, seed=7)
    np.testing.assert_array_equal(a, assign_folds(table, 5, seed=7))
    assert not np.array_equal(a, assign_folds(table, 5, seed=8))


def test_grouped_table_uses_stratified_group_kfold(table):
    fold = assign_folds(table, 4, seed=3)
    splitter = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=3)
    splits = splitter.split(np.zeros(len(fold)), table.y(), table.samples["group"].to_numpy())
    for f, (_, test) in enumerate(splits):
        np.testing.assert_array_equal(np.flatnonzero(fold == f), np.sort(test))


def test_folder_dataset_without_groups_uses_stratified_kfold(tmp_path):
    root = make_folder_dataset(tmp_path / "faces", per_class=6, size=8)
    table = load_folder(root)
    assert not table.has_groups
    fold = assign_folds(table, 3, seed=5)
    splits = StratifiedKFold(n_splits=3, shuffle=True, random_state=5).split(np.zeros(len(fold)), table.y())
    for f, (_, test) in enumerate(splits):
        np.testing.assert_array_equal(np.flatnonzero(fold == f), np.sort(test))
    # stratified: 6 per class over 3 folds -> exactly 2 of each class per fold
    y = table.y()
    for f in range(3):
        assert np.bincount(y[fold == f]).tolist() == [2, 2, 2]


def test_manifest_without_groups_keeps_copies_of_one_image_in_one_fold(tmp_path):
    # 18 images, 6 of them listed a second time under another label (one face, two expressions)
    classes = ["happy", "sad", "angry"]
    rows = [(f"{c}{i}.png", c) for c in classes for i in range(6)]
    rows += [(f"{c}{i}.png", classes[(j + 1) % 3]) for j, c in enumerate(classes) for i in range(2)]
    table = load_manifest(make_manifest(tmp_path, rows, header=("path", "label")))
    for seed in range(3):
        fold = assign_folds(table, 3, seed)
        assert (table.samples.assign(fold=fold).groupby("path")["fold"].nunique() == 1).all()


# --- check_splittable -------------------------------------------------------

def test_class_with_fewer_members_than_k_is_named():
    t = table_of(["happiness"] * 6 + ["fear"] * 2)
    with pytest.raises(SignferError, match=r"toy: class 'fear' has 2 sample\(s\), fewer than the 3 folds"):
        check_splittable(t, 3)
    with pytest.raises(SignferError, match="'fear'"):
        assign_folds(t, 3, seed=0)
    check_splittable(t, 2)  # fine with 2 folds


def test_class_in_too_few_groups_is_named():
    # 'fear' has 4 samples but all from 2 videos: cannot be in 3 test folds
    labels = ["happiness"] * 6 + ["fear"] * 4
    groups = ["a", "b", "c", "d", "e", "f", "a", "a", "b", "b"]
    t = table_of(labels, groups)
    with pytest.raises(SignferError, match=r"class 'fear' occurs in only 2 group\(s\).*use at most 2 folds"):
        check_splittable(t, 3)
    check_splittable(t, 2)
    # in one group only, no number of folds can do: the class must go
    with pytest.raises(SignferError, match=r"only 1 group\(s\).*leave the class out \(cross"):
        check_splittable(table_of(labels, ["a", "b", "c", "d", "e", "f", "a", "a", "a", "a"]), 2)


def test_k_below_two_is_an_error(table):
    with pytest.raises(SignferError, match="at least 2"):
        check_splittable(table, 1)


# --- load_or_make_folds -----------------------------------------------------

def test_folds_file_written_and_reused(table, tmp_path):
    fold = load_or_make_folds(table, 5, 0, tmp_path)
    saved = pd.read_csv(tmp_path / FOLDS_FILE)
    assert list(saved.columns) == ["path", "label", "group", "fold", "seed"]
    assert saved["path"].tolist() == table.samples["path"].tolist()
    np.testing.assert_array_equal(saved["fold"].to_numpy(), fold)
    assert (saved["seed"] == 0).all()
    np.testing.assert_array_equal(load_or_make_folds(table, 5, 0, tmp_path), fold)


def test_saved_folds_win_over_a_new_assignment(table, tmp_path):
    """The file, not the splitter, fixes the folds: an edited folds.csv is used as is."""
    load_or_make_folds(table, 5, 0, tmp_path)
    saved = pd.read_csv(tmp_path / FOLDS_FILE)
    saved["fold"] = (saved["fold"] + 1) % 5
    saved.to_csv(tmp_path / FOLDS_FILE, index=False)
    np.testing.assert_array_equal(load_or_make_folds(table, 5, 0, tmp_path), saved["fold"].to_numpy())


def test_folds_file_of_another_dataset_is_refused(table, tmp_path):
    load_or_make_folds(table, 5, 0, tmp_path)
    other = grouped_table(seed=1)
    with pytest.raises(SignferError, match=f"{FOLDS_FILE} was made for other samples"):
        load_or_make_folds(other, 5, 0, tmp_path)
    # same paths but one label changed is another dataset too
    relabelled = grouped_table()
    relabelled.samples.loc[0, "label"] = "sadness" if relabelled.samples.loc[0, "label"] != "sadness" else "neutral"
    with pytest.raises(SignferError, match="other samples"):
        load_or_make_folds(relabelled, 5, 0, tmp_path)


@pytest.mark.parametrize("k, seed", [(3, 0), (5, 1)])
def test_folds_file_with_other_k_or_seed_is_refused(table, tmp_path, k, seed):
    load_or_make_folds(table, 5, 0, tmp_path)
    with pytest.raises(SignferError, match="use a new --out"):
        load_or_make_folds(table, k, seed, tmp_path)


def test_folds_file_without_seed_column_and_other_k_is_a_clean_error(table, tmp_path):
    load_or_make_folds(table, 5, 0, tmp_path)
    saved = pd.read_csv(tmp_path / FOLDS_FILE).drop(columns="seed")
    saved.to_csv(tmp_path / FOLDS_FILE, index=False)
    with pytest.raises(SignferError):
        load_or_make_folds(table, 3, 0, tmp_path)


def test_folds_file_made_with_other_groups_is_refused(table, tmp_path):
    load_or_make_folds(table, 5, 0, tmp_path)
    first = table.samples.loc[0, "group"]
    ungrouped = SampleTable(table.samples.assign(group=None), name=table.name)
    with pytest.raises(SignferError, match=rf"{FOLDS_FILE}: made with other groups.* "
                                           rf"x\.csv:2: group '{first}' there, none now\); use a new --out"):
        load_or_make_folds(ungrouped, 5, 0, tmp_path)
    regrouped = grouped_table()
    regrouped.samples.loc[0, "group"] = "v99"
    with pytest.raises(SignferError, match=f"group '{first}' there, 'v99' now"):
        load_or_make_folds(regrouped, 5, 0, tmp_path)


def test_folds_file_without_groups_is_reused_whether_none_is_none_or_nan(tmp_path):
    t = table_of(["happiness", "neutral"] * 6)
    fold = load_or_make_folds(t, 3, 0, tmp_path)
    nan_groups = SampleTable(t.samples.assign(group=np.nan), name=t.name)
    np.testing.assert_array_equal(load_or_make_folds(nan_groups, 3, 0, tmp_path), fold)
    grouped = SampleTable(t.samples.assign(group=t.samples["path"]), name=t.name)
    with pytest.raises(SignferError, match="other groups"):
        load_or_make_folds(grouped, 3, 0, tmp_path)


# --- inner_split ------------------------------------------------------------

@pytest.mark.parametrize("val_fraction", [0.15, 0.3])
def test_inner_split_stays_inside_the_training_side(table, val_fraction):
    k = 5
    fold = assign_folds(table, k, seed=0)
    groups = table.samples["group"].to_numpy()
    for f in range(k):
        test_idx = np.flatnonzero(fold == f)
        train_side = np.flatnonzero(fold != f)
        tr, va = inner_split(table, train_side, val_fraction, seed=f)
        assert len(tr) and len(va)
        assert not set(tr) & set(va)
        assert set(tr) | set(va) == set(train_side)  # nothing of the training side is lost
        assert not (set(tr) | set(va)) & set(test_idx)  # the test fold never enters
        assert not set(groups[tr]) & set(groups[va])  # no video on both sides
        assert 0.05 < len(va) / len(train_side) < 0.5


def test_inner_split_is_deterministic(table):
    train_side = np.arange(0, len(table.samples), 2)
    a = inner_split(table, train_side, 0.2, seed=3)
    b = inner_split(table, train_side, 0.2, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_inner_split_without_groups(tmp_path):
    table = load_folder(make_folder_dataset(tmp_path / "faces", per_class=10, size=8))
    train_side = np.arange(0, 30, 1)[np.arange(30) % 3 != 0]
    tr, va = inner_split(table, train_side, 0.25, seed=0)
    assert sorted(np.concatenate([tr, va]).tolist()) == sorted(train_side.tolist())
    assert not set(tr) & set(va)
    # stratified: every class is in the validation part
    assert set(table.y()[va]) == {0, 1, 2}


def test_inner_split_of_a_single_video_is_an_error():
    t = table_of(["happiness", "neutral"] * 3 + ["happiness"] * 4,
                 ["a"] * 6 + ["b", "b", "c", "c"])
    with pytest.raises(SignferError, match="single group"):
        inner_split(t, np.arange(6), 0.15, seed=0)


def test_inner_split_says_when_a_small_side_makes_the_validation_part_larger():
    # 3 videos: at most 3 parts, so 1/3 of the side validates instead of 0.15
    t = table_of(["happiness", "neutral"] * 6, ["a"] * 4 + ["b"] * 4 + ["c"] * 4)
    notes: list[str] = []
    tr, va = inner_split(t, np.arange(12), 0.15, seed=0, log=notes.append)
    assert len(notes) == 1 and f"({len(va)} of 12 samples, 3 groups)" in notes[0]
    assert f"is {len(va) / 12:.0%} of the training side" in notes[0]


def test_inner_split_is_quiet_when_the_side_is_large_enough(table):
    notes: list[str] = []
    inner_split(table, np.arange(len(table.samples)), 0.3, seed=0, log=notes.append)
    assert notes == []


def test_inner_split_notes_a_part_far_above_val_fraction_and_not_one_near_it():
    # 4 videos at 0.15: one video, a quarter of the side, validates
    notes: list[str] = []
    t = table_of(["happiness", "neutral", "sadness"] * 8, [f"v{i // 6}" for i in range(24)])
    _, va = inner_split(t, np.arange(24), 0.15, seed=0, log=notes.append)
    assert len(va) == 6 and len(notes) == 1 and "is 25% of the training side" in notes[0]
    # 7 videos of 3 at 0.15: one video, 1/7 = 14%, is what was asked: no note
    t = table_of(["happiness", "neutral", "sadness"] * 7, [f"v{i // 3}" for i in range(21)])
    notes.clear()
    _, va = inner_split(t, np.arange(21), 0.15, seed=0, log=notes.append)
    assert notes == [] and len(va) == 3
