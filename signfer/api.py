"""The front door for notebooks and scripts: load data, cross-validate, fine-tune, recognise.

Everything here is also reachable as ``signfer.<name>`` (imported on first
use, so ``import signfer`` stays cheap); the ``signfer`` command is a thin
layer over the same functions.

Example:
    >>> import signfer
    >>> table = signfer.load_dataset("feph", "~/data/FePh")  # doctest: +SKIP
    >>> results = signfer.cross_validate(table, "runs/cv", folds=5)  # doctest: +SKIP
    >>> model = signfer.finetune(table, "models/feph", epochs_from="runs/cv")  # doctest: +SKIP
    >>> signfer.Recognizer(model).predict_video("clip.mp4", smooth=5)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signfer.config import TrainConfig
from signfer.data import load_dataset
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.faces.crop import CropSpec, largest
from signfer.inference.predict import DETECTED, WHOLE_IMAGE
from signfer.training.train import finetune

__all__ = ["CropSpec", "Recognizer", "TrainConfig", "cross_validate", "finetune", "load_dataset"]


def _log(msg: str) -> None:
    from signfer import progress

    progress.echo(msg)


def cross_validate(
    table: SampleTable,
    out: str | os.PathLike,
    *,
    arch: str = "mobilenetv2",
    techniques: str | tuple[str, ...] = "ft,ip,hf",
    init: str | None = None,
    folds: int = 5,
    seed: int = 0,
    input_size: int | None = None,
    train: TrainConfig | dict[str, Any] | None = None,
    crop: CropSpec | None = None,
    crop_faces: str | None = None,
    keep_models: bool = False,
    name: str | None = None,
    dataset: dict | None = None,
    command: str = "",
    redo_damaged: bool = False,
    log: Callable[[str], None] = _log,
    executor=None,
) -> pd.DataFrame:
    """K-fold cross-validation of one configuration; returns the results table.

    The run folder ``out`` gets the folds, one result per fold (resumable:
    call again to finish a killed run) and, with ``keep_models``, each fold's
    model; :func:`signfer.metrics.report.write_report` turns it into the
    paper-style report. See the README, "What a run folder holds".

    Args:
        table: the samples (:func:`load_dataset`).
        out: the run folder.
        arch: architecture (``signfer models`` lists them).
        techniques: e.g. ``"ft,ip,hf"``; ``"none"`` is zero-shot.
        init: 'imagenet', 'random', a built-in model or a checkpoint; default:
            the built-in FER model of ``arch``.
        folds: K.
        seed: fixes the folds and the training randomness.
        input_size: for ImageNet and random inits (a checkpoint brings its own).
        train: training settings, or a dict of overrides of the defaults
            (e.g. ``{"epochs": 3}``).
        crop: how faces are cut (margin, alignment, region).
        crop_faces: the images are frames: detect and cut the face with this detector.
        keep_models: also save each fold's model as a checkpoint.
        name: the configuration's name in the results (default from the techniques).
        dataset: how the table was loaded, for the run's ``config.yaml``.
        command: the command line, for the kept models' metadata.
        redo_damaged: run again the folds whose results are damaged (else
            they are an error naming the file).
        executor: where the folds run (:mod:`signfer.experiments.executors`;
            default in this process, one after another), e.g.
            ``RayExecutor("auto")`` for a Ray cluster.

    Returns:
        One row per fold: ``config, arch, fold, accuracy, macro_f1, ...``.
    """
    from signfer.config import RunSpec, from_dict, parse_techniques, technique_label
    from signfer.experiments.grid import IMAGENET_INPUT_SIZE, Grid, default_init
    from signfer.experiments.runner import run_grid
    from signfer.models.checkpoint import check_input_size

    if not isinstance(train, TrainConfig):
        train = from_dict(TrainConfig, train, "train")
    t = parse_techniques(techniques)
    spec = RunSpec(name or technique_label(t), arch, init or default_init(arch), t, train)
    if t:  # zero-shot has no input size of its own to take
        check_input_size(input_size, [spec.init])
    grid = Grid((spec,), folds=folds, seed=seed, train=train,
                input_size=IMAGENET_INPUT_SIZE if input_size is None else input_size)
    return run_grid(table, grid, out, crop_faces=crop_faces, crop=crop, dataset=dataset,
                    keep_models=keep_models, command=command, redo_damaged=redo_damaged, log=log,
                    executor=executor)


def _rgb(image) -> np.ndarray:
    """A path, PIL image or array -> H x W x 3 uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        from signfer.data.cache import read_rgb

        return read_rgb(str(image))
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image: read as a file would be
        from signfer.data.cache import READABLE, pil_to_rgb

        rgb = pil_to_rgb(image)
        if rgb is None:
            raise SignferError(f"a PIL image in mode {image.mode!r} is not supported ({READABLE})")
        return rgb
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise SignferError(f"an image must be a path, a PIL image or an H x W x 3 uint8 RGB array; "
                           f"got an array of shape {a.shape} and dtype {a.dtype}")
    return a


