"""Which videos an earlier ``annotate`` into the same folder already did, with the same model and settings.

Annotating a corpus takes hours; a killed run should not start again from the
first video. Once a video's files are written, ``<stem>.done.json`` is written
beside them, last and atomically. It records what made them:

* the video (its resolved path, size and modification time),
* the model, by name and by fingerprint (:func:`model_fingerprint`: how it
  cuts and classifies a fixed synthetic face, so that a checkpoint trained
  again under the same name counts as another model),
* the detector's name and every option that changes the files.

A later run skips a video whose record matches and whose files are all
there; anything else (another model, ``--every``, an edited video, a missing
file) is annotated again. Without a record, nothing is skipped.

Example:
    >>> record = run_record(Path("clip.mp4"), classifier, detector, {"every": 2})  # doctest: +SKIP
    >>> is_done(Path("clip.mp4"), Path("ann"), record, ["ann/clip.eaf"])  # doctest: +SKIP
    False
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from signfer import __version__
from signfer.faces.crop import Box
from signfer.io import read_json, write_json

#: The record's file name after the video's stem.
DONE_SUFFIX = ".done.json"
#: The options of :func:`~signfer.inference.annotate.annotate_video` that change its files.
RECORDED_OPTIONS = ("every", "fps", "detect_every", "detect_size", "track", "smooth", "min_duration", "overlay",
                    "batch_size")


def done_path(video: Path, out_dir: Path) -> Path:
    return Path(out_dir) / f"{Path(video).stem}{DONE_SUFFIX}"


def model_fingerprint(classifier) -> str:
    """A SHA-256 of the model's labels, and of its crops and probabilities (rounded
    to 1e-5) for faces in fixed synthetic frames.

    Two models that cut or classify faces differently get different
    fingerprints. It takes the path video faces take (``crop``, then
    ``predict_proba``), so every classifier has one, fused ones included.
    """
    from signfer.inference.classifier import stack_crops

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, 180, 160, 3), dtype=np.uint8)
    # a tilted face with landmarks, so that alignment and face regions show in the crops
    box = Box(40.0, 50.0, 64.0, 72.0, 0.9, ((58.0, 72.0), (86.0, 78.0), (71.0, 92.0), (60.0, 106.0), (82.0, 110.0)))
    crops = stack_crops([classifier.crop(frame, box) for frame in frames])
    probs = np.round(np.asarray(classifier.predict_proba(crops), dtype=np.float64), 5)
    h = hashlib.sha256(repr(tuple(classifier.labels)).encode())
    for a in (*(crops if isinstance(crops, tuple) else (crops,)), probs):
        a = np.ascontiguousarray(a)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def run_record(video: Path, classifier, detector, options: dict, fingerprint: str | None = None) -> dict:
    """What the files of ``video`` are made from, as :data:`DONE_SUFFIX` records it."""
    stat = os.stat(video)
    return {
        "video": str(Path(video).resolve()), "video_bytes": stat.st_size, "video_mtime_ns": stat.st_mtime_ns,
        "model": getattr(classifier, "name", ""),
        "model_fingerprint": fingerprint or model_fingerprint(classifier),
        "detector": getattr(detector, "name", type(detector).__name__),
        "options": {k: options.get(k) for k in RECORDED_OPTIONS},
        "signfer_version": __version__,
    }


def is_done(video: Path, out_dir: Path, record: dict, outputs: Iterable[str | Path]) -> bool:
    """Whether ``video``'s files in ``out_dir`` are all there and were made as ``record`` says."""
    path = done_path(video, out_dir)
    try:
        earlier = read_json(path)
    except (OSError, ValueError):  # none, or a damaged one: annotate again
        return False
    return earlier == record and all(Path(p).is_file() for p in outputs)


def mark_done(video: Path, out_dir: Path, record: dict) -> None:
    """Write ``video``'s record (atomically), after its files."""
    write_json(done_path(video, out_dir), record)


def forget(video: Path, out_dir: Path) -> None:
    """Remove ``video``'s record before its files are written again, so that a kill
    in the middle leaves no record of half-written files."""
    done_path(video, out_dir).unlink(missing_ok=True)
