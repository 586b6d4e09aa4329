"""The paper grid on a FePh-sized stand-in, against a naive baseline, in one run.

    .venv/bin/python benchmarks/grid_speed.py [--out DIR] [--baseline-fits CONFIG:ARCH:FOLD[:SIZE],...]

Stand-in: 2,500 faces drawn (stratified, seeded) from ``../shared/data/fer2013/validation``
(``--split``) without the faces on ``--exclude`` (default ``fer2013-validation``, the 591
validation faces that also occur in train; ``none`` keeps them, as every run before
2026-12-02 did), with synthetic groups (pseudo-videos of 25 faces of mixed classes), 5 folds, both
architectures, the ``paper`` grid exactly as ``signfer grid --grid paper`` runs it.

Baseline: the same grid, folds, inner splits, initial weights, techniques and
epochs, but done the naive way: every image is decoded from its JPEG every
epoch, at 224 px, with no image cache and no feature cache (the frozen-backbone
warm-up runs the whole network). A naive grid takes about 11 hours on 2 cores,
so its training throughput is timed on a few batches per architecture and its
grid time projected from that; its accuracy comes from the full naive fits
listed in ``--baseline-fits``, each compared with signfer's fit of the same
(configuration, fold). A fit may name another size than 224 px: at the
checkpoint's own size the naive fit isolates the effect of the caches from that
of the input size. Note: the built-in FER models were pre-trained on FER2013's
training faces, so a stand-in drawn from them (``--split train``, the default
before 2026-11-28 15:20) measures memory, not recognition. The validation split
is not clean either: 280 of its 3,589 faces are pixel-identical to training
faces and 311 more are near copies of them (:mod:`signfer.data.duplicates`), so
the FER models did train on those; hence ``--exclude``. The remaining
validation faces were never trained on, but they chose the FER models' epochs
(and the teachers of the distilled ones). Neither split is
sign-language data: the accuracies compare configurations and pipelines, not
what FePh will give.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, machine, markdown_table, shared_path  # noqa: E402

from signfer.data import load_dataset  # noqa: E402
from signfer.experiments.folds import inner_split, load_or_make_folds  # noqa: E402
from signfer.experiments.grid import named_grid, paper_grid  # noqa: E402
from signfer.experiments.runner import fold_seed, run_grid  # noqa: E402
from signfer.models.checkpoint import build_model  # noqa: E402
from signfer.models.registry import set_backbone_trainable, train_mode  # noqa: E402
from signfer.training.fit import all_layers_scheduler, class_weights  # noqa: E402


def make_standin(out: Path, n: int = 2500, group_size: int = 25, seed: int = 0,
                 split: str = "validation", exclude: str | None = "fer2013-validation") -> Path:
    """A manifest of ``n`` FER2013 faces from ``split`` (without those on ``exclude``) with synthetic groups.

    Faces that repeat an earlier face of the split (exact or near copies,
    :func:`~signfer.data.duplicates.find_duplicates`) are left out first, so
    that no copy can sit in another fold than its original.
    """
    from signfer.data.duplicates import find_duplicates

    options = {"exclude": exclude} if exclude and split == "validation" else {}
    faces = load_dataset("folder", shared_path("data", "fer2013"), split=split, **options)
    copies = set(find_duplicates(faces)["path"])
    table = faces.samples[~faces.samples["path"].isin(copies)]
    rng = np.random.default_rng(seed)
    picked, _ = train_test_split(table, train_size=n, stratify=table["label"], random_state=seed)
    groups = rng.permutation(len(picked)) // group_size
    manifest = pd.DataFrame({"path": picked["path"].to_numpy(), "label": picked["label"].to_numpy(),
                             "group": [f"video{g:03d}" for g in groups]})
    out.mkdir(parents=True, exist_ok=True)
    path = out / "standin.csv"
    manifest.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- naive baseline

def _decode(paths, size, mean, std, flip_mask=None):
    xs = []
    for i, p in enumerate(paths):
        im = Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)
        if flip_mask is not None and flip_mask[i]:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        xs.append(torch.from_numpy(np.asarray(im).copy()))
    x = torch.stack(xs).permute(0, 3, 1, 2).float() / 255.0
    if mean is not None:
        x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x


@torch.no_grad()
def _predict(model, paths, size, mean, std, bs=64):
    model.eval()
    return torch.cat([model(_decode(paths[i:i + bs], size, mean, std)) for i in range(0, len(paths), bs)])


def naive_fold(spec, table, folds, fold, grid, size=224):
    """One (config, fold) the naive way; returns accuracy, images trained, seconds training."""
    paths = table.samples["path"].to_numpy()
    y = torch.tensor(table.y())
    test = np.flatnonzero(folds == fold)
    seed = fold_seed(grid.seed, fold)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    classes = list(table.classes)
    model, meta = build_model(spec.arch, classes, spec.init, size)
    model = model.to(memory_format=torch.contiguous_format)
    t = spec.techniques
    mean, std = (meta.mean, meta.std) if "ip" in t else (None, None)
    if not t:
        pred = _predict(model, paths[test], size, meta.mean, meta.std).argmax(1)
        return float((pred == y[test]).float().mean()), 0, 0.0
    cfg = spec.train
    tr, va = inner_split(table, np.flatnonzero(folds != fold), cfg.val_fraction, seed)
    w = class_weights(table.y()[tr], len(classes)) if "cw" in t else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=w)
    n_img, secs = 0, 0.0
    kept = {"acc": -1.0, "state": None}  # the best on validation over both stages, as in fit()

    def epochs(params, lr, n_epochs, frozen):
        nonlocal n_img, secs
        set_backbone_trainable(model, not frozen)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        # fit()'s schedules: constant rate for the head, one cycle for all layers
        sched = None if frozen else all_layers_scheduler(opt, cfg, len(tr))
        stage_best, stale = -1.0, 0
        for _ in range(n_epochs):
            train_mode(model)
            t0 = time.perf_counter()
            order = torch.randperm(len(tr), generator=g)
            for i in range(0, len(order), cfg.batch_size):
                idx = tr[order[i:i + cfg.batch_size].numpy()]
                flip = (torch.rand(len(idx), generator=g) < 0.5).numpy() if "hf" in t else None
                loss = loss_fn(model(_decode(paths[idx], size, mean, std, flip)), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                n_img += len(idx)
            secs += time.perf_counter() - t0
            acc = float((_predict(model, paths[va], size, mean, std).argmax(1) == y[va]).float().mean())
            if acc > kept["acc"]:
                kept.update(acc=acc, state=copy.deepcopy(model.state_dict()))
            if acc > stage_best:
                stage_best, stale = acc, 0
            else:
                stale += 1
                if stale >= cfg.patience and not frozen:
                    break
        model.load_state_dict(kept["state"])

    epochs(model.get_classifier().parameters(), cfg.head_lr, cfg.head_epochs, frozen=True)
    epochs(model.parameters(), cfg.lr, cfg.epochs, frozen=False)
    pred = _predict(model, paths[test], size, mean, std).argmax(1)
    return float((pred == y[test]).float().mean()), n_img, secs


# ---------------------------------------------------------------- main

def naive_throughput(spec, table, grid, batches: int, size: int = 224) -> float:
    """Training img/s of the naive pipeline (decode + resize + all layers), over ``batches`` batches."""
    paths = table.samples["path"].to_numpy()
    y = torch.tensor(table.y())
    model, meta = build_model(spec.arch, list(table.classes), spec.init, size)
    model = model.to(memory_format=torch.contiguous_format)
    set_backbone_trainable(model, True)
    train_mode(model)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.train.lr)
    g = torch.Generator().manual_seed(0)
    bs = spec.train.batch_size
    n, t0 = 0, None
    for b in range(batches + 1):
        if b == 1:  # the first batch warms up allocators; not timed
            t0, n = time.perf_counter(), 0
        idx = torch.randint(0, len(paths), (bs,), generator=g).numpy()
        loss = torch.nn.functional.cross_entropy(model(_decode(paths[idx], size, meta.mean, meta.std)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += bs
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_grid")
    ap.add_argument("--archs", default="mobilenetv2,efficientnet_lite0")
    ap.add_argument("--n", type=int, default=2500, help="stand-in size (2,500 is FePh's)")
    ap.add_argument("--split", default="validation", choices=["validation", "train"],
                    help="FER2013 split the stand-in is drawn from (the FER models trained on 'train')")
    ap.add_argument("--exclude", default="fer2013-validation", metavar="LIST",
                    help="leave out the validation faces on this duplicate list (default: the ones that "
                         "also occur in train); 'none' keeps them, as runs before 2026-12-02 did")
    ap.add_argument("--baseline-batches", type=int, default=8,
                    help="naive training batches timed per architecture (throughput)")
    ap.add_argument("--baseline-fits", default="",
                    help="full naive fits to run for accuracy, CONFIG:ARCH:FOLD[:SIZE], e.g. "
                         "'FT+IP+HF:mobilenetv2:0,FT+IP+HF:mobilenetv2:0:64' (SIZE defaults to 224; "
                         "a trained fit at 224 px takes about 10 min on 2 cores)")
    ap.add_argument("--smoke", action="store_true", help="1 epoch per stage: checks the script, measures nothing")
    args = ap.parse_args()
    out = Path(args.out)
    table = load_dataset("manifest", make_standin(out, n=args.n, split=args.split,
                                                exclude=None if args.exclude == "none" else args.exclude))
    grid = paper_grid(archs=tuple(args.archs.split(",")))
    if args.smoke:
        grid = named_grid("paper", archs=tuple(args.archs.split(",")), train={"epochs": 1, "head_epochs": 1})
    print(f"stand-in: {len(table.samples)} faces, {table.samples['group'].nunique()} groups; "
          f"grid: {len(grid.runs)} configurations x {grid.folds} folds", flush=True)

    t0 = time.perf_counter()
    results = run_grid(table, grid, out / "fast", dataset={"kind": "manifest", "standin": True})
    wall = time.perf_counter() - t0
    fold_seconds = results["seconds"].sum()  # = wall on a fresh --out; survives a resumed run
    print(f"\nsignfer grid: {len(results)} fits, wall {wall / 60:.1f} min this invocation, "
          f"sum of fit times {fold_seconds / 60:.1f} min", flush=True)
    fast_ips = results.groupby("arch")["train_img_per_s"].mean()
    rows = []
    archs = list(dict.fromkeys(r.arch for r in grid.runs))
    for arch in archs:
        r = results[results.arch == arch]
        rows.append([f"signfer, {arch}", f"{r['seconds'].sum() / 60:.1f} min", f"{fast_ips[arch]:.0f}",
                     f"{r['accuracy'].mean():.3f}"])
    ratios = {}
    for arch in archs:
        spec = next(s for s in grid.runs if s.arch == arch and s.techniques)
        ips = naive_throughput(spec, table, grid, args.baseline_batches)
        ratios[arch] = fast_ips[arch] / ips
        # projected naive time, training passes only: every trained fit's head epochs
        # (the naive way runs them through all layers) and the all-layer epochs it ran
        r = results[(results.arch == arch) & (results.techniques.fillna("") != "")]
        epochs_run = (r["best_epoch"] + spec.train.patience).clip(upper=spec.train.epochs)
        proj = float((r["n_train"] * (spec.train.head_epochs + epochs_run)).sum()) / ips
        rows.append([f"naive, {arch} ({args.baseline_batches} batches timed)",
                     f"projected {proj / 3600:.1f} h", f"{ips:.1f}", "-"])
    for item in filter(None, args.baseline_fits.split(",")):
        name, arch, fold, *size = item.split(":")
        size = int(size[0]) if size else 224
        spec = next(s for s in grid.runs if s.name == name and s.arch == arch)
        folds = load_or_make_folds(table, grid.folds, grid.seed, out / "fast")
        t1 = time.perf_counter()
        acc, n_img, secs = naive_fold(spec, table, folds, int(fold), grid, size=size)
        ours = results[(results.config == name) & (results.arch == arch) & (results.fold == int(fold))]
        rows.append([f"naive {name} {arch} fold {fold}, {size} px", f"{(time.perf_counter() - t1) / 60:.1f} min",
                     f"{n_img / secs:.1f}" if secs else "-", f"{acc:.3f} (signfer: {ours['accuracy'].iloc[0]:.3f})"])
    print()
    print(markdown_table(["pipeline", "time", "training img/s", "mean accuracy"], rows))
    print("\nspeed ratio (training img/s, signfer / naive): "
          + ", ".join(f"{a} {v:.0f}x" for a, v in ratios.items()))
    print(f"\ncommand: {command()}\nmachine: {machine()}")
    per = results.groupby(["config", "arch"], sort=False)["accuracy"].agg(["mean", "std"]).round(3)
    print(per.to_string())


if __name__ == "__main__":
    main()
