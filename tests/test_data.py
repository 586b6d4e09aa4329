"""Dataset adapters on tiny generated data (see fixtures.py)."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest
from fixtures import (
    FEPH_ROWS,
    VIDEOS,
    feph_rows,
    frame_id,
    make_feph,
    make_folder_dataset,
    make_manifest,
    write_image,
)

from signfer.data import DATASETS, dataset_options, load_dataset
from signfer.data.feph import load_feph, parse_facial_label, phoenix_video_id
from signfer.data.folder import load_folder
from signfer.data.manifest import load_manifest
from signfer.errors import SignferError


def by_source(table):
    """{source: sorted labels} of a table's samples."""
    out: dict[str, list[str]] = {}
    for source, label in zip(table.samples["source"], table.samples["label"]):
        out.setdefault(source, []).append(label)
    return {k: sorted(v) for k, v in out.items()}


def reasons(table):
    return dict(zip(table.skipped["source"], table.skipped["reason"]))


# --- FePh -------------------------------------------------------------------

DEFAULT_KEPT = {
    "FePh_labels.csv:2": ["happiness"],
    "FePh_labels.csv:3": ["neutral"],
    "FePh_labels.csv:7": ["happiness"],
    "FePh_labels.csv:10": ["surprise"],
    "FePh_labels.csv:11": ["happiness"],
    "FePh_labels.csv:12": ["anger"],
    "FePh_labels.csv:13": ["sadness"],
    "FePh_labels.csv:14": ["disgust"],
    "FePh_labels.csv:15": ["fear"],
}
MULTI_KEPT = {
    "FePh_labels.csv:4": ["happiness", "sadness"],
    "FePh_labels.csv:8": ["happiness", "sadness"],
    "FePh_labels.csv:9": ["happiness", "neutral"],
    "FePh_labels.csv:16": ["happiness"],
    "FePh_labels.csv:17": ["anger", "fear"],
}


def test_feph_default_protocol(tmp_path):
    root = make_feph(tmp_path / "FePh")
    table = load_feph(root)
    assert table.name == "FePh"
    assert by_source(table) == DEFAULT_KEPT
    assert len(table.samples) == 9
    assert reasons(table) == {
        "FePh_labels.csv:4": "multi-label (happiness, sadness)",
        "FePh_labels.csv:5": "empty label (face not visible)",
        "FePh_labels.csv:6": "class none (--keep-none, keep_none=True in Python, keeps it)",
        "FePh_labels.csv:8": "multi-label (happiness, sadness)",
        "FePh_labels.csv:9": "multi-label (neutral, happiness)",
        "FePh_labels.csv:16": "multi-label (happiness, none)",
        "FePh_labels.csv:17": "multi-label (anger, fear)",
    }
    assert list(table.skipped.columns) == ["source", "reason"]
    assert table.classes == (
        "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
    )
    assert table.has_groups


def test_feph_paths_are_absolute_and_png_is_appended(tmp_path):
    root = make_feph(tmp_path / "FePh")
    table = load_feph(root)
    paths = dict(zip(table.samples["source"], table.samples["path"]))
    images = os.path.join(os.path.abspath(root), "FePh_images")
    assert paths["FePh_labels.csv:2"] == os.path.join(images, frame_id(0, 1))
    # line 3's id has no .png
    assert paths["FePh_labels.csv:3"] == os.path.join(images, frame_id(0, 2))
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in table.samples["path"])


def test_feph_groups_are_phoenix_videos(tmp_path):
    table = load_feph(make_feph(tmp_path))
    groups = dict(zip(table.samples["source"], table.samples["group"]))
    assert groups["FePh_labels.csv:2"] == VIDEOS[0]
    assert groups["FePh_labels.csv:3"] == VIDEOS[0]
    assert groups["FePh_labels.csv:7"] == VIDEOS[1]
    assert groups["FePh_labels.csv:15"] == VIDEOS[3]
    counts = Counter(table.samples["group"])
    assert counts == {VIDEOS[0]: 2, VIDEOS[1]: 1, VIDEOS[2]: 3, VIDEOS[3]: 3}


def write_corpus(path, rows, header="id|folder|signer|annotation"):
    """A PHOENIX-2014 corpus file: ``|``-separated, one line per video."""
    path.write_text(header + "\n" + "".join(f"{v}|{v}/1/*.png|{s}|A B C\n" for v, s in rows))
    return path


