"""ELAN files + their videos -> face crops and a training manifest.

Annotators correct (or write from scratch) an expression tier in ELAN; this
module turns each annotation into a few face crops from inside its time span,
so the corrected labels can train or fine-tune a model. Crops come from the
same :func:`~signfer.faces.crop.crop_face` that video inference uses.

The manifest is a CSV with the columns ``path`` (relative to the CSV's
folder, with forward slashes), ``label`` (canonical, see
:func:`signfer.labels.canonical`) and ``group`` (the video's file name stem,
so that frames of one video stay on one side of a split; where two different
videos share a stem, the stem and a short hash of the video's path).

>>> manifest_from_elan(["clip.eaf"], tier="expression", out_csv="data/clip.csv",
...                    detector=detector)  # doctest: +SKIP
PosixPath('data/clip.csv')
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pympi
from PIL import Image

from signfer.errors import SignferError
from signfer.export.tables import write_table
from signfer.faces.base import Detector
from signfer.faces.crop import crop_face, largest
from signfer.io import atomic_path, check_out_files, ensure_out_dir
from signfer.labels import canonical, is_known
from signfer.video import Frame, iter_frames

log = logging.getLogger(__name__)

#: Side of the saved face crops when ``size`` is not given.
DEFAULT_CROP_SIZE = 112


@dataclass(frozen=True)
class _Target:
    time_s: float
    label: str


def read_eaf(path: str | Path) -> pympi.Elan.Eaf:
    """Parse an ``.eaf`` file, or raise a one-line SignferError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SignferError(f"{path}: ELAN file not found")
    try:
        return pympi.Elan.Eaf(str(path), suppress_version_warning=True)
    except Exception as exc:  # pympi raises bare Exception and KeyError for bad files
        raise SignferError(f"{path}: not a readable ELAN file ({exc})") from exc


def _url_to_path(url: str, base: Path) -> Path:
    if url.startswith("file:"):
        text = unquote(urlparse(url).path)
        # file:///C:/x.mp4 parses to /C:/x.mp4 on Windows
        if re.match(r"^/[A-Za-z]:", text):
            text = text[1:]
        return Path(text)
    path = Path(unquote(url))
    return path if path.is_absolute() else base / path


def linked_video(
    eaf: pympi.Elan.Eaf, eaf_path: str | Path, video: str | Path | None = None
) -> Path:
    """The video an ELAN file is linked to.

    Tried in order for each linked medium that is not audio: the path relative
    to the ``.eaf`` (ELAN's ``RELATIVE_MEDIA_URL``), then the absolute one
    (``MEDIA_URL``). With ``video`` a folder, the linked file's name is looked
    up there instead (for ``.eaf`` files moved apart from their videos); with
    ``video`` a file, that file is used.

    Raises:
        SignferError: no linked video exists; the message lists what was tried.
    """
    eaf_path = Path(eaf_path)
    if video is not None and Path(video).is_file():
        return Path(video)
    tried: list[Path] = []
    for media in eaf.media_descriptors:
        if str(media.get("MIME_TYPE") or "").startswith("audio"):
            continue
        for key in ("RELATIVE_MEDIA_URL", "MEDIA_URL"):
            url = media.get(key)
            if not url:
                continue
            path = _url_to_path(url, eaf_path.parent)
            if video is not None:
                path = Path(video) / path.name
            if path.is_file():
                return path
            tried.append(path)
    if video is not None and not Path(video).exists():
        raise SignferError(f"{eaf_path}: video {video} not found")
    where = ", ".join(str(p) for p in dict.fromkeys(tried)) or "no video is linked"
    raise SignferError(f"{eaf_path}: linked video not found (tried: {where}); pass video=")


def _sample_times(start_s: float, end_s: float, n: int) -> list[float]:
    # Centres of n equal parts: never the boundary frames, which often still
    # show the previous expression.
    return [start_s + (end_s - start_s) * (i + 0.5) / n for i in range(n)]


