"""Run a grid of configurations over shared folds, resumably.

Layout of a run folder ``OUT``::

    config.yaml                 resolved grid, dataset and seed
    folds.csv                   path,label,group,fold,seed: the folds every configuration uses
    results.csv                 one row per (config, arch, fold)
    runs/<config>/<arch>/fold<k>/
        metrics.json            metrics, the run spec, seed, timings (written last: the "done" mark)
        predictions.csv         path,label,pred,prob_<class>...
        history.json            per-epoch training log

Each finished (config, fold) is written atomically; re-running the same
command skips what is done, so a killed run loses at most the fold in progress.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from signfer import __version__
from signfer.config import RunSpec, dump_yaml
from signfer.data.cache import load_images
from signfer.data.spec import dataset_crop, equalize
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.experiments.folds import inner_split, load_or_make_folds
from signfer.experiments.grid import Grid
from signfer.faces.crop import CropSpec
from signfer.io import atomic_path, read_json, write_json, write_text
from signfer.labels import require_overlap, shared_columns
from signfer.metrics import compute_metrics
from signfer.models.checkpoint import build_model, load_meta, save_checkpoint
from signfer.training.fit import fit
from signfer.training.loop import predict_logits
from signfer.training.train import choose_preprocess, equalize_mode, finetuned_meta

RESULT_COLUMNS = ["config", "arch", "fold", "accuracy", "macro_f1", "weighted_f1", "macro_recall",
                  "n_train", "n_val", "n_test", "best_epoch", "val_accuracy", "seconds",
                  "train_img_per_s", "init", "techniques", "seed"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+_.-]", "-", text)


def fold_dir(out: Path, spec: RunSpec, fold: int) -> Path:
    return Path(out) / "runs" / _slug(spec.name) / _slug(spec.arch) / f"fold{fold}"


def fold_seed(seed: int, fold: int) -> int:
    """The same for every configuration, so paired configurations share their randomness."""
    return seed * 1000 + fold


class ImageInputs:
    """Images per (input size, equalisation), and reusable per-image tensors, for one run."""

    def __init__(self, table: SampleTable, crop_faces: str | None = None, crop: CropSpec | None = None):
        self.table, self.crop_faces, self.crop = table, crop_faces, crop or CropSpec()
        self.images: dict[tuple[int, str | None], torch.Tensor] = {}
        self.features: dict = {}

    def get(self, size: int, equalize_mode: str | None) -> torch.Tensor:
        key = (size, equalize_mode)
        if key not in self.images:
            raw = load_images(self.table, size, crop_faces=self.crop_faces, crop=self.crop)
            self.images[key] = torch.from_numpy(equalize(raw, equalize_mode))
        return self.images[key]


def _zero_shot(spec: RunSpec, inputs: ImageInputs, classes: list[str], test_idx: np.ndarray) -> np.ndarray:
    """Probabilities over ``classes`` from a FER checkpoint as it is, labels mapped by name.

    Classes of the checkpoint that the dataset lacks are dropped before the
    softmax; dataset classes that the checkpoint lacks get probability 0.
    """
    if spec.init in ("random", "imagenet"):
        raise SignferError(f"{spec.name}: zero-shot evaluation needs a FER-pretrained checkpoint, "
                           f"not init {spec.init!r}")
    meta = load_meta(spec.init)
    require_overlap(meta.labels, classes)
    key = ("logits", spec.init, meta.input_size)
    if key not in inputs.features:
        model, _ = build_model(None, meta.labels, spec.init)
        prep = meta.spec
        inputs.features[key] = predict_logits(model, inputs.get(meta.input_size, prep.equalize), prep)
    logits = inputs.features[key][torch.as_tensor(test_idx)]
    keep, columns = shared_columns(meta.labels, classes)
    probs = np.zeros((len(test_idx), len(classes)), np.float32)
    probs[:, columns] = torch.softmax(logits[:, keep], 1).numpy()
    return probs


def run_fold(spec: RunSpec, fold: int, folds: np.ndarray, table: SampleTable, inputs: ImageInputs,
             grid: Grid, log: Callable[[str], None] = _log, *, keep_model: bool = False,
             command: str = "") -> dict:
    """Train and test one configuration on one fold; return its metrics dict.

    With ``keep_model`` the fine-tuned model and its checkpoint metadata are
    returned too (key ``_model``), for saving beside the fold's metrics.
    """
    classes = list(table.classes)
    y = table.y()
    test_idx = np.flatnonzero(folds == fold)
    train_side = np.flatnonzero(folds != fold)
    seed = fold_seed(grid.seed, fold)
    start = time.perf_counter()
    info: dict = {"n_train": len(train_side), "n_val": 0, "n_test": len(test_idx),
                  "best_epoch": 0, "val_accuracy": float("nan"), "train_img_per_s": float("nan")}
    history: list = []
    if not spec.techniques:
        probs = _zero_shot(spec, inputs, classes, test_idx)
        preprocessing = "checkpoint"
    else:
        torch.manual_seed(seed)
        model, meta = build_model(spec.arch, classes, spec.init, grid.input_size)
        meta.crop = inputs.crop.to_dict()
        images = inputs.get(meta.input_size, equalize_mode(spec.techniques))
        train_idx, val_idx = inner_split(table, train_side, spec.train.val_fraction, seed)
        prep, preprocessing = choose_preprocess(spec.techniques, spec.init, spec.train, meta, images, train_side)
        # features depend only on initial weights, images and preprocessing: shared
        # across folds when the statistics do not come from the fold itself
        key = (spec.init, spec.arch, meta.input_size, prep.equalize, prep.mean, prep.std)
        if spec.init == "random":  # each fold draws its own random backbone
            key += (seed,)
        result = fit(model, images, y, train_idx, val_idx, techniques=spec.techniques, cfg=spec.train,
                     preprocess=prep, seed=seed, cache=inputs.features, cache_key=key, log=log)
        logits = predict_logits(result.model, images[torch.as_tensor(test_idx)], prep)
        probs = torch.softmax(logits, 1).numpy()
        history = result.history
        if keep_model:
            model_meta = finetuned_meta(
                meta, prep, techniques=spec.techniques, cfg=spec.train, table=table, train_idx=train_idx,
                init=spec.init, val_accuracy=result.best_val_accuracy, command=command,
                training_data=f"{table.name}: fold {fold} of {grid.folds} held out; {len(train_idx)} samples "
                              f"for training, {len(val_idx)} for choosing the epoch",
                extra={"seed": seed, "fold": fold, "best_epoch": result.best_epoch,
                       "normalisation_from": preprocessing})
        info.update(n_train=len(train_idx), n_val=len(val_idx), best_epoch=result.best_epoch,
                    val_accuracy=result.best_val_accuracy, train_img_per_s=result.train_img_per_s)
    pred = probs.argmax(1)
    metrics = compute_metrics(y[test_idx], pred, classes)
    metrics.update(config=spec.name, arch=spec.arch, fold=fold, init=spec.init,
                   techniques="+".join(spec.techniques), seed=seed, preprocessing=preprocessing,
                   seconds=round(time.perf_counter() - start, 2), train=dataclasses.asdict(spec.train),
                   signfer_version=__version__, **info)
    metrics["_predictions"] = pd.DataFrame(
        {"path": table.samples["path"].to_numpy()[test_idx], "label": [classes[i] for i in y[test_idx]],
         "pred": [classes[i] for i in pred],
         **{f"prob_{c}": probs[:, j].round(5) for j, c in enumerate(classes)}})
    metrics["_history"] = history
    if keep_model and spec.techniques:
        metrics["_model"] = (result.model, model_meta)
    return metrics


def collect_results(out: Path, grid: Grid) -> pd.DataFrame:
    """results.csv rows, in grid order, from the finished folds' metrics.json."""
    rows = []
    for spec in grid.runs:
        for fold in range(grid.folds):
            path = fold_dir(out, spec, fold) / "metrics.json"
            if path.exists():
                m = read_json(path)
                rows.append({c: m.get(c) for c in RESULT_COLUMNS})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def run_grid(table: SampleTable, grid: Grid, out: str | Path, *, crop_faces: str | None = None,
             crop: CropSpec | None = None, dataset: dict | None = None, keep_models: bool = False,
             command: str = "", log: Callable[[str], None] = _log) -> pd.DataFrame:
    """Run every (configuration, fold) of ``grid`` that is not done yet; return results.

    ``crop_faces`` names the detector that cuts faces from frames (``None``:
    the images are face crops) and ``crop`` how. ``keep_models`` also saves
    each fold's fine-tuned model as a checkpoint (``model.safetensors`` +
    ``model.json`` beside its metrics, see :func:`signfer.training.train.finetune`
    for what the metadata holds); a finished fold without its model is run
    again to make it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not grid.runs:
        raise SignferError("the grid has no configuration to run")
    slugs = {}
    for spec in grid.runs:
        d = fold_dir(out, spec, 0)
        if d in slugs and slugs[d] != (spec.name, spec.arch):
            raise SignferError(f"configurations {slugs[d][0]!r} and {spec.name!r} would share the folder "
                               f"{d.parent}; rename one")
        slugs[d] = (spec.name, spec.arch)
    settings = {
        "signfer_version": __version__, "dataset": dataset or {"name": table.name},
        "n_samples": len(table.samples), "classes": list(table.classes),
        "crop_faces": crop_faces, "crop": _result_crop(crop), "folds": grid.folds, "seed": grid.seed,
        "input_size": grid.input_size, "torch_threads": torch.get_num_threads(),
        "runs": [dataclasses.asdict(r) for r in grid.runs]}
    _check_resume(out, settings)
    # folds first: a refused resume must not overwrite the run's config.yaml
    folds = load_or_make_folds(table, grid.folds, grid.seed, out)
    write_text(out / "config.yaml", dump_yaml(settings))
    # the framing of the faces only matters for the kept models (how they cut video faces)
    crop = dataset_crop(table, crop, crop_faces, seed=grid.seed, log=log) if keep_models else (crop or CropSpec())
    inputs = ImageInputs(table, crop_faces, crop)
    total = len(grid.runs) * grid.folds
    done = 0
    t0 = time.perf_counter()
    for spec in grid.runs:
        for fold in range(grid.folds):
            done += 1
            d = fold_dir(out, spec, fold)
            model_missing = keep_models and spec.techniques and not (d / "model.json").exists()
            if (d / "metrics.json").exists() and not model_missing:
                _check_same_spec(d / "metrics.json", spec)
                log(f"[{done}/{total}] {spec.name} {spec.arch} fold {fold}: done before, skipped")
                continue
            log(f"[{done}/{total}] {spec.name} {spec.arch} fold {fold} (init {spec.init})")
            m = run_fold(spec, fold, folds, table, inputs, grid, log, keep_model=keep_models, command=command)
            if "_model" in m:
                save_checkpoint(*m.pop("_model"), d / "model")
            with atomic_path(d / "predictions.csv") as tmp:
                m.pop("_predictions").to_csv(tmp, index=False)
            write_json(d / "history.json", m.pop("_history"))
            write_json(d / "metrics.json", m)  # last: marks the fold done
            _write_results(out, grid)
            log(f"    accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  "
                f"({m['seconds']:.0f} s; {time.perf_counter() - t0:.0f} s elapsed)")
    return _write_results(out, grid)


#: config.yaml settings that change results: a run folder resumes only if they
#: match. Each configuration's own settings are checked per fold
#: (:func:`_check_same_spec`); torch_threads and signfer_version may differ.
RESUME_KEYS = ("dataset", "crop_faces", "crop", "folds", "seed", "input_size", "classes", "n_samples")


def _result_crop(crop: CropSpec | None) -> dict:
    """The part of the crop spec that changes the training faces (the framing
    and detector only matter for cutting video faces with a kept model)."""
    return dataclasses.replace(crop or CropSpec(), framing=None, detector=None).to_dict()


def _check_resume(out: Path, settings: dict) -> None:
    """Refuse to resume ``out`` if its config.yaml records other result-changing settings.

    Raises:
        SignferError: naming config.yaml, the first setting that differs (a
            dataset option as ``dataset.<option>``) and its old and new value;
            or saying that config.yaml cannot be read.
    """
    path = out / "config.yaml"
    if not path.exists():
        return
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SignferError(f"{path}: unreadable ({reason}); use a new --out") from None
    if not isinstance(old, dict):
        raise SignferError(f"{path}: damaged (not a mapping of settings); use a new --out")
    new = yaml.safe_load(dump_yaml(settings))  # as config.yaml holds it: tuples are lists
    missing = object()

    def shown(value) -> str:
        return "not recorded" if value is missing else repr(value)

    # run folders made before a setting was recorded ran with its default
    recorded_later = {"crop": _result_crop(None)}
    for key in RESUME_KEYS:
        was, now, name = old.get(key, recorded_later.get(key, missing)), new.get(key), key
        if isinstance(was, dict) and isinstance(now, dict):
            option = next((k for k in sorted(was.keys() | now.keys(), key=str)
                           if was.get(k, missing) != now.get(k, missing)), None)
            if option is not None:
                was, now, name = was.get(option, missing), now.get(option, missing), f"{key}.{option}"
        if was != now:
            raise SignferError(f"{path}: {name} was {shown(was)}, now {shown(now)}; resuming would mix "
                               "results of other settings: use a new --out (or the old settings)")


def _check_same_spec(path: Path, spec: RunSpec) -> None:
    """A finished fold is reused only if it ran the same configuration."""
    m = read_json(path)
    was = (m.get("init"), m.get("techniques"), m.get("train"))
    now = (spec.init, "+".join(spec.techniques), dataclasses.asdict(spec.train))
    if was != now:
        raise SignferError(
            f"{path} was made with other settings for {spec.name!r} ({spec.arch}); "
            f"use a new --out or another configuration name")


def _write_results(out: Path, grid: Grid) -> pd.DataFrame:
    results = collect_results(out, grid)
    with atomic_path(out / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    return results