def test_feph_groups_by_signer_from_phoenix_corpus_files(tmp_path):
    root = make_feph(tmp_path / "FePh")
    train = write_corpus(tmp_path / "train.corpus.csv", [(VIDEOS[0], "Signer01"), (VIDEOS[1], "Signer04"),
                                                        ("unused_video-1", "Signer09")])
    dev = write_corpus(tmp_path / "dev.corpus.csv", [(VIDEOS[2], "Signer01"), (VIDEOS[3], "Signer05")])
    table = load_feph(root, signers=[train, dev])
    assert Counter(table.samples["group"]) == {"Signer01": 2 + 3, "Signer04": 1, "Signer05": 3}
    by_video = load_feph(root)
    assert (table.samples["path"] == by_video.samples["path"]).all()  # the same faces, other groups
    # PHOENIX-2014-T names its columns name ... speaker
    t_file = tmp_path / "t.corpus.csv"
    t_file.write_text("name|video|start|end|speaker|orth|translation\n"
                      + "".join(f"{v}|{v}/*.png|-1|-1|Signer0{i}|A|a\n" for i, v in enumerate(VIDEOS)))
    assert load_dataset("feph", root, signers=str(t_file)).samples["group"].nunique() == 4


def test_feph_signers_survive_bars_in_the_text_a_bom_and_windows_lines(tmp_path):
    root = make_feph(tmp_path / "FePh")
    corpus = tmp_path / "train.corpus.csv"
    lines = ["id|folder|signer|annotation"] + [f"{v}|{v}/1/*.png|Signer0{i % 2}|A | B|C" for i, v in enumerate(VIDEOS)]
    corpus.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    table = load_feph(root, signers=corpus)
    assert set(table.samples["group"]) == {"Signer00", "Signer01"}


def test_feph_signers_must_cover_every_video_and_agree(tmp_path):
    root = make_feph(tmp_path / "FePh")
    part = write_corpus(tmp_path / "train.corpus.csv", [(VIDEOS[0], "Signer01")])
    with pytest.raises(SignferError, match=r"3 of the 4 FePh videos are in none of the corpus files.*dev and test"):
        load_feph(root, signers=part)
    other = write_corpus(tmp_path / "dev.corpus.csv", [(VIDEOS[0], "Signer02")])
    with pytest.raises(SignferError, match=f"dev.corpus.csv:2: video {VIDEOS[0]} is signed by Signer02"):
        load_feph(root, signers=[part, other])
    wrong = write_corpus(tmp_path / "wrong.csv", [(VIDEOS[0], "Signer01")], header="id|folder|who|annotation")
    with pytest.raises(SignferError, match="wrong.csv: a PHOENIX corpus file has"):
        load_feph(root, signers=wrong)
    with pytest.raises(SignferError, match="not found"):
        load_feph(root, signers=tmp_path / "gone.csv")


def test_feph_keep_multilabel_gives_one_row_per_label(tmp_path):
    table = load_feph(make_feph(tmp_path), keep_multilabel=True)
    assert by_source(table) == {**DEFAULT_KEPT, **MULTI_KEPT}
    assert len(table.samples) == 18
    rows = table.samples[table.samples["source"] == "FePh_labels.csv:4"]
    assert rows["path"].nunique() == 1
    assert rows["group"].tolist() == [VIDEOS[0], VIDEOS[0]]
    assert reasons(table) == {
        "FePh_labels.csv:5": "empty label (face not visible)",
        "FePh_labels.csv:6": "class none (--keep-none, keep_none=True in Python, keeps it)",
        "FePh_labels.csv:16": (
            "class none dropped from a multi-label row (--keep-none, keep_none=True in Python, keeps it)"
        ),
    }


def test_feph_keep_none(tmp_path):
    table = load_feph(make_feph(tmp_path), keep_none=True)
    assert by_source(table) == {**DEFAULT_KEPT, "FePh_labels.csv:6": ["none"]}
    assert len(table.skipped) == 6
    assert table.classes[-1] == "none"


def test_feph_keep_both(tmp_path):
    table = load_feph(make_feph(tmp_path), keep_multilabel=True, keep_none=True)
    assert len(table.samples) == 20
    assert by_source(table)["FePh_labels.csv:16"] == ["happiness", "none"]
    assert reasons(table) == {"FePh_labels.csv:5": "empty label (face not visible)"}


def test_feph_root_may_be_the_csv_itself(tmp_path):
    root = make_feph(tmp_path)
    assert len(load_feph(root / "FePh_labels.csv").samples) == 9


