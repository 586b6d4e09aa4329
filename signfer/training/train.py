"""``finetune``: fit one configuration on a whole dataset and save the model as a checkpoint.

Cross-validation (:mod:`signfer.experiments.runner`) says how well a recipe
works; this makes the model that is then used: the same fit, on all the data,
saved with everything needed to use it (labels, the preprocessing spec with the
crop that matches its training faces, techniques, training settings, a
fingerprint of the samples, the parent model and the command).

How long to train is chosen either

* on an inner validation part carved from the data, grouped and stratified as
  in ``cv`` (the default; the model then trains on the other ~85 %), or
* from a finished ``cv``/``grid`` run of the same configuration
  (``epochs_from``): the median best epoch over its folds, trained on all
  samples with the schedule the folds used; that run's mean ± sd accuracy
  goes into the metadata.

Example:
    >>> table = load_dataset("feph", "~/data/FePh")  # doctest: +SKIP
    >>> finetune(table, "models/feph-mnv2", techniques="ft,ip,hf")  # doctest: +SKIP
    PosixPath('models/feph-mnv2')
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from signfer import __version__
from signfer.config import RunSpec, TrainConfig, from_dict, parse_techniques, technique_label
from signfer.data.cache import load_images
from signfer.data.spec import PreprocessSpec, dataset_crop, equalize
from signfer.data.table import SampleTable, fingerprint
from signfer.errors import SignferError
from signfer.experiments.folds import inner_split
from signfer.faces.crop import CropSpec
from signfer.io import check_out_files
from signfer.models.checkpoint import (
    IMAGENET_INPUT_SIZE,
    ModelMeta,
    build_model,
    check_input_size,
    checkpoint_files,
    load_meta,
    provenance,
    save_checkpoint,
)
from signfer.training.fit import fit
from signfer.training.preprocess import channel_stats
from signfer.training.recipes import preset, preset_init


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fit_state_path(out: str | Path) -> Path:
    """Where ``finetune(..., out)`` keeps its unfinished fit, so that the same command resumes it
    (``out`` named with or without ``.safetensors``/``.json``: the same file)."""
    weights, _ = checkpoint_files(out)
    return weights.with_name(weights.name[: -len(".safetensors")] + ".fit_state.pt")


def equalize_mode(techniques: tuple[str, ...]) -> str | None:
    """The histogram equalisation that ``techniques`` ask for (``he``: luminance, ``hec``: each channel)."""
    return "luma" if "he" in techniques else "rgb" if "hec" in techniques else None


def choose_preprocess(techniques: tuple[str, ...], init: str, cfg: TrainConfig, meta: ModelMeta,
                      images: torch.Tensor, train_idx: np.ndarray) -> tuple[PreprocessSpec, str]:
    """The spec a fit feeds its model, and where its statistics came from.

    Without ``ip`` the pixels go in as [0, 1]; with it, the checkpoint's
    mean/std, or (``norm_stats=train``, or a random init) statistics of
    ``images[train_idx]``: the training side only.
    """
    base = dict(size=meta.input_size, equalize=equalize_mode(techniques), crop=CropSpec.from_dict(meta.crop))
    if "ip" not in techniques:
        return PreprocessSpec(**base), "none"
    if init != "random" and cfg.norm_stats == "checkpoint":
        return PreprocessSpec(tuple(meta.mean), tuple(meta.std), **base), "checkpoint"
    mean, std = channel_stats(images[torch.as_tensor(train_idx)].numpy())
    return PreprocessSpec(mean, std, **base), "train"


def finetuned_meta(meta: ModelMeta, prep: PreprocessSpec, *, techniques: tuple[str, ...], cfg: TrainConfig,
                   table: SampleTable, train_idx: np.ndarray, init: str, training_data: str,
                   val_accuracy: float | None, command: str, extra: dict | None = None) -> ModelMeta:
    """The metadata of a fine-tuned model: what it needs to be used, and how it was made."""
    trained_on = SampleTable(table.samples.iloc[np.sort(train_idx)], name=table.name, classes=table.classes)
    return ModelMeta(
        arch=meta.arch, input_size=meta.input_size, labels=list(table.classes),
        mean=list(prep.mean or meta.mean), std=list(prep.std or meta.std), normalize=prep.mean is not None,
        equalize=prep.equalize or False, crop=prep.crop.to_dict(), techniques=list(techniques), tta=cfg.tta,
        config=dataclasses.asdict(cfg), training_data=training_data,
        val_accuracy=None if val_accuracy is None or val_accuracy != val_accuracy else round(float(val_accuracy), 4),
        command=command, data_fingerprint=fingerprint(trained_on), signfer_version=__version__,
        extra={**({"init_from": parent} if (parent := provenance(init)) else {}), **(extra or {})},
    )


def check_same_dataset(run: str | Path, table: SampleTable) -> None:
    """Refuse a cv/grid run made on other data: its epochs and its score would
    not be this model's, and a run on the faces the model is later tested on
    would choose its length on them.

    The run's folds.csv must list the same faces in the same order with the
    same labels (paths compared below their common folder, so a moved dataset
    still matches).
    """
    from signfer.experiments.folds import first_other_sample, read_folds

    try:
        saved = read_folds(run)
    except SignferError as e:
        raise SignferError(f"--epochs-from: {e}") from None
    other = first_other_sample(saved, table.samples)
    if other is not None:
        raise SignferError(f"{Path(run) / 'folds.csv'}: the run cross-validated other faces than these "
                           f"({other}); --epochs-from takes a run on the same data")


def epochs_from_run(run: str | Path, *, arch: str, init: str | None, techniques: tuple[str, ...],
                    cfg: TrainConfig | None) -> dict:
    """The number of epochs a finished cv/grid run chose for this configuration.

    Reads each fold's ``metrics.json`` under ``run/runs/``; the folds of the
    same architecture, init, techniques and training settings count (``init``
    or ``cfg`` None: whatever the run used, if its matching folds agree).
    Returns ``{"epochs": median best epoch, "accuracy_mean", "accuracy_sd",
    "folds", "run", "init", "train": the settings}``.
    """
    from signfer.experiments.runner import read_fold_metrics, recorded_train

    run = Path(run)
    files = sorted(run.glob("runs/*/*/fold*/metrics.json"))
    if not files:
        raise SignferError(f"{run}: no finished folds (runs/*/*/fold*/metrics.json); "
                           "--epochs-from takes a cv or grid run folder")
    wanted = {"arch": arch, "techniques": "+".join(techniques), **({"init": init} if init else {})}
    if cfg is not None:
        wanted["train"] = dataclasses.asdict(cfg)
    rows, seen = [], set()
    for f in files:
        m = read_fold_metrics(f)
        seen.add(f"{m.get('config')} ({m.get('arch')}, init {m.get('init')})")
        if all((recorded_train(m) if k == "train" else m.get(k)) == v for k, v in wanted.items()):
            for key, kind in (("best_epoch", int), ("accuracy", (int, float))):
                if isinstance(m.get(key), bool) or not isinstance(m.get(key), kind):
                    raise SignferError(f"{f}: damaged fold result ({key} is {m.get(key)!r}); re-run the "
                                       "cv or grid command with --redo-damaged")
            rows.append(m)
    if not rows:
        raise SignferError(
            f"{run}: no finished fold ran {technique_label(techniques)} on {arch} from {init or 'any init'} with these "
            f"training settings; the run has: {', '.join(sorted(seen))} (train's settings must equal the "
            "run's: `signfer train` uses --preset accurate unless told, `cv` --preset fast)")
    inits = sorted({str(r.get("init")) for r in rows})
    if len(inits) > 1:
        raise SignferError(f"{run}: {technique_label(techniques)} on {arch} ran from {len(inits)} inits "
                           f"({', '.join(inits)}); choose one with --init")
    settings = {json.dumps(recorded_train(r), sort_keys=True) for r in rows}
    if len(settings) > 1:
        raise SignferError(f"{run}: {technique_label(techniques)} on {arch} ran with {len(settings)} different "
                           "training settings; choose one with --preset / --set")
    acc = np.array([r["accuracy"] for r in rows], float)
    return {"run": str(run.resolve()), "folds": len(rows), "init": inits[0], "train": recorded_train(rows[0]),
            # half up: folds that chose 0 and 1 give 1, not numpy's round-half-to-even 0
            "epochs": int(np.floor(np.median([r["best_epoch"] for r in rows]) + 0.5)),
            "accuracy_mean": round(float(acc.mean()), 4),
            "accuracy_sd": round(float(acc.std(ddof=1)), 4) if len(acc) > 1 else float("nan")}


def finetune(
    table: SampleTable,
    out: str | Path,
    *,
    arch: str | None = None,
    init: str | None = None,
    techniques: str | tuple[str, ...] = ("ft", "hf", "ip"),
    train: TrainConfig | None = None,
    seed: int = 0,
    input_size: int | None = None,
    crop: CropSpec | None = None,
    crop_faces: str | None = None,
    epochs_from: str | Path | None = None,
    preset_name: str | None = None,
    command: str = "",
    log: Callable[[str], None] = _log,
) -> Path:
    """Fine-tune one configuration on all of ``table`` and save it; return the checkpoint stem.

    Args:
        table: the samples.
        out: checkpoint path: ``out.safetensors`` and ``out.json`` are written.
        arch: architecture; default: the init checkpoint's, else mobilenetv2.
        init: 'imagenet', 'random', a built-in model or a checkpoint; default:
            the preset's start for ``arch`` (:func:`~signfer.training.recipes.preset_init`:
            the accurate preset starts from the 160 px FER models), or with
            ``epochs_from`` the init that run used.
        techniques: as in ``cv`` (must contain ``ft`` or ``head``).
        train: training settings, or a dict of overrides of the ``accurate``
            preset's; default: that preset (:mod:`signfer.training.recipes`),
            or with ``epochs_from`` the settings that run used.
        preset_name: the preset ``train`` came from, for the default init
            (``None``: ``accurate``, unless ``epochs_from`` is given).
        seed: fixes the inner split and the training randomness.
        input_size: for ImageNet and random inits (a checkpoint brings its own).
        crop: margin, alignment and region of the faces (see ``dataset_crop``).
        crop_faces: the images are frames: detect and cut the face with this detector.
        epochs_from: a finished cv/grid run folder (see :func:`epochs_from_run`).
        command: the command line, for the metadata.
    """
    t = parse_techniques(techniques)
    if not set(t) & {"ft", "head"}:
        raise SignferError("train needs 'ft' or 'head' among the techniques (no-FT has nothing to train)")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise SignferError(f"seed must be a whole number in [0, 2**32), got {seed!r}")
    if input_size is not None and not (isinstance(input_size, int) and input_size >= 16):
        raise SignferError(f"input_size must be >= 16 (pixels), got {input_size!r}")
    if isinstance(train, dict):  # overrides of the preset's settings, as cross_validate takes them
        train = preset("accurate", train, where="train")
    # with --epochs-from, the run's own settings unless others are given
    cfg = train or (None if epochs_from else preset("accurate"))
    check_out_files([*checkpoint_files(out), fit_state_path(out)], "checkpoint")  # before any work
    arch = arch or ("mobilenetv2" if init in (None, "imagenet", "random") else None)
    if init is None and not (epochs_from and preset_name is None):
        init = preset_init(preset_name or "accurate", arch)
    started = time.perf_counter()
    if init is not None:  # with --epochs-from alone, checked below once the run's init is known
        check_input_size(input_size, [init])
    if arch is None:  # the init checkpoint's
        arch = load_meta(init).arch
    # the run folder first: a wrong one should fail before any work is done
    if epochs_from:
        check_same_dataset(epochs_from, table)
    chosen = epochs_from_run(epochs_from, arch=arch, init=init, techniques=t, cfg=cfg) if epochs_from else None
    if init is None:
        init = chosen["init"]
        check_input_size(input_size, [init])
    if cfg is None:
        cfg = from_dict(TrainConfig, chosen["train"], f"{epochs_from}: train")
    if chosen and chosen["epochs"] == 0 and ("head" in t or cfg.head_epochs == 0):
        raise SignferError(f"{epochs_from}: its folds chose epoch 0 (the starting model, before any "
                           "training), so train would train nothing and a new head would stay random; "
                           "cross-validate with more epochs (or head_epochs > 0) first")
    RunSpec("train", arch, init, t, cfg)  # checks the settings against the techniques (e.g. shift with head)
    crop = dataset_crop(table, crop, crop_faces, seed=seed, log=log)
    torch.manual_seed(seed)
    model, meta = build_model(arch, list(table.classes), init,
                              IMAGENET_INPUT_SIZE if input_size is None else input_size)
    meta.crop = crop.to_dict()
    raw = load_images(table, meta.input_size, crop_faces=crop_faces, crop=crop)
    images = torch.from_numpy(equalize(raw, equalize_mode(t)))
    y = table.y()
    everything = np.arange(len(y))
    if chosen:
        train_idx, val_idx = everything, everything[:0]
        how = (f"{chosen['epochs']} epochs, the median best epoch of {chosen['folds']} folds of "
               f"{chosen['run']} (accuracy {chosen['accuracy_mean']:.3f} ± {chosen['accuracy_sd']:.3f})")
    else:
        train_idx, val_idx = inner_split(table, everything, cfg.val_fraction, seed, log=log)
        how = f"epoch chosen on an inner validation part of {len(val_idx)} samples (grouped, stratified)"
    log(f"train {technique_label(t)} {arch} from {init} on {table.name}: {len(train_idx)} samples, "
        f"{meta.input_size}px; {how}")
    prep, stats_from = choose_preprocess(t, init, cfg, meta, images, train_idx)
    state_path = fit_state_path(out)
    result = fit(model, images, y, train_idx, val_idx, techniques=t, cfg=cfg, preprocess=prep, seed=seed,
                 epochs=chosen["epochs"] if chosen else None, log=log, state_path=state_path)
    extra = {"seed": seed, "best_epoch": result.best_epoch, "normalisation_from": stats_from,
             "history": result.history, "seconds": round(time.perf_counter() - started, 1)}
    if chosen:
        extra["cv"] = chosen
    data = (f"{table.name}: {len(train_idx)} samples for training"
            + ("" if chosen else f", {len(val_idx)} for choosing the epoch"))
    final = finetuned_meta(meta, prep, techniques=t, cfg=cfg, table=table, train_idx=train_idx, init=init,
                           training_data=data, val_accuracy=result.best_val_accuracy, command=command,
                           extra=extra)
    stem = save_checkpoint(result.model, final, out)
    state_path.unlink(missing_ok=True)
    log(f"wrote {stem}.safetensors + .json ({time.perf_counter() - started:.0f} s)")
    return stem
