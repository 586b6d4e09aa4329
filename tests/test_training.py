"""Training pieces: class weights, freezing, preprocessing, the two-stage ``fit``.

Tiny MobileNetV2 at 32 px on a few dozen synthetic images; one CPU thread.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import signfer.training.fit as fit_module
from signfer.config import RunSpec, TrainConfig
from signfer.data.spec import PreprocessSpec
from signfer.errors import SignferError
from signfer.models.checkpoint import build_model
from signfer.models.registry import create_model, set_backbone_trainable, train_mode
from signfer.training.fit import balanced_order, class_weights, fit
from signfer.training.loop import evaluate, extract_features, train_one_epoch
from signfer.training.preprocess import (
    channel_stats,
    cutmix,
    random_affine,
    random_shift,
)

SIZE = 32
CLASSES = ["anger", "happiness", "neutral"]


def synthetic(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 N x S x S x 3 images whose colour encodes the class, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    base = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200]])[y]
    x = base[:, None, None, :] + rng.integers(-40, 41, size=(n, SIZE, SIZE, 3))
    return torch.from_numpy(np.clip(x, 0, 255).astype(np.uint8)), y


@pytest.fixture(scope="module")
def data():
    images, y = synthetic()
    train_idx, val_idx = np.arange(36), np.arange(36, 48)
    return images, y, train_idx, val_idx


def new_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model, _ = build_model("mobilenetv2", CLASSES, "random", SIZE)
    return model


def head_keys(model: nn.Module) -> set[str]:
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()}
    return {k for k, p in model.named_parameters() if id(p) in ids}


def split_state(model: nn.Module) -> tuple[dict, dict]:
    """(backbone, head) copies of the state dict, buffers included in the backbone."""
    hk = head_keys(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ({k: v for k, v in state.items() if k not in hk}, {k: v for k, v in state.items() if k in hk})


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- class weights and sampling ---------------------------------------------

def test_class_weights_inverse_frequency_exact():
    y = np.array([0, 0, 0, 0, 1, 1, 3])
    w = class_weights(y, 5)
    assert w.dtype == torch.float32
    assert w.tolist() == [1.0, 2.0, 0.0, 4.0, 0.0]  # largest class 1, absent classes 0


def test_class_weights_balanced_classes_are_all_one():
    assert class_weights(np.array([2, 1, 0, 2, 1, 0]), 3).tolist() == [1.0, 1.0, 1.0]


def test_balanced_order_draws_classes_equally():
    y = np.array([0] * 900 + [1] * 100)
    order = balanced_order(y, torch.Generator().manual_seed(0))
    assert order.shape == (1000,)
    drawn = np.bincount(y[order.numpy()], minlength=2)
    assert 420 < drawn[1] < 580, drawn


# --- freezing -----------------------------------------------------------------

def test_frozen_backbone_keeps_weights_and_batchnorm_statistics():
    model = create_model("mobilenetv2", 3, "random")
    set_backbone_trainable(model, False)
    train_mode(model)
    head = model.get_classifier()
    hk = head_keys(model)
    for name, p in model.named_parameters():
        assert p.requires_grad == (name in hk), name
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert head.training

    backbone0, head0 = split_state(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.rand(8, 3, SIZE, SIZE)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    loss.backward()
    opt.step()
    backbone1, head1 = split_state(model)
    assert same(backbone0, backbone1)  # running_mean/var and num_batches_tracked included
    assert not same(head0, head1)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in hk)


def test_unfreezing_makes_everything_trainable_and_batchnorm_train():
    model = create_model("mobilenetv2", 3, "random")
    set_backbone_trainable(model, False)
    set_backbone_trainable(model, True)
    train_mode(model)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.rand(4, 3, SIZE, SIZE))
    assert not torch.equal(before, bn.running_mean)


# --- preprocessing ------------------------------------------------------------

def batch_u8(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 8, 8, 3), generator=g, dtype=torch.uint8)


def test_preprocess_without_ip_scales_to_unit_range():
    b = batch_u8()
    keep = b.clone()
    x = PreprocessSpec()(b)
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x, b.permute(0, 3, 1, 2).float() / 255.0, rtol=0, atol=0)
    assert torch.equal(b, keep)  # input untouched
    assert x.min() >= 0 and x.max() <= 1


def test_preprocess_normalisation_matches_manual():
    b = batch_u8()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = PreprocessSpec(mean, std)(b)
    manual = b.numpy().astype(np.float64) / 255.0
    manual = ((manual - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x.numpy(), manual, atol=1e-5)


def test_preprocess_flip_mask_flips_exactly_those_samples():
    b = batch_u8()
    mask = torch.tensor([True, False, True, False])
    x = PreprocessSpec((0.5,) * 3, (0.25,) * 3)(b, mask)
    plain = PreprocessSpec((0.5,) * 3, (0.25,) * 3)(b)
    for i in range(4):
        expected = plain[i].flip(-1) if mask[i] else plain[i]  # -1: width (left-right)
        torch.testing.assert_close(x[i], expected, rtol=0, atol=0)
    assert not torch.equal(x[0], plain[0])
    # the mirror of a column is the opposite column
    torch.testing.assert_close(x[0, :, :, 0], plain[0, :, :, -1], rtol=0, atol=0)


def test_preprocess_output_is_channels_last():
    x = PreprocessSpec()(batch_u8())
    assert x.is_contiguous(memory_format=torch.channels_last)
    x = PreprocessSpec((0.1,) * 3, (0.2,) * 3)(batch_u8(), torch.tensor([True, False, False, True]))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    flat = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, flat.mean(0))
    np.testing.assert_allclose(std, flat.std(0))


def test_random_shift_keeps_shape_dtype_and_zero_is_identity():
    b = batch_u8(6)
    g = torch.Generator().manual_seed(0)
    assert random_shift(b, 0, g) is b
    out = random_shift(b, 2, g)
    assert out.shape == b.shape and out.dtype == torch.uint8


def test_random_affine_zero_is_identity_and_keeps_the_centre():
    x = torch.rand(4, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert random_affine(x, 0.0, 0.0, g) is x
    # a single bright centre pixel of an odd-sized image stays the maximum
    # under any rotation or zoom about the centre
    dot = torch.zeros(8, 3, 17, 17)
    dot[:, :, 8, 8] = 1.0
    out = random_affine(dot, 30.0, 0.2, g)
    assert out.shape == dot.shape
    assert all(int(o[0].argmax()) == 8 * 17 + 8 for o in out)


def test_random_affine_rotates_each_image_differently():
    ramp = torch.linspace(0, 1, 16).expand(16, 16)  # brightness grows to the right
    x = ramp.expand(6, 3, 16, 16).clone()
    out = random_affine(x, 45.0, 0.0, torch.Generator().manual_seed(1))
    assert not torch.allclose(out, x, atol=1e-3)
    assert len({round(float((o - x[0]).abs().sum()), 3) for o in out}) == len(out)


def test_random_shift_is_a_translation_with_replicated_edges():
    s = 8
    ramp = torch.arange(s * s * 3, dtype=torch.int64).reshape(s, s, 3) % 251
    b = ramp.to(torch.uint8).expand(16, s, s, 3).clone()
    out = random_shift(b, 2, torch.Generator().manual_seed(3))
    seen = set()
    for i in range(len(b)):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = (torch.arange(s) + dy).clamp(0, s - 1)
                cols = (torch.arange(s) + dx).clamp(0, s - 1)
                if torch.equal(out[i], b[i][rows][:, cols]):
                    matches.append((dy, dx))
        assert len(matches) == 1, (i, matches)
        seen.add(matches[0])
    assert len(seen) > 1  # not the same shift for every sample


# --- fit ------------------------------------------------------------------------

CFG = TrainConfig(head_epochs=1, epochs=1, batch_size=16, patience=3)


def test_fit_head_only_leaves_the_backbone_untouched(data):
    images, y, tr, va = data
    model = new_model()
    backbone0, head0 = split_state(model)
    result = fit(model, images, y, tr, va, techniques=("head",), cfg=TrainConfig(epochs=2, batch_size=16),
                 preprocess=PreprocessSpec(), seed=0)
    assert result.model is model
    backbone1, head1 = split_state(result.model)
    assert same(backbone0, backbone1)  # weights and BatchNorm buffers
    assert not same(head0, head1)
    assert [h["stage"] for h in result.history] == ["head", "head"]
    assert 1 <= result.best_epoch <= 2


def scripted_evaluate(script, snapshots):
    """An ``evaluate`` that records the model's state and returns scripted scores."""
    calls = iter(script)

    def fake(model, images, labels, preprocess, loss_fn=None, batch_size=256):
        snapshots.append(copy.deepcopy(model.state_dict()))
        acc, loss = next(calls)
        return {"accuracy": acc, "loss": loss, "probs": None}

    return fake


