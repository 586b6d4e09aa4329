"""Small-data recipe options: augmentation in the all-layers stage, test-time mirroring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SIZE

import signfer.training.fit as fit_mod
from signfer.config import RunSpec, TrainConfig
from signfer.data.spec import PreprocessSpec
from signfer.errors import SignferError
from signfer.inference.classifier import load_classifier
from signfer.models.registry import create_model
from signfer.training.fit import fit
from signfer.training.loop import predict_logits, predict_proba


def tiny_data(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8))
    y = np.arange(n) % 2
    return images, y


@pytest.mark.parametrize("key", ["rotate", "scale", "shift"])
def test_augmentation_is_refused_where_only_the_head_trains(key):
    cfg = TrainConfig(**{key: 2 if key == "shift" else 0.1})
    with pytest.raises(SignferError, match=key):
        RunSpec("x", "mobilenetv2", "imagenet", ("head",), cfg)
    RunSpec("x", "mobilenetv2", "imagenet", ("ft",), cfg)  # applies to ft's all-layers stage


@pytest.mark.parametrize("setting", ["rotate=-1", "rotate=200", "scale=1.5", "tta=maybe"])
def test_bad_recipe_settings_name_the_key(setting):
    from signfer.config import from_dict, parse_overrides

    with pytest.raises(SignferError, match=setting.split("=")[0]):
        from_dict(TrainConfig, parse_overrides([setting]), "--set")


def test_rotation_and_zoom_reach_the_all_layers_stage_only(monkeypatch):
    images, y = tiny_data()
    calls = []
    real = fit_mod.random_affine

    def spy(x, rotate, scale, generator):
        calls.append((rotate, scale, x.shape[0]))
        return real(x, rotate, scale, generator)

    monkeypatch.setattr(fit_mod, "random_affine", spy)
    cfg = TrainConfig(head_epochs=1, epochs=2, batch_size=8, patience=5, rotate=10.0, scale=0.1)
    torch.manual_seed(0)
    fit(create_model("mobilenetv2", 2, "random"), images, y, np.arange(16), np.arange(16, 24),
        techniques=("ft",), cfg=cfg, preprocess=PreprocessSpec(), seed=0)
    # two all-layers epochs of two batches of 8; none from the head stage
    assert calls == [(10.0, 0.1, 8)] * 4


def test_tta_averages_with_the_mirror_image():
    images, _ = tiny_data(6)
    torch.manual_seed(0)
    model = create_model("mobilenetv2", 3, "random").eval()
    prep = PreprocessSpec((0.5,) * 3, (0.25,) * 3)
    plain = torch.softmax(predict_logits(model, images, prep), 1).numpy()
    mirrored = torch.softmax(predict_logits(model, images.flip(2), prep), 1).numpy()
    assert not np.allclose(plain, mirrored)  # else the test proves nothing
    np.testing.assert_allclose(predict_proba(model, images, prep, tta=True), (plain + mirrored) / 2, atol=1e-6)
    np.testing.assert_allclose(predict_proba(model, images, prep), plain, atol=1e-7)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_model_trained_with_tta_keeps_mirroring_at_inference(tiny_fer, tmp_path, backend):
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    crops = tiny_data(4)[0].numpy()
    plain = load_classifier(tiny_fer, backend).predict_proba(crops)
    mirrored = load_classifier(tiny_fer, backend).predict_proba(np.ascontiguousarray(crops[:, :, ::-1]))
    meta = json.loads(tiny_fer.with_suffix(".json").read_text())
    meta["tta"] = True
    stem = tmp_path / "tta"
    stem.with_suffix(".json").write_text(json.dumps(meta))
    stem.with_suffix(".safetensors").write_bytes(tiny_fer.with_suffix(".safetensors").read_bytes())
    np.testing.assert_allclose(load_classifier(stem, backend).predict_proba(crops), (plain + mirrored) / 2,
                               atol=1e-5)


def test_train_records_tta_in_the_checkpoint(feph_small, tiny_fer, tmp_path):
    from signfer.data import load_dataset
    from signfer.faces.crop import CropSpec
    from signfer.models.checkpoint import load_meta
    from signfer.training.train import finetune

    cfg = TrainConfig(head_epochs=1, epochs=1, batch_size=8, tta=True, rotate=5.0)
    stem = finetune(load_dataset("feph", feph_small), tmp_path / "m", init=str(tiny_fer), train=cfg,
                    crop=CropSpec(), log=lambda s: None)
    meta = load_meta(stem)
    assert meta.tta is True and meta.config["rotate"] == 5.0


def _with_crop(stem, tmp_path, name, **crop):
    from signfer.faces.crop import CropSpec

    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["crop"] = CropSpec(**crop).to_dict()
    out = tmp_path / name
    out.with_suffix(".json").write_text(json.dumps(meta))
    out.with_suffix(".safetensors").write_bytes(stem.with_suffix(".safetensors").read_bytes())
    return out


def test_upper_and_lower_face_models_are_fused_and_each_written(tiny_fer, tmp_path):
    from signfer.faces.crop import Box
    from signfer.inference.annotate import annotate_frames
    from signfer.inference.predict import make_classifier
    from signfer.video import Frame

    class OneFace:
        def detect(self, image):
            return [Box(10, 10, 40, 40)]

    upper = _with_crop(tiny_fer, tmp_path, "upper", region="upper")
    lower = _with_crop(tiny_fer, tmp_path, "lower", region="lower")
    rng = np.random.default_rng(0)
    frames = [Frame(i, i / 25, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for i in range(3)]
    fused = make_classifier([str(upper), str(lower)], "torch")
    table = annotate_frames(iter(frames), fused, OneFace())
    labels = load_classifier(upper, "torch").labels
    each = {tag: table[[f"{tag}:prob_{c}" for c in labels]].to_numpy() for tag in ("upper", "lower")}
    assert not np.allclose(each["upper"], each["lower"])  # the two halves of the face differ
    np.testing.assert_allclose(table[[f"prob_{c}" for c in labels]].to_numpy(),
                               (each["upper"] + each["lower"]) / 2, atol=1e-6)
    # each member's columns are what that model alone predicts
    alone = annotate_frames(iter(frames), load_classifier(upper, "torch"), OneFace())
    np.testing.assert_allclose(alone[[f"prob_{c}" for c in labels]].to_numpy(), each["upper"], atol=1e-6)


def test_fusing_models_with_other_label_sets_is_refused(tiny_fer, tmp_path):
    from signfer.inference.predict import make_classifier

    other = _with_crop(tiny_fer, tmp_path, "other")
    meta = json.loads(other.with_suffix(".json").read_text())
    meta["labels"] = [*meta["labels"][:-1], "contempt"]
    other.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(SignferError, match="label sets"):
        make_classifier([str(tiny_fer), str(other)], "torch")


def test_dfki2025_grid_adds_one_step_per_row():
    from signfer.experiments.grid import named_grid

    grid = named_grid("dfki2025")
    rows = [(r.name, r.techniques, r.crop_faces, r.crop and (r.crop.margin, r.crop.align)) for r in grid.runs]
    assert rows == [
        ("FT+IP+HF", ("ft", "hf", "ip"), None, None),
        ("+detect+zoom1.15", ("ft", "hf", "ip"), "mtcnn", (1.15, False)),
        ("+detect+zoom1.15+HEC", ("ft", "hec", "hf", "ip"), "mtcnn", (1.15, False)),
        ("+detect+zoom1.15+HEC+align", ("ft", "hec", "hf", "ip"), "mtcnn", (1.15, True)),
    ]


def test_a_grid_configuration_cuts_its_own_faces_and_resumes_only_so(feph_small, tiny_fer, tmp_path,
                                                                     monkeypatch):
    import dataclasses

    import yaml

    from signfer.data import load_dataset
    from signfer.experiments import runner
    from signfer.experiments.grid import grid_from_yaml
    from signfer.experiments.runner import fold_dir, run_grid
    from signfer.faces.crop import CropSpec, Framing

    # YuNet finds no face in the synthetic cartoons: the framing it would measure
    measured = Framing(0.5, 0.45, 0.6, 0.7, n_measured=20, n_found=20)
    monkeypatch.setattr(runner, "dataset_crop", lambda table, crop, crop_faces, **kw: dataclasses.replace(
        crop or CropSpec(), detector="yunet", framing=measured))

    def grid(region):
        path = tmp_path / f"grid-{region}.yaml"
        path.write_text(yaml.safe_dump({
            "folds": 2, "archs": ["mobilenetv2"], "init": str(tiny_fer),
            "train": {"epochs": 1, "head_epochs": 1, "batch_size": 16},
            "configs": [{"name": "whole", "techniques": ["ft"]},
                        {"name": "part", "techniques": ["ft"], "crop": {"region": region}}]}))
        return grid_from_yaml(path)

    table = load_dataset("feph", feph_small)
    out = tmp_path / "run"
    run_grid(table, grid("upper"), out, keep_models=True, log=lambda s: None)
    whole, part = (fold_dir(out, spec, 0) for spec in grid("upper").runs)
    assert "faces" not in json.loads((whole / "metrics.json").read_text())
    assert json.loads((part / "metrics.json").read_text())["faces"]["crop"]["region"] == "upper"
    # each kept model records the crop it was trained with
    assert json.loads((whole / "model.json").read_text())["crop"]["region"] == "full"
    assert json.loads((part / "model.json").read_text())["crop"]["region"] == "upper"
    # both cut the same pre-cropped images, so both cut video faces with their measured framing
    for model in (whole, part):
        assert json.loads((model / "model.json").read_text())["crop"]["framing"] == dataclasses.asdict(measured)
    with pytest.raises(SignferError, match="other settings"):
        run_grid(table, grid("lower"), out, log=lambda s: None)


def test_each_preset_starts_from_its_built_in_model():
    from signfer.models.checkpoint import builtin_models, default_init
    from signfer.training.recipes import preset_init

    assert preset_init("fast", "mobilenetv2") == default_init("mobilenetv2") == "mobilenetv2-fer"
    assert preset_init(None, None) == "mobilenetv2-fer"
    assert preset_init("accurate", "mobilenetv2") == "mobilenetv2-fer-160"
    assert preset_init("accurate", "efficientnet_lite0") == "efficientnet_lite0-fer-160"
    assert {preset_init("accurate", a) for a in ("mobilenetv2", "efficientnet_lite0")} <= set(builtin_models())
    # an architecture without a built-in FER model starts where it always did
    assert preset_init("accurate", "efficientnet_b0") == default_init("efficientnet_b0") == "imagenet"