def test_feph_csv_not_found_says_where(tmp_path):
    with pytest.raises(SignferError) as e:
        load_feph(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "FePh_labels.csv") in str(e.value)


@pytest.mark.parametrize("bad", ["9", "4a", "happy", "4.0", "-4", "８"])
def test_feph_unknown_code_names_file_and_line(tmp_path, bad):
    rows = [(frame_id(0, 1), "4"), (frame_id(0, 2), bad)]
    with pytest.raises(SignferError) as e:
        load_feph(make_feph(tmp_path, rows))
    message = str(e.value)
    assert message.startswith(f"FePh_labels.csv:3: unknown label code {bad!r}")
    assert "0-7" in message


def test_feph_unquoted_comma_is_an_error_not_a_shift(tmp_path):
    root = make_feph(tmp_path, [(frame_id(0, 1), "4")])
    with open(root / "FePh_labels.csv", "a") as f:
        f.write(f"{frame_id(0, 1)},4,5\n")
    with pytest.raises(SignferError, match=r"FePh_labels.csv:3: 3 fields but the header has 2"):
        load_feph(root)


def test_feph_line_numbers_count_blank_lines(tmp_path):
    root = make_feph(tmp_path, [(frame_id(0, 1), "4"), (frame_id(0, 2), "5")])
    csv_path = root / "FePh_labels.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], "", lines[1], ",", lines[2]]) + "\n")
    assert by_source(load_feph(root)) == {
        "FePh_labels.csv:3": ["happiness"], "FePh_labels.csv:5": ["sadness"],
    }


def test_feph_missing_column(tmp_path):
    root = make_feph(tmp_path, [(frame_id(0, 1), "4")], header=("External ID", "label"))
    with pytest.raises(SignferError) as e:
        load_feph(root)
    message = str(e.value)
    assert str(root / "FePh_labels.csv") in message
    assert "['Facial_label']" in message
    assert "'External ID', 'label'" in message


def test_feph_missing_image(tmp_path):
    rows = [(frame_id(0, 1), "4"), (frame_id(0, 2), "5"), (frame_id(0, 3), "6")]
    root = make_feph(tmp_path, rows, missing=[frame_id(0, 2), frame_id(0, 3)])
    with pytest.raises(SignferError) as e:
        load_feph(root)
    message = str(e.value)
    assert message.startswith("FePh_labels.csv:3: image not found: ")
    assert str(root / "FePh_images" / frame_id(0, 2)) in message
    assert "1 more" in message


def test_feph_missing_image_of_skipped_row_is_fine(tmp_path):
    rows = [(frame_id(0, 1), "4"), (frame_id(0, 2), "")]
    table = load_feph(make_feph(tmp_path, rows, missing=[frame_id(0, 2)]))
    assert len(table.samples) == 1 and len(table.skipped) == 1


@pytest.mark.parametrize("ident", ["../outside.png", "a/../../outside.png", "/etc/passwd"])
def test_feph_path_escape_rejected(tmp_path, ident):
    root = tmp_path / "FePh"
    write_image(root / "outside.png")  # where ../outside.png from FePh_images/ points: it exists
    make_feph(root, [(frame_id(0, 1), "4")])
    (root / "FePh_labels.csv").write_text((root / "FePh_labels.csv").read_text() + f"{ident},4\n")
    with pytest.raises(SignferError, match=r"^FePh_labels.csv:3: .*(leaves the dataset folder|absolute)"):
        load_feph(root)


def test_path_inside_refuses_a_sibling_folder_that_shares_the_prefix(tmp_path):
    from signfer.data.manifest import path_inside

    with pytest.raises(SignferError, match="leaves the dataset folder"):
        path_inside(tmp_path / "FePh_images", "../FePh_images2/a.png", "x.csv:2")


def test_feph_empty_result_names_the_file(tmp_path):
    root = make_feph(tmp_path, [(frame_id(0, 1), "45"), (frame_id(0, 2), "")])
    with pytest.raises(SignferError) as e:
        load_feph(root)
    message = str(e.value)
    assert str(root / "FePh_labels.csv") in message
    assert "2 skipped: 1 multi-label, 1 empty label" in message


def test_feph_rejects_non_bool_options(tmp_path):
    with pytest.raises(SignferError, match="keep_none"):
        load_feph(make_feph(tmp_path), keep_none="false")


