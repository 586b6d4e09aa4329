"""Contract tests for video decoding, per-frame annotation, smoothing and uncertainty.

A 30-frame synthetic video carries its own ground truth: frame ``i`` is one
flat colour whose dominant channel is ``i // 10`` (red, green, blue) and whose
other channels are ``20 * (i % 10)``, so RGB order, frame identity and the
fake models' answers can all be read back from the pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures import write_video

from signfer.errors import SignferError
from signfer.faces.crop import Box, crop_face
from signfer.inference.annotate import annotate_frames, annotate_many, annotate_video
from signfer.inference.smoothing import smooth_probs
from signfer.inference.uncertainty import entropy, margin, rank_uncertain
from signfer.video import iter_frames, probe

N_FRAMES, WIDTH, HEIGHT, FPS = 30, 64, 48, 10
LABELS = ("anger", "happiness", "neutral")
FACE = Box(16, 12, 32, 24, score=0.9)
NO_FACE_STEPS = {5, 6}  # frames with i % 10 in here have no face
TWO_FACE_STEP = 3  # frames with i % 10 == 3 show a second, smaller face
SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def colour(i: int) -> tuple[int, int, int]:
    rgb = [20 * (i % 10)] * 3
    rgb[i // 10] = 255
    return tuple(rgb)


def make_video(path: Path, *, rotation: int = 0, faststart: bool = False) -> Path:
    def images():
        for i in range(N_FRAMES):
            image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            image[:] = colour(i)
            image[:8, :8] = (255, 255, 255)  # a corner marker to see rotation by
            yield image

    return write_video(path, images(), FPS, rotation=rotation, faststart=faststart)


def step_of(image: np.ndarray) -> int:
    """``i % 10`` of the synthetic frame, read from its colour."""
    centre = image[HEIGHT // 4:, WIDTH // 4:].reshape(-1, 3).mean(axis=0)
    return int(round(float(np.sort(centre)[0]) / 20))


class FakeDetector:
    """One fixed face; none on some frames, an extra small one on others."""

    name = "fake"

    def detect(self, image: np.ndarray) -> list[Box]:
        step = step_of(image)
        if step in NO_FACE_STEPS:
            return []
        if step == TWO_FACE_STEP:
            return [Box(2, 2, 8, 8, score=0.99), FACE]
        return [FACE]


class FakeClassifier:
    """Softmax of the crop's mean colour: red -> anger, green -> happiness, blue -> neutral."""

    labels = LABELS
    input_size = 32
    name = "fake-model"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        return crop_face(image, box, self.input_size)

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        assert crops.dtype == np.uint8 and crops.shape[1:] == (32, 32, 3)
        self.batches.append(len(crops))
        logits = 8.0 * crops.reshape(len(crops), -1, 3).mean(axis=1) / 255.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def expected_label(i: int) -> str:
    return "" if i % 10 in NO_FACE_STEPS else LABELS[i // 10]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "synthetic.mp4")


# --- iter_frames / probe ---------------------------------------------------


def test_every_frame_is_decoded_in_order_as_rgb_uint8(video):
    frames = list(iter_frames(video))
    assert [f.index for f in frames] == list(range(N_FRAMES))
    assert all(f.image.shape == (HEIGHT, WIDTH, 3) and f.image.dtype == np.uint8 for f in frames)
    for i in (0, 10, 20):  # pure red, green, blue
        centre = frames[i].image[HEIGHT // 2, WIDTH // 2].astype(int)
        assert centre[i // 10] > 230
        assert np.delete(centre, i // 10).max() < 25


def test_timestamps_are_monotone_and_follow_pts(video):
    times = np.array([f.timestamp_s for f in iter_frames(video)])
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(times, np.arange(N_FRAMES) / FPS, atol=1e-3)


def test_every_keeps_every_nth_decoded_frame(video):
    assert [f.index for f in iter_frames(video, every=3)] == list(range(0, N_FRAMES, 3))


@pytest.mark.parametrize("fps, step", [(5, 2), (3, 4), (10, 1), (100, 1)])
def test_fps_keeps_frames_at_least_one_period_apart(video, fps, step):
    frames = list(iter_frames(video, fps=fps))
    assert [f.index for f in frames] == list(range(0, N_FRAMES, step))
    gaps = np.diff([f.timestamp_s for f in frames])
    assert np.all(gaps >= 1 / fps - 1e-6)


def test_probe_reports_what_iter_frames_yields(video):
    info = probe(video)
    assert info["frames"] == N_FRAMES == len(list(iter_frames(video)))
    assert info["fps"] == pytest.approx(FPS)
    assert info["duration"] == pytest.approx(N_FRAMES / FPS, abs=0.11)
    assert (info["width"], info["height"], info["rotation"]) == (WIDTH, HEIGHT, 0)


def test_rotation_metadata_is_applied(tmp_path):
    path = make_video(tmp_path / "portrait.mp4", rotation=90)
    image = next(iter_frames(path)).image
    # Turned 90 degrees counter-clockwise, the top-left marker ends bottom-left.
    assert image.shape == (WIDTH, HEIGHT, 3)
    assert image[-4, 4].min() > 200
    assert image[4, 4].min() < 100
    info = probe(path)
    assert (info["width"], info["height"], info["rotation"]) == (HEIGHT, WIDTH, 90)


def _one_line_error_naming(path: Path, call) -> str:
    with pytest.raises(SignferError) as info:
        call()
    message = str(info.value)
    assert path.name in message and "\n" not in message
    return message


def test_missing_path_is_a_signfer_error(tmp_path):
    path = tmp_path / "nope.mp4"
    assert "not found" in _one_line_error_naming(path, lambda: iter_frames(path))
    _one_line_error_naming(path, lambda: probe(path))


def test_non_video_and_empty_files_are_signfer_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    for path in (text, empty):
        _one_line_error_naming(path, lambda: list(iter_frames(path)))
        _one_line_error_naming(path, lambda: probe(path))


def test_truncated_video_is_a_signfer_error(tmp_path):
    # Index at the front: the cut file still opens, so only counting tells.
    whole = make_video(tmp_path / "whole.mp4", faststart=True).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    assert "truncated" in _one_line_error_naming(cut, lambda: list(iter_frames(cut)))
    _one_line_error_naming(cut, lambda: probe(cut))


def test_bad_subsampling_arguments_are_refused(video):
    with pytest.raises(SignferError):
        iter_frames(video, every=0)
    with pytest.raises(SignferError):
        iter_frames(video, fps=0)


@pytest.mark.shared
def test_real_clip_yields_the_frame_count_probe_reports():
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"{SHARED_VIDEOS} is absent (../shared not mounted)")
    clips = sorted(SHARED_VIDEOS.glob("*.mp4"))
    if not clips:
        pytest.skip(f"no .mp4 clips in {SHARED_VIDEOS}")
    for clip in clips:
        info = probe(clip)
        frames = list(iter_frames(clip))
        assert len(frames) == info["frames"] > 0, clip.name
        assert frames[0].image.shape == (info["height"], info["width"], 3), clip.name
        assert np.all(np.diff([f.timestamp_s for f in frames]) > 0), clip.name


# --- annotate --------------------------------------------------------------


def test_annotate_frames_gives_one_row_per_frame_with_no_face_rows(video):
    classifier = FakeClassifier()
    table = annotate_frames(iter_frames(video), classifier, FakeDetector(), batch_size=4,
                            video="synthetic.mp4", detect_every=1)
    assert len(table) == N_FRAMES
    assert table["label"].tolist() == [expected_label(i) for i in range(N_FRAMES)]
    face = table["face"].to_numpy()
    assert face.tolist() == [i % 10 not in NO_FACE_STEPS for i in range(N_FRAMES)]
    probs = table[[f"prob_{c}" for c in LABELS]].to_numpy()
    assert np.isnan(probs[~face]).all() and np.isnan(table.loc[~face, "confidence"]).all()
    np.testing.assert_allclose(probs[face].sum(axis=1), 1.0)
    np.testing.assert_allclose(table.loc[face, "confidence"], probs[face].max(axis=1))
    # Several faces: the largest one is used, and the count is kept.
    two = table[table["frame"] % 10 == TWO_FACE_STEP]
    assert (two["n_faces"] == 2).all()
    assert (two[["x", "y", "w", "h"]].to_numpy() == [FACE.x, FACE.y, FACE.w, FACE.h]).all()
    # Crops are batched: 24 faces in batches of at most 4.
    assert sum(classifier.batches) == int(face.sum()) and max(classifier.batches) <= 4
    assert len(classifier.batches) >= 6


class CountingDetector:
    """Wraps a detector and counts its calls; by default one fixed face on every frame."""

    name = "counting"

    def __init__(self, inner=None) -> None:
        self.inner, self.calls = inner, 0

    def detect(self, image: np.ndarray) -> list[Box]:
        self.calls += 1
        return self.inner.detect(image) if self.inner is not None else [FACE]


def test_detect_every_runs_the_detector_on_every_nth_frame_and_holds_the_box_between(video):
    detector = CountingDetector()
    table = annotate_frames(iter_frames(video), FakeClassifier(), detector, detect_every=3, track="hold")
    assert detector.calls == N_FRAMES // 3 == 10
    assert table["face"].all()
    assert table["box_source"].tolist() == ["detected", "tracked", "tracked"] * 10
    assert (table[["x", "y", "w", "h"]].to_numpy() == [FACE.x, FACE.y, FACE.w, FACE.h]).all()
    assert (table["det_score"] == FACE.score).all()
    # Tracked rows are classified on their own pixels, not the detected frame's.
    assert table["label"].tolist() == [LABELS[i // 10] for i in range(N_FRAMES)]


def test_detect_every_one_detects_on_every_frame_as_before(video):
    detector = CountingDetector(FakeDetector())
    table = annotate_frames(iter_frames(video), FakeClassifier(), detector, detect_every=1)
    assert detector.calls == N_FRAMES
    expected = ["" if i % 10 in NO_FACE_STEPS else "detected" for i in range(N_FRAMES)]
    assert table["box_source"].tolist() == expected
    assert table["label"].tolist() == [expected_label(i) for i in range(N_FRAMES)]
    assert table["n_faces"].tolist() == [
        0 if i % 10 in NO_FACE_STEPS else 2 if i % 10 == TWO_FACE_STEP else 1
        for i in range(N_FRAMES)
    ]


def test_a_detection_without_a_face_ends_the_held_track(video):
    # Detections on frames 0, 3, 6, 9, ...: frame 6 finds no face, so 7 and 8 have
    # none although the detector would find one there; frame 9 starts a new track.
    # Frame 3 (two faces) passes its largest box and its count to 4 and 5, and
    # frame 5 keeps that box although a detection there would find nothing.
    table = annotate_frames(iter_frames(video), FakeClassifier(), FakeDetector(), detect_every=3,
                            track="hold")
    rows = table.set_index("frame")
    assert rows.loc[0:9, "box_source"].tolist() == [
        "detected", "tracked", "tracked",
        "detected", "tracked", "tracked",
        "", "", "",
        "detected",
    ]
    assert rows.loc[6:8, "face"].tolist() == [False] * 3
    assert rows.loc[6:8, "label"].tolist() == [""] * 3
    assert rows.loc[6:8, "n_faces"].tolist() == [0] * 3
    assert np.isnan(rows.loc[6:8, ["x", "y", "w", "h", "det_score"]].to_numpy()).all()
    assert rows.loc[3:5, "n_faces"].tolist() == [2, 2, 2]
    assert (rows.loc[3:5, ["x", "y", "w", "h"]].to_numpy() == [FACE.x, FACE.y, FACE.w, FACE.h]).all()
    assert rows.loc[9, "label"] == LABELS[0]


def test_bad_detect_every_is_refused(video):
    with pytest.raises(ValueError, match="detect_every"):
        annotate_frames(iter_frames(video), FakeClassifier(), FakeDetector(), detect_every=0)


def test_wrongly_shaped_probabilities_are_refused(video):
    class Broken(FakeClassifier):
        def predict_proba(self, crops):
            return np.zeros((len(crops), 2))

    with pytest.raises(SignferError, match="shape"):
        annotate_frames(iter_frames(video), Broken(), FakeDetector())


def test_annotate_video_writes_table_eaf_timeline_and_overlay(video, tmp_path):
    import pympi

    result = annotate_video(video, tmp_path / "out", FakeClassifier(), FakeDetector(),
                            overlay=True)
    out = tmp_path / "out"
    assert result.outputs["csv"] == out / "synthetic.frames.csv"
    for kind in ("csv", "parquet", "eaf", "timeline", "overlay"):
        assert result.outputs[kind].is_file() and result.outputs[kind].stat().st_size > 0, kind
    assert not list(out.glob(".*tmp*")), "temporary files left behind"
    assert result.detection_rate == pytest.approx(24 / 30)

    csv = pd.read_csv(result.outputs["csv"], keep_default_na=False)
    assert len(csv) == N_FRAMES
    assert csv["label_smoothed"].tolist() == [expected_label(i) for i in range(N_FRAMES)]
    assert pd.read_parquet(result.outputs["parquet"])["frame"].tolist() == list(range(N_FRAMES))

    eaf = pympi.Elan.Eaf(str(result.outputs["eaf"]))
    assert eaf.get_annotation_data_for_tier("expression") == [
        (0, 500, "anger"), (700, 1000, "anger"),
        (1000, 1500, "happiness"), (1700, 2000, "happiness"),
        (2000, 2500, "neutral"), (2700, 3000, "neutral"),
    ]
    confidences = [float(a[2]) for a in eaf.get_annotation_data_for_tier("confidence")]
    assert len(confidences) == 6 and all(0.33 < c <= 1 for c in confidences)
    assert eaf.media_descriptors[0]["MEDIA_URL"] == video.resolve().as_uri()

    from PIL import Image

    assert Image.open(result.outputs["timeline"]).format == "PNG"
    info = probe(result.outputs["overlay"])
    assert (info["frames"], info["width"], info["height"]) == (N_FRAMES, WIDTH, HEIGHT)
    # Frame 20 is blue with a face: the box's top edge is drawn in green.
    frame20 = [f for f in iter_frames(result.outputs["overlay"]) if f.index == 20][0].image
    edge = frame20[int(FACE.y), int(FACE.x + FACE.w / 2)].astype(int)
    assert edge[1] > edge[2]


def test_annotate_video_detects_every_nth_kept_frame_and_reports_its_speed(video, tmp_path):
    detector = CountingDetector()
    result = annotate_video(video, tmp_path, FakeClassifier(), detector, every=2,
                            detect_every=5, track="hold", write_parquet=False)
    assert result.n_frames == N_FRAMES // 2 and detector.calls == 3
    csv = pd.read_csv(result.outputs["csv"], keep_default_na=False)
    assert csv["box_source"].tolist() == (["detected"] + ["tracked"] * 4) * 3
    assert result.frames_per_s == pytest.approx(result.n_frames / result.seconds)
    assert f"{result.frames_per_s:.0f} frames/s" in result.summary()


def test_annotate_video_smooths_and_subsamples(video, tmp_path):
    result = annotate_video(video, tmp_path, FakeClassifier(), FakeDetector(), every=2,
                            smooth=3, write_parquet=False)
    table = result.table
    assert table["frame"].tolist() == list(range(0, N_FRAMES, 2))
    assert "parquet" not in result.outputs
    assert (table["label_smoothed"] == "").tolist() == (~table["face"]).tolist()
    # Frame 10 (first green) sits between red frame 8 and green frame 12:
    # smoothing over three kept frames pulls its confidence down.
    row = table.set_index("frame").loc[10]
    assert row["confidence_smoothed"] < row["confidence"]


def test_annotate_many_reports_a_bad_video_and_does_the_rest(video, tmp_path, caplog):
    caplog.set_level("DEBUG", logger="signfer")
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    twin = tmp_path / "twin" / video.name  # same stem: would overwrite the first's outputs
    twin.parent.mkdir()
    twin.write_bytes(video.read_bytes())
    done = annotate_many([bad, video, twin], tmp_path / "out", FakeClassifier(), FakeDetector())
    assert [r.video for r in done.results] == [video]
    assert len(done.errors) == 2 and "broken.mp4" in done.errors[0]
    assert "same file name stem" in done.errors[1]
    assert not any("\n" in e for e in done.errors)
    assert done.results[0].detection_rate == pytest.approx(0.8)
    assert "broken.mp4" in caplog.text
    assert (tmp_path / "out" / "synthetic.eaf").is_file()
    assert not (tmp_path / "out" / "broken.frames.csv").exists()


# --- smoothing ------------------------------------------------------------


def test_window_one_leaves_probabilities_unchanged():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=10)
    np.testing.assert_array_equal(smooth_probs(probs, 1), probs)


def test_centred_moving_average():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    expected = np.array([[0.5, 0.5], [2 / 3, 1 / 3], [2 / 3, 1 / 3], [1.0, 0.0]])
    np.testing.assert_allclose(smooth_probs(probs, 3), expected)


def test_no_face_rows_stay_nan_and_are_left_out_of_averages():
    nan = [np.nan, np.nan]
    probs = np.array([[1.0, 0.0], nan, [0.0, 1.0], [0.0, 1.0], nan])
    out = smooth_probs(probs, 3)
    assert np.isnan(out[[1, 4]]).all()
    # Row 0's window holds rows 0 and 1; row 1 has no face, so row 0 is unchanged.
    np.testing.assert_allclose(out[0], [1.0, 0.0])
    np.testing.assert_allclose(out[2], [0.0, 1.0])
    np.testing.assert_allclose(np.nansum(out, axis=1)[[0, 2, 3]], 1.0)


def test_bad_window_is_refused():
    with pytest.raises(ValueError):
        smooth_probs(np.ones((3, 2)) / 2, 0)


# --- uncertainty ------------------------------------------------------------


def test_entropy_and_margin():
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1], [np.nan] * 3])
    h = entropy(probs)
    np.testing.assert_allclose(h[:2], [0.0, np.log(3)])
    assert np.isnan(h[3])
    np.testing.assert_allclose(margin(probs)[:3], [1.0, 0.0, 0.3])


@pytest.mark.parametrize("method", ["entropy", "margin"])
def test_rank_uncertain_returns_exactly_the_n_most_uncertain_face_frames(method):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4) * 0.7, size=50)
    probs[::7] = np.nan  # no-face frames
    table = pd.DataFrame(probs, columns=[f"prob_{c}" for c in "abcd"])
    table.insert(0, "frame", np.arange(50))
    ranked = rank_uncertain(table, 8, method=method)
    face = ~np.isnan(probs).any(axis=1)
    score = entropy(probs) if method == "entropy" else -margin(probs)
    expected = np.argsort(-np.where(face, score, -np.inf), kind="stable")[:8]
    assert ranked["frame"].tolist() == expected.tolist()
    assert len(rank_uncertain(table, 1000)) == int(face.sum())


