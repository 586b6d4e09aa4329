"""Following a face between whole-frame detections (``track="window"``).

The "face" is a bright square on a black frame and the detector finds the
bounding box of the bright pixels, so every box the tracker reports can be
checked against where the square really is, and every call the detector gets
(whole frame or window) can be counted by its image size.
"""

from __future__ import annotations

import numpy as np
import pytest

from signfer.faces.crop import Box
from signfer.faces.track import TRACK_SIZE, detect_near, track_window
from signfer.inference.annotate import annotate_frames
from signfer.video import Frame

H, W, SIDE = 120, 160, 20
LABELS = ("a", "b")


class BrightDetector:
    """The box around the pixels brighter than 128, with two eye landmarks on its top third."""

    name = "bright"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def detect(self, image: np.ndarray) -> list[Box]:
        self.shapes.append(image.shape[:2])
        ys, xs = np.nonzero(image[:, :, 0] > 128)
        if len(xs) == 0:
            return []
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        w, h = x1 - x0, y1 - y0
        eyes = ((x0 + w / 4, y0 + h / 3), (x0 + 3 * w / 4, y0 + h / 3))
        return [Box(float(x0), float(y0), float(w), float(h), 0.9,
                    (*eyes, (x0 + w / 2, y0 + h / 2), (x0 + w / 3, y1 - 2.0), (x0 + 2 * w / 3, y1 - 2.0)))]

    @property
    def whole(self) -> int:
        return sum(shape == (H, W) for shape in self.shapes)


class MeanClassifier:
    labels = LABELS
    input_size = 8
    name = "mean"

    def crop(self, image, box):
        return np.zeros((8, 8, 3), np.uint8)

    def predict_proba(self, crops):
        return np.tile([0.25, 0.75], (len(crops), 1))


def frames(positions):
    """One frame per (x, y) top-left corner of the square; None: no square."""
    for i, pos in enumerate(positions):
        image = np.zeros((H, W, 3), np.uint8)
        if pos is not None:
            x, y = pos
            image[y:y + SIDE, x:x + SIDE] = 255
        yield Frame(i, i / 25, image)


def boxes(table):
    return table[["x", "y", "w", "h"]].to_numpy()


def test_the_window_follows_a_moving_face_between_whole_frame_detections():
    positions = [(20 + 3 * i, 30 + i) for i in range(30)]
    detector = BrightDetector()
    table = annotate_frames(frames(positions), MeanClassifier(), detector, detect_every=10)
    assert detector.whole == 3  # frames 0, 10 and 20
    assert len(detector.shapes) == 30  # and one small window on every other frame
    assert max(max(s) for s in detector.shapes if s != (H, W)) <= 2 * SIDE + 1
    assert table["box_source"].tolist() == (["detected"] + ["tracked"] * 9) * 3
    np.testing.assert_allclose(boxes(table), [(x, y, SIDE, SIDE) for x, y in positions])
    assert (table["det_score"] == 0.9).all() and (table["n_faces"] == 1).all()


def test_holding_the_box_lags_the_same_face():
    positions = [(20 + 3 * i, 30 + i) for i in range(30)]
    table = annotate_frames(frames(positions), MeanClassifier(), BrightDetector(), detect_every=10,
                            track="hold")
    assert tuple(boxes(table)[9]) == (20, 30, SIDE, SIDE)  # still frame 0's box on frame 9


@pytest.mark.parametrize("jump", [(100, 70), (20 + SIDE // 2, 30)], ids=["far", "half-out"])
def test_a_face_lost_by_the_window_is_searched_for_in_the_whole_frame(jump):
    # frame 5 jumps: far away (the window is empty) or by half the face (the
    # window would cut it short); either way that frame is searched whole
    positions = [(20, 30)] * 5 + [jump] * 5
    detector = BrightDetector()
    table = annotate_frames(frames(positions), MeanClassifier(), detector, detect_every=10)
    assert table["box_source"].tolist() == ["detected"] + ["tracked"] * 4 + ["detected"] + ["tracked"] * 4
    assert detector.whole == 2
    np.testing.assert_allclose(boxes(table), [(x, y, SIDE, SIDE) for x, y in positions])


def test_without_a_face_every_frame_is_searched_whole_until_one_is_found():
    positions = [(20, 30)] * 3 + [None] * 3 + [(60, 50)] * 4
    detector = BrightDetector()
    table = annotate_frames(frames(positions), MeanClassifier(), detector, detect_every=10)
    assert table["face"].tolist() == [True] * 3 + [False] * 3 + [True] * 4
    # frame 3 loses the face in its window and then in the whole frame; 4 and 5
    # have no box to look near; 6 finds the new face; 7-9 follow it
    assert table["box_source"].tolist() == ["detected", "tracked", "tracked", "", "", "",
                                            "detected", "tracked", "tracked", "tracked"]
    assert detector.whole == 1 + 4
    assert table.loc[3:5, "n_faces"].tolist() == [0, 0, 0]


def test_a_large_face_is_found_in_a_shrunk_window_within_a_few_pixels():
    image = np.zeros((720, 1280, 3), np.uint8)
    image[200:400, 600:800] = 255  # a 200 px face: its window is 400 px, seen at TRACK_SIZE
    detector = BrightDetector()
    found = detect_near(detector, image, Box(590, 190, 200, 200))
    assert max(detector.shapes[-1]) == TRACK_SIZE
    tolerance = 400 / TRACK_SIZE + 1  # one pixel of the shrunk window
    np.testing.assert_allclose([found.x, found.y, found.w, found.h], [600, 200, 200, 200], atol=tolerance)
    # landmarks come back in the frame's pixels too
    np.testing.assert_allclose(found.landmarks[0], (650, 200 + 200 / 3), atol=tolerance)


def test_the_window_is_clipped_to_the_frame_and_a_face_at_the_border_is_kept():
    assert track_window(Box(0, 0, 20, 20), (H, W)) == (0, 0, 30, 30)
    image = np.zeros((H, W, 3), np.uint8)
    image[0:SIDE, 0:SIDE] = 255  # touches the frame's corner, which is also the window's
    found = detect_near(BrightDetector(), image, Box(2, 2, SIDE, SIDE))
    assert (found.x, found.y, found.w, found.h) == (0, 0, SIDE, SIDE)


def test_an_unknown_track_is_refused():
    with pytest.raises(ValueError, match="track"):
        annotate_frames(frames([(0, 0)]), MeanClassifier(), BrightDetector(), track="follow")