def test_feph_rows_helper_makes_a_usable_set(tmp_path):
    table = load_feph(make_feph(tmp_path, feph_rows(n_videos=3, frames=7)))
    assert len(table.samples) == 21
    assert table.samples["group"].nunique() == 3
    assert set(table.samples["label"]) == set(table.classes) and len(table.classes) == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4", ("happiness",)),
        ("45", ("happiness", "sadness")),
        ("54", ("happiness", "sadness")),
        ("04", ("neutral", "happiness")),
        ("44", ("happiness",)),
        ("4,5", ("happiness", "sadness")),
        ("4 5", ("happiness", "sadness")),
        ("[4, 5]", ("happiness", "sadness")),
        ("['4', '5']", ("happiness", "sadness")),
        ('"4"', ("happiness",)),
        ("7", ("none",)),
        ("", ()),
        ("  ", ()),
        ("[]", ()),
    ],
)
def test_parse_facial_label(value, expected):
    assert parse_facial_label(value) == expected


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("02August_2010_Monday_heute_default-7.avi_pid0_fn000008-0.png",
         "02August_2010_Monday_heute_default-7"),
        ("02August_2010_Monday_heute_default-7.avi_pid0_fn000008-0",
         "02August_2010_Monday_heute_default-7"),
        ("sub/11August_2010_Wednesday_tagesschau_default-2.avi_pid0_fn000123-0.png",
         "11August_2010_Wednesday_tagesschau_default-2"),
        ("clip12_fn000003.png", "clip12"),
        ("face_0001.png", "face_0001"),
    ],
)
def test_phoenix_video_id(name, group):
    assert phoenix_video_id(name) == group


# --- folders ----------------------------------------------------------------


def test_folder_flat_with_synonyms_and_junk(tmp_path):
    root = make_folder_dataset(tmp_path / "faces", ("angry", "Happy", "sad", "owl"), per_class=2)
    (root / "angry" / "notes.txt").write_text("x")
    (root / "angry" / ".DS_Store").write_text("x")
    (root / "README.md").write_text("x")
    write_image(root / "happy" / "extra.PNG", size=8)  # "happy" merges into Happy's class
    table = load_folder(root)
    assert Counter(table.samples["label"]) == {"anger": 2, "happiness": 3, "sadness": 2, "owl": 2}
    assert table.classes == ("anger", "happiness", "sadness", "owl")
    assert table.samples["group"].isna().all() and not table.has_groups
    assert (table.samples["path"] == table.samples["source"]).all()
    assert all(os.path.isabs(p) for p in table.samples["path"])
    assert reasons(table) == {
        str(root / "angry" / ".DS_Store"): "hidden file or folder",
        str(root / "angry" / "notes.txt"): "not an image (.txt)",
        str(root / "README.md"): "file outside class folders",
    }


def test_folder_split_required_when_splits_exist(tmp_path):
    root = make_folder_dataset(tmp_path, ("happy", "neutral"), 2, splits=("train", "validation"))
    with pytest.raises(SignferError) as e:
        load_folder(root)
    message = str(e.value)
    assert "train/" in message and "validation/" in message and "split=" in message


def test_folder_split_selection(tmp_path):
    root = make_folder_dataset(tmp_path, ("happy", "neutral"), 2, splits=("train", "val", "test"))
    train = load_folder(root, split="train")
    assert len(train.samples) == 4
    assert all(os.sep + "train" + os.sep in p for p in train.samples["path"])
    assert len(load_folder(root, split="validation").samples) == 4  # val/ folder
    assert len(load_folder(root, split="all").samples) == 12
    with pytest.raises(SignferError, match="no split 'holdout'"):
        load_folder(root, split="holdout")


def test_folder_split_without_split_folders(tmp_path):
    root = make_folder_dataset(tmp_path, ("happy",), 2)
    assert len(load_folder(root, split="all").samples) == 2
    with pytest.raises(SignferError, match="no split folders"):
        load_folder(root, split="train")


def test_folder_empty_is_an_error(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "a.txt").write_text("x")
    expected = "^" + re.escape(f"{tmp_path}: no usable samples (1 skipped")
    with pytest.raises(SignferError, match=expected):
        load_folder(tmp_path)
    with pytest.raises(SignferError, match="not a folder"):
        load_folder(tmp_path / "missing")


# --- manifests ----------------------------------------------------------------


