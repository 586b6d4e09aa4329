"""Tests for signfer.data.duplicates and signfer.data.halves: duplicate faces, lists to leave
them out, and the fixed selection / report halves; the FER2013 list kept in the repository."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from signfer.cli import main
from signfer.data import load_dataset
from signfer.data.duplicates import (
    LIST_COLUMNS,
    LISTS,
    NEAR_DISTANCE,
    describe,
    drop_matched,
    find_duplicates,
    hash_images,
    read_list,
)
from signfer.data.halves import HALVES, half_of, halves_of, split_halves
from signfer.data.table import SampleTable
from signfer.errors import SignferError


def _face(seed: int, size: int = 48) -> np.ndarray:
    """A smooth random grey image: unrelated seeds give unrelated images."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=(size, size)), 3)
    return np.clip(128 + 60 * x / x.std(), 0, 255).astype(np.uint8)


def _save(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def _jpeg_again(pixels: np.ndarray, quality: int = 60) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("L"))


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """train/ and validation/ with known copies (file names say what each one is)."""
    root = tmp_path_factory.mktemp("dups")
    base = {i: _face(i) for i in range(8)}
    for i in range(6):
        _save(root / "train" / ("happy" if i % 2 else "sad") / f"Training_{i}.png", base[i])
    v = root / "validation"
    _save(v / "happy" / "PublicTest_exact.png", base[1], "RGB")  # same grey pixels, stored as RGB
    _save(v / "happy" / "PublicTest_relabelled.png", base[2])  # exact copy under another label
    brighter = np.clip(base[3].astype(int) + 12, 0, 255).astype(np.uint8)
    _save(v / "happy" / "PublicTest_near.png", _jpeg_again(brighter))
    _save(v / "sad" / "PublicTest_mirror.png", np.ascontiguousarray(base[4][:, ::-1]))
    _save(v / "happy" / "PublicTest_new6.png", base[6])
    _save(v / "sad" / "PublicTest_new7.png", base[7])
    _save(v / "sad" / "PublicTest_new7_again.png", base[7])  # a copy within validation
    return root


def _by_name(dups: pd.DataFrame) -> dict[str, tuple[str, str, int]]:
    return {Path(p).stem: (Path(m).stem, k, d)
            for p, m, k, d in zip(dups["path"], dups["match_path"], dups["kind"], dups["distance"])}


def test_validation_against_train_finds_exact_near_and_mirrored_copies(faces):
    val = load_dataset("folder", faces, split="validation")
    train = load_dataset("folder", faces, split="train")
    dups = find_duplicates(val, against=train)
    found = _by_name(dups)
    assert set(found) == {"PublicTest_exact", "PublicTest_relabelled", "PublicTest_near", "PublicTest_mirror"}
    assert found["PublicTest_exact"] == ("Training_1", "exact", 0)
    assert found["PublicTest_relabelled"] == ("Training_2", "exact", 0)
    assert found["PublicTest_mirror"][:2] == ("Training_4", "exact, mirrored")
    match, kind, distance = found["PublicTest_near"]
    assert (match, kind) == ("Training_3", "near") and 0 <= distance <= NEAR_DISTANCE
    row = dups[dups["path"].str.endswith("PublicTest_relabelled.png")].iloc[0]
    assert (row["label"], row["match_label"]) == ("happiness", "sadness")
    text = "\n".join(describe(dups, val, train))
    assert "4 of the 7 faces" in text and "3 exact" in text and "1 near" in text
    assert "1 under another label" in text


def test_thresholds_and_mirror_switch(faces):
    val = load_dataset("folder", faces, split="validation")
    train = load_dataset("folder", faces, split="train")
    exact_only = _by_name(find_duplicates(val, against=train, max_distance=-1, mirror=False))
    assert set(exact_only) == {"PublicTest_exact", "PublicTest_relabelled"}
    with pytest.raises(SignferError, match="max_distance"):
        find_duplicates(val, max_distance=300)


def test_unrelated_images_are_far_apart(faces):
    # the hash must not call different faces near: 256 bits, unrelated ones differ in about half
    h = hash_images([_save(faces / "x" / f"{i}.png", _face(100 + i)) for i in range(12)])
    d = np.array([[np.bitwise_count(a ^ b).sum() for b in h.phash] for a in h.phash])
    off = d[~np.eye(len(d), dtype=bool)]
    assert off.min() > NEAR_DISTANCE and 100 < off.mean() < 156


