"""Measure how pre-cropped training faces are framed.

FePh, FER2013 and CK+ store faces already cut, each with its own margins. A
model fine-tuned on them learns that framing; :func:`measure_framing` finds
where a detector's box lies in those images, so that video faces can be cut
the same way (``crop_face(frame, box, size, CropSpec(framing=...))``).

Example:
    >>> framing = measure_framing(training_faces, create_detector("yunet"))  # doctest: +SKIP
    >>> describe_framing(framing)  # doctest: +SKIP
    'face box centre at (0.50, 0.55) of the image, 0.62 x 0.70 of its size; found in 188 of 200 images'
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from signfer.faces.base import Detector
from signfer.faces.crop import Box, Framing, largest
from signfer.faces.downscale import scale_box


def measure_framing(
    images: Iterable[np.ndarray], detector: Detector | str, *, min_side: int = 160
) -> Framing | None:
    """The median position and size of the detected face box, relative to each image.

    Args:
        images: pre-cropped face images, H x W x 3 uint8 RGB (or H x W
            grayscale), such as 48 px FER2013 faces.
        detector: a detector, or its registered name; use the one that will
            cut the video faces, since detectors draw their boxes differently.
        min_side: images whose shorter side is smaller are first enlarged
            (bilinear, keeping their aspect) to this, since detectors miss
            tiny faces.

    Returns:
        A :class:`~signfer.faces.crop.Framing` of the medians over the images
        in which a face was found (the largest box of each), with
        ``n_measured`` images seen and ``n_found`` with a face; ``None``
        when no face was found in any image (or there were no images).
    """
    if isinstance(detector, str):
        from signfer.faces import (
            create_detector,  # here: signfer.faces imports this module
        )

        detector = create_detector(detector)
    rows, n_measured = [], 0
    for image in images:
        n_measured += 1
        image = np.asarray(image)
        box = detect_largest(detector, image, min_side=min_side)
        if box is not None:
            cx, cy = box.centre
            height, width = image.shape[:2]
            rows.append((cx / width, cy / height, box.w / width, box.h / height))
    if not rows:
        return None
    cx, cy, w, h = (float(v) for v in np.median(np.array(rows), axis=0))
    return Framing(cx=cx, cy=cy, w=w, h=h, n_measured=n_measured, n_found=len(rows))


def describe_framing(framing: Framing | None) -> str:
    """One line for ``signfer data summary``.

    >>> describe_framing(Framing(0.5, 0.55, 0.62, 0.7, n_measured=200, n_found=188))
    'face box centre at (0.50, 0.55) of the image, 0.62 x 0.70 of its size; found in 188 of 200 images'
    >>> describe_framing(None)
    'no face box found in the images'
    """
    if framing is None:
        return "no face box found in the images"
    return (
        f"face box centre at ({framing.cx:.2f}, {framing.cy:.2f}) of the image, "
        f"{framing.w:.2f} x {framing.h:.2f} of its size; "
        f"found in {framing.n_found} of {framing.n_measured} images"
    )


def detect_largest(detector: Detector, image: np.ndarray, *, min_side: int = 160) -> Box | None:
    """The largest face in ``image``, in its own pixels; ``None`` without one.

    An image whose shorter side is below ``min_side`` (a 48 px dataset face) is
    first enlarged (bilinear, aspect kept), since detectors miss tiny faces;
    the box and landmarks are mapped back to the original pixels.
    """
    pil = Image.fromarray(np.asarray(image)).convert("RGB")
    scale = min_side / min(pil.size)
    if scale <= 1.0:
        return largest(detector.detect(np.asarray(pil)))
    big = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BILINEAR)
    box = largest(detector.detect(np.asarray(big)))
    if box is None:
        return None
    return scale_box(box, pil.width / big.width, pil.height / big.height)
