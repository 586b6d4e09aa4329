"""The architecture registry and signfer checkpoints, parametrised over the registry like timm's tests."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

from signfer.errors import SignferError
from signfer.labels import canonical
from signfer.models.checkpoint import (
    FORMAT,
    ModelMeta,
    build_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from signfer.models.registry import ARCHS, create_model, get_arch, imagenet_weights_path

SIZE = 32
WITH_WEIGHTS = [name for name, a in ARCHS.items() if a.weights_package]
WITHOUT_WEIGHTS = [name for name, a in ARCHS.items() if not a.weights_package]


def x_batch(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# --- registry ---------------------------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCHS))
def test_create_model_random_gives_logits_of_the_right_shape(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5, init="random").eval()
    with torch.inference_mode():
        out = model(x_batch(2))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    assert model.get_classifier().out_features == 5
    # the interface that fit() relies on: pooled features feed the head
    with torch.inference_mode():
        feats = model.forward_head(model.forward_features(x_batch(2)), pre_logits=True)
    assert feats.shape == (2, model.get_classifier().in_features)


def test_unknown_arch_lists_the_valid_names():
    with pytest.raises(SignferError) as e:
        create_model("resnet9000", 3)
    msg = str(e.value)
    assert "resnet9000" in msg
    assert all(name in msg for name in ARCHS)


def test_unknown_init_is_an_error():
    with pytest.raises(SignferError, match="unknown init"):
        create_model("mobilenetv2", 3, init="fer2013-please")


@pytest.mark.parametrize("arch", WITH_WEIGHTS)
def test_imagenet_init_loads_the_shipped_weights(arch):
    torch.manual_seed(0)
    random = create_model(arch, 4, "random")
    torch.manual_seed(0)
    imagenet = create_model(arch, 4, "imagenet")
    path = imagenet_weights_path(get_arch(arch))
    shipped = [v for k, v in torch.load(path, map_location="cpu", weights_only=True).items()
               if not k.endswith("num_batches_tracked")]
    ours = [(k, v) for k, v in imagenet.state_dict().items() if not k.endswith("num_batches_tracked")]
    # same tensors in the same order, the head excepted (4 classes, not 1000)
    head = imagenet.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    head_names = {k for k, p in imagenet.named_parameters() if id(p) in head_ids}
    for (name, mine), theirs in zip(ours, shipped):
        if name in head_names:
            continue
        assert torch.equal(mine, theirs.to(mine.dtype)), name
    # BatchNorm statistics came along, so the model differs from a random one
    first = ours[0][0]
    assert not torch.equal(random.state_dict()[first], imagenet.state_dict()[first])
    bn_mean = next(k for k, _ in ours if k.endswith("running_mean"))
    assert not torch.equal(imagenet.state_dict()[bn_mean], torch.zeros_like(imagenet.state_dict()[bn_mean]))
    assert head.out_features == 4


@pytest.mark.parametrize("arch", WITHOUT_WEIGHTS)
def test_imagenet_init_without_offline_weights_is_an_error(arch):
    with pytest.raises(SignferError, match=f"no offline ImageNet weights for {arch!r}"):
        create_model(arch, 3, "imagenet")


def test_efficientnet_b0_imagenet_names_the_archs_that_have_weights():
    with pytest.raises(SignferError) as e:
        create_model("efficientnet_b0", 3, "imagenet")
    assert all(name in str(e.value) for name in WITH_WEIGHTS)


# --- checkpoints ------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(3)
    labels = ["happiness", "neutral", "sadness"]
    model = create_model("mobilenetv2", len(labels), "random")
    # non-trivial BatchNorm statistics, so that buffers are checked too
    model.train()
    with torch.no_grad():
        model(x_batch(8, seed=1))
    model.eval()
    meta = ModelMeta(arch="mobilenetv2", input_size=SIZE, labels=labels, mean=[0.1, 0.2, 0.3], std=[0.3, 0.2, 0.1],
                     normalize=False, equalize=True, config={"epochs": 3, "lr": 1e-3}, training_data="fer2013/train",
                     val_accuracy=0.61, command="signfer pretrain ...", extra={"note": "tests"})
    return model, meta, tmp_path / "ckpt"


def test_checkpoint_round_trip_gives_identical_outputs(saved):
    model, meta, path = saved
    stem = save_checkpoint(model, meta, path)
    assert stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()
    loaded, meta2 = load_model(stem)
    assert not loaded.training
    x = x_batch()
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert meta2 == meta


def test_weights_and_metadata_of_different_saves_are_refused(saved, tmp_path):
    model, meta, path = saved
    stem = save_checkpoint(model, meta, path)
    # another model saved over it, interrupted between its weights and its JSON:
    # the old JSON's label order with the new weights would mislabel without a word
    other = create_model("mobilenetv2", len(meta.labels), "random")
    newer = save_checkpoint(other, meta, tmp_path / "newer")
    shutil.copy(newer.with_suffix(".safetensors"), stem.with_suffix(".safetensors"))
    with pytest.raises(SignferError, match="not the weights that ckpt.json describes"):
        load_model(stem)
    # a checkpoint from before the hash was recorded still loads
    obj = json.loads(stem.with_suffix(".json").read_text())
    del obj["weights_sha256"]
    stem.with_suffix(".json").write_text(json.dumps(obj))
    load_model(stem)


def test_metadata_round_trip_and_format_tag(saved):
    model, meta, path = saved
    stem = save_checkpoint(model, meta, path)
    raw = json.loads(stem.with_suffix(".json").read_text())
    assert raw["format"] == FORMAT
    assert raw["labels"] == meta.labels  # label order is data
    _, meta2 = load_checkpoint(stem)
    assert meta2 == meta
    # either file of the pair names the checkpoint
    assert load_checkpoint(stem.with_suffix(".json"))[1] == meta
    assert load_checkpoint(stem.with_suffix(".safetensors"))[1] == meta


def test_fp16_checkpoint_is_smaller_and_close(saved):
    model, meta, path = saved
    full = save_checkpoint(model, meta, path.with_name("full"))
    half = save_checkpoint(model, meta, path.with_name("half"), half=True)
    size = lambda stem: stem.with_suffix(".safetensors").stat().st_size
    assert size(half) < 0.6 * size(full)
    state, _ = load_checkpoint(half)
    assert all(v.dtype != torch.float16 for v in state.values())
    loaded, _ = load_model(half)
    x = x_batch()
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=2e-2, atol=2e-2)


def test_json_with_another_format_is_refused(saved):
    model, meta, path = saved
    stem = save_checkpoint(model, meta, path)
    raw = json.loads(stem.with_suffix(".json").read_text())
    raw["format"] = "someone-else/2"
    stem.with_suffix(".json").write_text(json.dumps(raw))
    with pytest.raises(SignferError, match="not a signfer checkpoint"):
        load_model(stem)


def test_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(SignferError, match="no signfer checkpoint"):
        load_checkpoint(tmp_path / "nothing")


class _Marker:
    """Unpickling this creates a folder: proof that code from the file ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("payload", ["pickle", "torch.save"])
