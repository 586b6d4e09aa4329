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

The record also holds the SHA-256 of the ``.eaf`` written. An ``.eaf`` about
to be written again that is not that file (corrected in ELAN, or written
before records existed) is never overwritten: :func:`keep_edited_eaf` moves it
aside to ``<stem>.edited-<UTC time>.eaf`` first.

Example:
    >>> record = run_record(Path("clip.mp4"), classifier, detector, {"every": 2})  # doctest: +SKIP
    >>> is_done(Path("clip.mp4"), Path("ann"), record, ["ann/clip.eaf"])  # doctest: +SKIP
    False
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from signfer import __version__
from signfer.faces.crop import Box
from signfer.io import file_sha256, read_json, write_json

#: The record's file name after the video's stem.
DONE_SUFFIX = ".done.json"
#: The record's key for the SHA-256 of the ``.eaf`` that signfer wrote.
EAF_HASH = "eaf_sha256"
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
        # ONNX Runtime and PyTorch differ in the last digits: a switch annotates again, always
        "backend": getattr(classifier, "backend", ""),
        "options": {k: options.get(k) for k in RECORDED_OPTIONS},
        "signfer_version": __version__,
    }


def _earlier(video: Path, out_dir: Path) -> dict:
    try:
        earlier = read_json(done_path(video, out_dir))
    except (OSError, ValueError):  # none, or a damaged one
        return {}
    return earlier if isinstance(earlier, dict) else {}


def is_done(video: Path, out_dir: Path, record: dict, outputs: Iterable[str | Path]) -> bool:
    """Whether ``video``'s files in ``out_dir`` are all there and were made as ``record`` says."""
    earlier = _earlier(video, out_dir)
    earlier.pop(EAF_HASH, None)
    return earlier == record and all(Path(p).is_file() for p in outputs)


def mark_done(video: Path, out_dir: Path, record: dict | None) -> None:
    """Write ``video``'s record (atomically), after its files, with the hash of its ``.eaf``;
    nothing without a record (a video that could not be read when the run began)."""
    if record is None:
        return
    eaf = Path(out_dir) / f"{Path(video).stem}.eaf"
    write_json(done_path(video, out_dir), {**record, **({EAF_HASH: file_sha256(eaf)} if eaf.is_file() else {})})


def note_eaf(video: Path, out_dir: Path) -> None:
    """Record, right after writing it, which ``.eaf`` signfer wrote for ``video``
    (a record that marks nothing done yet: :func:`mark_done` completes it)."""
    eaf = Path(out_dir) / f"{Path(video).stem}.eaf"
    write_json(done_path(video, out_dir), {EAF_HASH: file_sha256(eaf)})


def keep_edited_eaf(video: Path, out_dir: Path) -> Path | None:
    """Before ``video``'s ``.eaf`` in ``out_dir`` is written again: move it aside unless it is
    the file signfer last wrote there; return where it went (``None``: nothing to keep).

    The copy kept is ``<stem>.edited-<UTC time>.eaf`` in the same folder, so its
    link to the video still works in ELAN.
    """
    out_dir = Path(out_dir)
    eaf = out_dir / f"{Path(video).stem}.eaf"
    if not eaf.is_file() or _earlier(video, out_dir).get(EAF_HASH) == file_sha256(eaf):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    kept = out_dir / f"{eaf.stem}.edited-{stamp}.eaf"
    n = 1
    while kept.exists():
        n += 1
        kept = out_dir / f"{eaf.stem}.edited-{stamp}-{n}.eaf"
    os.replace(eaf, kept)
    return kept


def forget(video: Path, out_dir: Path) -> None:
    """Before ``video``'s files are written again: keep of its record only the hash of
    the ``.eaf`` there (signfer's own, once :func:`keep_edited_eaf` has run), so
    that a kill in the middle leaves no record that marks half-written files done."""
    path = done_path(video, out_dir)
    eaf_hash = _earlier(video, out_dir).get(EAF_HASH)
    if eaf_hash:
        write_json(path, {EAF_HASH: eaf_hash})
    else:
        path.unlink(missing_ok=True)
