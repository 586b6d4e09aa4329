"""FER2013-validation accuracy of models and of every ensemble of them.

    .venv/bin/python benchmarks/ensemble_eval.py mobilenetv2-fer-160 mobilenetv2-fer PATH/TO/CHECKPOINT

Each model's probabilities are averaged over the face and its mirror image, as
distillation teachers see them (:class:`signfer.training.teacher.Teachers`);
an ensemble averages its members' probabilities. Used to choose the teachers
of a distillation run. The faces are decoded once at ``--size`` and resized
for each model, as in distillation.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from signfer.data import load_dataset
from signfer.data.cache import load_images
from signfer.data.spec import PreprocessSpec
from signfer.training.teacher import Teachers

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="built-in names or checkpoint paths")
    ap.add_argument("--root", default=str(SHARED / "data" / "fer2013"), help="holds validation/")
    ap.add_argument("--size", type=int, default=160, help="side the faces are decoded at")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = load_dataset("folder", args.root, split="validation")
    classes, y = list(val.classes), torch.tensor(val.y())
    x = torch.from_numpy(load_images(val, args.size))
    to_pixels = PreprocessSpec()  # [0, 1], no normalisation: Teachers normalises for each model
    probs = {}
    for name in args.models:
        teacher = Teachers([name], classes)
        probs[name] = torch.cat([teacher(to_pixels(x[i:i + 256]), to_pixels) for i in range(0, len(x), 256)])
    print(f"FER2013 validation, {len(y)} faces; probabilities averaged with the mirror image\n")
    print("| models | accuracy |\n| --- | ---: |")
    for r in range(1, len(args.models) + 1):
        for members in itertools.combinations(args.models, r):
            acc = float((sum(probs[m] for m in members).argmax(1) == y).float().mean())
            print(f"| {' + '.join(members)} | {acc:.4f} |")


if __name__ == "__main__":
    main()
