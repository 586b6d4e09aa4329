"""The one face-crop function and the crop spec that travels with a model.

Dataset preparation (``--crop-faces``) and video inference both call
:func:`crop_face`, so a model sees at inference exactly the geometry it was
trained on. That geometry is a :class:`CropSpec`, saved beside the model's
weights as JSON (:meth:`CropSpec.to_dict`). A model fine-tuned on pre-cropped
faces (FePh, FER2013, CK+) carries the :class:`Framing` of those faces, so
that video faces are cut the way its training images were.

Example:
    >>> spec = CropSpec.from_dict({"margin": 1.6, "square": False})
    >>> crop_face(np.zeros((100, 80, 3), np.uint8), Box(20, 30, 40, 40), 32, spec).shape
    (32, 32, 3)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image

from signfer.errors import SignferError

#: Zoom about the detector's box centre: the crop side is the box side times
#: this. 1.4 keeps 20 % of the box side on every side (a little forehead and
#: chin, like the paper's MTCNN crops).
DEFAULT_MARGIN = 1.4

#: Where the nose row is assumed, as a fraction of the height, when no nose
#: landmark is known: of a pre-cropped face image (``box=None``) or of the
#: detector's box. On YuNet's and MTCNN's boxes of the astronaut the nose tip
#: lies at 0.53-0.58 of the box height.
NOSE_ROW = 0.55

REGIONS = ("full", "upper", "lower")


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates of the full image, with its detector score.

    ``landmarks`` are five (x, y) points in the same pixels, in this order
    whatever the backend: eye, eye (sorted by x), nose tip, mouth corner,
    mouth corner (sorted by x); ``None`` when the detector gives none.
    """

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2.0, self.y + self.h / 2.0


def ordered_landmarks(points) -> tuple[tuple[float, float], ...]:
    """Five (x, y) points in :class:`Box`'s order: eyes and mouth corners sorted by x.

    >>> ordered_landmarks([(9, 1), (3, 1), (6, 4), (8, 7), (4, 7)])
    ((3.0, 1.0), (9.0, 1.0), (6.0, 4.0), (4.0, 7.0), (8.0, 7.0))
    """
    p = [(float(x), float(y)) for x, y in points]
    if len(p) != 5:
        raise ValueError(f"a face has 5 landmarks, got {len(p)}")
    return (*sorted(p[:2]), p[2], *sorted(p[3:]))


