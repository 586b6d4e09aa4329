"""Annotate a video per frame: faces, class probabilities, labels, and the files for ELAN.

The flow is ``video -> frames -> faces -> crops -> classifier -> per-frame
table -> csv / eaf / timeline / overlay``. Frames stream: a frame is dropped as
soon as its face crop is cut, crops are classified in batches, and only the
table rows are kept, so memory does not grow with the video's length beyond
one small row per frame. Every output is computed from the table alone.

Policies:

* No face: the row is kept with ``face=False``, NaN box and probabilities and
  label ``""``; ELAN shows a gap there.
* Several faces: the largest one is classified (:func:`signfer.faces.crop.largest`,
  the signer is nearest the camera); ``n_faces`` records how many there were.
* Full-frame detection on every N-th kept frame only (``detect_every=N``,
  default :data:`DEFAULT_DETECT_EVERY`), the face followed in between
  (``track``): face detection on the whole frame costs several times
  decoding, cropping and classifying together, and a signer filmed at 25 fps
  moves little between frames.

  - ``track="window"`` (the default): between full-frame detections the
    face is looked for again in a small window about its last box
    (:func:`signfer.faces.track.detect_near`), so the box follows the face.
    Where the window loses it, and on every frame while there is no face,
    the whole frame is searched, so a face is found wherever detection on
    every frame finds one.
  - ``track="hold"``: the frames in between reuse the box of the last
    detection (the crop is still cut from each frame's own pixels). A
    detection that finds no face ends the track: the frames after it have
    no face until the next detection, so a box never outlives the face it
    was found on by more than N - 1 frames. Cheapest, and the box lags a
    moving face.

  With ``detect_every=1`` every kept frame is searched whole.
  ``box_source`` says where each row's box came from (``"detected"``: the
  whole frame; ``"tracked"``: the window, or held; ``""`` without a face);
  ``det_score`` is the score of that detection and ``n_faces`` the number of
  faces of the last whole-frame detection.

>>> result = annotate_video("clip.mp4", "out", classifier, detector,
...                         fps=10, smooth=5)  # doctest: +SKIP
>>> result.detection_rate  # doctest: +SKIP
0.97
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from signfer import progress
from signfer.errors import SignferError
from signfer.export.elan import write_eaf
from signfer.export.tables import parquet_available, write_table
from signfer.faces.base import Detector
from signfer.faces.crop import Box, largest
from signfer.faces.downscale import detect_downscaled
from signfer.faces.track import TRACK_SIZE, detect_near
from signfer.inference.schema import PROB_PREFIX, class_names, prob_columns
from signfer.inference.classifier import stack_crops
from signfer.inference.resume import (
    forget,
    is_done,
    keep_edited_eaf,
    mark_done,
    model_fingerprint,
    note_eaf,
    run_record,
)
from signfer.inference.smoothing import smooth_probs
from signfer.io import atomic_path
from signfer.video import Frame, Span, end_s, frame_count_hint, iter_frames, iter_span, probe, split_frames

log = logging.getLogger(__name__)

#: Encoders tried in order for the overlay video: H.264 where FFmpeg has it,
#: else MPEG-4 part 2, which every FFmpeg build can write.
OVERLAY_CODECS = ("libx264", "mpeg4")

#: Longer side, in pixels, of the copy of each frame that the face detector
#: sees (:func:`signfer.faces.downscale.detect_downscaled`); the face is cut
#: from the full-resolution frame. On the shared signing clips the face was
#: found in every frame at every size from 128 to 960 pixels
#: (``benchmarks/annotate_speed.py --detect-sizes``), and at 320 the boxes
#: overlap those found on the whole frame by 0.87-1.0 (mean IoU per clip),
#: centres within 4 % of the face height. Smaller sizes are faster but their
#: boxes wander more (at 224: IoU 0.74 on the 640x360 clip).
DEFAULT_DETECT_SIZE = 320

#: Whole-frame detection on every N-th kept frame by default; the face is
#: tracked in between (``TRACKS``). Measured (``benchmarks/annotate_speed.py
#: --schedules``, RESULTS.md 2026-12-02 18:44): with 10 and window tracking no
#: shared clip lost a face, the boxes overlap those of full-resolution
#: detection on every frame as well as detection on every 320 px copy does
#: (mean IoU 0.93 vs 0.95), and annotation ran at 123 frames/s at 320x240 and
#: 109 at 1280x720 (2 cores); searching every frame, 69 and 50 in the same run.
DEFAULT_DETECT_EVERY = 10

#: How a face is followed between whole-frame detections (module docstring).
TRACKS = ("window", "hold")


class Classifier(Protocol):
    """What video inference needs from a model (:mod:`signfer.inference.classifier` provides it)."""

    labels: tuple[str, ...]
    input_size: int
    name: str

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The face in ``box`` cut as this model's training faces were framed: S x S x 3 uint8."""
        ...

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 RGB crops -> N x C probabilities in ``labels`` order."""
        ...


@dataclass
class AnnotateResult:
    """What :func:`annotate_video` produced for one video.

    Attributes:
        video: the input video.
        table: the per-frame table, smoothed columns included.
        outputs: written files by kind: ``csv``, ``parquet``, ``eaf``,
            ``timeline``, ``overlay`` (only those written).
        seconds: wall time taken, writing the outputs included.
    """

    video: Path
    table: pd.DataFrame
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    #: where an ``.eaf`` that was edited since signfer wrote it was moved, if one was
    kept_eaf: Path | None = None
    #: files of earlier settings that these settings do not write, removed (a stale overlay or parquet)
    removed: list[Path] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return len(self.table)

    @property
    def n_faces(self) -> int:
        return int(self.table["face"].sum())

    @property
    def detection_rate(self) -> float:
        """Fraction of kept frames that have a face (detected or tracked)."""
        return self.n_faces / self.n_frames if self.n_frames else 0.0

    @property
    def frames_per_s(self) -> float:
        """Kept frames per second of wall time, outputs included; NaN before timing."""
        return self.n_frames / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """One line: frames, face rate, time and speed, and the files written.

        >>> result.summary()  # doctest: +SKIP
        'clip.mp4: 250 frames, face in 97%, 4.1 s (61 frames/s) -> clip.frames.csv, ...'
        """
        speed = f" ({self.frames_per_s:.0f} frames/s)" if self.seconds > 0 else ""
        kept = (f"; the {self.kept_eaf.name.split('.edited-')[0]}.eaf there was not the one signfer last wrote "
                f"(edited, or its record is gone), kept as {self.kept_eaf.name}" if self.kept_eaf else "")
        if self.removed:
            kept += f"; removed {', '.join(p.name for p in self.removed)} of earlier settings"
        return (
            f"{self.video.name}: {self.n_frames} frames, face in {self.detection_rate:.0%}, "
            f"{self.seconds:.1f} s{speed} -> {', '.join(p.name for p in self.outputs.values())}{kept}"
        )


@dataclass
class AnnotateManyResult:
    """Results of :func:`annotate_many`: the videos done, one line per video that
    failed, and the videos skipped because an earlier run did them (:mod:`signfer.inference.resume`)."""

    results: list[AnnotateResult]
    errors: list[str]
    skipped: list[Path] = field(default_factory=list)


def annotate_frames(
    frames: Iterable[Frame],
    classifier: Classifier,
    detector: Detector,
    *,
    batch_size: int = 64,
    video: str = "",
    detect_every: int = DEFAULT_DETECT_EVERY,
    detect_size: int | None = DEFAULT_DETECT_SIZE,
    track: str = "window",
    total: int | None = None,
) -> pd.DataFrame:
    """Detect, crop and classify the face in each frame; one table row per frame.

    Args:
        frames: e.g. :func:`~signfer.video.iter_frames`; consumed once.
        classifier: gives ``labels``, ``input_size`` and ``predict_proba``.
        detector: gives ``detect(rgb) -> list[Box]``.
        batch_size: kept frames whose crops go to one ``predict_proba`` call.
        video: value of the ``video`` column.
        detect_every: search the whole of every N-th frame of ``frames``
            and follow the face in between as ``track`` says (see the
            module docstring); 1 searches every frame whole.
        detect_size: the detector sees a copy of each frame whose longer
            side is at most this many pixels (``None`` or 0: the frame
            itself); boxes are in the frame's own pixels and the crop is cut
            from the frame at full resolution.
        track: ``"window"`` or ``"hold"``, how the face is followed between
            whole-frame detections (module docstring).
        total: how many frames to expect, for the progress bar (a terminal
            shows one; see :mod:`signfer.progress`).

    Returns:
        The per-frame table (columns in :mod:`signfer.inference.schema`, plus
        ``box_source``: ``"detected"``, ``"tracked"`` or ``""``).

    Raises:
        ValueError: ``batch_size`` or ``detect_every`` is below 1, or ``track`` is unknown.
        SignferError: the classifier returned probabilities of the wrong shape.

    >>> table = annotate_frames(iter_frames("clip.mp4"), classifier, detector,
    ...                         detect_every=3)  # doctest: +SKIP
    >>> table["box_source"].head(4).tolist()  # doctest: +SKIP
    ['detected', 'tracked', 'tracked', 'detected']
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    if track not in TRACKS:
        raise ValueError(f"track must be one of {', '.join(TRACKS)}, got {track!r}")
    labels = tuple(classifier.labels)
    if not labels:
        raise SignferError("the classifier has no labels")
    columns: dict[str, list] = {k: [] for k in ("frame", "time_s", "face", "x", "y", "w", "h",
                                              "box_source", "det_score", "n_faces")}
    # fused models (FusedClassifier) also give each member's probabilities,
    # kept beside the fused ones in the same blocks
    tags = list(getattr(classifier, "tags", [])) if hasattr(classifier, "predict_all") else []
    width = len(labels) * (1 + len(tags))
    blocks: list[np.ndarray] = []  # probabilities, one block per batch of rows
    crops: list[np.ndarray] = []
    crop_rows: list[int] = []  # row of each pending crop, relative to the block
    block_start = 0

    def flush() -> None:
        nonlocal block_start, crops, crop_rows
        block = np.full((len(columns["frame"]) - block_start, width), np.nan)
        if crops:
            if tags:
                fused, each = classifier.predict_all(stack_crops(crops))
                probs = np.concatenate([fused, *each], axis=1).astype(float)
            else:
                probs = np.asarray(classifier.predict_proba(stack_crops(crops)), dtype=float)
            if probs.shape != (len(crops), width):
                raise SignferError(
                    f"the classifier returned probabilities of shape {probs.shape} for "
                    f"{len(crops)} crops and {len(labels)} labels"
                )
            block[crop_rows] = probs
        blocks.append(block)
        block_start += len(block)
        crops, crop_rows = [], []

    box, n_faces = None, 0  # the track: the last box and the last whole-frame face count
    shown = progress.bar(frames, total=total, desc=video or "frames", unit="frame", leave=False)
    for k, frame in enumerate(shown):
        detected = k % detect_every == 0 or (track == "window" and box is None)
        if not detected and track == "window":
            box = detect_near(detector, frame.image, box, size=TRACK_SIZE)
            detected = box is None  # lost: search the whole frame
        if detected:
            boxes = detect_downscaled(detector, frame.image, detect_size)
            box, n_faces = largest(boxes), len(boxes)
        columns["frame"].append(frame.index)
        columns["time_s"].append(frame.timestamp_s)
        columns["face"].append(box is not None)
        columns["n_faces"].append(n_faces)
        for key in ("x", "y", "w", "h"):
            columns[key].append(getattr(box, key) if box is not None else np.nan)
        columns["box_source"].append("" if box is None else "detected" if detected else "tracked")
        columns["det_score"].append(box.score if box is not None else np.nan)
        if box is not None:
            crop_rows.append(len(columns["frame"]) - 1 - block_start)
            crops.append(classifier.crop(frame.image, box))
        # batches of kept frames, not of crops: a video cut into stretches of
        # a multiple of batch_size frames (annotate_many's chunks) is then
        # classified in exactly the same batches as in one piece
        if (k + 1) % batch_size == 0:
            flush()
    flush()

    probs = np.concatenate(blocks) if blocks else np.empty((0, width))
    table = pd.DataFrame(columns)
    table.insert(0, "video", video)
    table = table.astype({"frame": int, "time_s": float, "face": bool, "box_source": str,
                          "n_faces": int})
    for k, name in enumerate(labels):
        table[f"{PROB_PREFIX}{name}"] = probs[:, k]
    for m, tag in enumerate(tags, start=1):  # each fused member's own probabilities
        for k, name in enumerate(labels):
            table[f"{tag}:{PROB_PREFIX}{name}"] = probs[:, m * len(labels) + k]
    probs = probs[:, :len(labels)]
    table["label"], table["confidence"] = _decide(probs, labels)
    return table


