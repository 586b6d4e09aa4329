"""Tests for the crop spec: its JSON form, the geometry crop_face gives it, and
the framing measured on pre-cropped faces, on a real face (the astronaut)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from test_faces import get_detector

from signfer.errors import SignferError
from signfer.faces import Box, CropSpec, Framing, crop_face, largest, measure_framing
from signfer.faces.crop import NOSE_ROW, crop_rect
from signfer.faces.framing import describe_framing


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


@pytest.fixture(scope="module")
def face(astronaut) -> Box:
    """YuNet's box of the astronaut: about 89 x 112 px at (178, 63)."""
    return get_detector("yunet").detect(astronaut)[0]


def eye_angle(box: Box) -> float:
    """Degrees of the eye line, positive when the image-right eye is lower."""
    (x0, y0), (x1, y1) = box.landmarks[:2]
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def resize(image: np.ndarray, w: int, h: int | None = None) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((w, h or w), Image.BILINEAR))


# --- the spec as data -------------------------------------------------------------


def test_spec_round_trips_through_json():
    spec = CropSpec(detector="mtcnn", margin=1.6, square=False, align=True, region="upper",
                    framing=Framing(0.5, 0.55, 0.62, 0.7, n_measured=200, n_found=188))
    assert CropSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert CropSpec.from_dict(json.loads(json.dumps(CropSpec().to_dict()))) == CropSpec()
    assert CropSpec.from_dict(None) == CropSpec()
    assert CropSpec().to_dict()["framing"] is None


@pytest.mark.parametrize(
    "d, field",
    [
        ({"zoom": 2.0}, "zoom"),
        ({"framing": {"cx": 0.5, "cy": 0.5, "w": 0.5, "h": 0.5, "size": 1}}, "size"),
        ({"margin": 0}, "margin"),
        ({"margin": -1.4}, "margin"),
        ({"margin": "wide"}, "margin"),
        ({"region": "eyes"}, "region"),
        ({"square": "yes"}, "square"),
        ({"framing": {"cx": 0.5, "cy": 0.5, "w": 0.0, "h": 0.5}}, "framing.w"),
        ({"framing": {"cx": 0.5, "cy": 0.5, "w": 0.5, "h": -1}}, "framing.h"),
    ],
)
def test_bad_spec_is_an_error_naming_the_field(d, field):
    with pytest.raises(SignferError, match=field):
        CropSpec.from_dict(d)


def test_describe_framing():
    line = describe_framing(Framing(0.5, 0.55, 0.62, 0.7, n_measured=200, n_found=188))
    assert line == ("face box centre at (0.50, 0.55) of the image, 0.62 x 0.70 of its size; "
                    "found in 188 of 200 images")
    assert "no face" in describe_framing(None)


# --- geometry ---------------------------------------------------------------------


def old_crop_face(image, box, size, margin=0.2):
    """crop_face as it was before CropSpec, kept verbatim to pin the default."""
    pil = Image.fromarray(np.asarray(image)).convert("RGB")
    if box is not None:
        side = max(box.w, box.h) * (1.0 + 2.0 * margin)
        cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
        left, top = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
        s = max(int(round(side)), 1)
        pil = pil.crop((left, top, left + s, top + s))
    return np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.uint8)


@pytest.mark.parametrize(
    "box",
    [None, Box(30, 20, 40, 50), Box(12.3, 7.7, 33.1, 28.9), Box(-15, 60, 40, 40),
     Box(90, 70, 35, 35, landmarks=((95, 80), (115, 80), (105, 90), (97, 98), (113, 98)))],
)
@pytest.mark.parametrize("size", [32, 48])
def test_default_spec_is_the_old_crop(box, size):
    image = np.random.default_rng(3).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    expected = old_crop_face(image, box, size)
    assert np.array_equal(crop_face(image, box, size), expected)
    assert np.array_equal(crop_face(image, box, size, CropSpec()), expected)


def test_non_square_spec_cuts_a_rectangle():
    image = np.random.default_rng(4).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    box = Box(40, 30, 20, 30)  # centre (50, 45); x 1.5 -> 30 x 45
    out = crop_face(image, box, 24, CropSpec(margin=1.5, square=False))
    assert crop_rect(box, CropSpec(margin=1.5, square=False)) == (35, 22, 65, 67)
    assert np.array_equal(out, resize(image[22:67, 35:65], 24))