class BlindDetector:
    """Finds no face anywhere, like a video of hands only."""

    name = "blind"

    def detect(self, image: np.ndarray) -> list[Box]:
        return []


def test_video_without_any_face_gives_no_face_rows_not_a_crash(video, tmp_path):
    result = annotate_video(video, tmp_path, FakeClassifier(), BlindDetector(), write_parquet=False)
    table = pd.read_csv(result.outputs["csv"])
    assert len(table) == result.n_frames > 0
    assert not table["face"].any()
    assert table["label"].isna().all() and table["prob_anger"].isna().all()
    assert result.detection_rate == 0.0
    assert result.outputs["eaf"].is_file() and result.outputs["timeline"].is_file()


# --- stretches of a video (annotate_many's chunks) --------------------------

def _gop_video(path: Path, bframes: int) -> Path:
    """The synthetic video, with a keyframe every 6 frames: seeks land inside it."""
    def images():
        for i in range(N_FRAMES):
            image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            image[:] = colour(i)
            yield image

    return write_video(path, images(), FPS, gop=6, bframes=bframes)


@pytest.mark.parametrize("every, fps, bframes", [(None, None, 0), (2, None, 2), (None, 4, 2)])
def test_stretches_decode_to_the_frames_of_one_pass(tmp_path, every, fps, bframes):
    from signfer.video import iter_span, split_frames

    path = _gop_video(tmp_path / "gop.mp4", bframes)
    whole = list(iter_frames(path, every=every, fps=fps))
    spans = split_frames(path, 0.5, every=every, fps=fps, multiple=2)
    assert len(spans) >= 3
    assert any(s.seek is not None for s in spans)  # a stretch that starts by seeking, not by decoding from 0
    assert all(len(s) % 2 == 0 for s in spans[:-1])
    parts = [f for s in spans for f in iter_span(path, s)]
    assert [(f.index, f.timestamp_s) for f in parts] == [(f.index, f.timestamp_s) for f in whole]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(parts, whole))


