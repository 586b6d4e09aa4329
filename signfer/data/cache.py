"""Decode, crop and resize every image once per input size into a uint8 cache.

All folds and configurations then read the same ``N x S x S x 3`` array, so
training never touches a JPEG again. The cache is a ``.npy`` file keyed by the
image paths, their sizes and modification times, the input size and the crop
mode; it lives in ``$SIGNFER_CACHE`` (default ``~/.cache/signfer``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from signfer.data.table import SampleTable
from signfer.errors import SignferError, first_line
from signfer.faces.crop import CropSpec, crop_face
from signfer.faces.framing import detect_largest
from signfer.io import atomic_path, cache_dir

CACHE_VERSION = "1"


def _key(paths: list[str], size: int, crop_faces: str | None, crop: CropSpec) -> str:
    # Only what changes the crops counts: the framing is for cutting video
    # faces and the detector is ``crop_faces``. The default crop keeps the key
    # it had before crop specs existed, so caches built then are still found.
    crop = replace(crop, framing=None, detector=None)
    spec = "" if crop == CropSpec() else "|" + json.dumps(crop.to_dict(), sort_keys=True)
    # detection enlarges small images first (since the crop spec): another key
    detection = "|enlarged" if crop_faces else ""
    h = hashlib.sha1(f"{CACHE_VERSION}|{size}|{crop_faces}{detection}{spec}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            # ctime and inode too: a copy that restores the old mtime (cp -p,
            # rsync -a, tar x) still changes them
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:20]


#: Image modes that ``convert("RGB")`` turns into 8-bit RGB without loss of meaning.
RGB_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
#: What :data:`RGB_MODES` and :data:`GREY16_MODES` are, for error messages.
READABLE = "8-bit greyscale, palette, RGB or CMYK images, or 16-bit greyscale"
#: 16-bit greyscale modes: ``convert("RGB")`` would clip them at 255 (all white).
GREY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def pil_to_rgb(im: Image.Image) -> np.ndarray | None:
    """``im`` as RGB uint8, scaled by its bit depth; ``None`` for a mode we cannot read."""
    if im.mode in RGB_MODES:
        return np.asarray(im.convert("RGB"))
    sixteen = im.mode in GREY16_MODES or (
        # 16-bit greyscale that older Pillows (and 16-bit TIFFs) open as 32-bit "I"
        im.mode == "I" and (im.format == "PNG" or getattr(im, "tag_v2", {}).get(258) in (16, (16,))))
    if not sixteen:
        return None
    grey = (np.asarray(im).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def read_rgb(path: str, source: str = "") -> np.ndarray:
    """Decode one image file to an RGB uint8 array, or fail naming the file and row.

    8-bit images in the modes of :data:`RGB_MODES` are converted to RGB; 16-bit greyscale
    (e.g. a 16-bit PNG) is scaled to 8 bits by its depth (``>> 8``). Other
    modes (32-bit integer or float pixels, whose range is unknown; LAB and
    HSV, which need a colour profile) are refused. An image over Pillow's decompression-bomb limit is refused beyond
    twice the limit and decoded with a one-line note below that.
    """
    where = f"{source}: " if source and source != path else ""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                mode, size = im.mode, im.size
                rgb = pil_to_rgb(im)
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                print(f"note: {where}{path}: very large image ({size[0]} x {size[1]} pixels, over "
                      f"Pillow's limit of {Image.MAX_IMAGE_PIXELS}); decoded anyway", file=sys.stderr)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except FileNotFoundError:
        raise SignferError(f"{where}image not found: {path}") from None
    except Image.DecompressionBombError as e:
        raise SignferError(f"{where}refused image {path}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise SignferError(f"{where}cannot read image {path}: {_reason(e)}") from None
    if rgb is None:
        raise SignferError(f"{where}cannot read image {path}: pixel mode {mode!r} is not supported "
                           f"({READABLE}; convert it to 8-bit RGB)")
    return rgb


def _read_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array at ``path``, or ``None`` (with a note) when it is damaged
    or not of ``shape`` (a truncated or foreign file), so that it is made again."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        print(f"  the image cache {path} is damaged ({_reason(e)}); reading the images again",
              file=sys.stderr)
        return None
    if array.shape != shape or array.dtype != np.uint8:
        print(f"  the image cache {path} holds {array.dtype} {array.shape}, not uint8 {shape}; "
              "reading the images again", file=sys.stderr)
        return None
    return array


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ELOOP:
        return "symbolic link loop"
    return first_line(e)


def load_images(
    table: SampleTable,
    size: int,
    *,
    crop_faces: str | None = None,
    crop: CropSpec | None = None,
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
        crop: how faces are cut (margin, alignment, region); default: the
            default :class:`~signfer.faces.crop.CropSpec`.
        use_cache: read and write the on-disk cache.
        progress: print progress to stderr.
    """
    paths = table.samples["path"].tolist()
    sources = table.samples["source"].tolist()
    crop = crop or CropSpec()
    path = cache_dir() / f"images-{size}px-{_key(paths, size, crop_faces, crop)}.npy"
    if use_cache and path.exists():
        cached = _read_cached(path, (len(paths), size, size, 3))
        if cached is not None:
            return cached
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
            box = detect_largest(detector, image)
            no_face += box is None
        out[i] = crop_face(image, box, size, crop)
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
