"""Tiny generated datasets for tests: FePh, class folders, manifests.

Plain functions that write a few small images with PIL and return paths, so
any test (or conftest fixture) can call them with ``tmp_path``. Image content
encodes the class (one grey level or colour per class, plus a little
deterministic noise), so a tiny model can learn something in an end-to-end
test.

Example:
    >>> root = make_feph(tmp_path)  # doctest: +SKIP
    >>> load_feph(root).samples.shape  # doctest: +SKIP
    (9, 4)
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

#: PHOENIX-2014 video ids used by the FePh fixture.
VIDEOS = (
    "01April_2010_Thursday_heute_default-0",
    "02August_2010_Monday_heute_default-7",
    "03February_2010_Wednesday_tagesschau_default-1",
    "05May_2011_Thursday_tagesschau_default-3",
)


def frame_id(video: int | str, frame: int, png: bool = True) -> str:
    """A PHOENIX-2014 frame name, e.g. ``<video>.avi_pid0_fn000008-0.png``."""
    name = VIDEOS[video] if isinstance(video, int) else video
    return f"{name}.avi_pid0_fn{frame:06d}-0" + (".png" if png else "")


#: The default FePh rows (``External ID``, ``Facial_label``); the header is
#: line 1, so row ``i`` is line ``i + 2``. Expected outcome in the comments.
FEPH_ROWS: tuple[tuple[str, str], ...] = (
    (frame_id(0, 1), "4"),              # 2  happiness
    (frame_id(0, 2, png=False), "0"),   # 3  neutral (id without .png)
    (frame_id(0, 3), "45"),             # 4  multi: happiness, sadness
    (frame_id(1, 1), ""),               # 5  empty: face not visible
    (frame_id(1, 2), "7"),              # 6  none
    (frame_id(1, 3), "[4]"),            # 7  happiness
    (frame_id(1, 4, png=False), "4, 5"),  # 8  multi: happiness, sadness
    (frame_id(2, 1), "04"),             # 9  multi: neutral, happiness
    (frame_id(2, 2), "'6'"),            # 10 surprise
    (frame_id(2, 3), "44"),             # 11 happiness (duplicate digit)
    (frame_id(2, 4), "1"),              # 12 anger
    (frame_id(3, 1), "5"),              # 13 sadness
    (frame_id(3, 2), " 2 "),            # 14 disgust
    (frame_id(3, 3), "3"),              # 15 fear
    (frame_id(3, 4), "47"),             # 16 multi: happiness, none
    (frame_id(3, 5), "1 3"),            # 17 multi: anger, fear
)


def _level(key: str) -> int:
    return 20 + zlib.crc32(key.encode()) % 216


def write_image(path: str | Path, key: str = "", size: int = 16, mode: str = "RGB") -> Path:
    """Write one tiny image whose mean colour depends on ``key`` (e.g. the class).

    The format follows the suffix (.png, .jpg, .bmp, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    channels = 3 if mode == "RGB" else 1
    base = np.array([_level(key + str(c)) for c in range(channels)], dtype=np.int16)
    pixels = base + rng.integers(-10, 11, size=(size, size, channels), dtype=np.int16)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)
    return path


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """Write a CSV (quoting values that need it) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def feph_rows(n_videos: int = 4, frames: int = 6, labels: str = "0123456") -> list[tuple[str, str]]:
    """Clean single-label FePh rows: every video cycles through ``labels``.

    Useful for split and end-to-end tests that need several groups per class.
    """
    rows = []
    for v in range(n_videos):
        video = f"{v + 1:02d}May_2011_Monday_heute_default-{v}"
        for f in range(frames):
            rows.append((frame_id(video, f + 1), labels[(v + f) % len(labels)]))
    return rows


def make_feph(
    root: str | Path,
    rows: Sequence[tuple[str, str]] = FEPH_ROWS,
    *,
    header: Sequence[str] = ("External ID", "Facial_label"),
    missing: Iterable[str] = (),
    size: int = 16,
) -> Path:
    """Write ``FePh_labels.csv`` and ``FePh_images/`` under ``root``; return ``root``.

    Args:
        root: the dataset folder to create.
        rows: ``(External ID, Facial_label)`` pairs; an image is written for
            each id (``.png`` appended when missing) unless the id is in
            ``missing`` or would land outside ``FePh_images/``.
        header: the CSV header, to test missing columns.
        missing: ids whose image is not written.
        size: image side in pixels.
    """
    root = Path(root)
    images = root / "FePh_images"
    images.mkdir(parents=True, exist_ok=True)
    skip = set(missing)
    for ident, label in rows:
        if ident in skip or ident.startswith("/") or ".." in ident:
            continue
        name = ident if ident.lower().endswith(".png") else ident + ".png"
        write_image(images / name, key=label.strip("[]'\" ")[:1], size=size)
    write_csv(root / "FePh_labels.csv", header, rows)
    return root


def make_folder_dataset(
    root: str | Path,
    classes: Sequence[str] = ("angry", "happy", "neutral"),
    per_class: int = 2,
    *,
    splits: Sequence[str] | None = None,
    ext: str = ".jpg",
    size: int = 16,
    mode: str = "L",
) -> Path:
    """Write ``root/[<split>/]<class>/<n>.jpg`` images (FER2013 layout); return ``root``.

    Args:
        root: the dataset folder to create.
        classes: class folder names, written as given (synonyms welcome).
        per_class: images per class (and per split).
        splits: split folder names, e.g. ``("train", "validation")``; ``None``
            for a flat layout.
        ext: image suffix, which sets the format.
        size: image side in pixels.
        mode: ``"L"`` (grayscale, as FER2013) or ``"RGB"``.
    """
    root = Path(root)
    for split in splits or (None,):
        base = root / split if split else root
        for cls in classes:
            for i in range(per_class):
                prefix = f"{split}_" if split else ""
                write_image(base / cls / f"{prefix}{i:04d}{ext}", key=cls, size=size, mode=mode)
    return root


def make_manifest(
    root: str | Path,
    rows: Sequence[Sequence[str]],
    *,
    header: Sequence[str] = ("path", "label", "group"),
    name: str = "manifest.csv",
    missing: Iterable[str] = (),
    size: int = 16,
) -> Path:
    """Write a manifest CSV under ``root`` and the images it names; return the CSV path.

    Args:
        root: the folder for the CSV; relative image paths are written under it.
        rows: CSV rows in the order of ``header``; the first field is the path.
        header: the CSV header.
        name: the CSV file name.
        missing: paths whose image is not written.
        size: image side in pixels.
    """
    root = Path(root)
    skip = set(missing)
    for row in rows:
        path = row[0]
        if path and path not in skip and ".." not in path:
            target = Path(path) if Path(path).is_absolute() else root / path
            write_image(target, key=row[1] if len(row) > 1 else "", size=size)
    return write_csv(root / name, header, rows)


def write_video(path: str | Path, images: Iterable[np.ndarray], fps: int, *, rotation: int = 0,
                faststart: bool = False, gop: int | None = None, bframes: int = 0) -> Path:
    """Encode RGB uint8 frames (all the same size) as an MPEG-4 ``.mp4``; return ``path``.

    Args:
        rotation: display-rotation metadata in degrees (0: none).
        faststart: put the index at the front of the file.
        gop: a keyframe every this many frames (default: the encoder's).
        bframes: B-frames between references, so that decoding order
            differs from presentation order.
    """
    import av  # only the video tests need it

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        if gop:
            stream.codec_context.gop_size = gop
        if bframes:
            stream.codec_context.max_b_frames = bframes
        if rotation:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(images):
            if i == 0:
                stream.height, stream.width = image.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Path(path)
