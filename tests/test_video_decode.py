"""Video at 720p: the decoder's threads and skipped frames, detection on a small copy.

The frames come from generated clips (a large bright square on grey, or the
astronaut's face from scikit-image); the real signing clips in ../shared are
used where they are present.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from fixtures import write_video

import signfer.video as video_module
from signfer.faces.crop import Box
from signfer.faces.downscale import detect_downscaled, shrink
from signfer.inference.annotate import annotate_frames
from signfer.video import frame_count_hint, iter_frames

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
N_FRAMES = 25
#: The square's place in the 1280x720 frames: x, y, side.
SQUARE = (600, 200, 240)


def square_frames(n: int = N_FRAMES, size: tuple[int, int] = (720, 1280)) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        image = np.full((*size, 3), 80, np.uint8)
        x, y, side = SQUARE
        image[y:y + side, x + 4 * i:x + 4 * i + side] = (230, 200 - 4 * i, 40 + 8 * i)
        frames.append(image)
    return frames


@pytest.fixture(scope="module")
def clip_720p(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "square_720p.mp4", square_frames(), fps=25)


class SquareDetector:
    """Finds the bright square (its box in the pixels of the image it is given) and
    records the size of every image it saw."""

    name = "square"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image: np.ndarray) -> list[Box]:
        self.shapes.append(image.shape)
        ys, xs = np.nonzero(image[:, :, 0] > 160)
        if not len(xs):
            return []
        landmarks = ((float(xs.min()), float(ys.min())),) * 5
        return [Box(float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1), 0.9, landmarks)]


class CropRecorder:
    """A classifier that records the size of the frames its crops are cut from."""

    labels = ("anger", "happiness")
    input_size = 16
    name = "recorder"

    def __init__(self) -> None:
        self.frame_shapes: list[tuple[int, ...]] = []

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        self.frame_shapes.append(image.shape)
        return np.zeros((16, 16, 3), np.uint8)

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        return np.tile([0.25, 0.75], (len(crops), 1))


# ---------------------------------------------------------------- detection on a small copy

def test_shrink_keeps_the_aspect_and_never_enlarges():
    image = np.zeros((720, 1280, 3), np.uint8)
    small, fx, fy = shrink(image, 320)
    assert small.shape == (180, 320, 3) and fx == fy == 4.0
    same, fx, fy = shrink(np.zeros((240, 320, 3), np.uint8), 640)
    assert same.shape == (240, 320, 3) and fx == fy == 1.0


def test_small_copy_detection_maps_boxes_back_to_full_resolution_pixels():
    frame = square_frames(1)[0]
    det = SquareDetector()
    (box,) = detect_downscaled(det, frame, 320)
    assert det.shapes == [(180, 320, 3)]  # the detector saw the small copy
    x, y, side = SQUARE
    assert (box.x, box.y, box.w, box.h) == pytest.approx((x, y, side, side), abs=4)  # one small pixel = 4
    assert box.landmarks[0] == pytest.approx((box.x, box.y))
    (full,) = detect_downscaled(det, frame, None)
    assert det.shapes[-1] == (720, 1280, 3) and (full.x, full.y, full.w, full.h) == (x, y, side, side)


def test_yunet_on_a_small_copy_finds_the_face_where_it_is_at_full_size():
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from signfer.faces import create_detector

    face = np.asarray(Image.fromarray(skimage_data.astronaut()[0:240, 120:330]).resize((210, 240)))
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[300:540, 700:910] = face
    yunet = create_detector("yunet")
    (small,) = detect_downscaled(yunet, frame, 320)
    (full,) = yunet.detect(frame)
    for a, b in zip((small.x, small.y, small.w, small.h), (full.x, full.y, full.w, full.h)):
        assert a == pytest.approx(b, abs=0.1 * full.h)
    assert 700 <= small.centre[0] <= 910 and 300 <= small.centre[1] <= 540


def test_annotate_detects_on_the_small_copy_and_crops_from_the_full_frame(clip_720p):
    det, clf = SquareDetector(), CropRecorder()
    table = annotate_frames(iter_frames(clip_720p), clf, det, detect_size=320, detect_every=1)
    assert set(det.shapes) == {(180, 320, 3)}
    assert set(clf.frame_shapes) == {(720, 1280, 3)}
    assert table["face"].all()
    x, y, side = SQUARE
    assert table["x"].to_numpy() == pytest.approx(x + 4 * np.arange(N_FRAMES), abs=6)
    assert table["y"].to_numpy() == pytest.approx(y, abs=6)
    assert table["w"].to_numpy() == pytest.approx(side, abs=6)
    # 0: the detector sees the frame itself (YuNet still shrinks to its own 960 px)
    det = SquareDetector()
    annotate_frames(iter_frames(clip_720p), CropRecorder(), det, detect_size=0, detect_every=1)
    assert set(det.shapes) == {(720, 1280, 3)}


def test_by_default_the_face_is_followed_in_small_windows_between_whole_frame_detections(clip_720p):
    from signfer.faces.track import TRACK_SIZE
    from signfer.inference.annotate import DEFAULT_DETECT_EVERY

    det, clf = SquareDetector(), CropRecorder()
    table = annotate_frames(iter_frames(clip_720p), clf, det, detect_size=320)
    whole = [k for k, shape in enumerate(det.shapes) if shape == (180, 320, 3)]
    assert whole == [k for k in range(N_FRAMES) if k % DEFAULT_DETECT_EVERY == 0]
    assert all(max(shape[:2]) <= TRACK_SIZE for k, shape in enumerate(det.shapes) if k not in whole)
    assert set(clf.frame_shapes) == {(720, 1280, 3)}  # crops still come from the full frame
    x, y, side = SQUARE
    assert table["x"].to_numpy() == pytest.approx(x + 4 * np.arange(N_FRAMES), abs=6)
    assert table["w"].to_numpy() == pytest.approx(side, abs=6)


# ---------------------------------------------------------------- decoding

@pytest.fixture
def conversions(monkeypatch) -> list[int]:
    """Counts the frames that iter_frames turns into RGB arrays."""
    converted: list[int] = []
    upright = video_module._upright

    def counting(frame):
        converted.append(1)
        return upright(frame)

    monkeypatch.setattr(video_module, "_upright", counting)
    return converted


@pytest.mark.parametrize(("every", "fps", "kept"), [(None, None, N_FRAMES), (5, None, 5), (None, 5.0, 5),
                                                    (2, 5.0, 5)])
def test_frames_that_every_or_fps_drop_are_never_converted_to_arrays(clip_720p, conversions, every, fps,
                                                                      kept):
    frames = list(iter_frames(clip_720p, every=every, fps=fps))
    assert len(frames) == kept
    assert len(conversions) == kept  # the 20 dropped frames were decoded, not converted


def reference_frames(path: Path) -> list[tuple[int, float, np.ndarray]]:
    """Every frame decoded by PyAV without threads: (index, pts in seconds, RGB array)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        start = (container.start_time or 0) / 1_000_000
        return [(i, float(f.pts * f.time_base) - start, f.to_ndarray(format="rgb24"))
                for i, f in enumerate(container.decode(stream))]


def shared_clips() -> list[Path]:
    return sorted(SHARED_VIDEOS.glob("*.mp4"))[:2] if SHARED_VIDEOS.is_dir() else []


@pytest.mark.parametrize("which", ["generated", *[p.name for p in shared_clips()]])
def test_threaded_decoder_returns_the_same_frames_as_a_single_thread(clip_720p, which):
    path = clip_720p if which == "generated" else SHARED_VIDEOS / which
    ref = reference_frames(path)
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == [i for i, _, _ in ref]
    assert [f.timestamp_s for f in frames] == pytest.approx([t for _, t, _ in ref])
    for f, (_, _, image) in zip(frames, ref):
        assert np.array_equal(f.image, image)


def test_frame_count_hint_from_the_header(clip_720p):
    assert frame_count_hint(clip_720p) == N_FRAMES
    assert frame_count_hint(clip_720p, every=5) == 5
    assert frame_count_hint(clip_720p, fps=5.0) == 5
    assert frame_count_hint(clip_720p.parent / "missing.mp4") is None
