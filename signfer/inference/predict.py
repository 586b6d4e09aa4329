"""Library entry points behind ``signfer evaluate``, ``predict``, ``annotate`` and ``suggest``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from signfer.data.cache import load_images, read_rgb
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.faces.crop import crop_face, largest
from signfer.inference.classifier import load_classifier
from signfer.labels import require_overlap, shared_columns
from signfer.metrics import compute_metrics
from signfer.models.checkpoint import builtin_models


def default_model() -> str:
    """The built-in model used when none is named: MobileNetV2's when it ships."""
    models = builtin_models()
    if not models:
        raise SignferError("no built-in model is installed; pass --model CHECKPOINT")
    return "mobilenetv2-fer" if "mobilenetv2-fer" in models else next(iter(models))


def evaluate_model(table: SampleTable, model: str, *, crop_faces: str | None = None,
                   backend: str = "auto") -> dict:
    """Metrics of ``model`` as it is on every sample of ``table``, labels matched by name.

    Dataset classes that the model does not know can never be predicted
    (they count as errors); model classes that the dataset lacks are dropped.
    """
    clf = load_classifier(model, backend)
    classes = list(table.classes)
    require_overlap(clf.labels, classes)
    images = load_images(table, clf.input_size, crop_faces=crop_faces)
    start = time.perf_counter()
    probs = clf.predict_proba(images)
    seconds = time.perf_counter() - start
    keep, columns = shared_columns(clf.labels, classes)
    pred = np.asarray(columns)[probs[:, keep].argmax(1)]
    m = compute_metrics(table.y(), pred, classes)
    m["faces_per_s"] = len(images) / seconds if seconds else float("nan")
    m["unmapped"] = [c for j, c in enumerate(classes) if j not in columns]
    m["backend"] = clf.backend if hasattr(clf, "backend") else ""
    return m


def predict_images(paths: list[str], model: str | None = None, *, detector: str | None = None,
                   backend: str = "auto") -> pd.DataFrame:
    """One row per image: the label and every class probability.

    Without ``detector`` each image must be a face crop (it is only resized).
    With one, the largest detected face is cropped first; an image with no
    face gets an empty label.
    """
    clf = load_classifier(model or default_model(), backend)
    det = None
    if detector:
        from signfer.faces import DEFAULT_DETECTOR, create_detector

        det = create_detector(DEFAULT_DETECTOR if detector == "default" else detector)
    rows, crops = [], []
    for p in paths:
        image = read_rgb(p)
        box = None
        if det is not None:
            box = largest(det.detect(image))
            if box is None:
                rows.append({"image": p, "face": False})
                continue
        elif max(image.shape[:2]) > 4 * clf.input_size and min(image.shape[:2]) > 2 * clf.input_size:
            print(f"note: {p} is {image.shape[1]}x{image.shape[0]}: if it is not a face crop, "
                  f"pass --detector to find the face", file=sys.stderr)
        crops.append(crop_face(image, box, clf.input_size))
        rows.append({"image": p, "face": True})
    probs = clf.predict_proba(np.stack(crops)) if crops else np.zeros((0, len(clf.labels)))
    out, k = [], 0
    for r in rows:
        if r["face"]:
            r.update(label=clf.labels[int(probs[k].argmax())], confidence=float(probs[k].max()),
                     **{c: float(probs[k, j]) for j, c in enumerate(clf.labels)})
            k += 1
        else:
            r.update(label="", confidence=float("nan"))
        out.append(r)
    return pd.DataFrame(out)


def _detector(name: str | None):
    from signfer.faces import DEFAULT_DETECTOR, create_detector

    return create_detector(name or DEFAULT_DETECTOR)


def _detect_every(args) -> int:
    """``--detect-every``, checked before any model or video is loaded."""
    n = getattr(args, "detect_every", 1)
    if n < 1:
        raise SignferError(f"--detect-every must be >= 1, got {n}")
    return n


def annotate_command(args) -> int:
    from signfer.inference.annotate import annotate_many

    detect_every = _detect_every(args)
    clf = load_classifier(args.model or default_model(), args.backend)
    res = annotate_many(args.videos, args.out, clf, _detector(args.detector), every=args.every,
                        fps=args.fps, smooth=args.smooth, min_duration=args.min_duration,
                        overlay=args.overlay, detect_every=detect_every)
    for r in res.results:
        print(r.summary())
    for e in res.errors:
        print(f"signfer: error: {e}", file=sys.stderr)
    return 1 if res.errors else 0


def suggest_command(args) -> int:
    from signfer.export.elan import write_suggestions_eaf
    from signfer.export.tables import write_table
    from signfer.inference.annotate import annotate_frames
    from signfer.inference.uncertainty import rank_uncertain
    from signfer.inference.video import iter_frames

    detect_every = _detect_every(args)
    clf = load_classifier(args.model or default_model(), args.backend)
    det = _detector(args.detector)
    out = Path(args.out)
    failed = 0
    for v in args.videos:
        try:
            table = annotate_frames(iter_frames(v, every=args.every, fps=args.fps), clf, det,
                                    video=Path(v).name, detect_every=detect_every)
        except SignferError as e:
            print(f"signfer: error: {e}", file=sys.stderr)
            failed += 1
            continue
        ranked = rank_uncertain(table, args.n, args.method)
        stem = Path(v).stem
        write_table(ranked, out / f"{stem}.suggest.csv")
        eaf = write_suggestions_eaf(ranked, v, out / f"{stem}.suggest.eaf")
        print(f"{v}: {len(ranked)} frames to annotate first ({args.method}) -> {eaf}")
    return 1 if failed else 0
