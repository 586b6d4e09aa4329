"""Decode, crop and resize every image once per input size into a uint8 cache.

All folds and configurations then read the same ``N x S x S x 3`` array, so
training never touches a JPEG again. The cache is a ``.npy`` file keyed by the
image paths, their sizes and modification times, the input size and the crop
mode; it lives in ``$SIGNFER_CACHE`` (default ``~/.cache/signfer``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.faces.crop import crop_face, largest
from signfer.io import atomic_path

CACHE_VERSION = "1"


def cache_dir() -> Path:
    return Path(os.environ.get("SIGNFER_CACHE", Path.home() / ".cache" / "signfer"))


def _key(paths: list[str], size: int, crop_faces: str | None) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION}|{size}|{crop_faces}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:20]


def read_rgb(path: str, source: str = "") -> np.ndarray:
    """Decode one image file to an RGB uint8 array, or fail naming the file and row."""
    where = f"{source}: " if source and source != path else ""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise SignferError(f"{where}image not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise SignferError(f"{where}cannot read image {path}: {e}") from None


def load_images(
    table: SampleTable,
    size: int,
    *,
    crop_faces: str | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> np.ndarray:
    """The table's images as one ``N x size x size x 3`` uint8 array, in row order.

    Args:
        table: the samples.
        size: side of the square model input.
        crop_faces: ``None`` when the images already are face crops; otherwise the
            name of a face detector (see :mod:`signfer.faces`) that finds the face in
            each image, which :func:`signfer.faces.crop.crop_face` then cuts out. An
            image where no face is found is kept whole and counted.
        use_cache: read and write the on-disk cache.
        progress: print progress to stderr.
    """
    paths = table.samples["path"].tolist()
    sources = table.samples["source"].tolist()
    path = cache_dir() / f"images-{size}px-{_key(paths, size, crop_faces)}.npy"
    if use_cache and path.exists():
        return np.load(path)
    detector = None
    if crop_faces:
        from signfer.faces import create_detector

        detector = create_detector(crop_faces)
    out = np.empty((len(paths), size, size, 3), np.uint8)
    no_face = 0
    for i, (p, src) in enumerate(zip(paths, sources)):
        image = read_rgb(p, src)
        box = None
        if detector is not None:
            box = largest(detector.detect(image))
            no_face += box is None
        out[i] = crop_face(image, box, size)
        if progress and (i + 1) % 2000 == 0:
            print(f"  decoded {i + 1}/{len(paths)} images", file=sys.stderr, flush=True)
    if detector is not None and no_face:
        print(f"  {no_face} of {len(paths)} images had no detected face and were used whole",
              file=sys.stderr)
    if use_cache:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, out)
    return out


def equalize(images: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each image's luminance (technique ``he``).

    The Y channel of YCbCr is equalised with PIL and the colour kept. Each
    image is equalised on its own, so no statistic crosses a split. (PIL leaves
    images under about 16x16 pixels unchanged: too few pixels per level.)
    """
    out = np.empty_like(images)
    for i, im in enumerate(images):
        y, cb, cr = Image.fromarray(im).convert("YCbCr").split()
        out[i] = np.asarray(Image.merge("YCbCr", (ImageOps.equalize(y), cb, cr)).convert("RGB"))
    return out
