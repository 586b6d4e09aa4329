"""The one face-crop function.

Dataset preparation (``--crop-faces``) and video inference both call
:func:`crop_face`, so a model sees at inference exactly the geometry it was
trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Extra context around the detector's box, as a fraction of the box side.
#: MTCNN-style crops (the paper's) keep a little forehead and chin.
DEFAULT_MARGIN = 0.2


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates of the full image, with its detector score."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)


def square_region(box: Box, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) that :func:`crop_face` cuts out."""
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    left = int(round(cx - side / 2.0))
    top = int(round(cy - side / 2.0))
    s = max(int(round(side)), 1)
    return left, top, left + s, top + s


def crop_face(
    image: np.ndarray, box: Box | None, size: int, margin: float = DEFAULT_MARGIN
) -> np.ndarray:
    """Cut a square face crop around ``box`` and resize it to ``size`` x ``size``.

    Args:
        image: H x W x 3 uint8 RGB (or H x W grayscale) array.
        box: the face box; ``None`` means the image already is a face crop,
            which is then only resized (its aspect ratio squashed to a square,
            as FER-style datasets store faces).
        size: output side in pixels.
        margin: context added on every side, as a fraction of the box side.
            Parts of the square outside the image are filled with black.

    Returns:
        ``size`` x ``size`` x 3 uint8 RGB array.

    >>> crop_face(np.zeros((100, 80, 3), np.uint8), Box(20, 30, 40, 40), 32).shape
    (32, 32, 3)
    """
    pil = Image.fromarray(np.asarray(image)).convert("RGB")
    if box is not None:
        pil = pil.crop(square_region(box, margin))
    return np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def largest(boxes: list[Box]) -> Box | None:
    """The documented several-faces policy: keep the largest face (the signer)."""
    return max(boxes, key=lambda b: b.area) if boxes else None
