"""Fine-tuning recipes on small data: subject-grouped cross-validation of named recipes.

    .venv/bin/python benchmarks/small_data.py RECIPE [RECIPE ...] [--data ckplus-dev|standin|MANIFEST]
                                              [--out DIR] [--folds 5] [--threads N] [--keep-models]
                                              [--fuse RECIPE RECIPE ...] [--ensemble K]

Each recipe is a start model plus training settings (``RECIPES`` below); each runs
``signfer.cross_validate`` with folds grouped by subject (CK+: ``manifest.csv``'s
``group``) or by pseudo-video (the FER2013 stand-in of ``grid_speed.py``), so no
subject is on both sides of a split. All recipes of one ``--data`` share the same
saved folds. Prints, per recipe, mean ± sd accuracy and mean per-class recall
("sensitivity", the DFKI 2025 paper's figure) over the folds, the recall of each
class, and the mean seconds per fit. A finished recipe is resumed, not re-run.

The CK+ data is the dev half of ``../shared/data/ckplus48_dev`` (64 of 118
subjects): recipes are chosen on it; the other subjects are kept aside.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, machine, markdown_table, shared_path  # noqa: E402

import signfer  # noqa: E402
from signfer.config import TrainConfig  # noqa: E402
from signfer.experiments.runner import fold_dir  # noqa: E402
from signfer.faces.crop import CropSpec  # noqa: E402
from signfer.models.checkpoint import load_meta  # noqa: E402

E30 = {"epochs": 30, "patience": 30, "lr": 1e-3}  # the longer schedule
E30_AUG = {**E30, "rotate": 10.0, "scale": 0.1}  # + rotation and zoom: the accurate preset's settings
UPPER, LOWER = {"crop": CropSpec(region="upper")}, {"crop": CropSpec(region="lower")}

#: name -> (init, techniques, training settings[, other cross_validate options]).
#: ``fast`` is the paper grid's defaults; each other recipe adds one step, so
#: each step's effect can be re-measured.
RECIPES: dict[str, tuple] = {
    "fast": ("mobilenetv2-fer", "ft,ip,hf", {}),
    "e30": ("mobilenetv2-fer", "ft,ip,hf", E30),
    "e30-aug": ("mobilenetv2-fer", "ft,ip,hf", E30_AUG),
    "e30-aug-tta": ("mobilenetv2-fer", "ft,ip,hf", {**E30_AUG, "tta": True}),
    "e30-aug-ls": ("mobilenetv2-fer", "ft,ip,hf", {**E30_AUG, "label_smoothing": 0.1}),
    "e30-aug-160": ("mobilenetv2-fer-160", "ft,ip,hf", E30_AUG),
    "lite0-160-e30-aug": ("efficientnet_lite0-fer-160", "ft,ip,hf", E30_AUG),
    # upper and lower face alone (pre-cropped faces are split at their nose row);
    # `--fuse fast-upper fast-lower` scores the mean of their probabilities
    "fast-upper": ("mobilenetv2-fer", "ft,ip,hf", {}, UPPER),
    "fast-lower": ("mobilenetv2-fer", "ft,ip,hf", {}, LOWER),
    "e30-aug-upper": ("mobilenetv2-fer", "ft,ip,hf", E30_AUG, UPPER),
    "e30-aug-lower": ("mobilenetv2-fer", "ft,ip,hf", E30_AUG, LOWER),
    # the same halves with the accurate preset's recipe (e30-aug from the 160 px start)
    "e30-aug-160-upper": ("mobilenetv2-fer-160", "ft,ip,hf", E30_AUG, UPPER),
    "e30-aug-160-lower": ("mobilenetv2-fer-160", "ft,ip,hf", E30_AUG, LOWER),
}


def load(data: str, out: Path):
    if data == "ckplus-dev":
        return signfer.load_dataset("manifest", shared_path("data", "ckplus48_dev", "manifest.csv"))
    if data == "standin":
        from grid_speed import make_standin

        return signfer.load_dataset("manifest", make_standin(out))
    return signfer.load_dataset("manifest", data)


def recipe_out(out: Path, name: str) -> Path:
    """Where recipe ``name`` runs: ``out``, or its own folder beside it when it
    cuts faces otherwise (a run folder holds one crop setting). The folds are
    the same: they depend on the data and the seed only."""
    return out.parent / f"{out.name}-{name}" if len(RECIPES[name]) > 3 else out


def model_probs(model_stem: Path, table, paths, tta: bool) -> tuple[np.ndarray, list]:
    """A kept model's probabilities for the faces of ``table`` at ``paths``, and its labels."""
    from signfer.data.cache import load_images
    from signfer.data.spec import equalize
    from signfer.models.checkpoint import load_model
    from signfer.training.loop import predict_proba

    model, meta = load_model(model_stem)
    spec = meta.spec
    index = {p: i for i, p in enumerate(table.samples["path"])}
    rows = [index[p] for p in paths]
    images = equalize(load_images(table, spec.size, crop=spec.crop, progress=False), spec.equalize)[rows]
    return predict_proba(model, torch.from_numpy(images), spec, tta=tta), list(meta.labels)