def test_framing_cuts_the_rectangle_it_describes():
    image = np.random.default_rng(5).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    # A 20 x 20 box centred at (50, 40) filling half the width and a quarter
    # of the height of the training images, 0.4 down: a 40 x 80 cut from y = 8.
    box = Box(40, 30, 20, 20)
    spec = CropSpec(framing=Framing(cx=0.5, cy=0.4, w=0.5, h=0.25))
    assert crop_rect(box, spec) == (30, 8, 70, 88)
    assert np.array_equal(crop_face(image, box, 32, spec), resize(image[8:88, 30:70], 32))


def test_region_of_a_framed_video_face_splits_where_the_training_crops_were_split():
    # The training faces were crops split at NOSE_ROW of their height; the
    # framed rectangle shows a video face as they showed theirs, so it is split
    # at the same fraction, not at the detector's nose landmark.
    image = np.random.default_rng(5).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    box = Box(40, 30, 20, 20, landmarks=((45, 35), (55, 35), (50, 48), (46, 52), (54, 52)))
    framing = Framing(cx=0.5, cy=0.4, w=0.5, h=0.25)  # the cut is (30, 8, 70, 88)
    row = 8 + round(NOSE_ROW * 80)  # 52, where the landmark says 48
    upper = crop_face(image, box, 32, CropSpec(framing=framing, region="upper"))
    lower = crop_face(image, box, 32, CropSpec(framing=framing, region="lower"))
    assert np.array_equal(upper, resize(image[8:row, 30:70], 32))
    assert np.array_equal(lower, resize(image[row:88, 30:70], 32))


def test_align_without_landmarks_does_nothing():
    image = np.random.default_rng(6).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    box = Box(30, 20, 40, 50)
    assert np.array_equal(crop_face(image, box, 32, CropSpec(align=True)), crop_face(image, box, 32))


def test_region_of_a_pre_cropped_face_splits_at_the_assumed_nose_row():
    image = np.random.default_rng(7).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    row = round(NOSE_ROW * 60)  # 33
    assert np.array_equal(crop_face(image, None, 20, CropSpec(region="upper")), resize(image[:row], 20))
    assert np.array_equal(crop_face(image, None, 20, CropSpec(region="lower")), resize(image[row:], 20))


def test_region_splits_the_cut_at_the_nose_landmark(astronaut, face):
    # At its native size the full cut is the image's pixels, so the upper and
    # lower crops must be its rows above and from the nose tip, resized.
    left, top, right, bottom = crop_rect(face)
    side = right - left
    full = crop_face(astronaut, face, side)
    assert np.array_equal(full, astronaut[top:bottom, left:right])
    row = round(face.landmarks[2][1]) - top
    assert 0.3 * side < row < 0.7 * side  # the nose tip is mid-face
    upper = crop_face(astronaut, face, 64, CropSpec(region="upper"))
    lower = crop_face(astronaut, face, 64, CropSpec(region="lower"))
    assert np.array_equal(upper, resize(full[:row], 64))
    assert np.array_equal(lower, resize(full[row:], 64))
    # Without landmarks the box's NOSE_ROW is used.
    bare = Box(face.x, face.y, face.w, face.h)
    row = round(face.y + NOSE_ROW * face.h) - top
    assert np.array_equal(crop_face(astronaut, bare, 64, CropSpec(region="upper")),
                          resize(full[:row], 64))


def rotate_point(x, y, degrees, centre):
    """Where PIL's ``rotate(degrees, center=centre)`` moves the point (x, y)."""
    a = math.radians(degrees)
    ox, oy = centre
    return (ox + math.cos(a) * (x - ox) + math.sin(a) * (y - oy),
            oy - math.sin(a) * (x - ox) + math.cos(a) * (y - oy))


@pytest.mark.parametrize("degrees", [15, -15])
def test_align_undoes_a_known_rotation(astronaut, face, degrees):
    # Detector-free: turn the image and the box's landmarks by the same known
    # angle; the aligned crop must be the aligned crop of the upright image.
    centre = (256.0, 200.0)  # deliberately not the face centre
    turned = np.asarray(Image.fromarray(astronaut).rotate(degrees, Image.BILINEAR, center=centre))
    cx, cy = rotate_point(*face.centre, degrees, centre)
    box = Box(cx - face.w / 2, cy - face.h / 2, face.w, face.h,
              landmarks=tuple(rotate_point(x, y, degrees, centre) for x, y in face.landmarks))
    assert abs(eye_angle(box) - eye_angle(face)) == pytest.approx(abs(degrees), abs=0.01)
    spec = CropSpec(align=True)
    upright = crop_face(astronaut, face, 64, spec)
    aligned = crop_face(turned, box, 64, spec)
    not_aligned = crop_face(turned, box, 64)
    # Two bilinear resamplings differ by a few grey levels; a 15 degree turn by 20+.
    assert mad(aligned, upright) < 6
    assert mad(not_aligned, upright) > 3 * mad(aligned, upright)


