"""Detect on a small copy of a frame, report boxes in the frame's own pixels.

A detector's cost grows with the pixels it looks at, and in sign-language
video the signer's face is a large part of the frame (18-29 % of the frame
height in the shared clips), so a 1280x720 frame holds far more pixels than
finding the face needs. :func:`detect_downscaled` shrinks the frame so that
its longer side is ``max_side`` pixels, detects there and scales the boxes
(and landmarks) back; the face is then cut from the full-resolution frame, so
the crop keeps every pixel the camera recorded.

How small is safe: with signfer's score threshold (0.7) YuNet found the
astronaut's face (scikit-image) in every placement once its box was 16 pixels
high or more, in some at 13-15 and in none below. At ``max_side`` 320 a 16:9
frame becomes 320x180, so a face taller than 9 % of the frame height stays
above 16 pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from signfer.faces.base import Detector
from signfer.faces.crop import Box


def shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """``image`` resized so its longer side is at most ``max_side``, and the factors
    (x, y) that take its pixels back to ``image``'s. Never enlarges."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    return small, w / size[0], h / size[1]


def scale_box(box: Box, fx: float, fy: float) -> Box:
    """``box`` (and its landmarks) with x scaled by ``fx`` and y by ``fy``."""
    landmarks = (tuple((x * fx, y * fy) for x, y in box.landmarks)
                 if box.landmarks is not None else None)
    return Box(x=box.x * fx, y=box.y * fy, w=box.w * fx, h=box.h * fy, score=box.score,
               landmarks=landmarks)


def detect_downscaled(detector: Detector, image: np.ndarray, max_side: int | None) -> list[Box]:
    """``detector.detect`` on a copy of ``image`` at most ``max_side`` pixels long, boxes
    in ``image``'s pixels. ``None`` or 0: on ``image`` itself.

    >>> boxes = detect_downscaled(detector, frame_1280x720, 320)  # doctest: +SKIP
    """
    if not max_side:
        return list(detector.detect(image))
    small, fx, fy = shrink(image, int(max_side))
    boxes = detector.detect(small)
    if small is image:
        return list(boxes)
    return [scale_box(b, fx, fy) for b in boxes]
