"""Library entry points behind ``signfer evaluate``, ``predict``, ``annotate`` and ``suggest``.

Each takes plain arguments and returns a result (a dict, a table, a list of
results and error lines); printing, messages and exit codes are the CLI's.
Arguments are checked before any model or video is loaded, so a typo costs
nothing.

Example:
    >>> res = annotate(["clip.mp4"], "ann/", smooth=5)  # doctest: +SKIP
    >>> [r.summary() for r in res.results], res.errors  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from signfer.data.cache import load_images, read_rgb
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.faces.crop import CropSpec, largest
from signfer.inference.classifier import FusedClassifier, load_classifier, stack_crops
from signfer.inference.schema import PROB_PREFIX
from signfer.io import check_out_files, ensure_out_dir
from signfer.labels import require_overlap, shared_columns
from signfer.metrics import compute_metrics
from signfer.models.checkpoint import builtin_models

log = logging.getLogger(__name__)

#: What ``face_source`` holds: the face was found, or the whole image was classified.
DETECTED, WHOLE_IMAGE = "detected", "whole image"


def default_model() -> str:
    """The built-in model used when none is named: MobileNetV2's when it ships."""
    models = builtin_models()
    if not models:
        raise SignferError("no built-in model is installed; pass --model CHECKPOINT")
    return "mobilenetv2-fer" if "mobilenetv2-fer" in models else next(iter(models))


def make_detector(detector=None, classifier=None):
    """A detector from a registered name, or ``detector`` itself when it already is one (has ``detect``).

    ``None`` is the detector that ``classifier``'s training faces were cut or
    framed with (its crop spec's; a model's margin and framing describe that
    detector's boxes), or the default one when it records none; ``"default"``
    is the default one.
    """
    if hasattr(detector, "detect"):
        return detector
    from signfer.faces import DEFAULT_DETECTOR, create_detector

    if detector is None:
        detector = model_detector(classifier) if classifier is not None else None
    return create_detector(DEFAULT_DETECTOR if detector in (None, "default") else detector)


def model_detector(classifier) -> str | None:
    """The detector recorded in a classifier's crop spec (of a fused one, its
    first member's, with a warning when the members recorded different ones)."""
    members = getattr(classifier, "members", [classifier])
    names = [getattr(getattr(getattr(m, "spec", None), "crop", None), "detector", None) for m in members]
    if len(set(names)) > 1:
        log.warning("the fused models' faces were cut by different detectors (%s); using %s",
                    ", ".join(map(str, names)), names[0])
    return names[0]


def make_classifier(model=None, backend: str = "auto"):
    """A classifier from a built-in name or checkpoint path (``None``: :func:`default_model`),
    or ``model`` itself when it already is one (has ``predict_proba``). A list of
    several models gives their :class:`~signfer.inference.classifier.FusedClassifier`."""
    if hasattr(model, "predict_proba"):
        return model
    if isinstance(model, (list, tuple)):
        if len(model) > 1:
            return FusedClassifier([make_classifier(m, backend) for m in model])
        model = model[0] if model else None
    return load_classifier(model or default_model(), backend)


