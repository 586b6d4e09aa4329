"""Tests for signfer.faces: the detector registry, every backend on real faces,
and the geometry of the one crop function."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signfer.errors import SignferError
from signfer.faces import (
    DEFAULT_DETECTOR,
    DETECTORS,
    Box,
    CropSpec,
    check_rgb_image,
    create_detector,
    crop_face,
    largest,
)
from signfer.faces.crop import square_region

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIP = SHARED / "data" / "videos" / "asl_house.mp4"

#: The astronaut's face in skimage.data.astronaut(), hairline to chin and
#: cheek to cheek, drawn by hand on the image: (x, y, w, h).
ASTRONAUT_FACE = (180, 65, 85, 110)


def iou(box: Box, ref: tuple[float, float, float, float]) -> float:
    """Intersection over union of a Box and an (x, y, w, h) tuple."""
    x, y, w, h = ref
    ix = max(0.0, min(box.x + box.w, x + w) - max(box.x, x))
    iy = max(0.0, min(box.y + box.h, y + h) - max(box.y, y))
    inter = ix * iy
    return inter / (box.area + w * h - inter)


_detectors: dict[str, object] = {}


def get_detector(name: str, **kwargs):
    """Create a detector once per name and options (MTCNN builds three
    networks), or skip when its optional package is not installed."""
    key = f"{name}{sorted(kwargs.items())}"
    if key not in _detectors:
        try:
            _detectors[key] = create_detector(name, **kwargs)
        except SignferError as err:
            pytest.skip(str(err))
    return _detectors[key]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run MTCNN on one thread: on a busy 2-core machine torch's intra-op
    threads wait on each other and a 30 ms frame can take a second."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


@pytest.fixture(scope="module")
def small_astronaut(astronaut) -> np.ndarray:
    """The astronaut at 256 x 256, for tests that only need some face, fast."""
    return np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.BILINEAR))


# --- registry -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_registered_name_creates_or_explains(name):
    try:
        detector = create_detector(name)
    except SignferError as err:
        assert DETECTORS[name].install in str(err)
    else:
        assert detector.name == name
        assert callable(detector.detect)


def test_default_detector_is_registered():
    assert DEFAULT_DETECTOR in DETECTORS


def test_unknown_name_lists_valid_names():
    with pytest.raises(SignferError, match="unknown face detector 'haar'") as info:
        create_detector("haar")
    for name in DETECTORS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "name, module", [("yunet", "yuface"), ("mtcnn", "facenet_pytorch")]
)
def test_missing_package_says_how_to_install(name, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(SignferError, match="install it with: pip install") as info:
        create_detector(name)
    assert DETECTORS[name].install in str(info.value)
    assert module in str(info.value)


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError):
        create_detector("yunet", min_scor=0.5)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_min_score_out_of_range_is_an_error(name):
    with pytest.raises(ValueError, match="min_score"):
        get_detector(name, min_score=1.5)


def test_import_is_cheap():
    code = (
        "import sys, signfer.faces; "
        "print(sorted(m for m in ('torch', 'yuface', 'facenet_pytorch', 'cv2', 'av') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# --- detectors on real and synthetic images -------------------------------------


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    """The first 10 frames of a shared signing clip, RGB uint8."""
    if not CLIP.exists():
        pytest.skip(f"needs the shared clips at {CLIP.parent} (../shared is absent)")
    av = pytest.importorskip("av")
    frames = []
    with av.open(str(CLIP)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 10:
                break
    return frames


@pytest.mark.shared
def test_clip_frames_are_rgb_uint8(clip_frames):
    assert len(clip_frames) == 10
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in clip_frames)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_finds_the_astronauts_face_and_crops_it(name, astronaut):
    boxes = get_detector(name).detect(astronaut)
    assert len(boxes) == 1
    face = boxes[0]
    assert iou(face, ASTRONAUT_FACE) > 0.6
    assert 0.0 <= face.score <= 1.0
    assert all(isinstance(v, float) for v in (face.x, face.y, face.w, face.h, face.score))
    # Its crop must look like a crop of the hand-drawn face region, far more
    # than like a crop of the (similar-sized) background beside her head.
    crop = crop_face(astronaut, largest(boxes), 64).astype(float)
    reference = crop_face(astronaut, Box(*ASTRONAUT_FACE), 64).astype(float)
    background = crop_face(astronaut, Box(400, 10, 85, 110), 64).astype(float)
    assert np.abs(crop - reference).mean() < 0.5 * np.abs(crop - background).mean()


@pytest.mark.parametrize("name", list(DETECTORS))
@pytest.mark.parametrize("kind", ["black", "white", "noise"])
def test_no_face_in_a_faceless_image(name, kind):
    image = {
        "black": np.zeros((120, 160, 3), np.uint8),
        "white": np.full((120, 160, 3), 255, np.uint8),
        "noise": np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8),
    }[kind]
    assert get_detector(name).detect(image) == []


@pytest.mark.parametrize("name", list(DETECTORS))
def test_min_score_filters(name, small_astronaut):
    assert get_detector(name, min_score=0.0).detect(small_astronaut)
    # Both backends score the astronaut just under 1 (YuNet 0.94).
    assert get_detector(name, min_score=1.0).detect(small_astronaut) == []


@pytest.mark.parametrize("name", list(DETECTORS))
@pytest.mark.parametrize(
    "image",
    [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8), np.zeros((64, 64, 3))],
    ids=["gray", "rgba", "float"],
)
def test_rejects_images_outside_the_contract(name, image):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        get_detector(name).detect(image)


def test_check_rgb_image_accepts_rgb_uint8():
    image = np.zeros((4, 5, 3), np.uint8)
    assert check_rgb_image(image) is image


def test_yunet_maps_shrunk_images_back_to_full_pixels(astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.BILINEAR))
    full = get_detector("yunet").detect(astronaut)
    shrunk = get_detector("yunet", max_side=512).detect(big)
    assert len(full) == len(shrunk) == 1
    # Shrinking 1024 -> 512 gives back the original image, so the box must be
    # the original one scaled by 2 (up to resampling differences).
    for a, b in zip(
        (full[0].x, full[0].y, full[0].w, full[0].h),
        (shrunk[0].x, shrunk[0].y, shrunk[0].w, shrunk[0].h),
    ):
        assert b == pytest.approx(2 * a, abs=6)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_face_cut_by_the_top_border_is_found(name, astronaut):
    # Cutting 90 rows removes the forehead (the face starts near y = 65).
    boxes = get_detector(name).detect(astronaut[90:])
    assert len(boxes) == 1
    face = boxes[0]
    assert face.y <= 5  # reaches the border (MTCNN even extends past it)
    assert face.y + face.h + 90 == pytest.approx(175, abs=15)  # and the chin


@pytest.mark.shared
@pytest.mark.parametrize("name", list(DETECTORS))
def test_finds_the_signer_in_a_real_clip(name, clip_frames):
    detector = get_detector(name)
    faces = [largest(detector.detect(f)) for f in clip_frames]
    found = [f for f in faces if f is not None]
    assert len(found) >= 9
    # One signer, facing the camera in the upper middle of the 320 x 240
    # frame; the face is about 50 x 70 pixels and barely moves.
    centres = np.array([(f.x + f.w / 2, f.y + f.h / 2) for f in found])
    assert ((centres[:, 0] > 110) & (centres[:, 0] < 200)).all()
    assert ((centres[:, 1] > 20) & (centres[:, 1] < 110)).all()
    assert all(30 < f.w < 100 for f in found)
    assert np.abs(centres - np.median(centres, axis=0)).max() < 10


# --- the one crop function ------------------------------------------------------


@pytest.mark.parametrize("size", [1, 48, 64, 224])
@pytest.mark.parametrize("box", [None, Box(10, 20, 30, 40), Box(-50, -50, 30, 30)])
def test_crop_shape_and_dtype(size, box):
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    out = crop_face(image, box, size)
    assert out.shape == (size, size, 3)
    assert out.dtype == np.uint8


def test_crop_of_grayscale_is_rgb():
    image = np.arange(100 * 80, dtype=np.uint32).reshape(100, 80).astype(np.uint8)
    out = crop_face(image, Box(20, 20, 40, 40), 32)
    assert out.shape == (32, 32, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])


def test_square_region_is_centred_with_margin():
    # side = max(20, 40) * 1.5 = 60 around the centre (20, 30)
    assert square_region(Box(10, 10, 20, 40), margin=1.5) == (-10, 0, 50, 60)


def test_crop_cuts_exactly_the_box_at_native_size():
    image = np.random.default_rng(1).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    out = crop_face(image, Box(30, 20, 40, 40), 40, CropSpec(margin=1.0))
    assert np.array_equal(out, image[20:60, 30:70])


def test_crop_at_the_border_is_padded_black():
    image = np.full((100, 100, 3), 255, np.uint8)
    out = crop_face(image, Box(-20, -10, 40, 40), 40, CropSpec(margin=1.0))
    assert (out[:10] == 0).all()  # rows above the image
    assert (out[:, :20] == 0).all()  # columns left of the image
    assert (out[10:, 20:] == 255).all()  # the part inside the image


def test_crop_without_box_only_resizes_and_squashes():
    image = np.zeros((50, 100, 3), np.uint8)
    image[:, :50, 0] = 255  # left half red
    image[:, 50:, 2] = 255  # right half blue
    out = crop_face(image, None, 20)
    expected = np.asarray(Image.fromarray(image).resize((20, 20), Image.BILINEAR))
    assert np.array_equal(out, expected)
    assert (out[:, :9, 0] == 255).all() and (out[:, 11:, 2] == 255).all()


def test_crop_accepts_non_contiguous_views():
    image = np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    out = crop_face(image[:, ::-1], Box(0, 0, 40, 40), 40, CropSpec(margin=1.0))
    assert np.array_equal(out, image[:, ::-1])


def test_largest_keeps_the_biggest_face():
    small, big = Box(0, 0, 10, 10, score=0.99), Box(50, 50, 30, 20, score=0.6)
    assert largest([small, big]) is big
    assert largest([]) is None