def fold_probs(out: Path, name: str, arch: str, k: int, table, tta: bool) -> tuple[np.ndarray, pd.DataFrame, list]:
    """Fold ``k``'s kept model of recipe ``name`` on that fold's own test faces:
    (probabilities, predictions.csv, the model's labels)."""
    d = fold_dir(recipe_out(out, name), _Spec(name, arch), k)
    pred = pd.read_csv(d / "predictions.csv")
    probs, labels = model_probs(d / "model", table, pred["path"], tta)
    return probs, pred, labels


def fold_ensemble(out: Path, name: str, folds: int, members: int, table) -> dict:
    """What `train` would gain from a fold ensemble instead of one model, measured
    without touching a test fold: for each outer fold k, recipe ``name`` is
    cross-validated with ``members`` subject-grouped folds on the other outer
    folds' faces alone (each member trains on (members - 1) / members of them and
    chooses its epoch on its own inner validation part, as `train` does); the
    members' mean probabilities (with mirror TTA) then predict fold k's faces.
    Beside it, the same recipe's single model of fold k (trained on all of the
    outer training faces), also with TTA, on the same faces."""
    from signfer.data.table import SampleTable

    init, techniques, train, *options = RECIPES[name]
    arch = load_meta(init).arch
    assigned = pd.read_csv(recipe_out(out, name) / "folds.csv")
    fold_of = dict(zip(assigned["path"], assigned["fold"]))
    ens, single = [], []
    for k in range(folds):
        outer = table.samples["path"].map(fold_of).to_numpy() != k
        inner = SampleTable(table.samples[outer].reset_index(drop=True), name=f"{table.name} without fold {k}",
                            classes=table.classes)
        inner_out = out.parent / f"{out.name}-ensemble{members}-{name}" / f"outer{k}"
        signfer.cross_validate(inner, inner_out, arch=arch, init=init, techniques=techniques, folds=members,
                               train=TrainConfig(**train), name=name, log=_progress, keep_models=True,
                               **(options[0] if options else {}))
        pred = pd.read_csv(fold_dir(recipe_out(out, name), _Spec(name, arch), k) / "predictions.csv")
        each = [model_probs(fold_dir(inner_out, _Spec(name, arch), m) / "model", table, pred["path"], True)
                for m in range(members)]
        labels, truth = each[0][1], pred["label"].to_numpy()
        ens.append(float((np.asarray(labels)[np.mean([e[0] for e in each], axis=0).argmax(1)] == truth).mean()))
        probs, _, labels = fold_probs(out, name, arch, k, table, tta=True)
        single.append(float((np.asarray(labels)[probs.argmax(1)] == truth).mean()))
        print(f"fold {k}: ensemble of {members} {ens[-1]:.3f}, single model {single[-1]:.3f}", file=sys.stderr,
              flush=True)
    ens, single = np.array(ens), np.array(single)
    return {"recipe": f"{name}: fold ensemble of {members} (mean of probabilities, TTA)",
            "accuracy": f"{100 * ens.mean():.1f} ± {100 * ens.std(ddof=1):.1f}",
            "accuracy with TTA": f"single model {100 * single.mean():.1f} ± {100 * single.std(ddof=1):.1f}; "
                                 f"paired difference {100 * (ens - single).mean():+.1f} ± "
                                 f"{100 * (ens - single).std(ddof=1):.1f}"}


def tta_accuracy(out: Path, name: str, arch: str, folds: int, table) -> np.ndarray:
    """Each fold's accuracy when its kept model also looks at the mirror image
    (test-time augmentation), from the fold's own test faces and model."""
    accs = []
    for k in range(folds):
        probs, pred, labels = fold_probs(out, name, arch, k, table, tta=True)
        accs.append(float((np.asarray(labels)[probs.argmax(1)] == pred["label"].to_numpy()).mean()))
    return np.array(accs)