def test_fit_ft_changes_the_backbone(data, monkeypatch):
    images, y, tr, va = data
    # the all-layers epoch is scored better than the warmed-up model, so it is kept
    snapshots: list[dict] = []
    monkeypatch.setattr(fit_module, "evaluate", scripted_evaluate([(0.1, 2.0), (0.9, 0.5)], snapshots))
    model = new_model()
    backbone0, _ = split_state(model)
    result = fit(model, images, y, tr[:16], va, techniques=("ft",), cfg=CFG, preprocess=PreprocessSpec(), seed=0)
    assert [h["stage"] for h in result.history] == ["head", "all"]
    assert result.best_epoch == 1
    backbone1, _ = split_state(result.model)
    assert backbone0.keys() == backbone1.keys()
    changed = [k for k in backbone0 if not torch.equal(backbone0[k], backbone1[k])]
    assert any(k.startswith("conv_stem") for k in changed)  # the very first layer trained
    assert any("running_mean" in k for k in changed)  # BatchNorm in train mode
    assert all(p.requires_grad for p in result.model.parameters())


def test_early_stopping_keeps_the_best_validation_epoch(data, monkeypatch):
    images, y, tr, va = data
    # (accuracy, loss): before stage 2, then after each epoch. Epoch 3 ties epoch 2 on
    # accuracy with a lower loss (an improvement); epochs 4 and 5 do not improve.
    script = [(0.2, 1.0), (0.5, 0.9), (0.7, 0.8), (0.7, 0.7), (0.7, 0.75), (0.6, 0.6), (0.9, 0.1)]
    snapshots: list[dict] = []
    monkeypatch.setattr(fit_module, "evaluate", scripted_evaluate(script, snapshots))
    model = new_model()
    cfg = TrainConfig(head_epochs=1, epochs=8, batch_size=16, patience=2, lr=5e-3)
    result = fit(model, images, y, tr[:8], va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    stage2 = [h for h in result.history if h["stage"] == "all"]
    assert [h["epoch"] for h in stage2] == [1, 2, 3, 4, 5]  # stopped after 2 stale epochs
    assert [h["val_accuracy"] for h in stage2] == [0.5, 0.7, 0.7, 0.7, 0.6]
    assert result.best_epoch == 3
    assert result.best_val_accuracy == 0.7
    # the kept weights are those evaluated after epoch 3 (snapshot 0 is before stage 2)
    final = result.model.state_dict()
    assert same(final, snapshots[3])
    assert not same(final, snapshots[5])
    assert not same(final, snapshots[0])


def test_early_stopping_with_no_improvement_keeps_the_warmed_up_model(data, monkeypatch):
    images, y, tr, va = data
    # stage 2 improves on itself twice, then stalls twice, never beating the warmed-up 0.8
    script = [(0.8, 0.5), (0.5, 0.9), (0.6, 0.7), (0.55, 0.8), (0.5, 0.9), (0.9, 0.1)]
    snapshots: list[dict] = []
    monkeypatch.setattr(fit_module, "evaluate", scripted_evaluate(script, snapshots))
    cfg = TrainConfig(head_epochs=1, epochs=8, batch_size=16, patience=2, lr=5e-3)
    result = fit(new_model(), images, y, tr[:8], va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    assert result.best_epoch == 0
    assert len([h for h in result.history if h["stage"] == "all"]) == 4
    assert same(result.model.state_dict(), snapshots[0])


def test_patience_counts_from_the_stage_own_best_after_a_dip(data, monkeypatch):
    """Unfreezing often costs the first epochs; stage 2 must not stop before it recovers."""
    images, y, tr, va = data
    script = [(0.6, 1.0), (0.4, 1.5), (0.5, 1.2), (0.7, 0.8), (0.65, 0.9), (0.6, 1.0), (0.9, 0.1)]
    snapshots: list[dict] = []
    monkeypatch.setattr(fit_module, "evaluate", scripted_evaluate(script, snapshots))
    cfg = TrainConfig(head_epochs=1, epochs=8, batch_size=16, patience=2, lr=5e-3)
    result = fit(new_model(), images, y, tr[:8], va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    assert [h["val_accuracy"] for h in result.history if h["stage"] == "all"] == [0.4, 0.5, 0.7, 0.65, 0.6]
    assert result.best_epoch == 3 and result.best_val_accuracy == 0.7
    assert same(result.model.state_dict(), snapshots[3])


@pytest.mark.parametrize("head_epochs", [1, 0])
def test_real_early_stopping_history_agrees_with_best_epoch(data, head_epochs):
    images, y, tr, va = data
    # without a warm-up (head_epochs 0) the start is a random head, whose validation loss stage 2
    # lowers epoch after epoch (1 thread, as every test runs): both branches below run
    cfg = TrainConfig(head_epochs=head_epochs, epochs=3, batch_size=16, patience=5, lr=3e-3)
    result = fit(new_model(), images, y, tr, va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    stage2 = [h for h in result.history if h["stage"] == "all"]
    assert len(stage2) == 3
    final = evaluate(result.model, images[va], torch.as_tensor(y[va]), PreprocessSpec(), nn.CrossEntropyLoss())
    assert final["accuracy"] == result.best_val_accuracy
    assert result.best_epoch > 0 or head_epochs == 1
    if result.best_epoch:
        best = stage2[result.best_epoch - 1]
        assert best["val_accuracy"] == result.best_val_accuracy
        assert final["loss"] == pytest.approx(best["val_loss"], rel=1e-5, abs=1e-6)
        assert all((best["val_accuracy"], -best["val_loss"]) >= (h["val_accuracy"], -h["val_loss"]) for h in stage2)
    else:  # nothing beat the warmed-up model
        assert all((final["accuracy"], -final["loss"]) >= (h["val_accuracy"], -h["val_loss"]) for h in stage2)


def test_head_only_keeps_the_best_head_epoch(data):
    images, y, tr, va = data
    cfg = TrainConfig(epochs=4, batch_size=16, patience=10, head_lr=3e-2)
    result = fit(new_model(), images, y, tr, va, techniques=("head",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    assert len(result.history) == 4
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] == result.best_val_accuracy
    assert all((best["val_accuracy"], -best["val_loss"]) >= (h["val_accuracy"], -h["val_loss"])
               for h in result.history)
    final = evaluate(result.model, images[va], torch.as_tensor(y[va]), PreprocessSpec(), nn.CrossEntropyLoss())
    assert final["accuracy"] == best["val_accuracy"]
    assert final["loss"] == pytest.approx(best["val_loss"], rel=1e-4, abs=1e-5)


def test_fit_is_reproducible(data):
    images, y, tr, va = data
    kw = {"techniques": ("ft", "hf"), "cfg": CFG, "preprocess": PreprocessSpec(), "seed": 5}
    a = fit(new_model(), images, y, tr[:20], va, **kw)
    b = fit(new_model(), images, y, tr[:20], va, **kw)
    assert same(a.model.state_dict(), b.model.state_dict())
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]


def test_class_statistics_come_from_the_training_part_only(data, monkeypatch):
    images, y, tr, va = data
    seen = {}

    def spy(name, real):
        def wrapper(labels, *args):
            seen[name] = np.asarray(labels).copy()
            return real(labels, *args)
        return wrapper

    monkeypatch.setattr(fit_module, "class_weights", spy("cw", class_weights))
    monkeypatch.setattr(fit_module, "balanced_order", spy("ws", balanced_order))
    cfg = TrainConfig(epochs=1, batch_size=16)
    fit(new_model(), images, y, tr, va, techniques=("head", "cw"), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    fit(new_model(), images, y, tr, va, techniques=("head", "ws"), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    np.testing.assert_array_equal(seen["cw"], y[tr])
    np.testing.assert_array_equal(seen["ws"], y[tr])


# --- feature cache --------------------------------------------------------------

def test_feature_cache_is_computed_once_and_reused(data, monkeypatch):
    images, y, tr, va = data
    calls = []

    def counting(model, imgs, preprocess, batch_size=256, flip=False):
        calls.append(flip)
        return extract_features(model, imgs, preprocess, batch_size, flip)

    monkeypatch.setattr(fit_module, "extract_features", counting)
    cache: dict = {}
    key = ("random-seed0", "mobilenetv2", SIZE)
    cfg = TrainConfig(epochs=1, batch_size=16)
    fit(new_model(), images, y, tr, va, techniques=("head", "hf"), cfg=cfg, preprocess=PreprocessSpec(),
        seed=0, cache=cache, cache_key=key)
    assert sorted(calls) == [False, True]  # plain and mirrored features
    fit(new_model(), images, y, tr, va, techniques=("head", "hf"), cfg=cfg, preprocess=PreprocessSpec(),
        seed=1, cache=cache, cache_key=key)
    assert len(calls) == 2  # nothing recomputed
    # the cached features are the frozen backbone's
    reference = extract_features(new_model(), images, PreprocessSpec())
    torch.testing.assert_close(cache[("features", *key, False)], reference)
    # another key (e.g. other preprocessing) is computed anew
    fit(new_model(), images, y, tr, va, techniques=("head",), cfg=cfg, preprocess=PreprocessSpec((0.5,) * 3, (0.2,) * 3),
        seed=0, cache=cache, cache_key=(*key, "ip"))
    assert len(calls) == 3
    # without a cache every call computes
    fit(new_model(), images, y, tr, va, techniques=("head",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    assert len(calls) == 4


def test_cutmix_targets_match_the_pasted_area():
    g = torch.Generator().manual_seed(3)
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 10, 10).contiguous()
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    same, target = cutmix(x, y, 6, 0.0, g)
    assert same is x and torch.equal(target, torch.eye(6))
    mixed = 0
    for _ in range(20):
        out, target = cutmix(x, y, 6, 1.0, g)
        assert torch.allclose(target.sum(1), torch.ones(6))
        for i in range(6):  # image i holds the value i: count where another image's pixels went
            share = (out[i, 0] == i).float().mean()
            assert torch.isclose(target[i, i], share)
            mixed += bool(target[i, i] < 1)
    assert mixed > 0


def test_mix_hook_feeds_its_targets_to_the_loss():
    model = create_model("mobilenetv2", 3, "random")
    seen = []

    def loss_fn(logits, target):
        seen.append(target)
        return nn.functional.cross_entropy(logits, target)

    def mix(x, y, generator):
        return x, torch.full((len(y), 3), 1 / 3).index_fill_(1, torch.tensor([2]), 2 / 3).div_(4 / 3)

    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8)
    stats = train_one_epoch(model, images, torch.zeros(8, dtype=torch.long), optimizer=torch.optim.SGD(
        model.parameters(), lr=0.01), loss_fn=loss_fn, preprocess=PreprocessSpec(), batch_size=4,
        generator=torch.Generator().manual_seed(0), mix=mix)
    assert len(seen) == 2 and all(t.shape == (4, 3) for t in seen)
    assert torch.allclose(seen[0][0], torch.tensor([0.25, 0.25, 0.5]))
    assert stats["n"] == 8


# --- settings that a technique would ignore ---------------------------------------

def test_shift_is_refused_where_only_the_head_trains():
    # 'head' trains on cached backbone features, where no image is shifted
    with pytest.raises(SignferError, match=r"^HEAD: shift=4 would never apply: technique 'head'"):
        RunSpec("HEAD", "mobilenetv2", "imagenet", ("head", "hf"), TrainConfig(shift=4))
    RunSpec("HEAD", "mobilenetv2", "imagenet", ("head",), TrainConfig())
    RunSpec("FT", "mobilenetv2", "imagenet", ("ft",), TrainConfig(shift=4))  # the all-layers stage shifts


def test_fit_shifts_the_all_layers_stage_only(data, monkeypatch):
    images, y, tr, va = data
    shifts = []
    real = fit_module.train_one_epoch

    def recording(*a, shift=0, **k):
        shifts.append(shift)
        return real(*a, shift=shift, **k)

    monkeypatch.setattr(fit_module, "train_one_epoch", recording)
    cfg = TrainConfig(head_epochs=1, epochs=1, batch_size=16, shift=3)
    fit(new_model(), images, y, tr, va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    assert shifts == [3]  # one all-layers epoch; the warm-up ran on cached features


# --- resuming a killed fit ------------------------------------------------------

class Killed(Exception):
    """Stands in for the kill of a fit (Ctrl-C, a lost node, the end of a session)."""


def kill_after(line_start: str):
    def log(line: str) -> None:
        if line.strip().startswith(line_start):
            raise Killed(line)
    return log


@pytest.mark.parametrize("validate", [True, False])
def test_a_killed_fit_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(data, tmp_path, validate):
    images, y, tr, va = data
    cfg = TrainConfig(head_epochs=1, epochs=4, batch_size=8, patience=10, rotate=10, scale=0.1)
    kw = {"techniques": ("ft", "hf"), "cfg": cfg, "preprocess": PreprocessSpec(), "seed": 3,
          "val_idx": va if validate else va[:0], "epochs": None if validate else 4}
    whole = fit(new_model(), images, y, tr, **kw)
    state = tmp_path / "fit_state.pt"
    # killed while logging epoch 3: epochs 1 and 2 were saved (state_every_s=0 saves after each)
    with pytest.raises(Killed):
        fit(new_model(), images, y, tr, **kw, state_path=state, state_every_s=0, log=kill_after("epoch 3"))
    assert state.is_file()
    lines: list[str] = []
    resumed = fit(new_model(), images, y, tr, **kw, state_path=state, state_every_s=0, log=lines.append)
    assert any("resumed after epoch 2" in line for line in lines)
    assert not any("head epoch" in line for line in lines)  # stage 1 was not run again
    assert [line.split(":")[0].strip() for line in lines if "epoch" in line and "resumed" not in line] == [
        "epoch 3" if validate else "epoch 3/4", "epoch 4" if validate else "epoch 4/4"]
    assert same(whole.model.state_dict(), resumed.model.state_dict())
    untimed = [[{k: v for k, v in h.items() if k != "img_per_s"} for h in r.history] for r in (whole, resumed)]
    assert untimed[0] == untimed[1] and resumed.best_epoch == whole.best_epoch
    assert resumed.train_images == whole.train_images


def test_a_saved_state_of_another_fit_is_not_resumed(data, tmp_path):
    images, y, tr, va = data
    cfg = TrainConfig(head_epochs=1, epochs=3, batch_size=8, patience=10)
    kw = {"techniques": ("ft",), "cfg": cfg, "preprocess": PreprocessSpec(), "val_idx": va}
    state = tmp_path / "fit_state.pt"
    with pytest.raises(Killed):
        fit(new_model(), images, y, tr, seed=1, **kw, state_path=state, state_every_s=0, log=kill_after("epoch 2"))
    lines: list[str] = []
    other = fit(new_model(), images, y, tr, seed=2, **kw, state_path=state, state_every_s=0, log=lines.append)
    assert any("another fit's" in line for line in lines) and not any("resumed" in line for line in lines)
    fresh = fit(new_model(), images, y, tr, seed=2, **kw)
    assert same(other.model.state_dict(), fresh.model.state_dict())
    # a state of this fit in another layout (another signfer version) is noted and not used
    state.unlink()  # (fit leaves it to its caller to remove)
    with pytest.raises(Killed):
        fit(new_model(), images, y, tr, seed=2, **kw, state_path=state, state_every_s=0, log=kill_after("epoch 2"))
    saved = torch.load(state, weights_only=True)
    del saved["stage_best"]
    torch.save(saved, state)
    lines.clear()
    again = fit(new_model(), images, y, tr, seed=2, **kw, state_path=state, state_every_s=0, log=lines.append)
    assert any("another signfer version" in line for line in lines)
    assert same(again.model.state_dict(), fresh.model.state_dict())
    # and a damaged file is noted and replaced, not a traceback
    state.write_bytes(b"not a torch file")
    lines.clear()
    again = fit(new_model(), images, y, tr, seed=2, **kw, state_path=state, state_every_s=0, log=lines.append)
    assert any("unreadable saved state" in line for line in lines)
    assert same(again.model.state_dict(), fresh.model.state_dict())


def test_the_state_is_saved_at_most_every_state_every_s(data, tmp_path, monkeypatch):
    images, y, tr, va = data
    saves = []
    monkeypatch.setattr(fit_module, "_save_state", lambda path, state: saves.append(state["epoch"]))
    cfg = TrainConfig(head_epochs=1, epochs=3, batch_size=8, patience=10)
    fit(new_model(), images, y, tr, va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0,
        state_path=tmp_path / "s.pt", state_every_s=3600)
    assert saves == []
    fit(new_model(), images, y, tr, va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0,
        state_path=tmp_path / "s.pt", state_every_s=0)
    assert saves == [1, 2, 3]


# --- what each part of a fit reads ------------------------------------------------

def test_choose_preprocess_statistics_come_from_the_training_side_only():
    from signfer.training.train import choose_preprocess

    images = torch.zeros(10, 4, 4, 3, dtype=torch.uint8)
    images[5:] = 255  # the held-out half is white: any leak moves the mean
    _, meta = build_model("mobilenetv2", CLASSES, "random", SIZE)
    prep, source = choose_preprocess(("ft", "ip"), "random", TrainConfig(), meta, images, np.arange(5))
    assert source == "train" and prep.mean == (0.0, 0.0, 0.0)


def test_fit_scores_every_epoch_on_the_validation_part_only(data, monkeypatch):
    images, y, tr, va = data
    sizes = []
    real = fit_module.evaluate

    def spy(model, x, labels, *a, **k):
        sizes.append(len(x))
        assert torch.equal(labels, torch.as_tensor(y[va]))
        return real(model, x, labels, *a, **k)

    monkeypatch.setattr(fit_module, "evaluate", spy)
    cfg = TrainConfig(head_epochs=1, epochs=2, batch_size=16, patience=5)
    fit(new_model(), images, y, tr[:16], va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    assert sizes == [len(va)] * 3  # before stage 2, then after each of its 2 epochs


def test_balanced_order_of_both_stages_sees_the_training_labels_only(data, monkeypatch):
    images, y, tr, va = data
    calls = []

    def spy(labels, generator):
        calls.append(np.asarray(labels).copy())
        return balanced_order(labels, generator)

    monkeypatch.setattr(fit_module, "balanced_order", spy)
    cfg = TrainConfig(head_epochs=1, epochs=1, batch_size=16)
    fit(new_model(), images, y, tr, va, techniques=("ft", "ws"), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    assert len(calls) == 2 and all(np.array_equal(c, y[tr]) for c in calls)


def test_a_state_that_cannot_be_saved_does_not_stop_the_fit(data, tmp_path, monkeypatch):
    images, y, tr, va = data
    calls = []

    def refused(path, state):
        calls.append(state["epoch"])
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fit_module, "_save_state", refused)
    cfg = TrainConfig(head_epochs=1, epochs=3, batch_size=8, patience=10)
    lines: list[str] = []
    result = fit(new_model(), images, y, tr, va, techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0,
                 state_path=tmp_path / "s.pt", state_every_s=0, log=lines.append)
    assert calls == [1]  # tried once, then the fit went on without saving
    assert len([h for h in result.history if h["stage"] == "all"]) == 3
    assert sum("cannot save the fit's state" in line for line in lines) == 1
