"""``make demo``: the main job end to end, on a fresh machine, with nothing downloaded.

1. a labelled set: the user's FePh folder (``--data``), or a SYNTHETIC one that
   signfer draws itself (no labelled sign-language faces may be shipped);
2. start from the built-in FER model;
3. fine-tune with the paper's best setting (FT+IP+HF), cross-validated;
4. write the report and say where it is;
5. predict a real face that an installed package ships (scikit-image's astronaut).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from signfer.config import RunSpec, TrainConfig
from signfer.data import load_dataset
from signfer.data.synthetic import make_synthetic_feph
from signfer.experiments.grid import Grid, default_init
from signfer.experiments.runner import run_grid
from signfer.metrics.report import summary_table, write_report


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def run_demo(out: str | Path, data: str | Path | None = None, folds: int = 3, arch: str = "mobilenetv2") -> Path:
    start = time.perf_counter()
    out = Path(out)
    if data is None:
        root = make_synthetic_feph(out / "synthetic_feph")
        _say("=" * 72)
        _say("DATA: SYNTHETIC cartoon faces drawn by signfer (no real sign-language faces ship")
        _say(f"with signfer). They are written in FePh's format to {root}.")
        _say("Scores on them show that the pipeline runs, NOT how well it reads human faces.")
        _say("Run `make demo DATA=/path/to/FePh` for the real thing.")
        _say("=" * 72)
    else:
        root = Path(data).expanduser()
        _say(f"DATA: FePh at {root}")
    table = load_dataset("feph", root)
    _say(table.summary().split("\nskipped")[0])

    init = default_init(arch)
    if init == "imagenet":
        _say(f"note: no built-in FER model for {arch} is installed; starting from ImageNet weights")
    spec = RunSpec("FT+IP+HF", arch, init, ("ft", "hf", "ip"), TrainConfig())
    grid = Grid((spec,), folds=folds, seed=0, train=spec.train)
    _say(f"\nMODEL: {init} ({arch}), fine-tuned with FT+IP+HF, {folds}-fold grouped cross-validation")
    results = run_grid(table, grid, out / "cv", dataset={"kind": "feph", "root": str(root)},
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    report = write_report(out / "cv")
    _say("\n" + summary_table(results).to_string())
    _say(f"\nREPORT: {report.resolve()}")
    _predict_astronaut(out)
    _say(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    return report


def _predict_astronaut(out: Path) -> None:
    try:
        from skimage import data as skdata
    except ImportError:
        _say("\n(scikit-image is not installed: skipping the real-face prediction)")
        return
    from PIL import Image

    from signfer.inference.predict import default_model, predict_images
    from signfer.inference.schema import class_names, prob_columns
    from signfer.models.checkpoint import builtin_models

    if not builtin_models():
        _say("\n(no built-in model: skipping the real-face prediction)")
        return
    path = out / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(path)
    df = predict_images([str(path)], default_model(), detector="default")
    row = df.iloc[0]
    if not row["face"]:
        _say("\nREAL FACE: no face found in scikit-image's astronaut()")
        return
    probs = {name: row[column] for name, column in zip(class_names(df), prob_columns(df))}
    _say(f"\nREAL FACE: scikit-image's astronaut() (Eileen Collins), built-in model {default_model()}:")
    _say(f"  label {row['label']} ({row['confidence']:.2f}); "
         + ", ".join(f"{k} {v:.2f}" for k, v in sorted(probs.items(), key=lambda kv: -kv[1])))
