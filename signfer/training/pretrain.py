"""Pre-train a general-purpose FER model on a folder dataset (e.g. FER2013).

``train/`` trains, ``validation/`` chooses the epoch that is kept. With
``exclude`` (a duplicate list such as ``fer2013-validation``) the validation
faces that also occur in train are dropped, and so are their training copies,
so neither split holds a face of the other. With ``select_on="selection"``
only the selection half of ``validation/`` (:mod:`signfer.data.halves`)
chooses the epoch, and the report half, which chose nothing, is scored every
epoch and recorded as the figure to quote. The state is
saved after every epoch (weights, optimiser, schedule, random generators,
history) and a re-run of the same command resumes where a killed one stopped.
The result is a signfer checkpoint (safetensors + JSON).

Besides shift, flip, rotation and zoom, a run can regularise with CutMix and
learn from teachers (knowledge distillation): the averaged predictions of
trained models on each training batch, blended with the labels.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from signfer import progress
from signfer.config import check_settings
from signfer.data import load_dataset
from signfer.data.cache import load_images
from signfer.data.halves import SCHEME as HALVES_SCHEME
from signfer.errors import SignferError, first_line
from signfer.io import atomic_path, read_json, write_json
from signfer.models.checkpoint import (
    ModelMeta,
    build_model,
    provenance,
    save_checkpoint,
)
from signfer.training.loop import evaluate, train_one_epoch
from signfer.training.preprocess import cutmix, random_affine
from signfer.training.teacher import Teachers

STATE = "state.pt"

#: What may choose the epoch (``PretrainConfig.select_on``).
SELECT_ON = ("validation", "selection")


@dataclass(frozen=True)
class PretrainConfig:
    arch: str = "mobilenetv2"
    init: str = "imagenet"
    input_size: int = 64
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 5e-4
    batch_size: int = 128
    label_smoothing: float = 0.1
    shift: int = 4
    rotate: float = 0.0
    scale: float = 0.0
    #: probability that a batch is CutMix-ed
    cutmix: float = 0.0
    #: checkpoints (names or paths) whose averaged predictions are the targets
    teachers: tuple[str, ...] = ()
    #: weight of the teachers' probabilities in the targets (the rest: the labels)
    distill_weight: float = 0.8
    seed: int = 0
    #: a duplicate list (built-in name or CSV) of validation faces found in
    #: train: they leave validation/, and their matches leave train/
    exclude: str = ""
    #: what chooses the epoch: "validation" (all of it) or "selection" (its
    #: selection half; the report half is scored beside it)
    select_on: str = "validation"

    def __post_init__(self) -> None:
        check_settings(self, PRETRAIN_RULES)


#: The allowed values of each PretrainConfig setting (its type comes from the annotation).
PRETRAIN_RULES = {
    "input_size": (lambda v: v >= 16, ">= 16 (pixels)"),
    "epochs": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: 0 < v < math.inf, "> 0"),
    "weight_decay": (lambda v: 0 <= v < math.inf, ">= 0"),
    "batch_size": (lambda v: v >= 2, ">= 2 (batch norm cannot train on one image)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "shift": (lambda v: v >= 0, ">= 0 (pixels)"),
    "rotate": (lambda v: 0 <= v <= 180, "in [0, 180] (degrees)"),
    "scale": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "cutmix": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "distill_weight": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "select_on": (lambda v: v in SELECT_ON, "'validation' or 'selection'"),
}


def _cpu(obj):
    """A copy of ``obj`` (a state dict, possibly nested) with every tensor on the
    CPU, so a state saved on a GPU resumes anywhere and later steps leave it be."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _log(msg: str) -> None:
    progress.echo(msg)


