"""``train_one_epoch`` and ``evaluate``: one pass each, returning plain dicts.

Both read uint8 image tensors held in memory (see :mod:`signfer.data.cache`);
batches are made float only on the way into the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from signfer.data.spec import PreprocessSpec
from signfer.models.registry import train_mode
from signfer.training.preprocess import random_shift


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    preprocess: PreprocessSpec,
    batch_size: int,
    generator: torch.Generator,
    flip: bool = False,
    shift: int = 0,
    order: torch.Tensor | None = None,
    scheduler=None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    mix: Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
    bf16: bool = False,
) -> dict[str, float]:
    """One epoch over ``images`` (uint8 ``N x S x S x 3``) in a random order.

    ``order`` replaces the random permutation, e.g. indices drawn by a weighted
    sampler. ``scheduler`` is stepped after every batch. ``augment`` transforms
    each float model-input batch (after flip and normalisation). ``mix`` then
    turns the batch and its labels into a new batch and per-class target
    probabilities (CutMix, a teacher's predictions): ``loss_fn`` gets those
    targets, and the accuracy counts the most probable target class. ``images`` and
    ``labels`` may live on any device (the model's); the random draws stay on
    the CPU ``generator``. ``bf16``: forward pass and loss under bfloat16
    autocast (for GPUs; the weights and optimiser stay float32).
    """
    train_mode(model)
    n = len(images) if order is None else len(order)
    order = torch.randperm(len(images), generator=generator) if order is None else order
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        if len(idx) < 2:  # BatchNorm cannot train on a single sample
            continue
        idx_dev = idx.to(images.device)
        batch = random_shift(images[idx_dev], shift, generator)
        mask = torch.rand(len(idx), generator=generator) < 0.5 if flip else None
        x = preprocess(batch, mask)
        if augment is not None:
            x = augment(x, generator)
        y = target = labels[idx_dev]
        if mix is not None:
            x, target = mix(x, y, generator)
            y = target.argmax(1)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
            loss = loss_fn(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
    seconds = time.perf_counter() - start
    return {
        "loss": total_loss / max(seen, 1),
        "accuracy": correct / max(seen, 1),
        "n": seen,
        "seconds": seconds,
        "img_per_s": seen / seconds if seconds > 0 else float("nan"),
    }


@torch.inference_mode()
def _batched(fn, model: nn.Module, images: torch.Tensor, preprocess: PreprocessSpec, batch_size: int,
             flip: bool) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        mask = torch.ones(len(batch), dtype=torch.bool) if flip else None
        out.append(fn(preprocess(batch, mask)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def predict_logits(
    model: nn.Module, images: torch.Tensor, preprocess: PreprocessSpec, batch_size: int = 256,
    flip: bool = False,
) -> torch.Tensor:
    """Logits of every image, in eval mode (``flip``: of the mirrored images)."""
    return _batched(model, model, images, preprocess, batch_size, flip)


def predict_proba(model: nn.Module, images: torch.Tensor, preprocess: PreprocessSpec, *, tta: bool = False,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities of every image; with ``tta``, averaged with the mirror image's."""
    probs = torch.softmax(predict_logits(model, images, preprocess, batch_size), 1)
    if tta:
        probs = (probs + torch.softmax(predict_logits(model, images, preprocess, batch_size, flip=True), 1)) / 2
    return probs.numpy()


def extract_features(
    model: nn.Module, images: torch.Tensor, preprocess: PreprocessSpec, batch_size: int = 256,
    flip: bool = False,
) -> torch.Tensor:
    """Pooled backbone features (the head's input), in eval mode."""
    def features(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return _batched(features, model, images, preprocess, batch_size, flip)


def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, preprocess: PreprocessSpec,
    loss_fn: nn.Module | None = None, batch_size: int = 256,
) -> dict:
    """Loss, accuracy and class probabilities of ``model`` on a labelled set."""
    logits = predict_logits(model, images, preprocess, batch_size)
    return scores_from_logits(logits, labels, loss_fn)


def scores_from_logits(logits: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module | None = None) -> dict:
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    with torch.no_grad():
        loss = float(loss_fn(logits, labels)) if len(labels) else float("nan")
        pred = logits.argmax(1)
    return {
        "loss": loss,
        "accuracy": float((pred == labels).float().mean()) if len(labels) else float("nan"),
        "probs": torch.softmax(logits, 1).numpy().astype(np.float32),
    }
