"""What saving a fit's state costs (the resume of a killed fold or ``train``).

    .venv/bin/python benchmarks/fit_state.py [--repeats 5]

For each built-in model, with an AdamW state as after a training step: the
median time of one save (weights, optimiser, best weights so far, written
atomically) and of the fit's key (a SHA-256 of the images, labels, indices,
settings and starting weights, computed once per fit) for a CK+-sized and a
FePh-sized image set at the model's input size. A fit saves at most every
``signfer.training.fit.STATE_EVERY_S`` seconds, so save time / that interval
bounds the slowdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, machine, markdown_table  # noqa: E402

from signfer.config import TrainConfig  # noqa: E402
from signfer.data.spec import PreprocessSpec  # noqa: E402
from signfer.models.checkpoint import build_model, builtin_models  # noqa: E402
from signfer.training.fit import STATE_EVERY_S, _save_state, fit_key  # noqa: E402

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in builtin_models():
            model, meta = build_model(None, CLASSES, name)
            opt = torch.optim.AdamW(model.parameters())
            model(torch.rand(2, 3, meta.input_size, meta.input_size)).sum().backward()
            opt.step()
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "best_model": model.state_dict()}
            path = Path(tmp) / "fit_state.pt"
            save_s = median_seconds(lambda: _save_state(path, state), args.repeats)
            keys = []
            for n in (546, 2500):
                images = torch.zeros(n, meta.input_size, meta.input_size, 3, dtype=torch.uint8)
                y, idx = np.zeros(n, dtype=int), np.arange(n)
                keys.append(median_seconds(lambda: fit_key(model, images, y, idx[: n * 4 // 5], idx[n * 4 // 5:],
                                                           ("ft",), TrainConfig(), PreprocessSpec(), 0, None),
                                           args.repeats))
            rows.append([name, meta.input_size, f"{path.stat().st_size / 1e6:.1f}", f"{save_s:.3f}",
                         f"{save_s / STATE_EVERY_S:.2%}", f"{keys[0]:.3f}", f"{keys[1]:.3f}"])
    print(f"command: {command()}\nmachine: {machine()}\n")
    print(markdown_table(["model", "input px", "state MB", "save s", f"save / {STATE_EVERY_S:g} s",
                          "key s, 546 faces", "key s, 2,500 faces"], rows))


if __name__ == "__main__":
    main()