def test_a_stretch_of_a_changed_file_is_refused_not_misread(tmp_path):
    from signfer.video import iter_span, split_frames

    path = _gop_video(tmp_path / "gop.mp4", 0)
    last = split_frames(path, 0.5, multiple=2)[-1]
    write_video(path, [np.zeros((HEIGHT, WIDTH, 3), np.uint8)] * 8, FPS)  # now shorter
    with pytest.raises(SignferError, match="did not decode"):
        list(iter_span(path, last))


def test_chunked_annotation_writes_the_files_of_one_piece(tmp_path):
    path = _gop_video(tmp_path / "gop.mp4", 2)
    options = dict(detect_every=3, batch_size=4, smooth=3)
    whole = annotate_many([path], tmp_path / "whole", FakeClassifier(), FakeDetector(), **options)
    clf = FakeClassifier()
    # 0.5 s is 5 frames; the stretches hold a multiple of 12 (detection every 3rd, batches of 4)
    from signfer.video import split_frames

    assert [len(s) for s in split_frames(path, 0.5, multiple=12)] == [12, 12, 6]
    cut = annotate_many([path], tmp_path / "cut", clf, FakeDetector(), chunk_s=0.5, **options)
    assert not whole.errors and not cut.errors
    assert max(clf.batches) <= 4
    for kind in ("frames.csv", "timeline.png"):
        assert (tmp_path / "cut" / f"gop.{kind}").read_bytes() == (tmp_path / "whole" / f"gop.{kind}").read_bytes()
    pd.testing.assert_frame_equal(cut.results[0].table, whole.results[0].table)
    assert cut.results[0].table["box_source"].tolist()[:4] == ["detected", "tracked", "tracked", "detected"]