def test_within_one_table_each_copy_names_the_first(faces):
    table = load_dataset("folder", faces, split="all")
    found = _by_name(find_duplicates(table))
    # each later copy names the earliest one in table order (train/ is read before validation/)
    assert found["PublicTest_new7_again"] == ("PublicTest_new7", "exact", 0)
    assert found["PublicTest_exact"] == ("Training_1", "exact", 0)
    assert "PublicTest_new7" not in found and "Training_1" not in found
    text = "\n".join(describe(find_duplicates(table), table))
    assert "across splits" in text and "its own group" in text


def test_one_file_under_two_labels_is_not_a_copy_of_itself(tmp_path):
    # FePh with --keep-multilabel lists a face once per label
    a = _save(tmp_path / "a.png", _face(1))
    b = _save(tmp_path / "b.png", _face(1))  # a real copy
    rows = [(a, "happiness"), (a, "surprise"), (b, "happiness")]
    table = SampleTable(pd.DataFrame({"path": [str(p) for p, _ in rows], "label": [lab for _, lab in rows],
                                      "group": ["v"] * 3, "source": ["x.csv:2", "x.csv:3", "x.csv:4"]}))
    found = find_duplicates(table)
    assert found[["path", "match_path"]].values.tolist() == [[str(b), str(a)]]