class Recognizer:
    """A model and a face detector: images or video in, a table of expressions out.

    Faces are cut the way the model's training faces were framed (its
    checkpoint's preprocessing spec, :attr:`spec`).

    Args:
        model: a built-in model name or a checkpoint path (what
            :func:`finetune` returns); default: the built-in MobileNetV2 model.
            A list of several (e.g. an upper- and a lower-face model) fuses
            them: each cuts the face its own way, their probabilities are
            averaged (:class:`~signfer.inference.classifier.FusedClassifier`).
        detector: a detector name (``signfer detectors``), a detector object,
            ``"model"`` (the default) for the detector the model's training
            faces were cut or framed with (YuNet unless it records another),
            or ``None`` to treat every image as a face crop.
        backend: 'auto' (ONNX Runtime when installed), 'torch' or 'onnx'.

    Example:
        >>> rec = Recognizer("models/feph")  # doctest: +SKIP
        >>> rec.predict(["face.png", "frame.jpg"])[["image", "face_source", "label"]]  # doctest: +SKIP
    """

    def __init__(self, model: str | os.PathLike | list | None = None, detector="model", backend: str = "auto"):
        from signfer.inference.predict import make_classifier, make_detector

        if isinstance(model, (list, tuple)):  # several models (e.g. upper and lower face): fused
            model = [str(m) if isinstance(m, os.PathLike) else m for m in model]
        self.classifier = make_classifier(str(model) if isinstance(model, os.PathLike) else model, backend)
        self.detector = None if detector is None else make_detector(
            None if detector == "model" else detector, self.classifier)

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's classes, in the order of its ``prob_<class>`` columns."""
        return tuple(self.classifier.labels)

    @property
    def spec(self):
        """The model's :class:`~signfer.data.spec.PreprocessSpec` (crop, size, colour, normalisation)."""
        return self.classifier.spec

    def __repr__(self) -> str:
        det = getattr(self.detector, "name", None) if self.detector is not None else None
        return f"Recognizer(model={self.classifier.name!r}, detector={det!r}, labels={list(self.labels)})"

    def predict(self, images) -> pd.DataFrame:
        """Classify the largest face of each image.

        Args:
            images: one path, PIL image or H x W x 3 uint8 RGB array, or a
                list of them; whole frames or face crops alike.

        Returns:
            One row per image: ``image`` (the path, else the position in the
            list), ``face_source`` (``"detected"``, or ``"whole image"`` where
            the detector found no face, as in a tight crop too small for it,
            or there is no detector), the box ``x, y, w, h`` that was cut
            (the whole image for ``"whole image"``), ``prob_<class>`` per
            label, ``label`` and ``confidence``.
        """
        from signfer.inference.classifier import stack_crops
        from signfer.inference.predict import _prediction_table

        single = (isinstance(images, (str, os.PathLike)) or hasattr(images, "convert")
                  or (isinstance(images, np.ndarray) and images.ndim < 4))
        items = [images] if single else list(images)
        rows: dict[str, list] = {k: [] for k in ("image", "face_source", "x", "y", "w", "h")}
        crops = []
        for i, item in enumerate(items):
            image = _rgb(item)
            box = largest(self.detector.detect(image)) if self.detector is not None else None
            rows["image"].append(str(item) if isinstance(item, (str, os.PathLike)) else i)
            rows["face_source"].append(WHOLE_IMAGE if box is None else DETECTED)
            x, y, w, h = (0.0, 0.0, float(image.shape[1]), float(image.shape[0])) if box is None else (
                float(box.x), float(box.y), float(box.w), float(box.h))
            for k, v in zip("xywh", (x, y, w, h)):
                rows[k].append(v)
            crops.append(self.classifier.crop(image, box))
        probs = (self.classifier.predict_proba(stack_crops(crops)).astype(float) if crops
                 else np.zeros((0, len(self.labels))))
        return _prediction_table(rows, probs, self.labels)

    def _video_detector(self):
        if self.detector is None:
            raise SignferError("video needs a face detector; create the Recognizer with detector='yunet'")
        return self.detector

    def predict_video(self, path: str | os.PathLike, *, fps: float | None = None, every: int | None = None,
                      detect_every: int | None = None, smooth: int = 1, track: str = "window") -> pd.DataFrame:
        """The per-frame table of a video, as ``signfer annotate`` writes it, without writing files.

        One row per kept frame (``every`` N-th, at most ``fps`` a second);
        the columns are those of ``.frames.csv`` (see
        :mod:`signfer.inference.schema`), smoothed over ``smooth`` frames;
        ``detect_every`` and ``track`` as for
        :func:`signfer.inference.annotate.annotate_video`.
        """
        from signfer.inference.annotate import DEFAULT_DETECT_EVERY, add_smoothed, annotate_frames
        from signfer.inference.predict import check_video_options
        from signfer.video import iter_frames

        check_video_options(every=every, fps=fps, detect_every=detect_every, smooth=smooth, track=track)
        path, detector = Path(path), self._video_detector()
        table = annotate_frames(iter_frames(path, every=every, fps=fps), self.classifier, detector,
                                video=path.name, track=track,
                                detect_every=DEFAULT_DETECT_EVERY if detect_every is None else detect_every)
        return add_smoothed(table, smooth)

    def annotate(self, path: str | os.PathLike, out: str | os.PathLike, **options):
        """Annotate one video into the folder ``out`` as ``signfer annotate`` does.

        ``options``: ``every``, ``fps``, ``detect_every``, ``track``, ``smooth``,
        ``min_duration``, ``overlay``, ``write_parquet`` (see
        :func:`signfer.inference.annotate.annotate_video`). Returns its
        :class:`~signfer.inference.annotate.AnnotateResult` (``.table``,
        ``.outputs``). Unlike the command it always annotates (it skips no
        video done before), and it writes no record that would let the
        command skip this one; like the command, it keeps an ``.eaf`` edited
        since signfer wrote it (``.kept_eaf``).
        """
        from signfer.inference.annotate import annotate_video
        from signfer.inference.predict import check_video_options

        check_video_options(**{k: options[k] for k in ("every", "fps", "detect_every", "smooth", "min_duration",
                                                       "track") if k in options})
        return annotate_video(path, out, self.classifier, self._video_detector(), **options)