def test_a_failing_stretch_fails_its_video_alone(video, tmp_path, monkeypatch):
    import signfer.inference.annotate as annotate_module

    good = make_video(tmp_path / "good.mp4")
    real = annotate_module.iter_span

    def broken(path, span):  # the second stretch of one video fails to decode
        if Path(path).name == video.name and span.indices[0] > 0:
            raise SignferError(f"{path}: decoding failed in the stretch from frame {span.indices[0]}")
        return real(path, span)

    monkeypatch.setattr(annotate_module, "iter_span", broken)
    done = annotate_many([video, good], tmp_path / "out", FakeClassifier(), FakeDetector(),
                         chunk_s=1.0, detect_every=2, batch_size=2)
    assert [r.video for r in done.results] == [good]
    assert len(done.errors) == 1 and done.errors[0].startswith(f"{video}: decoding failed in the stretch")
    assert not (tmp_path / "out" / f"{video.stem}.frames.csv").exists()
    assert len(done.results[0].table) == N_FRAMES


def test_rank_uncertain_keeps_its_choices_min_gap_apart():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), size=1000)  # 40 s at 25 fps
    table = pd.DataFrame(probs, columns=[f"prob_{c}" for c in "abc"]).assign(time_s=np.arange(1000) / 25)
    ranked = rank_uncertain(table, 10, min_gap_s=1.0)
    times = np.sort(ranked["time_s"].to_numpy())
    assert len(ranked) == 10 and np.diff(times).min() >= 1.0
    # the first choice is still the most uncertain frame of all
    assert ranked.index[0] == int(np.argmax(entropy(probs)))
    # a 40 s clip holds at most 8 frames 5 s apart
    assert 4 <= len(rank_uncertain(table, 50, min_gap_s=5.0)) <= 8
    with pytest.raises(ValueError, match="min_gap_s"):
        rank_uncertain(table, 3, min_gap_s=float("nan"))


def test_rank_uncertain_min_gap_by_hand():
    # entropy falls with time; the no-face frame at 2.0 s is never chosen
    p = [[0.5, 0.5], [0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [np.nan, np.nan]]
    t = pd.DataFrame(p, columns=["prob_a", "prob_b"]).assign(time_s=[0.0, 0.4, 0.5, 0.8, 2.0])
    # 0.0 first; 0.4 too close; 0.5 exactly min_gap away (allowed); 0.8 too close to 0.5
    assert rank_uncertain(t, 10, min_gap_s=0.5)["time_s"].tolist() == [0.0, 0.5]
