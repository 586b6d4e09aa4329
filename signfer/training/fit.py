"""``fit``: the paper's two training stages, with early stopping on an inner split.

Stage 1 warms up the head with the backbone frozen (BatchNorm included). With a
frozen backbone in eval mode the head's input does not change during training,
so stage 1 runs on cached backbone features: the same result as running the
frozen network, many times faster. Stage 2 (``ft``) trains all layers at a
lower rate. Every choice (early stopping, the checkpoint kept) is made on the
validation part carved from the training side; the test fold is never seen here.

Stage 2 is the long one. Given a ``state_path``, :func:`fit` saves its state
there between epochs (weights, optimiser, schedule, random generators, the
best state so far), and a later call with the same inputs resumes from it and
ends where an uninterrupted fit would have ended.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from signfer.config import TrainConfig
from signfer.data.spec import PreprocessSpec
from signfer.io import atomic_path
from signfer.models.registry import set_backbone_trainable
from signfer.training.loop import (
    evaluate,
    extract_features,
    scores_from_logits,
    train_one_epoch,
)
from signfer.training.preprocess import random_affine

#: Seconds between two saves of a fit's state (a kill loses at most this much training).
STATE_EVERY_S = 30.0
#: The layout of a saved state: a state of another layout is not resumed.
STATE_FORMAT = 1
STATE_FIELDS = frozenset({"key", "format", "epoch", "model", "optimizer", "scheduler", "generator", "torch_rng",
                          "best_model", "best", "stage_best", "stale", "history", "best_epoch", "train_images",
                          "train_seconds", "seconds"})

#: A cache of per-image tensors (backbone features, zero-shot logits) that only
#: depend on the initial weights and the preprocessing, shared across folds.
FeatureCache = dict


@dataclass
class FitResult:
    model: nn.Module
    preprocess: PreprocessSpec
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = float("nan")
    seconds: float = 0.0
    train_images: int = 0          # images passed through training, all epochs
    train_seconds: float = 0.0     # time spent in those passes

    @property
    def train_img_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else float("nan")


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Loss weights inversely proportional to class frequency; the largest class weighs 1.

    Classes absent from ``y`` get weight 0 (they cannot be learnt from this side).

    >>> class_weights(np.array([0, 0, 0, 1]), 3).tolist()
    [1.0, 3.0, 0.0]
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def balanced_order(y: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """One epoch of indices drawn with replacement, each class equally likely (``ws``)."""
    counts = np.bincount(y)
    p = torch.tensor(1.0 / counts[y], dtype=torch.float64)
    return torch.multinomial(p, len(y), replacement=True, generator=generator)


def _score(val: dict) -> tuple[float, float]:
    """Validation ranking: higher accuracy first, then lower loss."""
    return val["accuracy"], -val["loss"]


def all_layers_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, n_train: int):
    """Stage 2's learning-rate schedule: one cycle over ``cfg.epochs``, stepped per batch."""
    steps = cfg.epochs * math.ceil(n_train / cfg.batch_size)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.15)