@pytest.mark.parametrize("degrees", [15, -15])
def test_align_levels_the_eyes_of_a_turned_face(astronaut, face, degrees):
    # YuNet's landmarks barely follow a turned head (on this image turned by
    # 15 degrees, its eye line reads -1.3 degrees where MTCNN's reads -12.5),
    # so MTCNN's landmarks drive the alignment and measure its result.
    detector = get_detector("mtcnn")
    turned = np.asarray(Image.fromarray(astronaut).rotate(degrees, Image.BILINEAR, center=face.centre))
    box = largest(detector.detect(turned))
    assert abs(eye_angle(box)) > 10
    aligned = largest(detector.detect(crop_face(turned, box, 192, CropSpec(align=True))))
    plain = largest(detector.detect(crop_face(turned, box, 192)))
    assert abs(eye_angle(aligned)) < 2  # measured 0.2 and 0.4 degrees
    assert abs(eye_angle(plain)) > 10  # measured 11.4 and 19.4


# --- landmarks --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["yunet", "mtcnn"])
def test_five_landmarks_in_the_documented_order(name, astronaut):
    box = get_detector(name).detect(astronaut)[0]
    assert len(box.landmarks) == 5
    assert all(isinstance(v, float) for point in box.landmarks for v in point)
    hash(box)  # still usable as a key
    (ex0, ey0), (ex1, ey1), (nx, ny), (mx0, my0), (mx1, my1) = box.landmarks
    assert ex0 < nx < ex1 and mx0 < nx < mx1  # eyes and mouth corners sorted by x
    assert max(ey0, ey1) < ny < min(my0, my1)  # eyes above the nose above the mouth
    # and all inside the face box
    assert all(box.x < x < box.x + box.w and box.y < y < box.y + box.h for x, y in box.landmarks)


def test_yunet_landmarks_follow_the_box_when_shrunk(astronaut, face):
    big = resize(astronaut, 1024)
    shrunk = get_detector("yunet", max_side=512).detect(big)[0]
    for (x, y), (bx, by) in zip(face.landmarks, shrunk.landmarks):
        assert bx == pytest.approx(2 * x, abs=6) and by == pytest.approx(2 * y, abs=6)


# --- framing: measured on pre-cropped faces, applied to video faces ----------------

#: Two training framings: a square cut (longer side x 1.6) and a rectangle
#: (x 1.8 each way) squashed to a square, as FER-style datasets store faces.
TRAINING_SPECS = [CropSpec(margin=1.6), CropSpec(margin=1.8, square=False)]


def expected_framing(face: Box, spec: CropSpec) -> tuple[float, float]:
    """The box's (w, h) relative to a cut made with ``spec``."""
    side_w = max(face.w, face.h) if spec.square else face.w
    side_h = max(face.w, face.h) if spec.square else face.h
    return face.w / side_w / spec.margin, face.h / side_h / spec.margin


@pytest.mark.parametrize("spec", TRAINING_SPECS, ids=["square", "rectangle"])
def test_measure_framing_finds_the_cut_back(astronaut, face, spec):
    crop = crop_face(astronaut, face, 160, spec)
    small = [resize(crop, 48), resize(crop, 48)[2:, 1:], resize(crop, 56)]
    w, h = expected_framing(face, spec)
    detector = get_detector("yunet")
    # Measured: the square cut comes back within 0.02; the squashed rectangle
    # within 0.03 in width and 0.09 in height at 160 px (YuNet draws its box of
    # a squashed face taller than the squashed box), 0.03 at 48 px.
    tolerance = {True: 0.03, False: 0.1}[spec.square]
    for images in ([crop], small):
        framing = measure_framing(images, detector)
        assert (framing.n_measured, framing.n_found) == (len(images), len(images))
        assert framing.cx == pytest.approx(0.5, abs=0.03)
        assert framing.cy == pytest.approx(0.5, abs=0.03)
        assert framing.w == pytest.approx(w, abs=tolerance)
        assert framing.h == pytest.approx(h, abs=tolerance)