def evaluate_model(table: SampleTable, model: str, *, crop_faces: str | None = None,
                   crop: CropSpec | None = None, backend: str = "auto", halves: bool = False,
                   keep_predictions: bool = False, executor=None) -> dict:
    """Metrics of ``model`` as it is on every sample of ``table``, labels matched by name.

    Faces are cut with ``crop`` (default: the crop the model was trained
    with, from its checkpoint). Dataset classes that the model does not know
    can never be predicted (they count as errors); model classes that the
    dataset lacks are dropped. With ``halves``, ``m["halves"]`` also holds the
    metrics of the selection half and of the report half
    (:mod:`signfer.data.halves`); with ``keep_predictions``, ``m["predicted"]``
    the predicted class index (into ``table.classes``) of every sample.
    With a Ray ``executor`` the faces are cut here and classified in chunks,
    one task each (the model and the faces go to the object store once).
    """
    clf = load_classifier(model, backend)
    classes = list(table.classes)
    require_overlap(clf.labels, classes)
    images = load_images(table, clf.input_size, crop_faces=crop_faces, crop=crop or clf.spec.crop)
    start = time.perf_counter()
    if executor is None or executor.name == "local":
        probs = clf.predict_proba(images)
    else:
        step = max(1, -(-len(images) // EVALUATE_CHUNKS))
        chunks = [(i, min(i + step, len(images))) for i in range(0, len(images), step)]
        parts = dict((i, p) for i, p, _ in executor.run(_predict_slice, chunks,
                                                         shared={"classifier": clf, "images": images}))
        probs = np.concatenate([parts[i] for i in range(len(chunks))])
    seconds = time.perf_counter() - start
    keep, columns = shared_columns(clf.labels, classes)
    pred = np.asarray(columns)[probs[:, keep].argmax(1)]
    m = compute_metrics(table.y(), pred, classes)
    m["faces_per_s"] = len(images) / seconds if seconds else float("nan")
    m["unmapped"] = [c for j, c in enumerate(classes) if j not in columns]
    m["backend"] = clf.backend if hasattr(clf, "backend") else ""
    if halves:
        from signfer.data import halves as fixed_halves

        which, y = fixed_halves.halves_of(table), table.y()
        m["halves"] = {h: compute_metrics(y[which == h], pred[which == h], classes)
                       for h in fixed_halves.HALVES if (which == h).any()}
    if keep_predictions:
        m["predicted"] = pred
    return m


#: Tasks ``evaluate --ray`` cuts the faces into.
EVALUATE_CHUNKS = 16


def _predict_slice(start: int, stop: int, *, classifier, images: np.ndarray) -> np.ndarray:
    return classifier.predict_proba(images[start:stop])


def predict_images(paths: list[str], model: str | None = None, *, detector: str | None = None,
                   backend: str = "auto") -> pd.DataFrame:
    """One row per image: ``image``, ``face``, ``face_source``, ``prob_<class>`` per
    label, ``label``, ``confidence``.

    Without ``detector`` each image must be a face crop (it is only resized,
    through the model's crop spec; ``face_source`` ``"whole image"``). With
    one, the largest detected face is cut the way the model's training faces
    were framed (``classifier.crop``; ``"detected"``); an image with no face
    gets ``face`` False, an empty ``face_source`` and label, and NaN
    probabilities. :class:`signfer.Recognizer` instead falls back to the
    whole image.
    """
    clf = make_classifier(model, backend)
    det = make_detector(detector) if detector else None
    faces, crops = [], []
    for p in paths:
        image = read_rgb(p)
        box = largest(det.detect(image)) if det is not None else None
        faces.append(det is None or box is not None)
        if not faces[-1]:
            continue
        if det is None and max(image.shape[:2]) > 4 * clf.input_size and min(image.shape[:2]) > 2 * clf.input_size:
            print(f"note: {p} is {image.shape[1]}x{image.shape[0]}: if it is not a face crop, "
                  f"pass --detector to find the face", file=sys.stderr)
        crops.append(clf.crop(image, box))
    found = np.asarray(faces, bool)
    probs = np.full((len(paths), len(clf.labels)), np.nan)
    if crops:
        probs[found] = clf.predict_proba(stack_crops(crops))
    source = [WHOLE_IMAGE if det is None else DETECTED if f else "" for f in found]
    return _prediction_table({"image": list(paths), "face": found, "face_source": source}, probs, clf.labels)


def _prediction_table(columns: dict, probs: np.ndarray, labels) -> pd.DataFrame:
    """``columns`` + ``prob_<class>`` per label + ``label`` and ``confidence`` ("" and NaN for NaN rows)."""
    df = pd.DataFrame(columns)
    for j, c in enumerate(labels):
        df[f"{PROB_PREFIX}{c}"] = probs[:, j]
    ok = ~np.isnan(probs).any(axis=1)
    filled = np.where(ok[:, None], probs, -np.inf)
    df["label"] = [labels[k] if o else "" for k, o in zip(filled.argmax(1), ok)]
    df["confidence"] = np.where(ok, filled.max(1), np.nan)
    return df


def check_video_options(*, every: int | None = None, fps: float | None = None, detect_every: int | None = None,
                        smooth: int = 1, min_duration: float = 0.0, detect_size: int | None = None,
                        track: str = "window") -> None:
    """Refuse bad video options with a one-line :class:`SignferError` naming the option."""
    from signfer.inference.annotate import TRACKS

    if track not in TRACKS:
        raise SignferError(f"--track must be one of {', '.join(TRACKS)}, got {track!r}")
    if detect_size is not None and (int(detect_size) != detect_size or (detect_size and detect_size < 32)):
        raise SignferError(f"--detect-size must be a whole number of pixels >= 32 (0: the whole frame), "
                           f"got {detect_size}")
    if every is not None and fps is not None:
        raise SignferError(f"give one of --every ({every}) and --fps ({fps:g}), not both")
    if every is not None and (int(every) != every or every < 1):
        raise SignferError(f"--every must be a whole number >= 1, got {every}")
    if fps is not None and not 0 < fps < math.inf:
        raise SignferError(f"--fps must be a finite number > 0 (leave it out for every frame), got {fps}")
    if detect_every is not None and (int(detect_every) != detect_every or detect_every < 1):
        raise SignferError(f"--detect-every must be >= 1, got {detect_every}")
    if int(smooth) != smooth or smooth < 1:
        raise SignferError(f"--smooth must be a whole number >= 1, got {smooth}")
    if not min_duration >= 0:
        raise SignferError(f"--min-duration must be >= 0 seconds, got {min_duration}")


def annotate(videos: Iterable[str | Path], out: str | Path, *, model=None, detector=None,
             backend: str = "auto", every: int | None = None, fps: float | None = None,
             detect_every: int | None = None, smooth: int = 1, min_duration: float = 0.0,
             overlay: bool = False, detect_size: int | None = None, track: str = "window",
             chunk_s: float | None = None, executor=None, redo: bool = False):
    """Annotate each video into ``out`` (see :func:`signfer.inference.annotate.annotate_video`).

    Args:
        videos: the video files.
        out: folder for every video's ``.frames.csv``, ``.eaf``, timeline and overlay.
        model: a built-in name, a checkpoint path, or a loaded classifier
            (default: :func:`default_model`).
        detector: a detector name or object (default: yunet).
        backend: 'auto', 'torch' or 'onnx'.
        every, fps, smooth, min_duration, overlay, track: as for ``annotate_video``.
        detect_every: search every N-th kept frame whole (default
            :data:`~signfer.inference.annotate.DEFAULT_DETECT_EVERY`).
        detect_size: longer side of the copy of each frame the detector sees
            (default :data:`~signfer.inference.annotate.DEFAULT_DETECT_SIZE`; 0: the whole frame).
        executor: where the videos are annotated, e.g. a
            :class:`~signfer.experiments.executors.RayExecutor` (one task per video).
        chunk_s: one task per stretch of about this many seconds of each
            video instead (``annotate_many``); the files are the same.
        redo: annotate again the videos that an earlier run into ``out``
            did with the same model and settings (by default they are
            skipped, see :mod:`signfer.inference.resume`).

    Returns:
        An :class:`~signfer.inference.annotate.AnnotateManyResult`: the videos
        done, one error line per video that could not be read, and the videos
        skipped as done before.

    Raises:
        SignferError: a bad option (before anything is loaded), or the model
            or detector cannot be loaded.
    """
    from signfer.inference.annotate import annotate_many, output_paths

    videos = list(videos)
    check_video_options(every=every, fps=fps, detect_every=detect_every, smooth=smooth,
                        min_duration=min_duration, detect_size=detect_size, track=track)
    if chunk_s is not None and not 0 < chunk_s < math.inf:
        raise SignferError(f"--chunk must be a finite number of seconds > 0 (leave it out for one piece), "
                           f"got {chunk_s:g}")
    # outputs before the model and the videos: a folder in the way costs nothing
    ensure_out_dir(out)
    check_out_files([f for v in videos for f in output_paths(v, out, overlay=overlay).values()])
    clf = make_classifier(model, backend)
    return annotate_many(videos, out, clf, make_detector(detector, clf), every=every, fps=fps, smooth=smooth,
                         min_duration=min_duration, overlay=overlay, detect_every=_detect_every(detect_every),
                         detect_size=_detect_size(detect_size), track=track, chunk_s=chunk_s,
                         executor=executor, redo=redo)


def _detect_every(detect_every: int | None) -> int:
    """``--detect-every``: ``None`` is the default."""
    from signfer.inference.annotate import DEFAULT_DETECT_EVERY

    return DEFAULT_DETECT_EVERY if detect_every is None else int(detect_every)


def _detect_size(detect_size: int | None) -> int | None:
    """``--detect-size``: ``None`` is the default size, 0 the whole frame."""
    from signfer.inference.annotate import DEFAULT_DETECT_SIZE

    return DEFAULT_DETECT_SIZE if detect_size is None else (detect_size or None)


@dataclass
class Suggestion:
    """The frames of one video to annotate first.

    Attributes:
        video: the video.
        table: its most uncertain face frames, most uncertain first (the
            per-frame columns plus ``entropy`` and ``margin``).
        csv: that table, written.
        eaf: an ELAN file with one ``suggest`` annotation per frame.
    """

    video: Path
    table: pd.DataFrame
    csv: Path
    eaf: Path


@dataclass
class SuggestResult:
    """Results of :func:`suggest`: the videos done, and one line per video that failed."""

    results: list[Suggestion] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def suggest(videos: Iterable[str | Path], out: str | Path, *, n: int = 50, method: str = "entropy",
            min_gap: float = 0.5, model=None, detector=None, backend: str = "auto", every: int | None = None,
            fps: float | None = None, detect_every: int | None = None, detect_size: int | None = None,
            track: str = "window", executor=None) -> SuggestResult:
    """The ``n`` frames of each video the model is least sure of, as a table and an ELAN tier.

    Writes ``<stem>.suggest.csv`` and ``<stem>.suggest.eaf`` per video into
    ``out``. A video that cannot be read gives an error line; the rest go on.
    As in :func:`~signfer.inference.annotate.annotate_many`, a video with the
    file name stem of an earlier one is refused with an error line.
    Options are as for :func:`annotate` (with a Ray ``executor``, one task
    per video); ``method`` is ``"entropy"`` or ``"margin"`` (see
    :mod:`signfer.inference.uncertainty`). No two suggested frames of a
    video are closer than ``min_gap`` seconds, so neighbouring frames, which
    look alike, do not fill the list; 0 allows them.
    """
    from signfer import progress
    from signfer.experiments.executors import LocalExecutor
    from signfer.inference.annotate import by_stem
    from signfer.inference.uncertainty import METHODS

    videos = [Path(v) for v in videos]
    if int(n) != n or n < 1:
        raise SignferError(f"--n must be a whole number >= 1, got {n}")
    if method not in METHODS:
        raise SignferError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not (math.isfinite(min_gap) and min_gap >= 0):
        raise SignferError(f"--min-gap must be a finite number of seconds >= 0, got {min_gap}")
    check_video_options(every=every, fps=fps, detect_every=detect_every, detect_size=detect_size, track=track)
    out = Path(out)
    ensure_out_dir(out)
    check_out_files([out / f"{v.stem}.suggest{suffix}" for v in videos for suffix in (".csv", ".eaf")])
    clf = make_classifier(model, backend)
    det = make_detector(detector, clf)
    fn = functools.partial(suggest_one, out=out, n=n, method=method, min_gap=min_gap, every=every, fps=fps,
                           detect_every=_detect_every(detect_every), detect_size=_detect_size(detect_size),
                           track=track)
    todo, refused = by_stem(videos)
    outcome: dict[int, Suggestion | str] = dict(refused)
    with progress.bar(total=len(todo), desc="videos", unit="video", leave=False) as shown:
        for k, done, exc in (executor or LocalExecutor()).run(
                fn, [(videos[i],) for i in todo], shared={"classifier": clf, "detector": det},
                catch=(SignferError,)):
            i = todo[k]
            message = " ".join(str(exc).split()) if exc is not None else ""
            outcome[i] = done if exc is None else message if str(videos[i]) in message else f"{videos[i]}: {message}"
            shown.update()
    result = SuggestResult()
    for i in sorted(outcome):
        (result.errors if isinstance(outcome[i], str) else result.results).append(outcome[i])
    return result


def suggest_one(video: Path, *, out: Path, classifier, detector, n: int, method: str, min_gap: float,
                every: int | None,
                fps: float | None, detect_every: int, detect_size: int | None, track: str = "window"
                ) -> Suggestion:
    """One video of :func:`suggest`; a failure to write is the same one-line error as a bad video."""
    from signfer.export.elan import write_suggestions_eaf
    from signfer.export.tables import write_table
    from signfer.inference.annotate import annotate_frames
    from signfer.inference.uncertainty import rank_uncertain
    from signfer.video import frame_count_hint, iter_frames

    try:
        table = annotate_frames(iter_frames(video, every=every, fps=fps), classifier, detector, video=video.name,
                                detect_every=detect_every, detect_size=detect_size, track=track,
                                total=frame_count_hint(video, every=every, fps=fps))
        ranked = rank_uncertain(table, n, method, min_gap_s=min_gap)
        csv = write_table(ranked, out / f"{video.stem}.suggest.csv")
        eaf = write_suggestions_eaf(ranked, video, out / f"{video.stem}.suggest.eaf")
    except OSError as e:  # e.g. the disk filled up: the rest may still fit
        raise SignferError(f"{video}: cannot write its outputs into {out} ({e.filename}: {e.strerror or e})") from None
    return Suggestion(video, ranked, csv, eaf)
