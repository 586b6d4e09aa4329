"""YuNet face detector through ``yuface`` (libfacedetection, BSD-3-Clause).

The network and its weights are compiled into the ``yuface`` extension, so
nothing is downloaded and PyTorch is not needed.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from signfer.faces import check_rgb_image
from signfer.faces.crop import Box, ordered_landmarks


class YuNetDetector:
    """YuNet, a small CNN face detector that runs in a few ms on a CPU.

    Args:
        min_score: keep faces whose confidence is at least this, in [0, 1].
            0.7 rather than yuface's 0.5: on the shared clips every real face
            scored 0.90-0.93, while blurred moving hands scored 0.50-0.60 and,
            being larger than the face, were what ``largest`` then cropped.
            (OpenCV's YuNet default, 0.9, would sit on the real faces' edge.)
        max_side: images whose longer side exceeds this are shrunk to it
            before detection (boxes are mapped back to full-image pixels):
            libfacedetection warns that larger inputs degrade detection, and
            on a 2000 px image it returns several spurious faces above 0.5.

    Example:
        >>> detector = YuNetDetector()
        >>> detector.detect(np.zeros((240, 320, 3), np.uint8))
        []
    """

    name = "yunet"

    def __init__(self, min_score: float = 0.7, max_side: int = 960) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if max_side < 32:
            raise ValueError(f"max_side must be at least 32 pixels, got {max_side}")
        # libfacedetection's OpenMP threads spin between calls by default, which
        # starves decoding and the classifier on a 2-core machine (30 s vs 1.5 s
        # for a 73-frame clip). Must be set before the library loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import yuface  # optional dependency: imported only when this backend is used

        self._c_detect = yuface.c_detect
        self.min_score = float(min_score)
        self.max_side = int(max_side)

    def __getstate__(self) -> dict:
        # the compiled function cannot be pickled; sent to another process
        # (a Ray task), the detector is made again from its settings
        return {"min_score": self.min_score, "max_side": self.max_side}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def detect(self, image: np.ndarray) -> list[Box]:
        """Find faces in one image.

        Args:
            image: H x W x 3 uint8 RGB array.

        Returns:
            Boxes in pixels of ``image``, best score first, with their five
            landmarks. A face cut by the image border gets a box of its
            visible part.
        """
        image = check_rgb_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        # yuface wants contiguous BGR; each row of the result is
        # [score 0-100, x, y, w, h, 5 landmark (x, y) pairs, unused] as int16.
        rows = self._c_detect(np.ascontiguousarray(image[:, :, ::-1])).tolist()
        boxes = [
            Box(x=r[1] / scale, y=r[2] / scale, w=r[3] / scale, h=r[4] / scale,
                score=r[0] / 100.0,
                landmarks=ordered_landmarks(
                    (r[5 + 2 * i] / scale, r[6 + 2 * i] / scale) for i in range(5)
                ))
            for r in rows
        ]
        boxes = [b for b in boxes if b.score >= self.min_score]
        return sorted(boxes, key=lambda b: b.score, reverse=True)