def _check_number(name: str, value, positive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SignferError(f"crop spec: {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise SignferError(f"crop spec: {name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class Framing:
    """Where the detector's face box lies in a pre-cropped training image, in units of that image."""

    cx: float  # box centre x / image width
    cy: float  # box centre y / image height
    w: float  # box width / image width
    h: float  # box height / image height
    n_measured: int = 0
    n_found: int = 0

    def __post_init__(self) -> None:
        for name in ("cx", "cy"):
            _check_number(f"framing.{name}", getattr(self, name), positive=False)
        for name in ("w", "h"):
            _check_number(f"framing.{name}", getattr(self, name))
        for name in ("n_measured", "n_found"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SignferError(f"crop spec: framing.{name} must be an integer >= 0, got {value!r}")


@dataclass(frozen=True)
class CropSpec:
    """How a model's faces are cut; saved with its checkpoint as JSON.

    The default spec cuts what signfer always cut: a square of 1.4 times the
    box's longer side about its centre.

    ``align`` is only as good as the detector's eye landmarks: MTCNN's follow
    a turned head, YuNet's (yuface 2023.5) stay near level (the astronaut
    turned by 15 degrees: YuNet's eye line reads -1.3 degrees, MTCNN's -12.5),
    so with YuNet boxes ``align`` corrects little.
    """

    detector: str | None = None  # the detector whose boxes this spec refers to (None: the default, "yunet")
    margin: float = DEFAULT_MARGIN  # zoom factor about the box centre: crop side = box side * margin
    square: bool = True  # square crop of side max(w, h) * margin; False: w*margin x h*margin, squashed to square
    align: bool = False  # rotate the image about the eyes' midpoint (or box centre) so the eyes are level, before cutting
    region: str = "full"  # "full", "upper" (rows above the nose landmark) or "lower" (rows from the nose landmark down)
    framing: Framing | None = None  # set for models trained on pre-cropped faces: cut video faces with this framing instead of margin/square

    def __post_init__(self) -> None:
        if self.detector is not None and not isinstance(self.detector, str):
            raise SignferError(f"crop spec: detector must be a name or null, got {self.detector!r}")
        _check_number("margin", self.margin)
        for name in ("square", "align"):
            if not isinstance(getattr(self, name), bool):
                raise SignferError(f"crop spec: {name} must be true or false, got {getattr(self, name)!r}")
        if self.region not in REGIONS:
            raise SignferError(
                f"crop spec: region must be one of {', '.join(REGIONS)}, got {self.region!r}"
            )
        if self.framing is not None and not isinstance(self.framing, Framing):
            raise SignferError(f"crop spec: framing must be a Framing or null, got {self.framing!r}")

    def to_dict(self) -> dict:
        """A JSON-able dict; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> CropSpec:
        """Read a spec written by :meth:`to_dict`; ``None`` gives the default spec.

        Raises:
            SignferError: unknown keys (named in the message) or bad values.

        >>> CropSpec.from_dict({"margin": 1.4, "zoom": 2})
        Traceback (most recent call last):
        ...
        signfer.errors.SignferError: crop spec: unknown key(s) zoom; valid keys: detector, margin, square, align, region, framing
        """
        if d is None:
            return cls()
        d = dict(_check_keys("crop spec", d, cls))
        if d.get("framing") is not None:
            d["framing"] = Framing(**_check_keys("crop spec: framing", d["framing"], Framing))
        return cls(**d)


def _check_keys(what: str, d, cls) -> dict:
    if not isinstance(d, dict):
        raise SignferError(f"{what} must be a mapping, got {type(d).__name__}")
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in d if k not in valid]
    if unknown:
        raise SignferError(
            f"{what}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(valid)}"
        )
    return d


def square_region(box: Box, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) that :func:`crop_face` cuts out.

    Its side is ``max(box.w, box.h) * margin``, about the box centre.
    """
    side = max(box.w, box.h) * margin
    cx, cy = box.centre
    left = int(round(cx - side / 2.0))
    top = int(round(cy - side / 2.0))
    s = max(int(round(side)), 1)
    return left, top, left + s, top + s


def crop_rect(box: Box, spec: CropSpec | None = None) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) that :func:`crop_face` cuts about ``box``.

    Before any resizing and, with ``spec.align``, in the coordinates of the
    image rotated to level the eyes (pass the rotated box then).

    >>> crop_rect(Box(40, 30, 20, 20), CropSpec(framing=Framing(0.5, 0.5, 0.5, 0.25)))
    (30, 0, 70, 80)
    """
    spec = spec or CropSpec()
    cx, cy = box.centre
    if spec.framing is not None:
        f = spec.framing
        width, height = box.w / f.w, box.h / f.h
        left, top = cx - f.cx * width, cy - f.cy * height
    elif spec.square:
        return square_region(box, spec.margin)
    else:
        width, height = box.w * spec.margin, box.h * spec.margin
        left, top = cx - width / 2.0, cy - height / 2.0
    left, top = int(round(left)), int(round(top))
    return left, top, left + max(int(round(width)), 1), top + max(int(round(height)), 1)


def _eye_angle(box: Box) -> float:
    """Angle of the eye line in radians, positive when the image-right eye is lower."""
    (x0, y0), (x1, y1) = box.landmarks[:2]
    return math.atan2(y1 - y0, x1 - x0)


def _rotate_box(box: Box, angle: float, centre: tuple[float, float]) -> Box:
    """``box`` in the image rotated by ``angle`` (radians, counter-clockwise as
    seen) about ``centre``: its centre and landmarks move, its size stays."""
    c, s = math.cos(angle), math.sin(angle)
    ox, oy = centre

    def rot(x: float, y: float) -> tuple[float, float]:
        # y points down, so a counter-clockwise turn as seen is this matrix.
        return ox + c * (x - ox) + s * (y - oy), oy - s * (x - ox) + c * (y - oy)

    cx, cy = rot(*box.centre)
    landmarks = tuple(rot(x, y) for x, y in box.landmarks) if box.landmarks else None
    return Box(cx - box.w / 2.0, cy - box.h / 2.0, box.w, box.h, box.score, landmarks)


def _cut(image: np.ndarray, rect: tuple[int, int, int, int], angle: float,
         centre: tuple[float, float]) -> Image.Image:
    """Cut ``rect`` out of ``image`` rotated by ``angle`` about ``centre``.

    Only the pixels the cut can reach are converted to a PIL image (on a
    1280x720 frame, converting the whole frame cost more than detecting on
    its small copy). Then one affine warp straight into the rectangle (PIL's,
    bilinear), rather than rotating the whole frame and cutting: cheaper on a
    video frame, and image content that the rotation would push off the
    frame's canvas is kept. Outside the image the cut is black.
    """
    left, top, right, bottom = rect
    if angle == 0.0:
        return _window(image, left, top, right, bottom)  # pads with black outside the image
    c, s = math.cos(angle), math.sin(angle)
    ox, oy = centre
    # Output pixel (u, v) shows the rotated image at (left + u, top + v),
    # which is the source point found by the inverse rotation.
    data = [c, -s, ox + c * (left - ox) - s * (top - oy),
            s, c, oy + s * (left - ox) + c * (top - oy)]
    # the source points of the rectangle's corners bound all it reads; one
    # pixel more on each side for the bilinear neighbours
    w, h = right - left, bottom - top
    xs = [data[0] * u + data[1] * v + data[2] for u, v in ((0, 0), (w, 0), (0, h), (w, h))]
    ys = [data[3] * u + data[4] * v + data[5] for u, v in ((0, 0), (w, 0), (0, h), (w, h))]
    x0 = max(int(math.floor(min(xs))) - 1, 0)
    y0 = max(int(math.floor(min(ys))) - 1, 0)
    x1 = min(int(math.ceil(max(xs))) + 2, image.shape[1])
    y1 = min(int(math.ceil(max(ys))) + 2, image.shape[0])
    if x1 <= x0 or y1 <= y0:  # wholly outside the image
        return Image.new("RGB", (w, h))
    source = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).convert("RGB")
    data[2] -= x0
    data[5] -= y0
    return source.transform((w, h), Image.AFFINE, tuple(data), resample=Image.BILINEAR,
                            fillcolor=(0, 0, 0))


def _window(image: np.ndarray, left: int, top: int, right: int, bottom: int) -> Image.Image:
    """``image[top:bottom, left:right]`` as an RGB PIL image, black where the
    rectangle leaves the image (as ``PIL.Image.crop`` pads)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
    if x0 <= left and y0 <= top and x1 >= right and y1 >= bottom:
        return Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right])).convert("RGB")
    out = Image.new("RGB", (right - left, bottom - top))
    if x1 > x0 and y1 > y0:
        part = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).convert("RGB")
        out.paste(part, (x0 - left, y0 - top))
    return out


