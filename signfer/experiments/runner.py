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
import functools
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from signfer import __version__, progress
from signfer.config import RunSpec, TrainConfig, dump_yaml
from signfer.data.cache import load_images
from signfer.data.spec import check_align, dataset_crop, equalize
from signfer.data.table import SampleTable
from signfer.errors import SignferError, first_line
from signfer.experiments.executors import LocalExecutor, Resources
from signfer.experiments.folds import check_splittable, inner_split, load_or_make_folds
from signfer.experiments.grid import Grid
from signfer.faces.crop import CropSpec
from signfer.io import (
    atomic_path,
    check_out_files,
    ensure_out_dir,
    read_json,
    write_json,
    write_text,
)
from signfer.labels import require_overlap, shared_columns
from signfer.metrics import compute_metrics
from signfer.models.checkpoint import build_model, check_init, load_meta, save_checkpoint
from signfer.training.fit import fit, frozen_features
from signfer.training.loop import predict_logits, predict_proba
from signfer.training.train import choose_preprocess, equalize_mode, finetuned_meta

RESULT_COLUMNS = ["config", "arch", "fold", "accuracy", "macro_f1", "weighted_f1", "macro_recall",
                  "n_train", "n_val", "n_test", "best_epoch", "val_accuracy", "seconds",
                  "train_img_per_s", "init", "techniques", "seed"]


def _log(msg: str) -> None:
    progress.echo(msg)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+_.-]", "-", text)


def fold_dir(out: Path, spec: RunSpec, fold: int) -> Path:
    return _fold_dir(out, spec.name, spec.arch, fold)


def _fold_dir(out: Path, name: str, arch: str, fold: int) -> Path:
    return Path(out) / "runs" / _slug(name) / _slug(arch) / f"fold{fold}"


def fold_seed(seed: int, fold: int) -> int:
    """The same for every configuration, so paired configurations share their randomness.

    Kept below 2**32, which numpy and scikit-learn require of a seed.
    """
    return (seed * 1000 + fold) % 2**32


class ImageInputs:
    """Images per (input size, equalisation, face cutting), and reusable per-image tensors, for one run."""

    def __init__(self, table: SampleTable, crop_faces: str | None = None, crop: CropSpec | None = None):
        self.table, self.crop_faces, self.crop = table, crop_faces, crop or CropSpec()
        self.images: dict[tuple, torch.Tensor] = {}
        self.features: dict = {}

    def faces(self, spec: RunSpec) -> tuple[str | None, CropSpec]:
        """How ``spec``'s faces are cut: its own detector and crop, else the run's."""
        return spec.crop_faces or self.crop_faces, spec.crop or self.crop

    def get(self, size: int, equalize_mode: str | None, faces: tuple[str | None, CropSpec] | None = None
            ) -> torch.Tensor:
        crop_faces, crop = faces or (self.crop_faces, self.crop)
        key = (size, equalize_mode, crop_faces, crop)
        if key not in self.images:
            raw = load_images(self.table, size, crop_faces=crop_faces, crop=crop)
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
    keep, columns = shared_columns(meta.labels, classes)
    probs = np.zeros((len(test_idx), len(classes)), np.float32)
    for flip in (False, True) if spec.train.tta else (False,):
        key = ("logits", spec.init, meta.input_size, flip, inputs.faces(spec))
        if key not in inputs.features:
            model, _ = build_model(None, meta.labels, spec.init)
            prep = meta.spec
            images = inputs.get(meta.input_size, prep.equalize, inputs.faces(spec))
            inputs.features[key] = predict_logits(model, images, prep,
                                                  flip=flip)
        logits = inputs.features[key][torch.as_tensor(test_idx)]
        probs[:, columns] += torch.softmax(logits[:, keep], 1).numpy()
    return probs / (2 if spec.train.tta else 1)


def _fit_inputs(spec: RunSpec, seed: int, train_side: np.ndarray, inputs: ImageInputs, grid: Grid):
    """What a fit of ``spec`` starts from: ``(model, meta, images, preprocess, where its
    statistics came from, the key of its backbone features in inputs.features)``."""
    torch.manual_seed(seed)
    model, meta = build_model(spec.arch, list(inputs.table.classes), spec.init, grid.input_size)
    faces = inputs.faces(spec)
    detector, crop = faces
    if detector is None and crop.framing is None and inputs.crop.framing is not None:
        # a configuration's own crop of the same pre-cropped images: their
        # framing, measured for the run, is its model's too
        crop = dataclasses.replace(crop, framing=inputs.crop.framing, detector=inputs.crop.detector)
    meta.crop = dataclasses.replace(crop, detector=detector or crop.detector).to_dict()
    images = inputs.get(meta.input_size, equalize_mode(spec.techniques), faces)
    prep, preprocessing = choose_preprocess(spec.techniques, spec.init, spec.train, meta, images, train_side)
    # features depend only on initial weights, images and preprocessing: shared
    # across folds when the statistics do not come from the fold itself
    key = (spec.init, spec.arch, meta.input_size, prep.equalize, prep.mean, prep.std, faces)
    if spec.init == "random":  # each fold draws its own random backbone
        key += (seed,)
    return model, meta, images, prep, preprocessing, key


