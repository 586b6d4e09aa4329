"""Training-time augmentation on batches, and training-side statistics.

Images stay uint8 in memory (the cache); each batch becomes float only when it
is fed to the model (:class:`signfer.data.spec.PreprocessSpec`), so every
technique is one cheap tensor operation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, e.g. of the training side only."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    std = np.maximum(x.std(0), 1e-3)
    return tuple(map(float, x.mean(0))), tuple(map(float, std))


def random_shift(batch: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels per sample, edges replicated.

    One gather on the uint8 batch: no per-sample Python loop, no float copy.
    The offsets come from ``generator`` (on the CPU) wherever ``batch`` lives.
    """
    if pad <= 0:
        return batch
    b, s = batch.shape[0], batch.shape[1]
    ar = torch.arange(s)
    dy = torch.randint(-pad, pad + 1, (b, 1), generator=generator)
    dx = torch.randint(-pad, pad + 1, (b, 1), generator=generator)
    rows = (ar + dy).clamp_(0, s - 1).to(batch.device)
    cols = (ar + dx).clamp_(0, s - 1).to(batch.device)
    samples = torch.arange(b, device=batch.device)
    return batch[samples[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_affine(x: torch.Tensor, rotate: float, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image by up to ``rotate`` degrees and zoom by up to ``scale``
    (0.1: 0.9x to 1.1x) about its centre; edges are replicated.

    ``x`` is a float ``B x C x H x W`` batch on any device; one ``affine_grid`` +
    ``grid_sample`` call for the whole batch. Parameters are drawn from
    ``generator`` (on the CPU), so runs repeat on any device.
    """
    if rotate <= 0 and scale <= 0:
        return x
    b = x.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * (rotate * np.pi / 180)
    zoom = 1 + (torch.rand(b, generator=generator) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1),
                         torch.stack([sin, cos, torch.zeros(b)], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)


def cutmix(x: torch.Tensor, y: torch.Tensor, num_classes: int, p: float,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al. 2019): with probability ``p``, paste one random box of
    each image into another image of the batch; the targets mix by area.

    ``x`` is a float ``B x C x H x W`` batch, ``y`` its labels. Returns the batch
    and its ``B x num_classes`` target probabilities (one-hot where nothing was
    pasted). The mixing ratio is uniform (Beta(1, 1)); one box per batch, drawn
    from ``generator`` (on the CPU).
    """
    target = F.one_hot(y, num_classes).float()
    if p <= 0 or float(torch.rand(1, generator=generator)) >= p:
        return x, target
    h, w = x.shape[-2:]
    lam = float(torch.rand(1, generator=generator))
    cut_h, cut_w = round(h * (1 - lam) ** 0.5), round(w * (1 - lam) ** 0.5)
    cy = int(torch.randint(0, h, (1,), generator=generator))
    cx = int(torch.randint(0, w, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    partner = torch.randperm(len(x), generator=generator).to(x.device)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[partner][..., y0:y1, x0:x1]
    pasted = (y1 - y0) * (x1 - x0) / (h * w)  # the box may have been clipped at the edge
    return x, (1 - pasted) * target + pasted * target[partner]