def _features(cache: FeatureCache | None, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def frozen_features(model: nn.Module, images: torch.Tensor, preprocess: PreprocessSpec,
                    techniques: tuple[str, ...], cache: FeatureCache | None = None,
                    cache_key: tuple = ()) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Freeze the backbone; its features of every image, and of their mirror images with ``hf``.

    Taken from ``cache`` under ``cache_key`` when there, else computed and
    stored there: :func:`fit` calls this, and so can anyone who wants the
    cache filled before fits run elsewhere (the Ray executor shares one filled
    cache with every task).
    """
    set_backbone_trainable(model, False)
    feats = _features(cache, ("features", *cache_key, False),
                      lambda: extract_features(model, images, preprocess))
    flipped = (_features(cache, ("features", *cache_key, True),
                         lambda: extract_features(model, images, preprocess, flip=True))
               if "hf" in techniques else None)
    return feats, flipped


def fit_key(model: nn.Module, images: torch.Tensor, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
            techniques: tuple[str, ...], cfg: TrainConfig, preprocess: PreprocessSpec, seed: int,
            epochs: int | None) -> str:
    """A SHA-256 of everything a fit's course depends on: a saved state resumes only the same fit."""
    h = hashlib.sha256(json.dumps(
        [list(techniques), dataclasses.asdict(cfg), repr(preprocess), seed, epochs, list(images.shape)],
        sort_keys=True, default=str).encode())
    for a in (np.asarray(y, dtype=np.int64), np.asarray(train_idx, dtype=np.int64),
              np.asarray(val_idx, dtype=np.int64), images.numpy()):
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    for name, t in model.state_dict().items():  # the starting weights
        h.update(name.encode())
        h.update(memoryview(np.ascontiguousarray(t.detach().cpu().float().numpy())).cast("B"))
    return h.hexdigest()


def _load_state(path: Path, key: str, log: Callable[[str], None]) -> dict | None:
    """The saved state of this fit, or ``None`` (none there, or another fit's or a damaged one: noted)."""
    if not path.exists():
        return None
    try:
        # weights_only: tensors and plain containers, nothing executable
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a half-written or foreign file: torch raises several types
        log(f"    {path}: unreadable saved state ({type(e).__name__}); this fit starts over")
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        log(f"    {path}: the saved state is another fit's (other data, settings or start); this fit starts over")
        return None
    if state.get("format") != STATE_FORMAT or not STATE_FIELDS <= set(state):
        log(f"    {path}: a saved state of another signfer version; this fit starts over")
        return None
    return state


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def fit(
    model: nn.Module,
    images: torch.Tensor,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    techniques: tuple[str, ...],
    cfg: TrainConfig,
    preprocess: PreprocessSpec,
    seed: int,
    cache: FeatureCache | None = None,
    cache_key: tuple = (),
    epochs: int | None = None,
    log: Callable[[str], None] = lambda s: None,
    state_path: Path | None = None,
    state_every_s: float | None = None,
) -> FitResult:
    """Train ``model`` on ``images[train_idx]``; choose the kept state on ``val_idx``.

    With an empty ``val_idx`` nothing is chosen: the model trains for a fixed
    ``epochs`` (the all-layers stage, or the head for ``head``; e.g. the median
    best epoch of a cross-validation) on the schedule of ``cfg.epochs``, so
    it follows the same trajectory as the fits that chose that number, and the
    last state is kept.

    Args:
        model: built by :func:`signfer.models.checkpoint.build_model`, untouched.
        images: uint8 ``N x S x S x 3`` tensor of *all* samples (indices select).
        y: class index of every sample.
        techniques: must contain 'ft' or 'head'.
        cache / cache_key: reuse of backbone features across folds and
            configurations; ``cache_key`` must identify the initial weights, the
            image set and the preprocessing.
        state_path: where the all-layers stage saves its state, at most every
            ``state_every_s`` seconds (default :data:`STATE_EVERY_S`), and where a fit of the same inputs
            (:func:`fit_key`) resumes from; the caller removes it once the
            fit's results are safe. A state of another fit is noted and replaced.
    """
    validate = len(val_idx) > 0
    if not validate and epochs is None:
        raise ValueError("fit without a validation part needs a fixed number of epochs")
    if epochs is not None and validate:
        raise ValueError("fit takes a fixed number of epochs only without a validation part")
    start = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_classes = model.get_classifier().out_features
    y_t = torch.tensor(np.asarray(y), dtype=torch.long)
    weights = class_weights(y[train_idx], n_classes) if "cw" in techniques else None
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    val_loss_fn = nn.CrossEntropyLoss()
    result = FitResult(model=model, preprocess=preprocess)
    head_only = "head" in techniques
    saved = None
    if state_path is not None and not head_only:  # a head-only fit is quick: it just runs again
        state_path = Path(state_path)
        key = fit_key(model, images, y, train_idx, val_idx, techniques, cfg, preprocess, seed, epochs)
        saved = _load_state(state_path, key, log)
    if saved is not None:
        return _all_layers(model, images, y_t, y, train_idx, val_idx, techniques=techniques, cfg=cfg,
                           preprocess=preprocess, loss_fn=loss_fn, gen=gen, epochs=epochs, log=log,
                           result=result, start=start, state=(state_path, key, state_every_s), saved=saved)

    # Stage 1: the head on frozen, cached backbone features.
    feats, flipped = frozen_features(model, images, preprocess, techniques, cache, cache_key)
    head = model.get_classifier()
    stage1_epochs = (cfg.epochs if epochs is None else epochs) if head_only else cfg.head_epochs
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    tr = torch.as_tensor(train_idx)
    best = (-1.0, -math.inf)
    best_head = copy.deepcopy(head.state_dict())
    stale = 0
    for epoch in range(1, stage1_epochs + 1):
        t0 = time.perf_counter()
        head.train()
        order = balanced_order(y[train_idx], gen) if "ws" in techniques else torch.randperm(len(tr), generator=gen)
        for i in range(0, len(order), cfg.batch_size):
            idx = tr[order[i:i + cfg.batch_size]]
            x = feats[idx]
            if flipped is not None:
                mask = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(mask[:, None], flipped[idx], x)
            loss = loss_fn(head(x), y_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        result.train_images += len(order)
        result.train_seconds += time.perf_counter() - t0
        if not validate:
            result.history.append({"stage": "head", "epoch": epoch})
            best_head, result.best_epoch = copy.deepcopy(head.state_dict()), epoch
            continue
        with torch.no_grad():
            head.eval()
            val = scores_from_logits(head(feats[val_idx]), y_t[val_idx], val_loss_fn)
        result.history.append({"stage": "head", "epoch": epoch, "val_loss": val["loss"],
                               "val_accuracy": val["accuracy"]})
        log(f"    head epoch {epoch}: val acc {val['accuracy']:.3f} loss {val['loss']:.3f}")
        if _score(val) > best:
            best, stale = _score(val), 0
            best_head = copy.deepcopy(head.state_dict())
            result.best_epoch = epoch
        else:
            stale += 1
            if head_only and stale >= cfg.patience:
                break
    head.load_state_dict(best_head)
    if head_only:
        result.best_val_accuracy = best[0] if validate else float("nan")
        result.seconds = time.perf_counter() - start
        return result

    return _all_layers(model, images, y_t, y, train_idx, val_idx, techniques=techniques, cfg=cfg,
                       preprocess=preprocess, loss_fn=loss_fn, gen=gen, epochs=epochs, log=log, result=result,
                       start=start, state=(state_path, key, state_every_s) if state_path is not None else None)


def _all_layers(model: nn.Module, images: torch.Tensor, y_t: torch.Tensor, y: np.ndarray, train_idx: np.ndarray,
                val_idx: np.ndarray, *, techniques: tuple[str, ...], cfg: TrainConfig, preprocess: PreprocessSpec,
                loss_fn: nn.Module, gen: torch.Generator, epochs: int | None, log: Callable[[str], None],
                result: FitResult, start: float, state: tuple[Path, str, float | None] | None = None,
                saved: dict | None = None) -> FitResult:
    """Stage 2 of :func:`fit`: all layers at a lower rate, the warmed-up head as starting point.

    The first epochs after unfreezing often score below the warmed-up model
    (BatchNorm statistics move, the one-cycle rate peaks), so patience counts
    from this stage's own best epoch; the state kept is the best on validation
    over both stages (epoch 0 = the warmed-up model). ``state`` is (path, key,
    seconds between saves); ``saved`` a state read from that path to resume.
    """
    validate = len(val_idx) > 0
    val_loss_fn = nn.CrossEntropyLoss()
    flip = "hf" in techniques
    tr = torch.as_tensor(train_idx)
    set_backbone_trainable(model, True)
    x_all = images
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = all_layers_scheduler(opt, cfg, len(train_idx))
    first = 1
    if saved is None:
        best_state = copy.deepcopy(model.state_dict())
        result.best_epoch = 0
        best = (-1.0, -math.inf)
        if validate:
            val = evaluate(model, x_all[val_idx], y_t[val_idx], preprocess, val_loss_fn)
            best = _score(val)
        stage_best, stale = (-1.0, -math.inf), 0
    else:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        best_state, best, stage_best, stale = (saved["best_model"], tuple(saved["best"]),
                                               tuple(saved["stage_best"]), saved["stale"])
        result.history, result.best_epoch = saved["history"], saved["best_epoch"]
        result.train_images, result.train_seconds = saved["train_images"], saved["train_seconds"]
        start -= saved["seconds"]
        first = saved["epoch"] + 1
        log(f"    resumed after epoch {saved['epoch']} of the all-layers stage ({state[0]})")
    last_save = time.perf_counter()
    train_images = x_all[tr]
    train_y = y_t[tr]

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_affine(x, cfg.rotate, cfg.scale, generator)  # x itself when both are 0

    def save(epoch: int) -> None:
        """Save the state after ``epoch`` if ``state`` asks for it and it is time."""
        nonlocal last_save, state
        if state is None:
            return
        path, key, every_s = state
        if time.perf_counter() - last_save < (STATE_EVERY_S if every_s is None else every_s):
            return
        try:
            _save_state(path, {
                "key": key, "format": STATE_FORMAT, "epoch": epoch, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "best_model": best_state, "best": list(best),
                "stage_best": list(stage_best), "stale": stale, "history": result.history,
                "best_epoch": result.best_epoch, "train_images": result.train_images,
                "train_seconds": result.train_seconds, "seconds": time.perf_counter() - start})
        except OSError as e:  # e.g. a Ray worker on a node that does not see --out: train on without
            log(f"    cannot save the fit's state to {path} ({e.strerror or e}); this fit goes on without")
            state = None
        last_save = time.perf_counter()

    for epoch in range(first, (cfg.epochs if epochs is None else epochs) + 1):
        order = balanced_order(y[train_idx], gen) if "ws" in techniques else None
        stats = train_one_epoch(model, train_images, train_y, optimizer=opt, loss_fn=loss_fn,
                                preprocess=preprocess, batch_size=cfg.batch_size, generator=gen,
                                flip=flip, shift=cfg.shift, order=order, scheduler=sched, augment=augment)
        result.train_images += stats["n"]
        result.train_seconds += stats["seconds"]
        if not validate:
            result.history.append({"stage": "all", "epoch": epoch, "train_loss": stats["loss"],
                                   "train_accuracy": stats["accuracy"], "img_per_s": stats["img_per_s"]})
            log(f"    epoch {epoch}/{epochs}: train loss {stats['loss']:.3f} acc {stats['accuracy']:.3f} | "
                f"{stats['img_per_s']:.0f} img/s")
            best_state, result.best_epoch = model.state_dict(), epoch  # the last one is kept
            save(epoch)
            continue
        val = evaluate(model, x_all[val_idx], y_t[val_idx], preprocess, val_loss_fn)
        result.history.append({"stage": "all", "epoch": epoch, "train_loss": stats["loss"],
                               "train_accuracy": stats["accuracy"], "val_loss": val["loss"],
                               "val_accuracy": val["accuracy"], "img_per_s": stats["img_per_s"]})
        log(f"    epoch {epoch}: train loss {stats['loss']:.3f} acc {stats['accuracy']:.3f} | "
            f"val acc {val['accuracy']:.3f} loss {val['loss']:.3f} | {stats['img_per_s']:.0f} img/s")
        if _score(val) > best:
            best, result.best_epoch = _score(val), epoch
            best_state = copy.deepcopy(model.state_dict())
        if _score(val) > stage_best:
            stage_best, stale = _score(val), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
        save(epoch)
    model.load_state_dict(best_state)
    model.eval()
    result.best_val_accuracy = best[0] if validate else float("nan")
    result.seconds = time.perf_counter() - start
    return result