def share_inputs(inputs: ImageInputs, specs, folds: np.ndarray, grid: Grid) -> None:
    """Fill ``inputs`` with every image array and every fold-independent backbone
    feature (or zero-shot logits) that fits of ``specs`` will read.

    Locally these are made on first use; before fits run as Ray tasks they are
    made here, once, so that every task reads the same copy from the object
    store instead of each computing its own. Features that depend on the fold
    (a random init's backbone, training-side normalisation) are left to the fits.
    """
    classes = list(inputs.table.classes)
    train_side = np.flatnonzero(folds != 0)
    for spec in dict.fromkeys(specs):
        if not spec.techniques:
            _zero_shot(spec, inputs, classes, np.zeros(0, dtype=int))
            continue
        model, _, images, prep, preprocessing, key = _fit_inputs(spec, fold_seed(grid.seed, 0), train_side,
                                                                 inputs, grid)
        if spec.init != "random" and preprocessing != "train":
            frozen_features(model, images, prep, spec.techniques, inputs.features, key)


def run_fold(spec: RunSpec, fold: int, folds: np.ndarray, table: SampleTable, inputs: ImageInputs,
             grid: Grid, log: Callable[[str], None] = _log, *, keep_model: bool = False,
             command: str = "", out: Path | None = None) -> dict:
    """Train and test one configuration on one fold; return its metrics dict.

    With ``keep_model`` the fine-tuned model and its checkpoint metadata are
    returned too (key ``_model``), for saving beside the fold's metrics. With
    the run folder ``out``, the fit saves its state in the fold's folder
    (:data:`FIT_STATE`) as it goes, and resumes from there after a kill.
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
        model, meta, images, prep, preprocessing, key = _fit_inputs(spec, seed, train_side, inputs, grid)
        train_idx, val_idx = inner_split(table, train_side, spec.train.val_fraction, seed, log=log)
        result = fit(model, images, y, train_idx, val_idx, techniques=spec.techniques, cfg=spec.train,
                     preprocess=prep, seed=seed, cache=inputs.features, cache_key=key, log=log,
                     state_path=None if out is None else fold_dir(out, spec, fold) / FIT_STATE)
        probs = predict_proba(result.model, images[torch.as_tensor(test_idx)], prep, tta=spec.train.tta)
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
                   signfer_version=__version__, **_faces_record(spec), **info)
    metrics["_predictions"] = pd.DataFrame(
        {"path": table.samples["path"].to_numpy()[test_idx], "label": [classes[i] for i in y[test_idx]],
         "pred": [classes[i] for i in pred],
         **{f"prob_{c}": probs[:, j].round(5) for j, c in enumerate(classes)}})
    metrics["_history"] = history
    if keep_model and spec.techniques:
        metrics["_model"] = (result.model, model_meta)
    return metrics


def collect_results(out: Path, grid: Grid, earlier: Sequence[dict] = ()) -> pd.DataFrame:
    """results.csv rows from the finished folds' metrics.json: first those of
    ``earlier`` (config.yaml's records of configurations run before in this
    folder), then the grid's, each in order."""
    rows = []
    names = [(r["name"], r["arch"]) for r in earlier] + [(spec.name, spec.arch) for spec in grid.runs]
    for name, arch in names:
        for fold in range(grid.folds):
            path = _fold_dir(out, name, arch, fold) / "metrics.json"
            if path.exists():
                m = read_fold_metrics(path)
                rows.append({c: m.get(c) for c in RESULT_COLUMNS})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


#: What a finished fold holds; metrics.json is written last and marks it done.
FOLD_FILES = ("predictions.csv", "history.json", "metrics.json")
#: A fold's unfinished fit (see :func:`signfer.training.fit.fit`), removed once the fold is done.
FIT_STATE = "fit_state.pt"