def _video_names(videos: Iterable[Path]) -> dict[Path, str]:
    """A crop folder and group name for each distinct video (keyed by its resolved path).

    The name is the file stem, unless two different videos share it
    (``p1/clip.mp4`` and ``p2/clip.mp4``): then each gets the stem and a short
    hash of its resolved path, so that neither's crops overwrite the other's
    and the two stay separate groups.
    """
    distinct = list(dict.fromkeys(Path(v).resolve() for v in videos))
    stems = Counter(v.stem for v in distinct)
    return {
        v: v.stem if stems[v.stem] == 1
        else f"{v.stem}-{hashlib.sha1(str(v).encode()).hexdigest()[:8]}"
        for v in distinct
    }


def _slug(label: str) -> str:
    return re.sub(r"[^\w-]+", "-", label).strip("-") or "label"


def manifest_from_elan(
    eaf_paths: Iterable[str | Path],
    *,
    tier: str,
    out_csv: str | Path,
    detector: Detector,
    size: int | None = None,
    per_segment: int = 5,
    video: str | Path | None = None,
    allow_new_labels: bool = False,
) -> Path:
    """Cut face crops from the annotated spans of ELAN files and write a manifest.

    For each annotation on ``tier``, ``per_segment`` frame times are spread
    evenly inside its span (centres of equal parts); the frame showing at
    each time is decoded, the largest face detected and cropped with
    :func:`~signfer.faces.crop.crop_face`, and saved as PNG under
    ``<out_csv folder>/<out_csv stem>_faces/<video name>/`` (the video's file
    stem, made unique when two videos share one). Frames without a
    face, empty annotations and times past the video's end are skipped,
    counted and logged. Times that hit the same frame give one crop. Crops
    that an earlier run wrote for these videos into the same folder are
    removed first, so the folder holds this manifest's crops only.

    Args:
        eaf_paths: the ``.eaf`` files.
        tier: the tier holding expression labels.
        out_csv: the manifest to write (atomically), a ``.csv`` file.
        detector: finds faces (``detect(rgb) -> list[Box]``).
        size: side of the saved crops in pixels; default 112.
        per_segment: frames sampled per annotation.
        video: a video file to use instead of the linked one (one ``.eaf``
            only), or a folder in which to look the linked videos up by name.
        allow_new_labels: keep annotation values that are no known class
            name or synonym as classes of their own; by default such a value
            (a typo, or the wrong tier, e.g. ``suggest``) is an error.

    Returns:
        ``out_csv`` as a :class:`~pathlib.Path`.

    Raises:
        SignferError: ``out_csv`` is not named ``.csv``, an ``.eaf`` is
            unreadable, lacks ``tier`` or its video (all checked before any
            video is decoded), or no crop at all could be made.
    """
    eaf_paths = [Path(p) for p in eaf_paths]
    if not eaf_paths:
        raise SignferError("no ELAN files given")
    if video is not None and Path(video).is_file() and len(eaf_paths) > 1:
        raise SignferError(f"video={video} is one file but {len(eaf_paths)} ELAN files were given")
    if per_segment < 1:
        raise SignferError(f"per_segment must be at least 1, got {per_segment}")
    if size is not None and not size >= 16:
        raise SignferError(f"size must be at least 16 pixels, got {size}")
    size = int(size or DEFAULT_CROP_SIZE)
    out_csv = Path(out_csv)
    if out_csv.suffix.lower() != ".csv":
        raise SignferError(f"{out_csv}: a manifest is a CSV file; name it {out_csv.stem}.csv")
    faces_dir = out_csv.parent / f"{out_csv.stem}_faces"
    check_out_files([out_csv], "manifest")  # before any video is decoded
    ensure_out_dir(faces_dir, "face crops folder")
    sources = []
    for eaf_path in eaf_paths:
        eaf = read_eaf(eaf_path)
        tiers = list(eaf.get_tier_names())
        if tier not in tiers:
            raise SignferError(f"{eaf_path}: no tier {tier!r}; tiers: {', '.join(tiers) or 'none'}")
        if not allow_new_labels:
            _check_labels(eaf_path, eaf, tier)
        sources.append((eaf_path, eaf, linked_video(eaf, eaf_path, video)))
    names = _video_names(video_path for _, _, video_path in sources)
    for name in names.values():
        # crops of an earlier run into this folder: a relabelled segment would
        # otherwise leave its frame's crop under the old label beside the new one
        for old in (faces_dir / name).glob(f"{glob.escape(name)}_f[0-9][0-9][0-9][0-9][0-9][0-9]_*.png"):
            old.unlink()
    rows: list[dict] = []
    for eaf_path, eaf, video_path in sources:
        rows += _crops_from_eaf(eaf_path, eaf, tier, video_path, names[video_path.resolve()],
                                detector, size, per_segment, faces_dir, out_csv.parent)
    if not rows:
        raise SignferError(
            f"{out_csv}: no face crops could be made from {len(eaf_paths)} ELAN file(s)"
        )
    manifest = pd.DataFrame(rows, columns=["path", "label", "group"]).drop_duplicates()
    return write_table(manifest, out_csv)