def _split(rect: tuple[int, int, int, int], row: float, region: str) -> tuple[int, int, int, int]:
    """The rows of ``rect`` above (``upper``) or from (``lower``) ``row``;
    each part keeps at least one row."""
    left, top, right, bottom = rect
    if bottom - top < 2:
        return rect
    split = min(max(int(round(row)), top + 1), bottom - 1)
    return (left, top, right, split) if region == "upper" else (left, split, right, bottom)


def crop_face(
    image: np.ndarray, box: Box | None, size: int, spec: CropSpec | None = None
) -> np.ndarray:
    """Cut a face crop as ``spec`` says and resize it to ``size`` x ``size``.

    Args:
        image: H x W x 3 uint8 RGB (or H x W grayscale) array.
        box: the face box; ``None`` means the image already is a face crop,
            which is then only resized (its aspect ratio squashed to a square,
            as FER-style datasets store faces). With ``spec.region`` upper or
            lower, it is first split at its nose row, assumed at
            :data:`NOSE_ROW` of its height.
        size: output side in pixels.
        spec: the crop geometry; ``None`` is ``CropSpec()``, a square of
            1.4 times the box's longer side about its centre. With
            ``spec.framing`` the cut is the rectangle in which the training
            images showed their detector box, squashed to a square as they
            were. With ``spec.align`` and landmarks, the image is first
            rotated about the eyes' midpoint to level them. ``spec.region``
            keeps the rows above or from the nose landmark (after rotation;
            without landmarks, :data:`NOSE_ROW` of the box height; with
            ``spec.framing``, :data:`NOSE_ROW` of the framed rectangle's
            height, as the pre-cropped training faces were split). Parts
            of the cut outside the image are filled with black.

    Returns:
        ``size`` x ``size`` x 3 uint8 RGB array.

    >>> crop_face(np.zeros((100, 80, 3), np.uint8), Box(20, 30, 40, 40), 32).shape
    (32, 32, 3)
    """
    spec = spec or CropSpec()
    image = np.asarray(image)
    if box is None:
        pil = Image.fromarray(image).convert("RGB")
        if spec.region != "full":
            rect = _split((0, 0, pil.width, pil.height), NOSE_ROW * pil.height, spec.region)
            pil = pil.crop(rect)
    else:
        angle, centre = 0.0, box.centre
        if spec.align and box.landmarks:
            (x0, y0), (x1, y1) = box.landmarks[:2]
            angle, centre = _eye_angle(box), ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
            box = _rotate_box(box, angle, centre)
        rect = crop_rect(box, spec)
        if spec.region != "full":
            if spec.framing is not None:
                # the training faces were crops split at NOSE_ROW of their
                # height; this rectangle shows a face as they did
                row = rect[1] + NOSE_ROW * (rect[3] - rect[1])
            else:
                row = box.landmarks[2][1] if box.landmarks else box.y + NOSE_ROW * box.h
            rect = _split(rect, row, spec.region)
        pil = _cut(image, rect, angle, centre)
    return np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def largest(boxes: list[Box]) -> Box | None:
    """The documented several-faces policy: keep the largest face (the signer)."""
    return max(boxes, key=lambda b: b.area) if boxes else None