def read_fold_metrics(path: Path) -> dict:
    """A finished fold's metrics.json, or a one-line error naming it when it is damaged."""
    try:
        m = read_json(path)
    except (OSError, ValueError) as e:
        raise SignferError(f"{path}: damaged fold result ({first_line(e)}); re-run with --redo-damaged "
                           "to run the fold again") from None
    if not isinstance(m, dict):
        raise SignferError(f"{path}: damaged fold result (not a JSON object); re-run with --redo-damaged")
    return m


def fold_damage(d: Path) -> tuple[Path, str] | None:
    """The first damaged file of fold folder ``d`` and what is wrong with it, or ``None``.

    A fold is done when metrics.json, predictions.csv and history.json are
    all there and readable, and predictions.csv has a row per test sample.
    Without metrics.json (written last) the fold never finished: it is simply
    run again, and what it left is overwritten, so that is no damage.
    """
    metrics_path = d / "metrics.json"
    if not metrics_path.exists() and not metrics_path.is_symlink():
        return None
    try:
        m = read_json(metrics_path)
    except (OSError, ValueError) as e:
        return metrics_path, f"unreadable ({first_line(e)})"
    missing = [k for k in ("accuracy", "n_test", "config", "fold") if not isinstance(m, dict) or k not in m]
    if missing:
        return metrics_path, f"incomplete (no {', '.join(missing)})"
    path = d / "predictions.csv"
    try:
        pred = pd.read_csv(path)
    except FileNotFoundError:
        return path, "missing (the fold's metrics.json is there)"
    except (OSError, ValueError) as e:
        return path, f"unreadable ({first_line(e)})"
    if not {"path", "label", "pred"} <= set(pred.columns) or len(pred) != m["n_test"]:
        return path, f"incomplete ({len(pred)} rows for {m['n_test']} test samples)"
    path = d / "history.json"
    try:
        history = read_json(path)
    except FileNotFoundError:
        return path, "missing (the fold's metrics.json is there)"
    except (OSError, ValueError) as e:
        return path, f"unreadable ({first_line(e)})"
    if not isinstance(history, list):
        return path, "damaged (not a list of epochs)"
    return None


def _handle_damaged(out: Path, grid: Grid, redo: bool, log: Callable[[str], None]) -> None:
    """Refuse a run folder with a damaged fold, naming the file; with ``redo``, remove
    the damaged folds' results so that they run again."""
    damaged = [(spec, fold, *bad) for spec in grid.runs for fold in range(grid.folds)
               if (bad := fold_damage(fold_dir(out, spec, fold)))]
    if not damaged:
        return
    if not redo:
        _, _, path, why = damaged[0]
        more = f" (and {len(damaged) - 1} more damaged folds)" if len(damaged) > 1 else ""
        raise SignferError(f"{path}: {why}{more}; re-run with --redo-damaged to run damaged folds again")
    for spec, fold, path, why in damaged:
        d = fold_dir(out, spec, fold)
        log(f"{path}: {why}; {spec.name} {spec.arch} fold {fold} runs again (--redo-damaged)")
        for name in reversed(FOLD_FILES):  # metrics.json first: the fold is then simply not done
            target = d / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)


