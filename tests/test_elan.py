"""ELAN export (segments, tiers, suggestions) and the ELAN -> manifest round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pympi
import pytest

# The synthetic video and the fake models are shared with the video tests.
from test_video import LABELS, FakeClassifier, FakeDetector, make_video

from signfer.data.elan import linked_video, manifest_from_elan, read_eaf
from signfer.errors import SignferError
from signfer.export.elan import segments, write_eaf, write_suggestions_eaf
from signfer.inference.annotate import annotate_video
from signfer.inference.uncertainty import rank_uncertain


def spans(segs):
    return [(round(s.start, 6), round(s.end, 6), s.label) for s in segs]


# --- segments ---------------------------------------------------------------


def test_consecutive_equal_labels_merge_and_end_at_the_next_frame():
    times = [0.0, 0.1, 0.2, 0.3, 0.4]
    assert spans(segments(times, ["a", "a", "b", "b", "a"])) == [
        (0.0, 0.2, "a"), (0.2, 0.4, "b"), (0.4, 0.5, "a"),
    ]


def test_no_face_frames_leave_gaps():
    times = [0.0, 0.1, 0.2, 0.3, 0.4]
    labels = ["a", "", None, "a", float("nan")]
    assert spans(segments(times, labels)) == [(0.0, 0.1, "a"), (0.3, 0.4, "a")]


def test_last_frame_lasts_one_frame_duration():
    assert spans(segments([0.0, 0.2, 0.4], ["a", "a", "b"])) == [(0.0, 0.4, "a"), (0.4, 0.6, "b")]
    assert spans(segments([0.0, 0.2], ["a", "b"], frame_duration=0.05)) == [
        (0.0, 0.2, "a"), (0.2, 0.25, "b"),
    ]
    assert segments([], []) == []


def test_the_last_frame_stops_at_the_videos_end():
    # every 5th frame of a 10 frames/s video that ends at 1.2 s
    assert spans(segments([0.0, 0.5, 1.0], ["a", "a", "b"], end=1.2)) == [(0.0, 1.0, "a"), (1.0, 1.2, "b")]
    # an end that is unknown or not after the last frame changes nothing
    assert spans(segments([0.0, 0.5], ["a", "b"], end=0.3))[-1] == (0.5, 1.0, "b")


def test_no_face_anywhere_with_min_duration_gives_no_segments():
    assert segments([0.0, 0.04, 0.08], ["", None, ""], 0.2) == []


def test_short_segment_joins_same_label_neighbours():
    times = np.arange(7) / 10
    segs = segments(times, ["a", "a", "b", "a", "a", "a", "c"], min_duration=0.15)
    # "b" (0.1 s) merges into its longer neighbour, the two a's then join;
    # "c" is short too and merges into a.
    assert spans(segs) == [(0.0, 0.7, "a")]
    assert (segs[0].first, segs[0].stop) == (0, 7)


def test_short_segment_goes_to_the_longer_neighbour():
    times = np.arange(7) / 10
    segs = segments(times, ["a", "a", "b", "c", "c", "c", "c"], min_duration=0.15)
    assert spans(segs) == [(0.0, 0.2, "a"), (0.2, 0.7, "c")]


def test_short_segment_between_gaps_is_kept():
    times = np.arange(5) / 10
    segs = segments(times, ["a", "a", "", "b", ""], min_duration=0.15)
    assert spans(segs) == [(0.0, 0.2, "a"), (0.3, 0.4, "b")]


def test_min_duration_zero_changes_nothing():
    times = np.arange(6) / 10
    labels = ["a", "b", "a", "b", "a", "b"]
    assert len(segments(times, labels, 0.0)) == 6
    assert len(segments(times, labels, 0.35)) < 6


# --- write_eaf ----------------------------------------------------------------


def frame_table(labels, probs):
    table = pd.DataFrame({"time_s": np.arange(len(labels)) / 10, "label": labels})
    probs = np.asarray(probs, dtype=float)
    for k, name in enumerate(["a", "b"]):
        table[f"prob_{name}"] = probs[:, k]
    face = ~np.isnan(probs).any(axis=1)
    table["confidence"] = np.where(face, np.where(face[:, None], probs, 0).max(axis=1), np.nan)
    return table


def test_write_eaf_writes_label_and_confidence_tiers_linked_to_the_video(tmp_path):
    video = make_video(tmp_path / "clip.mp4")
    nan = [np.nan, np.nan]
    table = frame_table(["a", "a", "", "b", "b", "b"],
                        [[0.9, 0.1], [0.7, 0.3], nan, [0.4, 0.6], [0.2, 0.8], [0.0, 1.0]])
    out = write_eaf(table, video, tmp_path / "eaf" / "clip.eaf")
    eaf = pympi.Elan.Eaf(str(out))
    assert eaf.get_annotation_data_for_tier("expression") == [(0, 200, "a"), (300, 600, "b")]
    assert eaf.get_annotation_data_for_tier("confidence") == [(0, 200, "0.80"), (300, 600, "0.80")]
    media = eaf.media_descriptors[0]
    assert media["MEDIA_URL"] == video.resolve().as_uri()
    assert media["RELATIVE_MEDIA_URL"] == "../clip.mp4"
    assert media["MIME_TYPE"] == "video/mp4"
    # Written again: replaced in place, no pympi .bak copy, no temporary files.
    write_eaf(table, video, out, min_duration=0.25)
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.eaf"]
    assert pympi.Elan.Eaf(str(out)).get_annotation_data_for_tier("expression") == [
        (0, 200, "a"), (300, 600, "b"),
    ]


def test_suggestions_mark_the_uncertain_frames(tmp_path):
    video = make_video(tmp_path / "clip.mp4")
    probs = [[0.9, 0.1], [0.55, 0.45], [0.5, 0.5], [0.99, 0.01], [0.6, 0.4]]
    table = frame_table(["a", "a", "a", "a", "a"], probs)
    ranked = rank_uncertain(table, 2)
    out = write_suggestions_eaf(ranked, video, tmp_path / "suggest.eaf")
    notes = pympi.Elan.Eaf(str(out)).get_annotation_data_for_tier("suggest")
    assert [(start, end) for start, end, _ in notes] == [(100, 200), (200, 400)]
    assert all(value.startswith("a? entropy ") and "margin" in value for *_, value in notes)
    assert "margin 0.00" in notes[1][2]


# --- ELAN -> manifest -----------------------------------------------------------


@pytest.fixture
def annotated(tmp_path):
    (tmp_path / "videos").mkdir()
    video = make_video(tmp_path / "videos" / "signer1.mp4")
    result = annotate_video(video, tmp_path / "annotations", FakeClassifier(), FakeDetector(),
                            write_parquet=False)
    return video, result.outputs["eaf"]


def test_annotate_every_nth_frame_ends_the_last_segment_with_the_video(tmp_path):
    (tmp_path / "videos").mkdir()
    video = make_video(tmp_path / "videos" / "clip.mp4")  # 30 frames at 10/s: ends at 3.0 s
    result = annotate_video(video, tmp_path / "ann", FakeClassifier(), FakeDetector(), every=7,
                            write_parquet=False)
    eaf = read_eaf(result.outputs["eaf"])
    last_end = max(end for _, end, *_ in eaf.get_annotation_data_for_tier("expression"))
    # kept frames at 0, 0.7, ..., 2.8 s: the last would otherwise last 0.7 s, to 3.5 s
    assert last_end == 3000


def test_round_trip_annotate_then_manifest(annotated, tmp_path):
    video, eaf = annotated
    out_csv = tmp_path / "data" / "signer.csv"
    assert manifest_from_elan([eaf], tier="expression", out_csv=out_csv,
                              detector=FakeDetector(), per_segment=3, size=40) == out_csv
    manifest = pd.read_csv(out_csv)
    assert list(manifest.columns) == ["path", "label", "group"]
    # Six segments (three labels, each split by a no-face gap), three frames each.
    assert len(manifest) == 18
    assert manifest["label"].value_counts().to_dict() == {name: 6 for name in LABELS}
    assert set(manifest["group"]) == {"signer1"}
    from PIL import Image

    for path in manifest["path"]:
        assert not Path(path).is_absolute() and path.startswith("signer_faces/signer1/")
        image = Image.open(out_csv.parent / path)
        assert image.size == (40, 40) and image.mode == "RGB"
    # The crops show the annotated frames: red for anger, green for happiness.
    first = manifest[manifest["label"] == "anger"]["path"].iloc[0]
    pixel = np.asarray(Image.open(out_csv.parent / first))[20, 20]
    assert pixel[0] > 200 and pixel[1] < 100


def test_hand_edited_tier_with_synonyms_gaps_and_no_face_frames(annotated, tmp_path):
    video, _ = annotated
    eaf = pympi.Elan.Eaf()
    eaf.add_linked_file(video.resolve().as_uri(), relpath="../videos/signer1.mp4",
                        mimetype="video/mp4")
    eaf.add_tier("manual")
    eaf.add_annotation("manual", 0, 500, "Happy")  # synonym -> happiness
    eaf.add_annotation("manual", 500, 700, "sad")  # frames 5 and 6 show no face
    eaf.add_annotation("manual", 2000, 3000, "")  # empty: skipped
    path = tmp_path / "edited" / "signer1.eaf"
    path.parent.mkdir()
    eaf.to_file(str(path))
    out_csv = manifest_from_elan([path], tier="manual", out_csv=tmp_path / "m.csv",
                                 detector=FakeDetector(), per_segment=2)
    manifest = pd.read_csv(out_csv)
    assert manifest["label"].tolist() == ["happiness", "happiness"]
    # Default crop size.
    from PIL import Image

    assert Image.open(tmp_path / manifest["path"][0]).size == (112, 112)


def test_missing_tier_and_missing_video_are_one_line_errors(annotated, tmp_path):
    video, eaf_path = annotated
    with pytest.raises(SignferError, match="no tier 'gloss'.*expression"):
        manifest_from_elan([eaf_path], tier="gloss", out_csv=tmp_path / "m.csv",
                           detector=FakeDetector())
    moved = tmp_path / "elsewhere" / "signer1.eaf"
    moved.parent.mkdir()
    eaf = read_eaf(eaf_path)
    eaf.media_descriptors[0]["MEDIA_URL"] = "file:///nowhere/signer1.mp4"
    eaf.media_descriptors[0]["RELATIVE_MEDIA_URL"] = "./signer1.mp4"
    eaf.to_file(str(moved))
    with pytest.raises(SignferError, match="linked video not found") as info:
        manifest_from_elan([moved], tier="expression", out_csv=tmp_path / "m.csv",
                           detector=FakeDetector())
    assert "\n" not in str(info.value) and "signer1.eaf" in str(info.value)
    # A folder to look the video up in fixes it.
    assert linked_video(read_eaf(moved), moved, video=video.parent) == video.parent / "signer1.mp4"
    with pytest.raises(SignferError, match="ELAN file"):
        read_eaf(tmp_path / "missing.eaf")


def test_two_videos_with_one_name_keep_their_own_crops_and_groups(tmp_path):
    # p1/clip.mp4 and p2/clip.mp4: named by stem alone, p2's crops would
    # overwrite p1's and the two videos would become one group.
    eafs = []
    for person in ("p1", "p2"):
        (tmp_path / person).mkdir()
        video = make_video(tmp_path / person / "clip.mp4")
        eafs.append(annotate_video(video, tmp_path / person, FakeClassifier(), FakeDetector(),
                                   write_parquet=False).outputs["eaf"])
    out_csv = manifest_from_elan(eafs, tier="expression", out_csv=tmp_path / "m.csv",
                                 detector=FakeDetector(), per_segment=1, size=32)
    manifest = pd.read_csv(out_csv)
    assert manifest["group"].nunique() == 2 and manifest["path"].is_unique
    assert all(group.startswith("clip-") for group in manifest["group"])
    assert manifest.groupby("group").size().tolist() == [6, 6]
    assert all((tmp_path / path).is_file() for path in manifest["path"])
    # The same video named twice (two annotators' files) stays one group.
    again = manifest_from_elan([eafs[0], eafs[0]], tier="expression",
                               out_csv=tmp_path / "again.csv", detector=FakeDetector(),
                               per_segment=1, size=32)
    assert set(pd.read_csv(again)["group"]) == {"clip"}


def test_a_second_run_replaces_the_crops_of_the_first(annotated, tmp_path):
    video, eaf_path = annotated
    out_csv = tmp_path / "m.csv"
    manifest_from_elan([eaf_path], tier="expression", out_csv=out_csv, detector=FakeDetector(), per_segment=1)
    first = set(pd.read_csv(out_csv)["path"])
    # the annotator relabels every segment: the old crops' names would contradict the new labels
    eaf = read_eaf(eaf_path)
    for start, end, value in eaf.get_annotation_data_for_tier("expression"):
        eaf.remove_annotation("expression", (start + end) // 2)
        eaf.add_annotation("expression", start, end, "surprise")
    edited = tmp_path / "edited" / eaf_path.name
    edited.parent.mkdir()
    eaf.to_file(str(edited))
    manifest_from_elan([edited], tier="expression", out_csv=out_csv, detector=FakeDetector(), per_segment=1,
                       video=video)
    second = set(pd.read_csv(out_csv)["path"])
    assert second != first
    assert {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "m_faces").rglob("*.png")} == second


def test_a_tier_of_other_values_is_refused_before_any_video_is_read(annotated, tmp_path):
    _, eaf = annotated  # its confidence tier holds numbers, not labels
    out_csv = tmp_path / "m.csv"
    with pytest.raises(SignferError, match=r"tier 'confidence' holds \d+ value\(s\) that are no known expression "
                                           r"label .*--allow-new-labels"):
        manifest_from_elan([eaf], tier="confidence", out_csv=out_csv, detector=FakeDetector())
    assert not out_csv.exists()
    manifest_from_elan([eaf], tier="confidence", out_csv=out_csv, detector=FakeDetector(), allow_new_labels=True)
    assert out_csv.is_file()


def test_manifest_must_be_named_csv(annotated, tmp_path):
    # The manifest loader reads CSV; a .tsv or .parquet manifest could not be read back.
    _, eaf = annotated
    with pytest.raises(SignferError, match="m.tsv: a manifest is a CSV file; name it m.csv"):
        manifest_from_elan([eaf], tier="expression", out_csv=tmp_path / "m.tsv",
                           detector=FakeDetector())


def test_manifest_from_elan_feeds_cross_validation(tmp_path, capsys):
    """The annotation loop closes: annotate -> ELAN -> manifest -> `signfer cv`."""
    from signfer.cli import main

    (tmp_path / "videos").mkdir()
    eafs = []
    for i in range(3):  # three videos = three groups, so grouped 3-fold CV is possible
        video = make_video(tmp_path / "videos" / f"signer{i}.mp4")
        result = annotate_video(video, tmp_path / "ann", FakeClassifier(), FakeDetector(),
                                write_parquet=False)
        eafs.append(result.outputs["eaf"])
    out_csv = tmp_path / "data" / "loop.csv"
    manifest_from_elan(eafs, tier="expression", out_csv=out_csv, detector=FakeDetector(),
                       per_segment=2, size=32)
    rc = main(["cv", "--dataset", "manifest", "--root", str(out_csv), "--arch", "mobilenetv2",
               "--init", "random", "--techniques", "head", "--folds", "3", "--input-size", "32",
               "--set", "epochs=1", "--set", "batch_size=8", "--out", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(results["fold"]) == [0, 1, 2]
    folds = pd.read_csv(tmp_path / "run" / "folds.csv")
    assert folds.groupby("group")["fold"].nunique().max() == 1  # a video never straddles folds
    assert set(folds["group"]) == {"signer0", "signer1", "signer2"}


def test_cli_from_elan_says_how_many_crops_each_video_gave(annotated, tmp_path, capsys, monkeypatch):
    from signfer.cli import main

    _, eaf = annotated
    monkeypatch.setattr("signfer.faces.create_detector", lambda name: FakeDetector())
    out_csv = tmp_path / "m.csv"
    assert main(["data", "from-elan", str(eaf), "--tier", "expression", "--out", str(out_csv),
                 "--per-segment", "1"]) == 0
    n = len(pd.read_csv(out_csv))
    assert capsys.readouterr().out.strip() == f"manifest: {out_csv} ({n} face crops: signer1 {n})"


def test_short_segment_between_equal_neighbours_goes_to_the_earlier_one():
    segs = segments([0.0, 1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "c", "c"], min_duration=1.5)
    assert [s[:3] for s in segs] == [(0.0, 3.0, "a"), (3.0, 5.0, "c")]