def _check_labels(eaf_path: Path, eaf: pympi.Elan.Eaf, tier: str) -> None:
    """Refuse a tier whose values are not expression labels (before any video is decoded)."""
    values = [str(a[2] or "").strip() for a in eaf.get_annotation_data_for_tier(tier)]
    unknown = list(dict.fromkeys(v for v in values if v and not is_known(v)))
    if unknown:
        shown = ", ".join(repr(v) for v in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise SignferError(
            f"{eaf_path}: tier {tier!r} holds {len(unknown)} value(s) that are no known expression label "
            f"({shown}); is it the tier of corrected labels? --allow-new-labels keeps such values as "
            "classes of their own")


def _crops_from_eaf(
    eaf_path: Path,
    eaf: pympi.Elan.Eaf,
    tier: str,
    video_path: Path,
    name: str,
    detector: Detector,
    size: int,
    per_segment: int,
    faces_dir: Path,
    csv_dir: Path,
) -> list[dict]:
    targets: list[_Target] = []
    empty = 0
    for annotation in eaf.get_annotation_data_for_tier(tier):
        start_ms, end_ms, value = annotation[:3]
        if not str(value or "").strip():
            empty += 1
            continue
        label = canonical(value)
        times = _sample_times(start_ms / 1000, end_ms / 1000, per_segment)
        targets += [_Target(t, label) for t in times]
    targets.sort(key=lambda t: t.time_s)

    rows: list[dict] = []
    no_face = 0

    def crop(frame: Frame, batch: Sequence[_Target]) -> None:
        nonlocal no_face
        labels = list(dict.fromkeys(t.label for t in batch))
        box = largest(list(detector.detect(frame.image)))
        if box is None:
            no_face += len(labels)
            return
        face = Image.fromarray(crop_face(frame.image, box, size))
        for label in labels:
            png = faces_dir / name / f"{name}_f{frame.index:06d}_{_slug(label)}.png"
            with atomic_path(png) as tmp:
                face.save(tmp, format="PNG")
            rows.append({"path": Path(os.path.relpath(png, csv_dir)).as_posix(),
                         "label": label, "group": name})

    # One pass over the video: a time belongs to the last frame shown at or
    # before it, so each frame's targets are known once the next frame arrives.
    k, prev, step = 0, None, 0.0
    with closing(iter_frames(video_path)) as frames:
        for frame in frames:
            batch = []
            while k < len(targets) and targets[k].time_s < frame.timestamp_s:
                batch.append(targets[k])
                k += 1
            if batch:
                crop(prev if prev is not None else frame, batch)
            if k == len(targets):
                break
            if prev is not None:
                step = frame.timestamp_s - prev.timestamp_s
            prev = frame
    beyond = 0
    if k < len(targets) and prev is not None:
        # What is left lies at or after the last frame: it shows until one
        # frame duration later, after which the video has ended.
        last = [t for t in targets[k:] if t.time_s < prev.timestamp_s + max(step, 1e-3)]
        if last:
            crop(prev, last)
        beyond = len(targets) - k - len(last)
    skipped = {"no face": no_face, "empty label": empty, "after the video's end": beyond}
    detail = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    log.info("%s: %d crops from %s%s", eaf_path, len(rows), video_path.name,
             f"; skipped {detail}" if detail else "")
    if no_face or beyond:
        log.warning("%s: skipped %s", eaf_path, detail)
    return rows
