"""The detector interface. Backends live in their own modules and register here."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from signfer.faces.crop import Box


class Detector(Protocol):
    """Finds faces in one RGB uint8 image (H x W x 3) and returns their boxes."""

    name: str

    def detect(self, image: np.ndarray) -> list[Box]: ...