def resolve_device(device: str) -> torch.device:
    """'auto' (a CUDA GPU when there is one, else the CPU), 'cpu', 'cuda', 'cuda:1', ..."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SignferError(f"--device {device}: not a device; use 'auto', 'cpu' or 'cuda' (e.g. 'cuda:1')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SignferError(f"--device {device}: PyTorch sees no CUDA GPU here")
    return dev


def _plain(cfg: PretrainConfig) -> dict:
    """The config as JSON stores it (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def pretrain(root: str | Path, out: str | Path, cfg: PretrainConfig, command: str = "",
             max_epochs_this_run: int | None = None, device: str = "cpu",
             time_limit_s: float | None = None) -> Path | None:
    """Train (or resume) and write ``out/<arch>-fer.safetensors`` + ``.json``.

    Returns the checkpoint stem once all epochs are done, or ``None`` when
    ``max_epochs_this_run`` stopped the run early (re-run to resume). When the
    next epoch would end after ``time_limit_s`` seconds (counted from this
    call, judged by the slowest epoch of this call after its first, which also
    warms up), the run stops and writes the checkpoint of its best epoch so
    far, recording that it stopped early; a re-run of the same command resumes
    it. ``device`` and the limits do not enter the config: a run started on a
    GPU may resume on the CPU.
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    cfg_path = out / "pretrain_config.json"
    if cfg_path.exists():
        # fields added to PretrainConfig since the run started take their defaults
        try:
            saved = {**_plain(PretrainConfig()), **read_json(cfg_path)}
        except (OSError, ValueError, TypeError) as e:
            raise SignferError(f"{cfg_path}: damaged ({e}); delete the run folder {out} or use a new --out") from None
        if saved != _plain(cfg):
            raise SignferError(f"{out} holds a run with another config ({cfg_path}); use a new --out")

    train, val, report = pretrain_splits(root, cfg)
    classes = list(train.classes)
    if list(val.classes) != classes:
        raise SignferError(f"validation classes {val.classes} differ from training classes {train.classes}")
    faces = _check_same_data(out / DATA_RECORD, root, [train, val] + ([report] if report is not None else []))
    _log(f"pretrain {cfg.arch}: {len(train.samples)} train, {len(val.samples)} {val.name} faces"
         + (f" choose the epoch, {len(report.samples)} {report.name} faces are scored beside"
            if report is not None else "") + f", {cfg.input_size}px, on {dev}")
    # the uint8 images live on the training device; batches become float there
    x_train = torch.from_numpy(load_images(train, cfg.input_size)).to(dev)
    x_val = torch.from_numpy(load_images(val, cfg.input_size)).to(dev)
    y_train = torch.tensor(train.y(), dtype=torch.long).to(dev)
    y_val = torch.tensor(val.y(), dtype=torch.long)  # scores are computed on the CPU
    if report is not None:
        x_report = torch.from_numpy(load_images(report, cfg.input_size)).to(dev)
        y_report = torch.tensor(report.y(), dtype=torch.long)

    torch.manual_seed(cfg.seed)  # before the new head is drawn
    model, meta = build_model(cfg.arch, classes, cfg.init, cfg.input_size)
    model = model.to(dev)
    prep = meta.spec

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_affine(x, cfg.rotate, cfg.scale, generator)  # x itself when both are 0

    teachers = Teachers(cfg.teachers, classes, dev) if cfg.teachers else None
    if not cfg_path.exists():  # only now: a run refused above leaves nothing that would lock the folder
        write_json(out / DATA_RECORD, faces)
        write_json(cfg_path, _plain(cfg))
    mixing = cfg.cutmix > 0 or teachers is not None  # else the labels are the targets, as before

    def mix(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, target = cutmix(x, y, len(classes), cfg.cutmix, generator)
        if teachers is not None:
            soft = teachers(x, prep, bf16=dev.type == "cuda")
            target = cfg.distill_weight * soft + (1 - cfg.distill_weight) * target
        return x, target

    parent = provenance(cfg.init)
    teacher_records = [provenance(t) for t in cfg.teachers]
    seen_report = not_known_clean([parent, *teacher_records]) if report is not None else []
    if seen_report:
        _log(f"note: the report half is not clean for this model: {len(seen_report)} model(s) it starts or learns "
             f"from were not chosen on a selection half, so they may have seen it: {'; '.join(seen_report)}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best_acc, best_state, epoch0 = -1.0, None, 0
    state_path = out / STATE
    if state_path.exists():
        # weights_only: the state holds tensors and plain containers, nothing executable
        try:
            s = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a half-written or foreign file: torch raises several types
            raise SignferError(f"{state_path}: damaged ({first_line(e)}); "
                               "delete it to start this run again") from None
        try:
            model.load_state_dict(s["model"])
            opt.load_state_dict(s["optimizer"])  # moves the moments to the parameters' device
            sched.load_state_dict(s["scheduler"])
            gen.set_state(s["generator"])
            torch.set_rng_state(s["torch_rng"])
            history, best_acc, best_state, epoch0 = s["history"], s["best_acc"], s["best_model"], s["epoch"]
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            # a state of another model or run, or a file that merely unpickles
            raise SignferError(f"{state_path}: not this run's state ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); delete it to start this "
                               "run again") from None
        _log(f"resumed after epoch {epoch0} (best validation accuracy {best_acc:.4f})")

    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    done_now, seconds, stopped = 0, [], None
    # on a terminal a bar stands in for the per-epoch lines (-v prints both)
    shown = progress.bar(total=cfg.epochs, initial=epoch0, desc=f"pretrain {cfg.arch}", unit="epoch")
    for epoch in range(epoch0 + 1, cfg.epochs + 1):
        if max_epochs_this_run is not None and done_now >= max_epochs_this_run:
            shown.close()
            return None
        expected = max(seconds[1:] or seconds or [0.0])
        if time_limit_s is not None and done_now and time.perf_counter() - started + expected > time_limit_s:
            stopped = f"stopped by the time limit after epoch {epoch - 1} of {cfg.epochs}"
            _log(stopped + "; the checkpoint holds the best epoch so far, re-run to resume")
            break
        t0 = time.perf_counter()
        stats = train_one_epoch(model, x_train, y_train, optimizer=opt, loss_fn=loss_fn,
                                preprocess=prep, batch_size=cfg.batch_size, generator=gen,
                                flip=True, shift=cfg.shift, scheduler=sched,
                                augment=augment,
                                mix=mix if mixing else None,
                                bf16=dev.type == "cuda")
        v = evaluate(model, x_val, y_val, prep)
        history.append({"epoch": epoch, "train_loss": stats["loss"], "train_accuracy": stats["accuracy"],
                        "val_loss": v["loss"], "val_accuracy": v["accuracy"],
                        **({"report_accuracy": evaluate(model, x_report, y_report, prep)["accuracy"]}
                           if report is not None else {}),
                        "img_per_s": stats["img_per_s"], "seconds": time.perf_counter() - t0})
        if v["accuracy"] > best_acc:
            best_acc, best_state = v["accuracy"], _cpu(model.state_dict())
        progress.detail(_log)(
            f"epoch {epoch}/{cfg.epochs}: train loss {stats['loss']:.3f} acc {stats['accuracy']:.3f} | "
            f"val acc {v['accuracy']:.4f} (best {best_acc:.4f}) | {stats['img_per_s']:.0f} img/s, "
            f"{time.perf_counter() - t0:.0f} s")
        shown.set_postfix_str(f"val acc {v['accuracy']:.4f}, best {best_acc:.4f}", refresh=False)
        shown.update()
        with atomic_path(state_path) as tmp:
            torch.save({"model": _cpu(model.state_dict()), "optimizer": _cpu(opt.state_dict()),
                        "scheduler": sched.state_dict(), "generator": gen.get_state(),
                        "torch_rng": torch.get_rng_state(), "history": history,
                        "best_acc": best_acc, "best_model": best_state, "epoch": epoch}, tmp)
        write_json(out / "history.json", history)
        done_now += 1
        seconds.append(time.perf_counter() - t0)
    shown.close()

    model = model.cpu()
    model.load_state_dict(best_state)
    best_epoch = int(np.argmax([h["val_accuracy"] for h in history])) + 1
    held_out = {}
    if report is not None:  # the chosen epoch's score on faces that chose nothing
        held_out = {"report_accuracy": round(float(history[best_epoch - 1]["report_accuracy"]), 4),
                    "report_faces": len(report.samples), "halves": HALVES_SCHEME}
        if seen_report:
            held_out["report_may_be_seen_by"] = seen_report
    final = ModelMeta(
        arch=cfg.arch, input_size=cfg.input_size, labels=classes, mean=list(meta.mean),
        std=list(meta.std), normalize=True, config=dataclasses.asdict(cfg),
        training_data=f"{Path(root).name}: {train.name} ({len(x_train)} faces) for training, "
                      f"{val.name} ({len(x_val)} faces) for choosing the epoch"
                      + (f", {report.name} ({len(report.samples)} faces) for reporting" if report is not None else ""),
        val_accuracy=round(float(best_acc), 4), command=command,
        extra={**({"init_from": parent} if parent else {}),
               **({"teachers": teacher_records} if teacher_records else {}),
               **({"stopped_early": stopped} if stopped else {}),
               **held_out,
               "device": str(dev), "autocast": "bfloat16" if dev.type == "cuda" else None,
               "epochs_run": len(history), "best_epoch": best_epoch},
    )
    stem = save_checkpoint(model, final, out / f"{cfg.arch}-fer")
    _log(f"wrote {stem}.safetensors ({val.name} accuracy {best_acc:.4f}"
         + (f", report half {held_out['report_accuracy']:.4f}" if held_out else "") + ")")
    return stem


#: The record of a run's faces, checked when it resumes.
DATA_RECORD = "pretrain_data.json"


def not_known_clean(records: list[dict | None]) -> list[str]:
    """The models in provenance records (:func:`~signfer.models.checkpoint.provenance`:
    a start, its own start, ..., and teachers at any depth) that may have seen
    the report half, each as "NAME (TRAINING DATA)".

    Only a model pre-trained with its epoch chosen on a selection half of the
    current halves (:data:`signfer.data.halves.SCHEME`) is known not to have
    chosen on the report half; any other (one chosen on the halves of an older
    scheme, which split copies of a face; one that chose on a whole
    ``validation/``, as every built-in model did, one fine-tuned on other
    faces, one imported) may have, so a student that starts or learns from it
    has no clean report-half figure. ImageNet and random starts have no record.
    """
    found: dict[str, None] = {}

    def walk(record) -> None:
        if not isinstance(record, dict):
            return
        data = str(record.get("training_data", ""))
        if "selection half" not in data or record.get("halves") != HALVES_SCHEME:
            found[f"{record.get('name')} ({data or 'no record of its training data'})"] = None
        walk(record.get("init_from"))
        for teacher in record.get("teachers") or []:
            walk(teacher)

    for record in records:
        walk(record)
    return list(found)


def _check_same_data(path: Path, root: str | Path, tables: list) -> dict:
    """The record of what the run trains and selects on; refuse to resume on other faces.

    The record is each table's size and a hash of its faces' paths (relative to
    ``root``, so the dataset may move between machines), labels and file
    sizes. A run folder from before the record existed gets one now; a new
    run writes it when it starts.
    """
    import hashlib
    import os

    base = os.path.abspath(Path(root).expanduser())
    now = {}
    for table in tables:
        h = hashlib.sha1()
        for p, label in zip(table.samples["path"], table.samples["label"]):
            h.update(f"{os.path.relpath(p, base)}|{label}|{os.path.getsize(p)}\n".encode())
        now[table.name] = {"faces": len(table.samples), "sha1": h.hexdigest()}
    if not path.exists():
        if path.with_name("pretrain_config.json").exists():
            write_json(path, now)
        return now
    try:
        was = read_json(path)
    except (OSError, ValueError) as e:
        raise SignferError(f"{path}: damaged ({e}); delete it to resume on these faces") from None
    if was != now:
        def sizes(record) -> str:
            return ", ".join(f"{name} {r['faces'] if isinstance(r, dict) else '?'}"
                             for name, r in record.items()) if isinstance(record, dict) else "?"
        same_sizes = sizes(was) == sizes(now)
        raise SignferError(
            f"{path.parent} holds a run on other faces ({sizes(was)}; now {sizes(now)}"
            + ("; as many faces, but other ones: files changed, or the selection/report halves made "
               "differently, as signfer since 2026-12-03 keeps copies of a face in one half" if same_sizes else "")
            + "); use a new --out, or the --root it started on")
    return now


def pretrain_splits(root: str | Path, cfg: PretrainConfig):
    """(train, the faces that choose the epoch, the report half or None) as ``cfg`` says.

    >>> train, select, report = pretrain_splits("fer2013", PretrainConfig(  # doctest: +SKIP
    ...     exclude="fer2013-validation", select_on="selection"))
    """
    from signfer.data.duplicates import drop_listed, drop_matched
    from signfer.data.halves import split_halves

    train = load_dataset("folder", root, split="train")
    val = load_dataset("folder", root, split="validation")
    train.name, val.name = "train/", "validation/"
    if cfg.exclude:
        before_train, before_val = len(train.samples), len(val.samples)
        val, train = drop_listed(val, cfg.exclude), drop_matched(train, cfg.exclude)
        train.name, val.name = "train/ (deduplicated)", "validation/ (deduplicated)"
        _log(f"{cfg.exclude}: dropped {before_val - len(val.samples)} validation faces that occur in train "
             f"and their {before_train - len(train.samples)} training copies")
    if cfg.select_on == "validation":
        return train, val, None
    select, report = split_halves(val)
    select.name, report.name = f"{val.name} selection half", f"{val.name} report half"
    return train, select, report