def test_manifest_with_groups(tmp_path):
    csv_path = make_manifest(tmp_path, [
        ("v1/0001.png", "happy", "v1"),
        ("v1/0002.png", "Neutral", "v1"),
        ("v2/0001.png", "", "v2"),
        ("v2/0002.png", "angry", "v2"),
    ])
    table = load_manifest(csv_path)
    assert table.name == "manifest"
    assert by_source(table) == {
        "manifest.csv:2": ["happiness"], "manifest.csv:3": ["neutral"],
        "manifest.csv:5": ["anger"],
    }
    assert table.samples["group"].tolist() == ["v1", "v1", "v2"]
    assert table.samples["path"][0] == str(tmp_path / "v1" / "0001.png")
    assert reasons(table) == {"manifest.csv:4": "empty label"}


def test_manifest_without_groups_and_absolute_path(tmp_path):
    outside = write_image(tmp_path / "elsewhere" / "x.png")
    csv_path = make_manifest(
        tmp_path / "m", [("a.png", "sad"), (str(outside), "fear")], header=("path", "label")
    )
    table = load_manifest(csv_path)
    assert table.samples["label"].tolist() == ["sadness", "fear"]
    assert table.samples["path"][1] == str(outside)
    # no group column: each image is its own group
    assert table.samples["group"].tolist() == table.samples["path"].tolist()
    assert table.has_groups


def test_manifest_without_groups_keeps_the_copies_of_one_image_in_one_group(tmp_path):
    csv_path = make_manifest(tmp_path, [("a.png", "happy"), ("b.png", "sad"), ("a.png", "surprise")],
                             header=("path", "label"))
    table = load_manifest(csv_path)
    groups = dict(zip(table.samples["source"], table.samples["group"]))
    assert groups["manifest.csv:2"] == groups["manifest.csv:4"] != groups["manifest.csv:3"]
    summary = table.summary()
    assert "groups: none given, each image is its own group" in summary
    assert "frames of one video need a `group` column" in summary


def test_summary_counts_given_groups_and_says_when_there_are_none(tmp_path):
    grouped = load_manifest(make_manifest(tmp_path / "m", [("a.png", "happy", "v1"), ("b.png", "sad", "v2")]))
    assert "\ngroups: 2\n" in grouped.summary() and "none given" not in grouped.summary()
    folder = load_folder(make_folder_dataset(tmp_path / "faces"))
    assert "\ngroups: none (samples are split independently)\n" in folder.summary()


def test_manifest_errors_name_file_and_line(tmp_path):
    def load(rows, **kw):
        return load_manifest(make_manifest(tmp_path, rows, **kw))

    with pytest.raises(SignferError, match=r"^manifest.csv:3: empty group"):
        load([("a.png", "happy", "v1"), ("b.png", "sad", "")])
    with pytest.raises(SignferError, match=r"^manifest.csv:3: image not found: .*gone.png$"):
        load([("a.png", "happy", "v1"), ("gone.png", "sad", "v1")], missing=["gone.png"])
    with pytest.raises(SignferError, match=r"^manifest.csv:2: path '\.\./x.png' leaves"):
        load([("../x.png", "happy", "v1")])
    with pytest.raises(SignferError, match=r"missing column\(s\) \['label'\]"):
        load([("a.png", "happy")], header=("path", "emotion"))
    with pytest.raises(SignferError, match="manifest not found"):
        load_manifest(tmp_path / "nope.csv")


# --- registry -----------------------------------------------------------------


def test_load_dataset_dispatches(tmp_path):
    assert DATASETS == ("feph", "folder", "manifest")
    assert dataset_options("feph") == ("keep_multilabel", "keep_none", "signers")
    assert dataset_options("folder") == ("split",)
    assert dataset_options("manifest") == ("allow_new_labels",)
    feph = load_dataset("feph", make_feph(tmp_path / "f"), keep_multilabel=True)
    assert len(feph.samples) == 18
    folder = load_dataset("folder", make_folder_dataset(tmp_path / "d", ("happy",), 3))
    assert len(folder.samples) == 3
    manifest = load_dataset("manifest", make_manifest(tmp_path / "m", [("a.png", "happy", "g")]))
    assert len(manifest.samples) == 1


def test_load_dataset_unknown_kind_and_option(tmp_path):
    with pytest.raises(SignferError, match="valid kinds: feph, folder, manifest"):
        load_dataset("affectnet", tmp_path)
    expected = "unknown option.*split.*valid options: keep_multilabel, keep_none"
    with pytest.raises(SignferError, match=expected):
        load_dataset("feph", tmp_path, split="train")
    with pytest.raises(SignferError, match="valid options: allow_new_labels"):
        load_dataset("manifest", tmp_path / "m.csv", split="train")


def test_fixture_rows_match_expectations():
    # Guards the expectations above against edits of the shared fixture.
    assert len(FEPH_ROWS) == 16