def run_grid(table: SampleTable, grid: Grid, out: str | Path, *, crop_faces: str | None = None,
             crop: CropSpec | None = None, dataset: dict | None = None, keep_models: bool = False,
             command: str = "", redo_damaged: bool = False, log: Callable[[str], None] = _log,
             executor=None, resources: Resources | None = None) -> pd.DataFrame:
    """Run every (configuration, fold) of ``grid`` that is not done yet; return results.

    ``crop_faces`` names the detector that cuts faces from frames (``None``:
    the images are face crops) and ``crop`` how. ``keep_models`` also saves
    each fold's fine-tuned model as a checkpoint (``model.safetensors`` +
    ``model.json`` beside its metrics, see :func:`signfer.training.train.finetune`
    for what the metadata holds); a finished fold without its model is run
    again to make it.

    A damaged run folder (a fold with metrics.json but an unreadable or
    missing result file, see :func:`fold_damage`, or an unreadable folds.csv)
    is refused naming the file; ``redo_damaged`` runs those folds (and makes
    the folds, from the same seed) again.

    ``executor`` runs the fits (:mod:`signfer.experiments.executors`; default
    one after another in this process): with a Ray executor each (config,
    arch, fold) is one task declaring ``resources``, the images and the
    fold-independent backbone features are made here once and shared through
    the object store, and each result is written here as it arrives, so the
    run folder is the same as a local run's (timings aside, and the last digits
    where a task uses another number of threads than the local run) and a
    killed driver resumes as a local run does.
    """
    out = Path(out)
    # what can be refused without the folder, before it is made
    if not grid.runs:
        raise SignferError("the grid has no configuration to run")
    check_splittable(table, grid.folds)
    check_align(crop, crop_faces)
    for arch, init in dict.fromkeys((spec.arch, spec.init) for spec in grid.runs):
        check_init(arch, init)
    for spec in grid.runs:
        if spec.crop is not None:
            check_align(spec.crop, spec.crop_faces or crop_faces, f"configuration {spec.name!r}: align")
    # every output can be written before anything is trained
    ensure_out_dir(out, "run folder")
    check_out_files([out / name for name in ("config.yaml", "folds.csv", "results.csv", "results.md")])
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
    recorded = _check_resume(out, settings)
    # Configurations run before in this folder, on the same folds, stay in its
    # config.yaml and results.csv beside this grid's.
    earlier = _earlier_runs(recorded, grid)
    if earlier:
        log(f"{out}: results.csv also keeps {len(earlier)} configuration(s) run here before")
    settings["runs"] = [*earlier, *settings["runs"]]
    folds = load_or_make_folds(table, grid.folds, grid.seed, out, redo_damaged=redo_damaged, log=log)
    _handle_damaged(out, grid, redo_damaged, log)
    # the framing of the faces only matters for the kept models (how they cut video faces)
    crop = dataset_crop(table, crop, crop_faces, seed=grid.seed, log=log) if keep_models else (crop or CropSpec())
    inputs = ImageInputs(table, crop_faces, crop)
    total = len(grid.runs) * grid.folds
    jobs, numbers = [], []  # the (config, fold)s still to run, and their place in the grid
    for k, spec in enumerate(grid.runs):
        for fold in range(grid.folds):
            d = fold_dir(out, spec, fold)
            number = k * grid.folds + fold + 1
            model_missing = keep_models and spec.techniques and not (d / "model.json").exists()
            if (d / "metrics.json").exists() and not model_missing:  # and not damaged: see above
                _check_same_spec(d / "metrics.json", spec)
                (d / FIT_STATE).unlink(missing_ok=True)  # left by a kill just after the fold was done
                log(f"[{number}/{total}] {spec.name} {spec.arch} fold {fold}: done before, skipped")
                continue
            jobs.append((spec, fold))
            numbers.append(number)
    # only now: a refused resume (above) must not overwrite the run's config.yaml
    write_text(out / "config.yaml", _annotated(dump_yaml(settings)))
    executor = executor or LocalExecutor()
    if executor.name == "local":
        fold_log = progress.detail(log)
    else:  # each fit in its own process: the shared inputs are made here, once
        share_inputs(inputs, [spec for spec, _ in jobs], folds, grid)
        fold_log = _print_line if progress.details_enabled() else _silent

    def starting(i: int) -> None:
        spec, fold = jobs[i]
        log(f"[{numbers[i]}/{total}] {spec.name} {spec.arch} fold {fold} (init {spec.init})")

    fn = functools.partial(run_fold, log=fold_log, keep_model=keep_models, command=command, out=out)
    shared = {"folds": folds, "table": table, "inputs": inputs, "grid": grid}
    t0 = time.perf_counter()
    with progress.bar(total=total, initial=total - len(jobs), desc="fits", unit="fit") as bar:
        for i, m, _ in executor.run(fn, jobs, shared=shared, resources=resources, on_start=starting):
            spec, fold = jobs[i]
            d = fold_dir(out, spec, fold)
            if "_model" in m:
                save_checkpoint(*m.pop("_model"), d / "model")
            with atomic_path(d / "predictions.csv") as tmp:
                m.pop("_predictions").to_csv(tmp, index=False)
            write_json(d / "history.json", m.pop("_history"))
            write_json(d / "metrics.json", m)  # last: marks the fold done
            (d / FIT_STATE).unlink(missing_ok=True)
            _write_results(out, grid, earlier)
            which = "" if executor.name == "local" else f"[{numbers[i]}/{total}] {spec.name} {spec.arch} fold {fold}: "
            log(f"    {which}accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  "
                f"({m['seconds']:.0f} s; {time.perf_counter() - t0:.0f} s elapsed)")
            bar.update()
    _write_results(out, grid, earlier)
    return collect_results(out, grid)


def _annotated(config_yaml: str) -> str:
    """config.yaml's text with a note on the setting that is easy to misread."""
    return re.sub(r"^(input_size: \d+)$", r"\1  # of ImageNet and random inits; a checkpoint brings its own",
                  config_yaml, count=1, flags=re.M)


def _print_line(msg: str) -> None:  # a fit's log line from a Ray worker (Ray forwards its stderr)
    print(msg, file=sys.stderr, flush=True)