def _decide(probs: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Top label and its probability per row; ``""`` and NaN where the row is NaN."""
    if len(probs) == 0:
        return [], np.zeros(0)
    face = ~np.isnan(probs).any(axis=1)
    filled = np.where(face[:, None], probs, -np.inf)
    names = [labels[k] if ok else "" for k, ok in zip(filled.argmax(axis=1), face)]
    return names, np.where(face, filled.max(axis=1), np.nan)


def add_smoothed(table: pd.DataFrame, window: int) -> pd.DataFrame:
    """Add ``label_smoothed`` and ``confidence_smoothed`` from smoothed probabilities.

    See :func:`~signfer.inference.smoothing.smooth_probs`; ``window=1`` copies
    ``label`` and ``confidence``.
    """
    probs = table[prob_columns(table)].to_numpy(dtype=float)
    names, confidence = _decide(smooth_probs(probs, window), class_names(table))
    return table.assign(label_smoothed=names, confidence_smoothed=confidence)


def write_timeline(table: pd.DataFrame, out_path: str | Path, *, title: str = "") -> Path:
    """Plot each class's probability over time as a PNG heat map, one row per class.

    Colour is the per-frame probability (grey: frames without a face); the
    white line steps to the row of the smoothed label. One image and one
    line, so the plot costs the same for ten frames as for ten thousand
    (about 50 ms; seven line plots cost 250 ms, the largest part of
    annotating a short clip).
    """
    # The object-oriented API with an Agg canvas: no pyplot state, no display needed.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = class_names(table)
    probs = table[prob_columns(table)].to_numpy(dtype=float).T
    t = table["time_s"].to_numpy(dtype=float)
    end = float(t[-1]) + (float(np.median(np.diff(t))) if len(t) > 1 else 1.0) if len(t) else 1.0
    start = float(t[0]) if len(t) else 0.0
    height = 1.2 + 0.3 * len(names)
    fig = Figure(figsize=(10, height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.5 / height, 0.78, 1 - 0.9 / height))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(probs), aspect="auto", interpolation="nearest", cmap=cmap,
                      vmin=0, vmax=1, extent=(start, end, len(names) - 0.5, -0.5))
    if "label_smoothed" in table and len(t):
        row = {name: k for k, name in enumerate(names)}
        chosen = np.array([row.get(label, np.nan) for label in table["label_smoothed"]], dtype=float)
        ax.step(np.append(t, end), np.append(chosen, chosen[-1]), where="post", color="white", lw=1.2)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("time (s); white line: the smoothed label")
    bar = fig.colorbar(image, cax=fig.add_axes((0.92, 0.5 / height, 0.015, 1 - 0.9 / height)),
                       ticks=[0, 0.5, 1])
    bar.set_label("probability")
    if title:
        ax.set_title(title, loc="left", fontsize="medium")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out_path


def write_overlay(
    video_path: str | Path,
    table: pd.DataFrame,
    out_path: str | Path,
    *,
    label_column: str = "label_smoothed",
) -> Path:
    """Re-encode the video with each frame's face box and label drawn on it.

    Every decoded frame is written (so the overlay plays like the original);
    a frame that was not kept by ``every``/``fps`` shows the annotation of the
    last kept frame before it. Width and height are cut to even numbers, as
    yuv420p needs. Timestamps are copied, so variable frame rate survives.
    """
    video_path, out_path = Path(video_path), Path(out_path)
    if label_column not in table:
        label_column = "label"
    confidence_column = "confidence_smoothed" if label_column == "label_smoothed" else "confidence"
    rows = table.sort_values("frame").reset_index(drop=True)
    row_frames = rows["frame"].to_numpy()
    info = probe(video_path)
    width, height = info["width"] // 2 * 2, info["height"] // 2 * 2
    rate = Fraction(info["fps"]).limit_denominator(1001) if info["fps"] == info["fps"] else 25
    font = _font(height)
    with atomic_path(out_path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = _overlay_stream(out, rate, width, height)
            last_pts = -1
            for frame in iter_frames(video_path):
                image = Image.fromarray(frame.image[:height, :width])
                k = np.searchsorted(row_frames, frame.index, side="right") - 1
                if k >= 0 and bool(rows.at[k, "face"]):
                    _draw(image, rows.iloc[k], rows.at[k, label_column],
                          rows.at[k, confidence_column], font)
                video_frame = av.VideoFrame.from_image(image)
                last_pts = max(last_pts + 1, int(round(frame.timestamp_s * 1000)))
                video_frame.pts = last_pts
                video_frame.time_base = Fraction(1, 1000)
                for packet in stream.encode(video_frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    return out_path


def _overlay_stream(out, rate: Fraction, width: int, height: int):
    errors = []
    for codec in OVERLAY_CODECS:
        try:
            stream = out.add_stream(codec, rate=rate)
        except (av.FFmpegError, ValueError) as exc:
            errors.append(f"{codec}: {exc}")
            continue
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Millisecond timestamps keep the source's (possibly variable) timing.
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        return stream
    raise SignferError(f"no video encoder available for the overlay ({'; '.join(errors)})")


def _font(height: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(12, height // 24))
    except TypeError:  # Pillow < 10.1 has one fixed bitmap font
        return ImageFont.load_default()


def _draw(image: Image.Image, row: pd.Series, label: str, confidence: float, font) -> None:
    draw = ImageDraw.Draw(image)
    x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
    line = max(2, image.width // 240)
    draw.rectangle([x, y, x + w, y + h], outline=(0, 255, 0), width=line)
    text = f"{label} {confidence:.2f}" if confidence == confidence else str(label)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    ty = y - (bottom - top) - 2 * line if y - (bottom - top) - 2 * line >= 0 else y + h + line
    draw.rectangle([x, ty, x + (right - left) + 2 * line, ty + (bottom - top) + 2 * line],
                   fill=(0, 0, 0))
    draw.text((x + line - left, ty + line - top), text, fill=(255, 255, 255), font=font)


def output_paths(video: str | Path, out_dir: str | Path, *, overlay: bool = False,
                 write_parquet: bool = True) -> dict[str, Path]:
    """The files :func:`annotate_video` writes for ``video``, by kind.

    >>> output_paths("clip.mp4", "ann")["eaf"]
    PosixPath('ann/clip.eaf')
    """
    stem, out_dir = Path(video).stem, Path(out_dir)
    paths = {"csv": out_dir / f"{stem}.frames.csv"}
    if write_parquet and parquet_available():
        paths["parquet"] = out_dir / f"{stem}.frames.parquet"
    paths["eaf"] = out_dir / f"{stem}.eaf"
    paths["timeline"] = out_dir / f"{stem}.timeline.png"
    if overlay:
        paths["overlay"] = out_dir / f"{stem}.overlay.mp4"
    return paths


def annotate_video(
    path: str | Path,
    out_dir: str | Path,
    classifier: Classifier,
    detector: Detector,
    *,
    every: int | None = None,
    fps: float | None = None,
    smooth: int = 1,
    min_duration: float = 0.0,
    overlay: bool = False,
    write_parquet: bool = True,
    batch_size: int = 64,
    detect_every: int = DEFAULT_DETECT_EVERY,
    detect_size: int | None = DEFAULT_DETECT_SIZE,
    track: str = "window",
) -> AnnotateResult:
    """Annotate one video and write its files into ``out_dir``.

    Writes, each atomically, for a video ``<stem>.mp4``:
    ``<stem>.frames.csv`` (and ``<stem>.frames.parquet`` when pyarrow is
    installed and ``write_parquet``), ``<stem>.eaf`` (segments of
    ``label_smoothed``), ``<stem>.timeline.png`` and, with ``overlay``,
    ``<stem>.overlay.mp4``.

    Args:
        path: the video.
        out_dir: folder for the outputs; created if missing.
        classifier: the model (see :class:`Classifier`).
        detector: the face detector.
        every: keep every N-th frame (see :func:`~signfer.video.iter_frames`).
        fps: keep at most this many frames per second.
        smooth: moving-average window in kept frames for ``label_smoothed``.
        min_duration: shortest ELAN segment in seconds; shorter ones merge
            into a neighbour (see :mod:`signfer.export.elan`).
        overlay: also write a video with boxes and labels drawn.
        write_parquet: also write Parquet when pyarrow is available.
        batch_size: crops per classifier call.
        detect_every: search the whole of every N-th kept frame for the face
            and follow it in between as ``track`` says (see the module
            docstring); 1 searches every kept frame whole.
        detect_size: longer side of the copy of each frame that the detector
            sees (see :func:`annotate_frames`).
        track: ``"window"`` or ``"hold"`` (see the module docstring).

    Returns:
        An :class:`AnnotateResult` with the table, the files and the detection rate.

    Raises:
        ValueError: ``batch_size`` or ``detect_every`` is below 1, or ``track`` is unknown.
        SignferError: the video cannot be read (the message names it).
    """
    started = time.perf_counter()
    path = Path(path)
    frames = iter_frames(path, every=every, fps=fps)
    table = annotate_frames(frames, classifier, detector, batch_size=batch_size, video=path.name,
                            detect_every=detect_every, detect_size=detect_size, track=track,
                            total=frame_count_hint(path, every=every, fps=fps))
    result = write_outputs(path, out_dir, table, model=getattr(classifier, "name", ""), smooth=smooth,
                           min_duration=min_duration, overlay=overlay, write_parquet=write_parquet)
    result.seconds = time.perf_counter() - started
    return result


def write_outputs(path: str | Path, out_dir: str | Path, table: pd.DataFrame, *, model: str = "",
                  smooth: int = 1, min_duration: float = 0.0, overlay: bool = False,
                  write_parquet: bool = True) -> AnnotateResult:
    """Smooth a video's per-frame table and write its files (see :func:`annotate_video`).

    Returns:
        An :class:`AnnotateResult` whose ``seconds`` is 0: the caller times
        the whole.
    """
    path, out_dir = Path(path), Path(out_dir)
    table = add_smoothed(table, smooth)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = keep_edited_eaf(path, out_dir)  # an .eaf corrected in ELAN is never overwritten
    forget(path, out_dir)  # an earlier run's record no longer describes these files (its .eaf hash stays)
    planned = output_paths(path, out_dir, overlay=overlay, write_parquet=write_parquet)
    removed = []
    for kind, old in output_paths(path, out_dir, overlay=True, write_parquet=True).items():
        if kind not in planned and old.is_file():  # e.g. a .parquet or overlay of earlier settings
            old.unlink()
            removed.append(old)
    outputs = {"csv": write_table(table, planned["csv"])}
    if "parquet" in planned:
        outputs["parquet"] = write_table(table, planned["parquet"])
    outputs["eaf"] = write_eaf(table, path, planned["eaf"], min_duration=min_duration,
                               label_column="label_smoothed", model=model, end=end_s(path))
    note_eaf(path, out_dir)  # so that only an .eaf edited from now on is kept aside next time
    result = AnnotateResult(path, table, outputs, kept_eaf=kept, removed=removed)
    outputs["timeline"] = write_timeline(
        table, planned["timeline"],
        title=f"{path.name}: face in {result.detection_rate:.0%} of {len(table)} frames",
    )
    if overlay:
        outputs["overlay"] = write_overlay(path, table, planned["overlay"])
    return result


def annotate_one(path: str | Path, out_dir: str | Path, classifier: Classifier, detector: Detector,
                 **options) -> AnnotateResult:
    """:func:`annotate_video`, with a failure to write its outputs (e.g. a full
    disk) turned into the same one-line :class:`SignferError` as a bad video."""
    try:
        return annotate_video(path, out_dir, classifier, detector, **options)
    except OSError as exc:
        raise SignferError(f"{path}: cannot write its outputs into {out_dir} "
                           f"({exc.filename}: {exc.strerror or exc})") from None


def annotate_span(path: str | Path, span: Span | None, every: int | None, fps: float | None, *,
                  classifier: Classifier, detector: Detector, **options) -> tuple[pd.DataFrame, float]:
    """Annotate one stretch of a video, a task of :func:`annotate_many` with
    ``chunk_s``: that stretch's rows of the per-frame table, and the seconds taken.

    ``span`` comes from :func:`~signfer.video.split_frames` (``None``: the
    whole video, kept frames as ``every`` and ``fps`` say); ``options`` are
    those of :func:`annotate_frames`. Nothing is written.
    """
    started = time.perf_counter()
    path = Path(path)
    frames = iter_frames(path, every=every, fps=fps) if span is None else iter_span(path, span)
    total = len(span) if span is not None else frame_count_hint(path, every=every, fps=fps)
    table = annotate_frames(frames, classifier, detector, video=path.name, total=total, **options)
    return table, time.perf_counter() - started


def by_stem(paths: Sequence[Path]) -> tuple[list[int], dict[int, str]]:
    """Which videos to do: outputs are named by file name stem, so a video
    whose stem an earlier one has would overwrite that one's files.

    Returns:
        ``(todo, refused)``: the positions to do, and an error line for each
        position refused.
    """
    first: dict[str, Path] = {}
    todo, refused = [], {}
    for i, path in enumerate(paths):
        if path.stem in first:
            refused[i] = (f"{path}: skipped, its outputs would overwrite those of {first[path.stem]} "
                          "(same file name stem)")
        else:
            first[path.stem] = path
            todo.append(i)
    return todo, refused


def annotate_many(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    classifier: Classifier,
    detector: Detector,
    *,
    executor=None,
    chunk_s: float | None = None,
    redo: bool = False,
    **options,
) -> AnnotateManyResult:
    """Run :func:`annotate_video` on each video; a bad video does not stop the rest.

    Each video whose reading fails (:class:`~signfer.errors.SignferError`)
    gives one line in ``errors``, also logged at ERROR level. Two videos with
    the same file name stem would overwrite each other's outputs, so the
    later one is refused with an error line. A video that an earlier run
    annotated into ``out_dir`` with the same model and settings (its files
    all there) is skipped, unless ``redo`` (:mod:`signfer.inference.resume`),
    so a killed run goes on where it stopped.

    Args:
        paths: the videos.
        out_dir: folder for all outputs.
        classifier, detector: as for :func:`annotate_video`.
        executor: where the videos are annotated
            (:mod:`signfer.experiments.executors`; default one after another
            in this process). With a Ray executor each video is one task,
            which reads the video and writes its outputs itself (on a cluster
            both must be on storage every node sees); the classifier and the
            detector go to the object store once.
        chunk_s: cut each video into stretches of about this many seconds,
            one task each (:func:`annotate_span`), so that a few long videos
            keep a cluster busy; this process then joins each video's rows
            and writes its files. Every stretch but the last holds a multiple
            of ``detect_every`` and of ``batch_size`` kept frames, so the
            files are the same as from one piece. A video whose frames carry
            no timestamps is done in one piece. A stretch that fails fails
            its video alone.
        **options: passed on to :func:`annotate_video`.

    Returns:
        The results of the videos done and the error lines, in input order.
    """
    paths = [Path(p) for p in paths]
    todo, refused = by_stem(paths)
    outcome: dict[int, AnnotateResult | str] = dict(refused)
    todo, records, skipped = _not_done(paths, todo, Path(out_dir), classifier, detector, options, redo)
    if executor is None:
        from signfer.experiments.executors import LocalExecutor

        executor = LocalExecutor()
    shared = {"classifier": classifier, "detector": detector}
    if chunk_s is None:
        fn = functools.partial(annotate_one, **options)
        jobs = [(paths[i], out_dir) for i in todo]
        with progress.bar(total=len(jobs), desc="videos", unit="video", leave=False) as shown:
            for k, result, exc in executor.run(fn, jobs, shared=shared, catch=(SignferError,)):
                if exc is not None:
                    outcome[todo[k]] = _error_line(paths[todo[k]], exc)
                else:
                    log.info("%s", result.summary())
                    mark_done(paths[todo[k]], out_dir, records[todo[k]])
                    outcome[todo[k]] = result
                shown.update()
    else:
        _annotate_chunked(paths, todo, out_dir, executor, shared, chunk_s, options, outcome, records)
    results: list[AnnotateResult] = []
    errors: list[str] = []
    for i in sorted(outcome):
        if isinstance(outcome[i], str):
            log.debug("%s", outcome[i])  # the caller reports errors (the CLI prints each once)
            errors.append(outcome[i])
        else:
            results.append(outcome[i])
    return AnnotateManyResult(results, errors, skipped)


def _not_done(paths: list[Path], todo: list[int], out_dir: Path, classifier, detector, options: dict,
              redo: bool) -> tuple[list[int], dict[int, dict | None], list[Path]]:
    """The positions still to do, the record each will be marked done with, and the videos skipped."""
    fingerprint = model_fingerprint(classifier)
    left, records, skipped = [], {}, []
    for i in todo:
        try:
            records[i] = run_record(paths[i], classifier, detector, options, fingerprint)
        except OSError:  # not there or unreadable: annotating it says so in its error line
            records[i] = None
        outputs = output_paths(paths[i], out_dir, overlay=options.get("overlay", False),
                               write_parquet=options.get("write_parquet", True)).values()
        if records[i] is not None and not redo and is_done(paths[i], out_dir, records[i], outputs):
            skipped.append(paths[i])
            continue
        left.append(i)  # write_outputs keeps an edited .eaf and drops the old record
    return left, records, skipped


def _error_line(path: Path, exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return message if str(path) in message else f"{path}: {message}"


#: :func:`annotate_frames`'s options, as :func:`annotate_video` takes them.
_FRAME_OPTIONS = ("batch_size", "detect_every", "detect_size", "track")


def _annotate_chunked(paths: list[Path], todo: list[int], out_dir, executor, shared: dict, chunk_s: float,
                      options: dict, outcome: dict, records: dict[int, dict | None]) -> None:
    """:func:`annotate_many` with ``chunk_s``: one task per stretch, the files
    of each video written here as soon as all its stretches are in."""
    options = dict(options)  # the caller's stay as they are
    every, fps = options.pop("every", None), options.pop("fps", None)
    frame_options = {k: options.pop(k) for k in _FRAME_OPTIONS if k in options}
    multiple = math.lcm(int(frame_options.get("detect_every", DEFAULT_DETECT_EVERY)),
                        int(frame_options.get("batch_size", 64)))
    jobs, owner = [], []
    for i in todo:
        try:
            spans = split_frames(paths[i], chunk_s, every=every, fps=fps, multiple=multiple)
        except SignferError as exc:
            outcome[i] = _error_line(paths[i], exc)
            continue
        for span in spans or [None]:
            jobs.append((paths[i], span, every, fps))
            owner.append(i)
    left = Counter(owner)
    parts: dict[int, dict[int, tuple[pd.DataFrame, float]]] = {i: {} for i in left}
    fn = functools.partial(annotate_span, **frame_options)
    model = getattr(shared["classifier"], "name", "")
    with progress.bar(total=len(jobs), desc="chunks", unit="chunk", leave=False) as shown:
        for j, result, exc in executor.run(fn, jobs, shared=shared, catch=(SignferError,)):
            shown.update()
            i = owner[j]
            if i in outcome:
                continue  # an earlier stretch of this video failed
            if exc is not None:
                outcome[i] = _error_line(paths[i], exc)
                parts.pop(i)
                continue
            parts[i][j] = result
            if len(parts[i]) < left[i]:
                continue
            mine = parts.pop(i)
            done = [mine[k] for k in sorted(mine)]  # in the video's order
            started = time.perf_counter()
            try:
                written = write_outputs(paths[i], out_dir, pd.concat([t for t, _ in done], ignore_index=True),
                                        model=model, **options)
            except OSError as exc:
                outcome[i] = (f"{paths[i]}: cannot write its outputs into {out_dir} "
                              f"({exc.filename}: {exc.strerror or exc})")
                continue
            written.seconds = sum(s for _, s in done) + time.perf_counter() - started
            log.info("%s", written.summary())
            mark_done(paths[i], out_dir, records[i])
            outcome[i] = written
