"""Accuracy and time of ImageNet-initialised fits by input size, on the grid stand-in.

    .venv/bin/python benchmarks/input_size.py [--sizes 64,96,128] [--archs ...] [--folds 0]

Fits FT+IP+HF from ImageNet weights (the grid's settings otherwise) on the
same 2,500-face FER2013 stand-in and folds as ``grid_speed.py``, one fit per
(architecture, size, fold), and prints test accuracy, fit time and training
throughput. It chooses the input size that ``cv``/``grid`` use for ImageNet and
random inits (a signfer checkpoint always brings its own size).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, machine, markdown_table  # noqa: E402
from grid_speed import make_standin  # noqa: E402

from signfer.config import RunSpec  # noqa: E402
from signfer.data import load_dataset  # noqa: E402
from signfer.experiments.folds import load_or_make_folds  # noqa: E402
from signfer.experiments.grid import Grid  # noqa: E402
from signfer.experiments.runner import ImageInputs, run_fold  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_input_size")
    ap.add_argument("--archs", default="efficientnet_lite0,mobilenetv2")
    ap.add_argument("--sizes", default="64,96,128")
    ap.add_argument("--folds", default="0", help="comma-separated fold indices of the 5")
    args = ap.parse_args()
    out = Path(args.out)
    # the inits compared here (ImageNet, random) never saw FER2013: any split will do;
    # "train" keeps the figures recorded in RESULTS.md reproducible
    table = load_dataset("manifest", make_standin(out, split="train"))
    folds = load_or_make_folds(table, 5, 0, out)
    inputs = ImageInputs(table)
    rows = []
    for arch in args.archs.split(","):
        spec = RunSpec("FT+IP+HF", arch, "imagenet", ("ft", "hf", "ip"))
        for size in map(int, args.sizes.split(",")):
            for fold in map(int, args.folds.split(",")):
                m = run_fold(spec, fold, folds, table, inputs, Grid((spec,), input_size=size))
                rows.append({"arch": arch, "size": size, "fold": fold, "accuracy": m["accuracy"],
                             "macro_f1": m["macro_f1"], "seconds": m["seconds"],
                             "train_img_per_s": m["train_img_per_s"]})
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows).groupby(["arch", "size"], sort=False).mean(numeric_only=True).reset_index()
    print()
    print(markdown_table(["arch", "input", "accuracy", "macro-F1", "s / fit", "training img/s"],
                         [[r.arch, f"{r.size} px", f"{r.accuracy:.3f}", f"{r.macro_f1:.3f}",
                           f"{r.seconds:.0f}", f"{r.train_img_per_s:.0f}"] for r in df.itertuples()]))
    print(f"\ncommand: {command()}\nmachine: {machine()}")


if __name__ == "__main__":
    main()
