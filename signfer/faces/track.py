"""Find a face again near where it was: detection in a small window about the last box.

In sign-language video the signer's face moves little from one frame to the
next, so between full-frame detections it is enough to look for it in a
window about its last box. :func:`detect_near` cuts that window (``window``
times the box's longer side, square, about the box centre, clipped to the
frame), shrinks it to at most ``size`` pixels, runs the detector there and
maps the box back to the frame. The face then fills about half the
detector's input, so the box is as precise as a full-frame detection at a
much larger size, for a fraction of the pixels: on the shared 320x240 clips
the detector cost about 15 ms a frame on the frame and 2-4 ms on a 128 px
window (2 cores).

The face is *lost* (``None``), and the caller should detect on the whole
frame, when the window holds no face or when the face found touches a side
of the window that is not the frame's border: the face is then partly
outside the window and its box would be cut short.

>>> box = detect_near(detector, frame, last_box)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from signfer.faces.base import Detector
from signfer.faces.crop import Box, largest
from signfer.faces.downscale import scale_box, shrink

#: The window's side as a multiple of the last box's longer side. A face
#: moves far less than half its size between frames at 25 fps; a faster move
#: loses the face, and the whole frame is searched instead.
TRACK_WINDOW = 2.0

#: Longer side, in pixels, of the window as the detector sees it (never
#: enlarged). The face is then about half of it: well above YuNet's 16 px minimum.
TRACK_SIZE = 128

#: A box this close (in the detector's pixels) to a side of the window that
#: is not the frame's border counts as cut by the window.
_EDGE_PX = 1.0


def track_window(box: Box, frame_shape: tuple[int, ...], window: float = TRACK_WINDOW
                 ) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) searched for the face last seen at ``box``:
    ``window`` times its longer side, square, about its centre, clipped to the frame.

    >>> track_window(Box(40, 40, 20, 20), (100, 200))
    (30, 30, 70, 70)
    """
    side = window * max(box.w, box.h)
    cx, cy = box.centre
    h, w = frame_shape[:2]
    left, top = max(int(round(cx - side / 2)), 0), max(int(round(cy - side / 2)), 0)
    right, bottom = min(int(round(cx + side / 2)), w), min(int(round(cy + side / 2)), h)
    return left, top, right, bottom


def detect_near(detector: Detector, image: np.ndarray, box: Box, *, size: int = TRACK_SIZE,
                window: float = TRACK_WINDOW) -> Box | None:
    """The largest face in a window about ``box`` (see the module docstring), in
    ``image``'s pixels; ``None`` when the face is lost there.

    Args:
        detector: any :class:`~signfer.faces.base.Detector`.
        image: the frame, H x W x 3 uint8 RGB.
        box: where the face was last seen, in ``image``'s pixels.
        size: longer side of the window as the detector sees it.
        window: the window's side as a multiple of ``box``'s longer side.
    """
    left, top, right, bottom = track_window(box, image.shape, window)
    if right - left < 2 or bottom - top < 2:
        return None
    cut = np.ascontiguousarray(image[top:bottom, left:right])
    small, fx, fy = shrink(cut, size)
    found = largest(list(detector.detect(small)))
    if found is None:
        return None
    sh, sw = small.shape[:2]
    h, w = image.shape[:2]
    cut_short = ((left > 0 and found.x <= _EDGE_PX) or (top > 0 and found.y <= _EDGE_PX)
                 or (right < w and found.x + found.w >= sw - _EDGE_PX)
                 or (bottom < h and found.y + found.h >= sh - _EDGE_PX))
    if cut_short:
        return None
    found = scale_box(found, fx, fy)
    landmarks = (tuple((x + left, y + top) for x, y in found.landmarks)
                 if found.landmarks is not None else None)
    return Box(found.x + left, found.y + top, found.w, found.h, found.score, landmarks)
