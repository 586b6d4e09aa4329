"""Fold assignment: stratified, grouped when the dataset has groups, saved and reused.

Splitters come from scikit-learn. Frames of one video (one group) are never on
both sides of a split. ``folds.csv`` in the run folder fixes the folds for
every configuration that runs there, so configurations are compared on
identical splits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from signfer.data.table import SampleTable
from signfer.errors import SignferError, first_line
from signfer.io import atomic_path

FOLDS_FILE = "folds.csv"


def check_splittable(table: SampleTable, k: int) -> None:
    """Fail with a one-line message if some class cannot appear in every fold."""
    if k < 2:
        raise SignferError(f"--folds must be at least 2, not {k}")
    s = table.samples
    counts = s["label"].value_counts()
    small = counts[counts < k]
    if len(small):
        c, n = small.index[0], int(small.iloc[0])
        raise SignferError(
            f"{table.name}: class {c!r} has {n} sample(s), fewer than the {k} folds "
            f"(e.g. {s.loc[s['label'] == c, 'source'].iloc[0]}); {_remedy(n)}"
        )
    if table.has_groups:
        groups = s.groupby("label")["group"].nunique()
        few = groups[groups < k]
        if len(few):
            c, n = few.index[0], int(few.iloc[0])
            raise SignferError(
                f"{table.name}: class {c!r} occurs in only {n} group(s) (videos, subjects or signers), fewer than "
                f"the {k} folds, so some test folds would lack it; {_remedy(n)}"
            )


def _remedy(n: int) -> str:
    """What to do about a class found in only ``n`` samples or groups."""
    if n >= 2:
        return f"use at most {n} folds, or leave the class out"
    return "leave the class out (cross-validation needs it on both sides of every split)"


def assign_folds(table: SampleTable, k: int, seed: int) -> np.ndarray:
    """The test fold (0..k-1) of every sample.

    >>> # every sample is tested exactly once; groups never straddle folds
    """
    check_splittable(table, k)
    y = table.y()
    x = np.zeros(len(y))
    if table.has_groups:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(x, y, table.samples["group"].to_numpy())
    else:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y)
    fold = np.full(len(y), -1)
    for i, (_, test) in enumerate(splits):
        fold[test] = i
    assert (fold >= 0).all()
    return fold


def _group_text(groups: pd.Series) -> np.ndarray:
    """Groups as folds.csv holds them: text, ``""`` for no group (None or NaN)."""
    return np.array(["" if pd.isna(g) else str(g) for g in groups], dtype=object)


def _read_folds(path: Path) -> pd.DataFrame:
    """folds.csv as saved, or ValueError saying how it is damaged."""
    saved = pd.read_csv(path, dtype={"group": str, "label": str, "path": str}, keep_default_na=False)
    missing = sorted({"path", "label", "fold"} - set(saved.columns))
    if missing:
        raise ValueError(f"no column(s) {missing}")
    if not len(saved):
        raise ValueError("no rows")
    for column in ("fold", "seed"):
        if column not in saved:
            continue
        values = pd.to_numeric(saved[column], errors="coerce")
        bad = values.isna() | (values < 0) | (values != values.round())
        if bad.any():
            raise ValueError(f"{column} {saved[column][bad].iloc[0]!r} on line {int(bad.argmax()) + 2} "
                             "is not a whole number >= 0")
        saved[column] = values.astype(int)
    return saved


def read_folds(run: str | Path) -> pd.DataFrame:
    """The ``folds.csv`` of run folder ``run``, or a one-line error saying why it cannot be used."""
    path = Path(run) / FOLDS_FILE
    if not path.is_file():
        raise SignferError(f"{path}: not found; a cv or grid run folder holds the folds it ran on")
    try:
        return _read_folds(path)
    except (OSError, ValueError) as e:
        why = first_line(e)
        raise SignferError(f"{path}: damaged ({why})") from None


def first_other_sample(saved: pd.DataFrame, samples: pd.DataFrame) -> str | None:
    """Whether ``saved`` (a folds.csv) lists the faces of ``samples``, in order and
    with their labels, wherever the dataset now lies: ``None`` if so, else a
    description of the first difference.

    Paths are compared below the folder that holds all of them, so a dataset
    moved or mounted elsewhere is the same dataset.
    """
    if len(saved) != len(samples):
        return f"{len(saved)} faces there, {len(samples)} here"
    was, now = (_below_common_folder(x["path"].astype(str).tolist()) for x in (saved, samples))
    for i, (a, b, la, lb) in enumerate(zip(was, now, saved["label"].astype(str), samples["label"].astype(str))):
        if a != b or la != lb:
            return f"face {i + 1} is {a} ({la}) there, {b} ({lb}) here"
    return None


def _below_common_folder(paths: list[str]) -> list[str]:
    import os

    try:
        top = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    except ValueError:  # absolute and relative paths mixed, or two drives: compare them whole
        return list(paths)
    return [os.path.relpath(p, top) if top else p for p in paths]


def load_or_make_folds(table: SampleTable, k: int, seed: int, out: Path, *, redo_damaged: bool = False,
                       log=None) -> np.ndarray:
    """Read ``out/folds.csv`` if it exists (checking it fits), else make and save it.

    A damaged folds.csv (empty, cut short, without its columns) is an error
    naming it; with ``redo_damaged`` the folds are made again, which gives
    the same folds: they depend only on the samples, ``k`` and ``seed``.
    """
    path = Path(out) / FOLDS_FILE
    s = table.samples
    saved = None
    if path.exists():
        try:
            saved = _read_folds(path)
        except (OSError, ValueError) as e:  # pandas' parse errors are ValueErrors
            why = first_line(e)
            if not redo_damaged:
                raise SignferError(f"{path}: damaged ({why}); re-run with --redo-damaged to make the "
                                   "folds again (from the same seed, they come out the same)") from None
            if log:
                log(f"{path}: damaged ({why}); making the folds again (--redo-damaged)")
    if saved is not None:
        same = (len(saved) == len(s) and (saved["path"].to_numpy() == s["path"].to_numpy()).all()
                and (saved["label"].to_numpy() == s["label"].to_numpy()).all())
        if not same:
            raise SignferError(f"{path} was made for other samples; use a new --out for this dataset")
        was = saved["group"].to_numpy() if "group" in saved else np.full(len(saved), "", dtype=object)
        now = _group_text(s["group"])
        if (was != now).any():
            i = int(np.flatnonzero(was != now)[0])
            old_group, new_group = (repr(g) if g else "none" for g in (was[i], now[i]))
            raise SignferError(
                f"{path}: made with other groups, so its folds may split a group (e.g. "
                f"{s['source'].iloc[i]}: group {old_group} there, {new_group} now); "
                f"use a new --out for this grouping")
        saved_seed = int(saved["seed"].iloc[0]) if "seed" in saved else None
        if saved["fold"].nunique() != k or saved_seed not in (None, seed):
            raise SignferError(
                f"{path} has {saved['fold'].nunique()} folds (seed {saved_seed}), "
                f"not {k} (seed {seed}); use a new --out"
            )
        if saved["fold"].isin(range(k)).all():
            return saved["fold"].to_numpy()
        why = f"fold numbers {sorted(saved['fold'].unique())} are not 0..{k - 1}"
        if not redo_damaged:
            raise SignferError(f"{path}: damaged ({why}); re-run with --redo-damaged to make the folds again")
        if log:
            log(f"{path}: damaged ({why}); making the folds again (--redo-damaged)")
    fold = assign_folds(table, k, seed)
    frame = s[["path", "label", "group"]].assign(fold=fold, seed=seed)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return fold


def inner_split(
    table: SampleTable, train_idx: np.ndarray, val_fraction: float, seed: int,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation part from the training side (grouped when there are groups).

    It decides early stopping and the checkpoint kept; the test fold never does.
    When the side is too small for ``val_fraction`` (too few groups, or too few
    samples in its largest class), the part grows, and ``log`` is told so.
    """
    y = table.y()[train_idx]
    wanted = int(round(1.0 / val_fraction))
    # tiny training sides: fewer, larger parts (sklearn needs n_splits <= groups
    # and <= the largest class)
    n_units = table.samples["group"].iloc[train_idx].nunique() if table.has_groups else len(y)
    n_splits = max(2, min(wanted, n_units, int(np.bincount(y).max())))
    if n_units < 2:
        raise SignferError("the training side has a single group (video): no validation part can be carved")
    x = np.zeros(len(train_idx))
    with warnings.catch_warnings():
        # a rare class with fewer members than n_splits is fine here: the
        # validation part just may lack it
        warnings.simplefilter("ignore", UserWarning)
        if table.has_groups:
            groups = table.samples["group"].to_numpy()[train_idx]
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            tr, va = next(splitter.split(x, y, groups))
        else:
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            tr, va = next(splitter.split(x, y))
    share = len(va) / len(train_idx)
    if share > 1.5 * val_fraction and log is not None:
        units = "groups" if table.has_groups else "samples"
        log(f"note: the validation part that chooses the epoch is {share:.0%} of the training side "
            f"({len(va)} of {len(train_idx)} samples, {n_units} {units}), not val_fraction {val_fraction:g}: "
            f"too few {units} for smaller parts, so fewer samples are left to train on")
    return train_idx[tr], train_idx[va]
