"""Face detection: one registry of detector backends, one crop function.

Every backend is created by name through :func:`create_detector`; a backend's
package is imported only when that backend is created, so ``import
signfer.faces`` stays cheap and works without any optional package. How faces
are cut is a :class:`CropSpec`, which travels with a model's checkpoint;
:func:`measure_framing` finds the framing of pre-cropped training faces.

Example:
    >>> from signfer.faces import create_detector, crop_face, largest
    >>> detector = create_detector("yunet", min_score=0.5)  # doctest: +SKIP
    >>> face = crop_face(frame, largest(detector.detect(frame)), 64)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from signfer.errors import SignferError
from signfer.faces.base import Detector
from signfer.faces.crop import Box, CropSpec, Framing, crop_face, largest
from signfer.faces.framing import describe_framing, measure_framing

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "Box",
    "CropSpec",
    "Detector",
    "DetectorSpec",
    "Framing",
    "check_detector_name",
    "check_rgb_image",
    "create_detector",
    "crop_face",
    "describe_framing",
    "largest",
    "measure_framing",
]


@dataclass(frozen=True)
class DetectorSpec:
    """Where a backend lives and what it needs installed.

    Attributes:
        target: ``"module:Class"`` of the backend, imported on first use.
        install: the command that installs the backend's optional package(s),
            quoted in the error when they are missing.
        licence: licence of the backend's code and weights, for the docs.
    """

    target: str
    install: str
    licence: str


#: Registered backends by name. Names are what users type (``--detector``).
#: An OpenCV Haar-cascade backend is deliberately absent: opencv-python 5
#: dropped ``cv2.CascadeClassifier`` and ships no cascade files.
DETECTORS: dict[str, DetectorSpec] = {
    "yunet": DetectorSpec(
        target="signfer.faces.yunet:YuNetDetector",
        install="pip install yuface",
        licence="BSD-3-Clause (libfacedetection, weights compiled in)",
    ),
    "mtcnn": DetectorSpec(
        target="signfer.faces.mtcnn:MTCNNDetector",
        # facenet-pytorch 2.6 pins torch<2.3 and numpy<2, which would
        # downgrade the project's torch; its MTCNN works with newer ones.
        install="pip install --no-deps facenet-pytorch && pip install requests",
        licence="MIT (facenet-pytorch, weights shipped in the package)",
    ),
}

#: The detector used when none is named. On the five shared signing clips
#: (benchmarks/face_detection.py) YuNet and MTCNN both found the signer's face
#: in every frame; YuNet returned no second box (MTCNN: 2 frames with a
#: background object at p=0.99) and ran 1.7-4x faster on one CPU thread
#: (12-82 ms against 35-198 ms a frame), without needing PyTorch. MTCNN stays
#: registered for reproducing the FePh paper, whose crops came from MTCNN.
DEFAULT_DETECTOR = "yunet"


def check_detector_name(name: str) -> DetectorSpec:
    """The spec of detector ``name``, checked before any work (creating one loads its weights).

    Raises:
        SignferError: ``name`` is no detector of :data:`DETECTORS`.
    """
    spec = DETECTORS.get(name)
    if spec is None:
        raise SignferError(
            f"unknown face detector {name!r}; valid names: {', '.join(DETECTORS)}"
        )
    return spec


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> Detector:
    """Create a face detector by its registered name.

    Args:
        name: one of :data:`DETECTORS`.
        **kwargs: options of that backend, such as ``min_score``.

    Returns:
        A :class:`~signfer.faces.base.Detector`.

    Raises:
        SignferError: the name is unknown (the message lists the valid
            names) or the backend's optional package is not installed (the
            message says how to install it).

    Example:
        >>> create_detector("nope")
        Traceback (most recent call last):
        ...
        signfer.errors.SignferError: unknown face detector 'nope'; valid names: yunet, mtcnn
    """
    spec = check_detector_name(name)
    module_name, class_name = spec.target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**kwargs)
    except ImportError as err:
        raise SignferError(
            f"face detector {name!r} needs a package that is not installed ({err}); "
            f"install it with: {spec.install}"
        ) from err


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """Check the detector input contract and return the image as an array.

    Args:
        image: H x W x 3 uint8 RGB array.

    Returns:
        The same image as a numpy array.

    Raises:
        ValueError: the image is not H x W x 3 uint8.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"face detectors take an H x W x 3 uint8 RGB image, got shape "
            f"{image.shape} and dtype {image.dtype}"
        )
    return image
