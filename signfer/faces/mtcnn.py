"""MTCNN face detector from ``facenet-pytorch`` (MIT).

Its P/R/O-Net weights ship inside the facenet-pytorch package
(``facenet_pytorch/data``), so nothing is downloaded. MTCNN crops are what the
FePh paper's authors trained on.
"""

from __future__ import annotations

import numpy as np

from signfer.faces import check_rgb_image
from signfer.faces.crop import Box, ordered_landmarks


class MTCNNDetector:
    """MTCNN (Zhang et al. 2016), a three-stage cascade of small CNNs.

    Args:
        min_score: keep faces whose final-stage probability is at least this,
            in [0, 1]. MTCNN's probabilities crowd near 1 for real faces, so
            the default is stricter than YuNet's.
        min_face_size: smallest face side searched for, in pixels; smaller
            values add pyramid levels and time.
        device: torch device for the three networks.

    Example:
        >>> detector = MTCNNDetector(min_score=0.9)  # doctest: +SKIP
        >>> detector.detect(np.zeros((240, 320, 3), np.uint8))  # doctest: +SKIP
        []
    """

    name = "mtcnn"

    def __init__(
        self, min_score: float = 0.9, min_face_size: int = 20, device: str = "cpu"
    ) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be at least 12 pixels, got {min_face_size}")
        # Optional dependency: imported only when this backend is used.
        from facenet_pytorch import MTCNN

        self._mtcnn = MTCNN(
            min_face_size=min_face_size, keep_all=True, select_largest=False, device=device
        ).eval()
        self.min_score = float(min_score)

    def detect(self, image: np.ndarray) -> list[Box]:
        """Find faces in one image.

        Args:
            image: H x W x 3 uint8 RGB array.

        Returns:
            Boxes in pixels of ``image``, best score first, with their five
            landmarks. A face cut by the image border may get a box reaching
            past it (MTCNN extrapolates the whole face);
            :func:`~signfer.faces.crop.crop_face` pads such boxes with black.
        """
        import torch

        image = check_rgb_image(image)
        with torch.inference_mode():
            corners, probs, points = self._mtcnn.detect(image, landmarks=True)
        if corners is None:  # facenet-pytorch's "no face": (None, [None], [None])
            return []
        boxes = [
            Box(x=float(x1), y=float(y1), w=float(x2 - x1), h=float(y2 - y1), score=float(p),
                landmarks=ordered_landmarks(pts))
            for (x1, y1, x2, y2), p, pts in zip(corners, probs, points)
            if p >= self.min_score
        ]
        return sorted(boxes, key=lambda b: b.score, reverse=True)
