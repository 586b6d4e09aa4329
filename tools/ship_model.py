"""Ship a pre-trained checkpoint inside the package as a built-in model.

    .venv/bin/python tools/ship_model.py /work/pretrain/mobilenetv2-v3/mobilenetv2-fer --name mobilenetv2-fer

Stores the weights as fp16 safetensors in ``signfer/weights/`` after checking, on
FER2013 validation (``../shared``), that fp16 does not change the accuracy, and
records in the metadata a few validation faces the model gets right with high
confidence, which ``tests/test_builtin_models.py`` re-checks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from signfer.data import load_dataset
from signfer.data.cache import load_images
from signfer.inference.classifier import TorchClassifier
from signfer.models.checkpoint import builtin_dir, checkpoint_files, load_model, save_checkpoint

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--name", required=True)
    ap.add_argument("--n-check", type=int, default=2, help="check faces per class")
    args = ap.parse_args()
    val = load_dataset("folder", SHARED / "data" / "fer2013" / "validation")
    model, meta = load_model(args.checkpoint)
    x = load_images(val, meta.input_size)
    y = val.y()
    p32 = TorchClassifier(model, meta).predict_proba(x)
    labels = list(val.classes)
    order = [meta.labels.index(c) for c in labels]
    acc32 = float((p32[:, order].argmax(1) == y).mean())

    stem = save_checkpoint(model, meta, builtin_dir() / args.name, half=True)
    m16, meta16 = load_model(stem)
    p16 = TorchClassifier(m16, meta16).predict_proba(x)
    acc16 = float((p16[:, order].argmax(1) == y).mean())
    print(f"FER2013 validation accuracy: fp32 {acc32:.4f}, fp16 {acc16:.4f}")
    if abs(acc16 - acc32) > 0.002:
        for path in checkpoint_files(stem):
            path.unlink()
        raise SystemExit("fp16 changes the accuracy; not shipped")

    check = []
    for ci, c in enumerate(labels):
        ok = np.flatnonzero((p16[:, order].argmax(1) == y) & (y == ci))
        best = ok[np.argsort(-p16[ok][:, order][:, ci])][: args.n_check]
        for i in best:
            rel = Path(val.samples["path"][i]).relative_to(SHARED / "data" / "fer2013" / "validation")
            check.append({"face": str(rel), "label": c})
    meta16.extra = {**meta.extra, "fp16": True, "fer2013_validation_accuracy_fp16": round(acc16, 4),
                    "check_faces": check}
    meta16.val_accuracy = meta.val_accuracy
    save_checkpoint(m16.float(), meta16, stem, half=True)
    size = checkpoint_files(stem)[0].stat().st_size / 1e6
    print(f"shipped {stem}.safetensors ({size:.1f} MB)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