def _silent(msg: str) -> None:
    pass


#: config.yaml settings that change results: a run folder resumes only if they
#: match. Each configuration's own settings are checked per fold
#: (:func:`_check_same_spec`); torch_threads and signfer_version may differ.
RESUME_KEYS = ("dataset", "crop_faces", "crop", "folds", "seed", "input_size", "classes", "n_samples")


def _result_crop(crop: CropSpec | None) -> dict:
    """The part of the crop spec that changes the training faces (the framing
    and detector only matter for cutting video faces with a kept model)."""
    return dataclasses.replace(crop or CropSpec(), framing=None, detector=None).to_dict()


def _check_resume(out: Path, settings: dict) -> dict:
    """Refuse to resume ``out`` if its config.yaml records other result-changing settings.

    Returns:
        The settings config.yaml holds (empty when there is none yet).

    Raises:
        SignferError: naming config.yaml, the first setting that differs (a
            dataset option as ``dataset.<option>``) and its old and new value;
            or saying that config.yaml cannot be read.
    """
    path = out / "config.yaml"
    if not path.exists():
        return {}
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SignferError(f"{path}: unreadable ({first_line(e)}); use a new --out") from None
    if not isinstance(old, dict):
        raise SignferError(f"{path}: damaged (not a mapping of settings); use a new --out")
    new = yaml.safe_load(dump_yaml(settings))  # as config.yaml holds it: tuples are lists
    missing = object()

    def shown(value) -> str:
        return "not recorded" if value is missing else repr(value)

    # run folders made before a setting was recorded ran with its default
    recorded_later = {"crop": _result_crop(None)}
    # the input size matters only to fits from ImageNet or random weights (a checkpoint brings its own)
    runs = [r for r in [*(old.get("runs") or []), *(new.get("runs") or [])] if isinstance(r, dict)]
    sized = any(r.get("init") in ("imagenet", "random") and r.get("techniques") for r in runs)
    for key in RESUME_KEYS:
        if key == "input_size" and not sized:
            continue
        was, now, name = old.get(key, recorded_later.get(key, missing)), new.get(key), key
        if isinstance(was, dict) and isinstance(now, dict):
            option = next((k for k in sorted(was.keys() | now.keys(), key=str)
                           if was.get(k, missing) != now.get(k, missing)), None)
            if option is not None:
                was, now, name = was.get(option, missing), now.get(option, missing), f"{key}.{option}"
        if was != now:
            raise SignferError(f"{path}: {name} was {shown(was)}, now {shown(now)}; resuming would mix "
                               "results of other settings: use a new --out (or the old settings)")
    return old


def _check_same_spec(path: Path, spec: RunSpec) -> None:
    """A finished fold is reused only if it ran the same configuration."""
    m = read_fold_metrics(path)
    was = (m.get("init"), m.get("techniques"), recorded_train(m), m.get("faces"))
    now = (spec.init, "+".join(spec.techniques), dataclasses.asdict(spec.train), _faces_record(spec).get("faces"))
    if was != now:
        raise SignferError(
            f"{path} was made with other settings for {spec.name!r} ({spec.arch}); "
            f"use a new --out or another configuration name")


def _faces_record(spec: RunSpec) -> dict:
    """A configuration's own face cutting, for its metrics.json (nothing when it has none)."""
    if spec.crop_faces is None and spec.crop is None:
        return {}
    return {"faces": {"crop_faces": spec.crop_faces, "crop": spec.crop.to_dict() if spec.crop else None}}


def recorded_train(metrics: dict) -> dict | None:
    """A finished fold's training settings; settings added to TrainConfig since
    it ran take their defaults (which are what it ran with)."""
    if not isinstance(metrics.get("train"), dict):
        return None
    return {**dataclasses.asdict(TrainConfig()), **metrics["train"]}


def _write_results(out: Path, grid: Grid, earlier: Sequence[dict] = ()) -> None:
    results = collect_results(out, grid, earlier)
    with atomic_path(out / "results.csv") as tmp:
        results.to_csv(tmp, index=False)


def _earlier_runs(recorded: dict, grid: Grid) -> list[dict]:
    """The records, in a run folder's config.yaml settings ``recorded`` (as
    :func:`_check_resume` read and matched them), of the configurations run
    before that ``grid`` does not run again (by name and architecture)."""
    old = recorded.get("runs") or []
    now = {(spec.name, spec.arch) for spec in grid.runs}
    return [r for r in old if isinstance(r, dict) and isinstance(r.get("name"), str)
            and isinstance(r.get("arch"), str) and (r["name"], r["arch"]) not in now]