def test_list_round_trip_through_the_cli_and_exclude(faces, tmp_path, capsys):
    out = tmp_path / "lists" / "dups.csv"
    rc = main(["data", "duplicates", "--dataset", "folder", "--root", str(faces), "--split", "validation",
               "--against", "train", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0 and "4 of the 7 faces repeat a face in" in err
    listed = pd.read_csv(out)
    assert tuple(listed.columns) == LIST_COLUMNS
    assert "validation/happy/PublicTest_exact.png" in set(listed["file"])
    assert set(listed["match"].str.split("/").str[0]) == {"train"}

    table = load_dataset("folder", faces, split="validation", exclude=str(out))
    assert sorted(Path(p).stem for p in table.samples["path"]) == [
        "PublicTest_new6", "PublicTest_new7", "PublicTest_new7_again"]
    assert len(table.skipped) == 4
    assert table.skipped["reason"].str.contains("on duplicate list .*duplicate of train/").all()
    # the same list works on the split folder itself: faces are matched by file name
    assert len(load_dataset("folder", faces / "validation", exclude=str(out)).samples) == 3

    rc = main(["data", "summary", "--dataset", "folder", "--root", str(faces), "--split", "validation",
               "--exclude", str(out), "--no-framing"])
    stdout = capsys.readouterr().out
    assert rc == 0 and "skipped: 4" in stdout
    assert "duplicates: 1 of the 3 faces repeat a face earlier in the table: 1 exact" in stdout


def test_the_matched_training_faces_leave_train_with_their_reason(faces, tmp_path):
    out = tmp_path / "dups.csv"
    assert main(["data", "duplicates", "--dataset", "folder", "--root", str(faces), "--split", "validation",
                 "--against", "train", "--out", str(out)]) == 0
    matched = set(pd.read_csv(out)["match"].dropna().map(lambda m: Path(m).name))
    train = load_dataset("folder", faces, split="train")
    kept = drop_matched(train, out)
    assert matched and len(kept.samples) == len(train.samples) - len(matched)
    assert not set(kept.samples["path"].map(lambda p: Path(p).name)) & matched
    assert len(kept.skipped) == len(train.skipped) + len(matched)
    assert kept.skipped["reason"].str.contains(r"on duplicate list .* \(repeated by validation/").all()
    assert kept.name == f"{train.name} without {out}'s matches"


def test_lists_of_a_manifest_tell_faces_that_share_a_file_name_apart(tmp_path, capsys):
    # a/0002.png copies a/0001.png; b/ holds two other faces under the same file names.
    root = tmp_path / "m"
    for path, seed in [("a/0001.png", 1), ("a/0002.png", 1), ("b/0001.png", 2), ("b/0002.png", 3)]:
        _save(root / path, _face(seed))
    (root / "m.csv").write_text("path,label,group\na/0001.png,happy,a\na/0002.png,happy,a\n"
                                "b/0001.png,sad,b\nb/0002.png,sad,b\n")
    out = tmp_path / "dups.csv"
    assert main(["data", "duplicates", "--dataset", "manifest", "--root", str(root / "m.csv"),
                 "--out", str(out)]) == 0
    listed = pd.read_csv(out)
    # paths relative to the manifest's folder, as its own rows are
    assert listed[["file", "match"]].values.tolist() == [["a/0002.png", "a/0001.png"]]
    kept = load_dataset("manifest", root / "m.csv", exclude=str(out))
    assert sorted(Path(p).relative_to(root).as_posix() for p in kept.samples["path"]) == [
        "a/0001.png", "b/0001.png", "b/0002.png"]
    left = drop_matched(load_dataset("manifest", root / "m.csv"), out)
    assert sorted(Path(p).relative_to(root).as_posix() for p in left.samples["path"]) == [
        "a/0002.png", "b/0001.png", "b/0002.png"]


def test_bad_lists_are_one_line_errors(faces, tmp_path, capsys):
    with pytest.raises(SignferError, match="no such duplicate list.*fer2013-validation"):
        load_dataset("folder", faces, split="validation", exclude=str(tmp_path / "none.csv"))
    other = tmp_path / "other.csv"
    other.write_text("file\nelsewhere/PublicTest_404.jpg\n")
    with pytest.raises(SignferError, match="none of them in"):
        load_dataset("folder", faces, split="validation", exclude=str(other))
    no_column = tmp_path / "nocol.csv"
    no_column.write_text("path\nx.jpg\n")
    with pytest.raises(SignferError, match="lacks the `file` column"):
        read_list(no_column)
    rc = main(["data", "duplicates", "--dataset", "folder", "--root", str(faces), "--against", "train"])
    assert rc == 2 and "--against needs --split" in capsys.readouterr().err


def test_halves_are_fixed_by_file_name_and_even():
    # SHA-256 of the file name, last bit: the same on every machine and in every folder
    assert half_of("/a/validation/happy/PublicTest_1.jpg") == half_of("PublicTest_1.jpg")
    names = [f"PublicTest_{i}.jpg" for i in range(2000)]
    picked = pd.Series([half_of(n) for n in names])
    assert set(picked) == set(HALVES)
    assert 900 < (picked == "selection").sum() < 1100
    import hashlib

    assert half_of("x.jpg") == HALVES[hashlib.sha256(b"x.jpg").digest()[-1] & 1]


def test_copies_of_a_face_are_in_one_half(tmp_path):
    # 40 faces, each with a copy (exact, brighter and re-compressed, or mirrored) under another name:
    # by file name alone, about half of the pairs would be split
    root = tmp_path / "faces"
    for i in range(40):
        face = _face(100 + i)
        _save(root / "happy" / f"a{i}.png", face)
        copy = [face, _jpeg_again(np.clip(face.astype(int) + 10, 0, 255).astype(np.uint8)),
                np.ascontiguousarray(face[:, ::-1])][i % 3]
        _save(root / "sad" / f"b{i}.png", copy)
    table = load_dataset("folder", root)
    which = dict(zip(table.samples["path"].map(lambda p: Path(p).stem), halves_of(table)))
    assert all(which[f"a{i}"] == which[f"b{i}"] for i in range(40))
    assert sum(half_of(f"a{i}.png") != half_of(f"b{i}.png") for i in range(40)) > 5  # what file names alone do
    assert set(which.values()) == set(HALVES)


def test_a_grouped_table_is_halved_by_group():
    groups = [f"S{i // 50:03d}/{i // 5 % 10:03d}" for i in range(200)]  # subject/sequence: the whole name counts
    table = SampleTable(pd.DataFrame({"path": [f"/d/s{i // 5}/f{i}.png" for i in range(200)],
                                      "label": ["happiness", "neutral"] * 100, "group": groups,
                                      "source": [f"f{i}.png" for i in range(200)]}))
    which = halves_of(table)
    per_group = pd.Series(which).groupby(pd.Series(groups)).nunique()
    assert (per_group == 1).all()  # no subject in both halves
    assert set(which) == set(HALVES)
    # sequences with the same number in other subjects do not all fall in one half
    by_sequence = pd.Series(which).groupby(pd.Series([g.split("/")[1] for g in groups])).nunique()
    assert (by_sequence > 1).any()


def test_split_halves_and_evaluate_halves(faces, tiny_fer, capsys):
    table = load_dataset("folder", faces, split="all")
    selection, report = split_halves(table)
    assert len(selection.samples) + len(report.samples) == len(table.samples)
    assert not set(selection.samples["path"]) & set(report.samples["path"])
    assert selection.classes == table.classes
    rc = main(["evaluate", "--dataset", "folder", "--root", str(faces), "--split", "all",
               "--model", str(tiny_fer), "--backend", "torch", "--halves"])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert f"selection half ({len(selection.samples)} faces)" in stdout
    assert f"report half ({len(report.samples)} faces)" in stdout


# ---------------------------------------------------------------- the FER2013 list in the repository

def test_fer2013_list_ships_and_is_well_formed():
    listed, name = read_list("fer2013-validation")
    assert name == "fer2013-validation" and LISTS[name].is_file()
    assert tuple(listed.columns[:len(LIST_COLUMNS)]) == LIST_COLUMNS
    assert listed["file"].str.match(r"validation/\w+/PublicTest_\d+\.jpg$").all()
    assert listed["match"].str.match(r"train/\w+/Training_\d+\.jpg$").all()
    kinds = listed["reason"].value_counts()
    # the known figure: 280 validation faces pixel-identical to training faces
    assert kinds["exact"] == 280
    assert len(listed) == 591
    assert (listed["distance"].astype(int) <= NEAR_DISTANCE).all()


@pytest.mark.shared
def test_fer2013_list_entries_are_what_they_say(shared):
    """Every exact entry is pixel-identical to its train face, every near one within the threshold
    (a check of the list, cheaper than regenerating it from all 32,298 faces)."""
    root = shared / "data" / "fer2013"
    if not root.is_dir():
        pytest.skip(f"FER2013 not found at {root}")
    listed, _ = read_list("fer2013-validation")

    def grey(rel: str) -> np.ndarray:
        return np.asarray(Image.open(root / rel).convert("L"))

    exact = listed[listed["reason"] == "exact"]
    assert all(np.array_equal(grey(f), grey(m)) for f, m in zip(exact["file"], exact["match"]))
    near = listed[listed["reason"].str.startswith("near")]
    a = hash_images([root / f for f in near["file"]])
    b = hash_images([root / m for m in near["match"]])
    mirrored = near["reason"].str.contains("mirrored").to_numpy()
    other = np.where(mirrored[:, None], b.phash_mirror, b.phash)
    distance = np.bitwise_count(a.phash ^ other).sum(1)
    assert (distance == near["distance"].astype(int).to_numpy()).all()
    assert (distance <= NEAR_DISTANCE).all()


def test_within_one_table_near_and_mirrored_copies_are_found_too(faces):
    found = _by_name(find_duplicates(load_dataset("folder", faces, split="all")))
    assert set(found) == {"PublicTest_exact", "PublicTest_relabelled", "PublicTest_near",
                          "PublicTest_mirror", "PublicTest_new7_again"}
    assert found["PublicTest_near"][:2] == ("Training_3", "near")
    assert found["PublicTest_mirror"][:2] == ("Training_4", "exact, mirrored")


def test_max_distance_is_inclusive(faces):
    val = load_dataset("folder", faces, split="validation")
    train = load_dataset("folder", faces, split="train")
    d = _by_name(find_duplicates(val, against=train))["PublicTest_near"][2]
    assert "PublicTest_near" in _by_name(find_duplicates(val, against=train, max_distance=int(d)))
    assert "PublicTest_near" not in _by_name(find_duplicates(val, against=train, max_distance=int(d) - 1))


def _bits_set(n: int) -> np.ndarray:
    """A 256-bit hash (4 uint64 words) with its first n bits set."""
    bits = np.zeros(256, bool)
    bits[:n] = True
    return np.packbits(bits).view(">u8").astype(np.uint64)


def test_copy_clusters_join_chains_of_copies_whatever_the_row_order(monkeypatch):
    from signfer.data import duplicates
    from signfer.data.duplicates import ImageHashes, copy_clusters

    # a ~ b (40 bits apart), b ~ c (40 bits), but a and c are 80 bits apart; d is far from all
    hashes = {"a": _bits_set(0), "b": _bits_set(40), "c": _bits_set(80), "d": ~_bits_set(0)}

    def fake_hash(paths, sources=None):
        names = [Path(p).stem for p in paths]
        return ImageHashes(np.array(names, object), np.array([n + "~" for n in names], object),
                           np.stack([hashes[n] for n in names]), np.stack([hashes[n] for n in names]))

    monkeypatch.setattr(duplicates, "hash_images", fake_hash)
    for order in (["a", "b", "c", "d"], ["c", "a", "d", "b"], ["d", "c", "b", "a"]):
        table = SampleTable(pd.DataFrame({"path": [f"/x/{n}.png" for n in order], "label": "happiness",
                                          "group": [f"/x/{n}.png" for n in order], "source": order}),
                            groups_are_paths=True)
        cluster = dict(zip(order, copy_clusters(table)))
        assert cluster["a"] == cluster["b"] == cluster["c"] != cluster["d"]
        which = dict(zip(order, halves_of(table)))
        assert which["a"] == which["b"] == which["c"] == half_of("a.png")  # the first name of the cluster


def test_halves_do_not_depend_on_the_row_order(faces):
    table = load_dataset("folder", faces, split="all")
    before = dict(zip(table.samples["path"], halves_of(table)))
    table.samples = table.samples.iloc[::-1].reset_index(drop=True)
    assert dict(zip(table.samples["path"], halves_of(table))) == before
