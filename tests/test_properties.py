"""Property tests (hypothesis) of the readers and the fold splitter: what must hold for any input.

The FePh label decoder and the manifest reader either return the right thing
or raise one :class:`SignferError`, never another exception. The fold
splitter never puts a group on both sides, tests each sample exactly once and,
where every sample is its own group (manifests without groups) or there are
no groups (class folders), stratifies within one sample per class: each fold
holds ``floor`` or ``ceil`` of ``n_c / k`` samples of a class with ``n_c``.

That bound does not hold for larger groups: the grouping wins, and a class
may even miss a test fold while it spans ``k`` groups (groups shared by
classes), so no stratification is claimed there. Example counts are small:
the file runs in a few seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures import make_manifest, write_csv
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from signfer.data.feph import parse_facial_label
from signfer.data.manifest import load_manifest
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.experiments.folds import assign_folds
from signfer.labels import CANONICAL, FEPH_CODES, SYNONYMS, canonical

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODE_ORDER = list(FEPH_CODES)


# --- the FePh label decoder --------------------------------------------------------------------------

@st.composite
def written_labels(draw) -> tuple[str, list[str]]:
    """A Facial_label cell as people write one, and its codes."""
    codes = draw(st.lists(st.sampled_from(CODE_ORDER), min_size=1, max_size=4))
    sep = draw(st.sampled_from(["", ",", ", ", " ", " , "]))
    quote = draw(st.sampled_from(["", "'", '"']))
    text = sep.join(f"{quote}{c}{quote}" for c in codes) if sep else quote + "".join(codes) + quote
    wrap = draw(st.sampled_from(["", "[]", "()", '""', "''"]))
    if wrap:
        text = wrap[0] + text + wrap[1]
    pad = draw(st.sampled_from(["", " ", "  "]))
    return pad + text + pad, codes


@FAST
@given(written_labels())
def test_feph_labels_decode_to_their_distinct_codes_in_code_order(cell):
    text, codes = cell
    assert parse_facial_label(text, "x.csv:2") == tuple(FEPH_CODES[c] for c in sorted(set(codes)))


@FAST
@given(st.text(max_size=12))
def test_any_feph_label_text_decodes_or_is_one_error_naming_the_row(text):
    try:
        labels = parse_facial_label(text, "FePh_labels.csv:7")
    except SignferError as e:
        assert str(e).startswith("FePh_labels.csv:7: unknown label code") and "\n" not in str(e)
        return
    assert labels == tuple(sorted(set(labels), key=list(FEPH_CODES.values()).index))
    assert set(labels) <= set(FEPH_CODES.values())
    assert bool(labels) == any(ch in "01234567" for ch in text)


# --- the manifest reader -----------------------------------------------------------------------------

LABEL_TEXT = st.sampled_from([*SYNONYMS, "", " ", "Happy", " SAD ", "Neutral"])


@FAST
@given(rows=st.lists(st.tuples(LABEL_TEXT, st.sampled_from(["v1", "v2", "clip 3"])), min_size=1, max_size=8),
       grouped=st.booleans())
def test_manifest_rows_become_samples_in_order(rows, grouped):
    with tempfile.TemporaryDirectory() as tmp:
        header = ("path", "label", "group") if grouped else ("path", "label")
        written = [(f"img/{i}.png", label, group)[: len(header)] for i, (label, group) in enumerate(rows)]
        csv = make_manifest(tmp, written, header=header, size=2)
        used = [(i, label, group) for i, (label, group) in enumerate(rows) if label.strip()]
        if not used:
            with pytest.raises(SignferError, match="no usable samples"):
                load_manifest(csv)
            return
        table = load_manifest(csv)
        s = table.samples
        assert s["label"].tolist() == [canonical(label) for _, label, _ in used]
        assert s["source"].tolist() == [f"manifest.csv:{i + 2}" for i, _, _ in used]
        assert s["path"].tolist() == [str(Path(tmp).resolve() / f"img/{i}.png") for i, _, _ in used]
        assert s["group"].tolist() == ([g for _, _, g in used] if grouped else s["path"].tolist())
        assert table.skipped["source"].tolist() == [f"manifest.csv:{i + 2}" for i, (label, _) in
                                                    enumerate(rows) if not label.strip()]
        assert set(table.classes) <= set(CANONICAL) | {"contempt", "none"}


@FAST
@given(st.lists(st.lists(st.text(max_size=8), max_size=4), max_size=5))
def test_any_manifest_text_loads_or_is_one_error(rows):
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_csv(Path(tmp) / "m.csv", ("path", "label", "group"), rows)
        try:
            table = load_manifest(csv)
        except SignferError as e:
            assert "\n" not in str(e)
            return
        assert isinstance(table, SampleTable) and len(table.samples)


# --- the fold splitter -------------------------------------------------------------------------------

def table_of(labels: list[str], groups: list) -> SampleTable:
    n = len(labels)
    frame = pd.DataFrame({"path": [f"/d/{i}.png" for i in range(n)], "label": labels, "group": groups,
                          "source": [f"m.csv:{i + 2}" for i in range(n)]}).astype({"group": object})
    return SampleTable(frame)


def folds_or_skip(table: SampleTable, k: int, seed: int) -> np.ndarray:
    try:
        return assign_folds(table, k, seed)
    except SignferError:  # too few samples or groups per class for k folds: refused, rightly
        assume(False)


@st.composite
def splittable(draw, grouped: bool) -> tuple[list[str], list[str], int]:
    """Labels (each class at least k times), groups from a small pool (``grouped``) and k."""
    k = draw(st.integers(2, 5))
    counts = draw(st.lists(st.integers(k, 14), min_size=1, max_size=3))
    labels = draw(st.permutations([c for c, n in zip("abc", counts) for _ in range(n)]))
    pool = draw(st.integers(k, 12))
    groups = [f"video{draw(st.integers(0, pool - 1))}" for _ in labels] if grouped else []
    return list(labels), groups, k


@settings(FAST, max_examples=30)  # StratifiedGroupKFold is the slow one
@given(case=splittable(grouped=True), seed=st.integers(0, 2**16))
def test_folds_test_each_sample_once_and_never_split_a_group(case, seed):
    labels, groups, k = case
    fold = folds_or_skip(table_of(labels, groups), k, seed)
    assert fold.shape == (len(labels),) and set(fold) <= set(range(k))  # one test fold per sample
    per_group = pd.Series(fold).groupby(pd.Series(groups)).nunique()
    assert (per_group == 1).all()  # a group is never on both sides
    assert (assign_folds(table_of(labels, groups), k, seed) == fold).all()  # the seed fixes them


@FAST
@given(case=splittable(grouped=False), seed=st.integers(0, 2**16), own_groups=st.booleans())
def test_folds_stratify_within_one_sample_per_class(case, seed, own_groups):
    labels, _, k = case
    groups = [f"/d/{i}.png" for i in range(len(labels))] if own_groups else [None] * len(labels)
    fold = assign_folds(table_of(labels, groups), k, seed)
    assert fold.shape == (len(labels),) and set(fold) <= set(range(k))
    y = np.array(labels)
    for c in set(labels):
        counts = np.bincount(fold[y == c], minlength=k)
        assert (np.abs(counts - (y == c).sum() / k) < 1).all(), (c, counts)
