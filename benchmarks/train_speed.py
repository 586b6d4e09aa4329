"""Time of ``signfer train`` on a FePh-sized set, and the grid's time against an earlier commit.

    .venv/bin/python benchmarks/train_speed.py [--base REV] [--configs no-FT,FT+IP+HF] [--archs mobilenetv2]
                                               [--out DIR] [--threads 2]

1. ``finetune`` (what ``signfer train`` runs) with the default recipe on the
   2,500-face FER2013 stand-in of ``grid_speed.py``, for each architecture.
2. The same part of the paper grid (``--configs`` x ``--archs``, 5 folds) run
   by this checkout and by the commit ``--base`` (checked out into a temporary
   git worktree), one after the other in this run, each in a fresh process with
   its own empty image cache; reported as a ratio. The whole grid is 14
   configurations; its recorded time (benchmarks/RESULTS.md) scales with these.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, command, machine  # noqa: E402
from grid_speed import make_standin  # noqa: E402

GRID_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from signfer.data import load_dataset
from signfer.experiments.grid import paper_grid
from signfer.experiments.runner import run_grid
from dataclasses import replace
table = load_dataset("manifest", sys.argv[1])
grid = paper_grid(archs=sys.argv[3].split(","))
wanted = sys.argv[5].split(",")
grid = replace(grid, runs=tuple(r for r in grid.runs if r.name in wanted))
t0 = time.perf_counter()
res = run_grid(table, grid, sys.argv[2], log=lambda s: None)
print(json.dumps({"seconds": time.perf_counter() - t0, "fits": len(res),
                  "accuracy": res.groupby(["config", "arch"])["accuracy"].mean().round(4).to_dict().__repr__()}))
"""


def time_grid(python: str, source: Path, manifest: Path, out: Path, archs: str, configs: str, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "SIGNFER_CACHE": str(out / "cache")}
    done = subprocess.run([python, "-c", GRID_CHILD, str(manifest), str(out / "run"), archs, str(threads), configs],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="c22ed5f", help="the commit to compare the grid's time with")
    p.add_argument("--configs", default="no-FT,FT+IP+HF")
    p.add_argument("--archs", default="mobilenetv2")
    p.add_argument("--out", default="runs/train-speed")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    manifest = make_standin(out)
    print(f"# {command()}\n# {machine()}\n", flush=True)

    import signfer
    from signfer.faces.crop import CropSpec

    table = signfer.load_dataset("manifest", manifest)
    print("| signfer train | faces | seconds |\n| --- | ---: | ---: |")
    for arch in args.archs.split(","):
        t0 = time.perf_counter()
        signfer.finetune(table, out / f"model-{arch}", arch=arch, crop=CropSpec(), log=lambda s: None)
        print(f"| {arch} from its built-in FER model, default recipe | {len(table.samples)} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base],
                       check=True, capture_output=True)
        try:
            now = time_grid(sys.executable, REPO, manifest, Path(tmp) / "now", args.archs, args.configs, args.threads)
            was = time_grid(sys.executable, base, manifest, Path(tmp) / "was", args.archs, args.configs, args.threads)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    print(f"\n| grid part ({args.configs} x {args.archs}, 5 folds) | fits | seconds | accuracy by config |\n"
          "| --- | ---: | ---: | --- |")
    print(f"| {args.base} | {was['fits']} | {was['seconds']:.0f} | {was['accuracy']} |")
    print(f"| this checkout | {now['fits']} | {now['seconds']:.0f} | {now['accuracy']} |")
    print(f"\ntime ratio this / {args.base}: {now['seconds'] / was['seconds']:.3f}")


if __name__ == "__main__":
    main()