def test_pickle_in_a_safetensors_file_is_never_executed(saved, tmp_path, monkeypatch, payload):
    model, meta, path = saved
    stem = save_checkpoint(model, meta, path)
    marker = tmp_path / "pwned"
    weights = stem.with_suffix(".safetensors")
    if payload == "pickle":
        weights.write_bytes(pickle.dumps({"conv_stem.weight": _Marker(marker)}))
    else:
        torch.save({"conv_stem.weight": _Marker(marker)}, weights)

    # The guards only record: an exception raised inside them would be caught
    # by the loader and turned into the very refusal expected below.
    unpicklers = []

    def record(name):
        def guard(*a, **k):
            unpicklers.append(name)
            raise RuntimeError(f"{name} called on a checkpoint")
        return guard

    monkeypatch.setattr(torch, "load", record("torch.load"))
    monkeypatch.setattr(pickle, "load", record("pickle.load"))
    monkeypatch.setattr(pickle, "loads", record("pickle.loads"))
    with pytest.raises(SignferError, match=rf"{weights.name}: damaged or not a safetensors file"):
        load_model(stem)
    assert unpicklers == []
    assert not marker.exists()


def _corrupt(stem, how):
    if how == "garbage weights":
        stem.with_suffix(".safetensors").write_bytes(pickle.dumps([1, 2, 3]))
    elif how == "truncated weights":
        data = stem.with_suffix(".safetensors").read_bytes()
        stem.with_suffix(".safetensors").write_bytes(data[: len(data) // 2])
    elif how == "invalid json":
        stem.with_suffix(".json").write_text("{not json")
    elif how == "json without arch":
        raw = json.loads(stem.with_suffix(".json").read_text())
        del raw["arch"]
        stem.with_suffix(".json").write_text(json.dumps(raw))


@pytest.mark.parametrize("how", ["garbage weights", "truncated weights", "invalid json", "json without arch"])
def test_damaged_checkpoint_is_a_clean_error_naming_the_file(saved, how):
    model, meta, path = saved
    stem = save_checkpoint(model, meta, path)
    _corrupt(stem, how)
    with pytest.raises(SignferError, match=stem.name):
        load_model(stem)


# --- build_model from a checkpoint ---------------------------------------------------

def test_same_labels_in_another_order_keep_their_head_rows(tiny_fer, fer_labels):
    reference, _ = load_model(tiny_fer)
    # another order, and synonyms: matched by canonical name, never by position
    classes = ["happy", "surprise", "neutral", "angry", "sad", "fear", "disgust"]
    model, meta = build_model(None, classes, str(tiny_fer), input_size=64)
    assert meta.labels == classes
    assert meta.input_size == SIZE  # the checkpoint's own size wins
    assert meta.extra["init"] == str(tiny_fer)
    x = x_batch()
    with torch.inference_mode():
        ref = reference(x)
        got = model.eval()(x)
    for i, c in enumerate(classes):
        torch.testing.assert_close(got[:, i], ref[:, fer_labels.index(canonical(c))], rtol=1e-6, atol=1e-6)
    happy = classes.index("happy")
    assert torch.equal(got[:, happy], ref[:, fer_labels.index("happiness")])


def test_other_label_set_gets_a_new_head_and_keeps_the_backbone(tiny_fer):
    state, meta0 = load_checkpoint(tiny_fer)
    classes = ["happiness", "neutral", "sadness"]
    model, meta = build_model("mobilenetv2", classes, str(tiny_fer))
    head = model.get_classifier()
    assert head.out_features == 3
    assert meta.labels == classes and meta.mean == meta0.mean and meta.std == meta0.std
    head_ids = {id(p) for p in head.parameters()}
    for k, p in model.named_parameters():
        if id(p) not in head_ids:
            assert torch.equal(p.detach(), state[k]), k
    with torch.inference_mode():
        assert model.eval()(x_batch()).shape == (3, 3)


def test_build_model_refuses_another_arch_and_missing_arch(tiny_fer, fer_labels):
    with pytest.raises(SignferError, match="is a mobilenetv2, not a efficientnet_lite0"):
        build_model("efficientnet_lite0", fer_labels, str(tiny_fer))
    with pytest.raises(SignferError, match="needs an architecture"):
        build_model(None, fer_labels, "random")
    with pytest.raises(SignferError, match="no signfer checkpoint"):
        build_model("mobilenetv2", fer_labels, "no-such-model")


def test_build_model_random_and_imagenet_metadata():
    model, meta = build_model("mobilenetv2", ["a", "b"], "random", input_size=48)
    assert meta.input_size == 48 and meta.labels == ["a", "b"] and meta.arch == "mobilenetv2"
    assert model.get_classifier().out_features == 2


def test_copied_checkpoint_is_found_by_path(tiny_fer, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_fer.with_suffix(suffix), tmp_path / f"copy{suffix}")
    a, _ = load_model(tiny_fer)
    b, _ = load_model(tmp_path / "copy")
    x = x_batch()
    with torch.inference_mode():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


class _Marker:
    """Unpickling it runs ``os.mkdir(path)``: code in a file that claims to hold weights."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_imagenet_weights_with_code_in_them_are_refused_without_running_it(tmp_path, monkeypatch):
    from signfer.models import registry

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Marker(marker)}, evil)
    monkeypatch.setattr(registry, "imagenet_weights_path", lambda spec: evil)
    with pytest.raises(pickle.UnpicklingError):
        registry.create_model("mobilenetv2", 3, "imagenet")
    assert not marker.exists()


def test_a_dotted_name_saved_by_an_older_signfer_still_loads(tmp_path, capsys):
    from signfer.models.checkpoint import build_model, load_meta, resolve_checkpoint, save_checkpoint

    model, meta = build_model("mobilenetv2", ["anger", "neutral"], "random", 32)
    save_checkpoint(model, meta, tmp_path / "feph-v1")  # where an older signfer put `--out feph-v1.5`
    assert resolve_checkpoint(tmp_path / "feph-v1.5") == tmp_path / "feph-v1"
    assert load_meta(tmp_path / "feph-v1.5").labels == ["anger", "neutral"]
    assert capsys.readouterr().err.count("where signfer before 2026-12-03 saved") == 1  # said once
    save_checkpoint(model, meta, tmp_path / "feph-v1.5")  # once saved by its own name, that one counts
    assert resolve_checkpoint(tmp_path / "feph-v1.5") == tmp_path / "feph-v1.5"