def test_measure_framing_without_faces_is_none():
    blank = [np.zeros((48, 48, 3), np.uint8), np.full((48, 48), 255, np.uint8)]
    assert measure_framing(blank, get_detector("yunet")) is None
    assert measure_framing([], get_detector("yunet")) is None


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("spec", TRAINING_SPECS, ids=["square", "rectangle"])
def test_framing_cuts_a_video_face_like_the_training_faces(astronaut, face, spec):
    detector = get_detector("yunet")
    # The training faces: the cut at full resolution, squashed to 64 px.
    left, top, right, bottom = crop_rect(face, spec)
    cut = np.asarray(Image.fromarray(astronaut).crop((left, top, right, bottom)))
    training = resize(cut, 64)
    framing = measure_framing([resize(cut, s) for s in (48, 64, 160)], detector)
    # A "video frame": the unsquashed cut pasted at another scale and place.
    yy, xx = np.mgrid[0:480, 0:640]
    background = np.stack([(xx * 0.3 + 60) % 256, (yy * 0.4 + 80) % 256, np.full_like(xx, 120)], -1)
    for scale, (x, y) in [(0.5, (40, 250)), (0.75, (300, 120)), (1.3, (100, 60))]:
        pasted = Image.fromarray(cut).resize(
            (round(cut.shape[1] * scale), round(cut.shape[0] * scale)), Image.BILINEAR)
        frame = Image.fromarray(background.astype(np.uint8))
        frame.paste(pasted, (x, y))
        frame = np.asarray(frame)
        box = largest(detector.detect(frame))
        framed = crop_face(frame, box, 64, CropSpec(framing=framing))
        default = crop_face(frame, box, 64)
        truth = (x, y, x + pasted.width, y + pasted.height)
        # Measured IoU 0.88-0.97 with the pasted rectangle; mean absolute
        # difference 8-24 grey levels against the training face (the suit and
        # flag are sharp, so a shift of 2-3 px costs much), 32-44 for the
        # default crop.
        assert box_iou(crop_rect(box, CropSpec(framing=framing)), truth) > 0.85
        assert mad(framed, training) < 28
        assert mad(framed, training) < 0.75 * mad(default, training)


def _reference_cut(image, box, size, spec):
    """crop_face as it was written before it cut the frame before converting it: the
    whole image as PIL, then PIL's crop (pads black) or one affine warp of it."""
    from signfer.faces.crop import _eye_angle, _rotate_box, _split

    pil = Image.fromarray(image).convert("RGB")
    angle, centre = 0.0, box.centre
    if spec.align and box.landmarks:
        (x0, y0), (x1, y1) = box.landmarks[:2]
        angle, centre = _eye_angle(box), ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
        box = _rotate_box(box, angle, centre)
    rect = crop_rect(box, spec)
    if spec.region != "full":
        rect = _split(rect, box.landmarks[2][1] if box.landmarks else box.y + NOSE_ROW * box.h, spec.region)
    if angle == 0.0:
        cut = pil.crop(rect)
    else:
        left, top, right, bottom = rect
        c, s = math.cos(angle), math.sin(angle)
        ox, oy = centre
        data = (c, -s, ox + c * (left - ox) - s * (top - oy), s, c, oy + s * (left - ox) + c * (top - oy))
        cut = pil.transform((right - left, bottom - top), Image.AFFINE, data, resample=Image.BILINEAR,
                            fillcolor=(0, 0, 0))
    return np.asarray(cut.resize((size, size), Image.BILINEAR))


def test_cutting_only_the_pixels_needed_gives_the_same_crop_as_converting_the_whole_image():
    rng = np.random.default_rng(0)
    for i in range(200):
        h, w = (int(v) for v in rng.integers(20, 200, 2))
        image = rng.integers(0, 256, (h, w, 3) if i % 4 else (h, w), dtype=np.uint8)
        landmarks = tuple((float(a), float(b)) for a, b in rng.uniform(-40, 240, (5, 2)))
        box = Box(*(float(v) for v in rng.uniform(-60, 220, 2)), *(float(v) for v in rng.uniform(4, 150, 2)),
                  1.0, landmarks)
        spec = CropSpec(margin=float(rng.uniform(1.0, 2.0)), square=bool(i % 2), align=bool(i % 3),
                        region=("full", "upper", "lower")[i % 3])
        assert np.array_equal(crop_face(image, box, 32, spec), _reference_cut(image, box, 32, spec)), (i, spec)