def fused(out: Path, names: list[str], folds: int, table, tta: bool = False) -> dict:
    """Mean of the recipes' probabilities per face (e.g. an upper- and a lower-face
    model), per fold on its own test faces; accuracy and sensitivity as for a recipe.
    With ``tta`` each model also looks at the mirror image."""
    from sklearn.metrics import recall_score

    accs, sens, recalls = [], [], []
    for k in range(folds):
        each = [fold_probs(out, n, load_meta(RECIPES[n][0]).arch, k, table, tta=tta) for n in names]
        labels, truth = each[0][2], each[0][1]["label"].to_numpy()
        for probs, pred, lab in each:
            if lab != labels or not (pred["path"].to_numpy() == each[0][1]["path"].to_numpy()).all():
                raise SystemExit(f"--fuse: {names} do not share labels and test faces on fold {k}")
        guess = np.asarray(labels)[np.mean([e[0] for e in each], axis=0).argmax(1)]
        accs.append(float((guess == truth).mean()))
        present = sorted(set(truth))
        sens.append(float(recall_score(truth, guess, labels=present, average="macro", zero_division=0)))
        recalls.append(dict(zip(present, recall_score(truth, guess, labels=present, average=None,
                                                      zero_division=0))))
    acc = np.array(accs)
    return {"recipe": " + ".join(names) + " (mean of probabilities)",
            "accuracy": f"{100 * acc.mean():.1f} ± {100 * acc.std(ddof=1):.1f}",
            "sensitivity": f"{100 * np.mean(sens):.1f}",
            **{c: f"{100 * np.nanmean([r.get(c, np.nan) for r in recalls]):.0f}" for c in labels}}


def summarise(out: Path, name: str, spec_name: str, arch: str, folds: int, table=None) -> dict:
    rows = [pd.read_json(fold_dir(recipe_out(out, name), _Spec(spec_name, arch), k) / "metrics.json",
                         typ="series") for k in range(folds)]
    acc = np.array([r["accuracy"] for r in rows])
    tta = {}
    if table is not None:
        t = tta_accuracy(out, spec_name, arch, folds, table)
        tta = {"accuracy with TTA": f"{100 * t.mean():.1f} ± {100 * t.std(ddof=1):.1f}"}
    sens = np.array([r["macro_recall"] for r in rows])
    classes = list(rows[0]["per_class"])
    recall = {c: np.nanmean([r["per_class"][c]["recall"] for r in rows]) for c in classes}
    return {"recipe": name, "accuracy": f"{100 * acc.mean():.1f} ± {100 * acc.std(ddof=1):.1f}", **tta,
            "sensitivity": f"{100 * sens.mean():.1f}", "s/fit": f"{np.mean([r['seconds'] for r in rows]):.0f}",
            **{c: f"{100 * v:.0f}" for c, v in recall.items()}}


@dataclasses.dataclass
class _Spec:  # what fold_dir needs
    name: str
    arch: str


def _progress(line: str) -> None:
    if line.startswith("[") or line.lstrip().startswith("accuracy"):
        print(line, file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipes", nargs="*", choices=sorted(RECIPES))
    p.add_argument("--data", default="ckplus-dev")
    p.add_argument("--out", default="runs/small-data")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep-models", action="store_true",
                   help="keep each fold's model and also report the accuracy with mirror TTA")
    p.add_argument("--fuse", nargs="+", default=[], metavar="RECIPE",
                   help="also score the mean of these recipes' probabilities (their models are kept)")
    p.add_argument("--ensemble", type=int, default=0, metavar="K",
                   help="also score, per recipe, a fold ensemble of K members trained inside each outer "
                        "fold's training part, against the recipe's single model (keeps the models)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out) / Path(args.data).stem
    table = load(args.data, out)
    print(f"# {command()}\n# {machine()}\n# data: {table.name}, {len(table.samples)} faces, "
          f"{table.samples['group'].nunique()} groups, {args.folds} grouped folds\n", flush=True)
    rows = []
    keep = set(args.fuse) | (set(args.recipes) if args.keep_models or args.ensemble else set())
    for name in dict.fromkeys([*args.recipes, *args.fuse]):
        init, techniques, train, *options = RECIPES[name]
        arch = load_meta(init).arch
        signfer.cross_validate(table, recipe_out(out, name), arch=arch, init=init, techniques=techniques,
                               folds=args.folds, train=TrainConfig(**train), name=name, log=_progress,
                               keep_models=name in keep, **(options[0] if options else {}))
        rows.append(summarise(out, name, name, arch, args.folds, table if args.keep_models else None))
        headers = list(dict.fromkeys(k for r in rows for k in r))
        print(markdown_table(headers, [[r.get(h, "") for h in headers] for r in rows]) + "\n", flush=True)
    for name in args.recipes if args.ensemble else []:
        rows.append(fold_ensemble(out, name, args.folds, args.ensemble, table))
        headers = list(dict.fromkeys(k for r in rows for k in r))
        print(markdown_table(headers, [[r.get(h, "") for h in headers] for r in rows]) + "\n", flush=True)
    if args.fuse:
        row = fused(out, args.fuse, args.folds, table)
        if args.keep_models:
            row = {"recipe": row["recipe"], "accuracy": row["accuracy"],
                   "accuracy with TTA": fused(out, args.fuse, args.folds, table, tta=True)["accuracy"], **row}
        rows.append(row)
        headers = list(dict.fromkeys(k for r in rows for k in r))
        print(markdown_table(headers, [[r.get(h, "") for h in headers] for r in rows]) + "\n", flush=True)


if __name__ == "__main__":
    main()
