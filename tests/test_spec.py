"""One preprocessing spec: every path turns the same face into the same model input.

The same face image goes through cross-validation, ``finetune``, ``evaluate``,
``predict``, video annotation (PyTorch and ONNX Runtime) and a distillation
teacher. Each path's model input is recorded where it enters the network (a
forward pre-hook in eval mode, or the array handed to ONNX Runtime) and
compared with the checkpoint spec's own answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SIZE
from fixtures import write_image
from PIL import Image

import signfer.models.checkpoint as checkpoint_mod
from signfer.config import RunSpec, TrainConfig
from signfer.data import load_dataset
from signfer.data.spec import PreprocessSpec, equalize
from signfer.errors import SignferError
from signfer.experiments.grid import Grid
from signfer.experiments.runner import run_grid
from signfer.faces.crop import Box, CropSpec, Framing
from signfer.inference.annotate import annotate_frames
from signfer.inference.classifier import load_classifier, onnx_available
from signfer.inference.predict import evaluate_model, predict_images
from signfer.models.checkpoint import load_meta
from signfer.training.teacher import Teachers
from signfer.training.train import finetune
from signfer.video import Frame

FACE_SIDE = 40  # not the input size: every path must resize


class WholeImage:
    """A detector that finds one face filling the whole frame."""

    name = "whole"

    def detect(self, image):
        return [Box(0, 0, image.shape[1], image.shape[0], score=1.0)]


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    return write_image(tmp_path_factory.mktemp("face") / "face.png", key="x", size=FACE_SIDE)


@pytest.fixture(scope="module")
def same_face_dataset(tmp_path_factory, face) -> Path:
    """Two classes, three copies of the one face each: every sample is that face."""
    root = tmp_path_factory.mktemp("same")
    for cls in ("happy", "sad"):
        for i in range(3):
            (root / cls).mkdir(exist_ok=True)
            (root / cls / f"{i}.png").write_bytes(face.read_bytes())
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_fer) -> Path:
    """``tiny_fer`` recorded with a framing in which the face box is the whole image,
    so that a video face found by :class:`WholeImage` is cut exactly like the file."""
    meta = json.loads(tiny_fer.with_suffix(".json").read_text())
    meta["crop"] = CropSpec(framing=Framing(0.5, 0.5, 1.0, 1.0)).to_dict()
    meta["equalize"] = "luma"  # equalisation must happen on every path too
    stem = tmp_path_factory.mktemp("model") / "tiny-framed"
    stem.with_suffix(".json").write_text(json.dumps(meta))
    stem.with_suffix(".safetensors").write_bytes(tiny_fer.with_suffix(".safetensors").read_bytes())
    return stem


@pytest.fixture
def recorded(monkeypatch):
    """Model inputs seen in eval mode by every model created from now on."""
    seen: list[torch.Tensor] = []
    create = checkpoint_mod.create_model

    def recording(*args, **kwargs):
        net = create(*args, **kwargs)
        net.register_forward_pre_hook(lambda m, inp: None if m.training else seen.append(inp[0].detach().clone()))
        return net

    monkeypatch.setattr(checkpoint_mod, "create_model", recording)
    return seen


@pytest.fixture(scope="module")
def reference(model, face) -> torch.Tensor:
    spec = load_meta(model).spec
    crop = spec.crop_face(np.asarray(Image.open(face).convert("RGB")), None)
    return spec.torch_input(crop[None])[0]


def rows(seen: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.float() for x in seen])


def assert_all_equal(inputs: torch.Tensor, reference: torch.Tensor) -> None:
    assert len(inputs) > 0 and inputs.shape[1:] == reference.shape
    assert torch.equal(inputs, reference.expand_as(inputs))  # values only; memory layout may differ


def test_reference_is_equalised_normalised_and_sized(model, face, reference):
    meta = load_meta(model)
    crop = np.asarray(Image.open(face).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    x = torch.from_numpy(equalize(crop[None], "luma")).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(meta.mean).view(1, 3, 1, 1)) / torch.tensor(meta.std).view(1, 3, 1, 1)
    assert reference.shape == (3, SIZE, SIZE)
    assert torch.allclose(reference, x[0], atol=1e-6)


def test_evaluate_and_predict_feed_the_reference(model, face, same_face_dataset, reference, recorded):
    table = load_dataset("folder", same_face_dataset)
    evaluate_model(table, str(model), backend="torch")
    assert_all_equal(rows(recorded), reference)
    recorded.clear()
    predict_images([str(face)], str(model), backend="torch")
    assert_all_equal(rows(recorded), reference)


def test_annotate_feeds_the_reference_on_torch_and_onnx(model, face, reference, recorded, monkeypatch):
    image = np.asarray(Image.open(face).convert("RGB"))
    frames = [Frame(0, 0.0, image), Frame(1, 0.04, image.copy())]
    annotate_frames(iter(frames), load_classifier(model, "torch"), WholeImage())
    assert_all_equal(rows(recorded), reference)
    if not onnx_available():
        pytest.skip("onnxruntime is not installed")
    clf = load_classifier(model, "onnx")
    fed: list[np.ndarray] = []
    session = clf.session

    class Recording:
        def run(self, outputs, feeds):
            fed.extend(feeds.values())
            return session.run(outputs, feeds)

    clf.session = Recording()
    annotate_frames(iter(frames), clf, WholeImage())
    got = np.concatenate(fed)
    assert got.dtype == np.float32 and len(got) == 2
    assert np.abs(got - reference.numpy()[None]).max() < 1e-6


def test_cross_validation_and_train_feed_the_reference(model, same_face_dataset, reference, recorded, tmp_path):
    table = load_dataset("folder", same_face_dataset)
    cfg = TrainConfig(head_epochs=1, epochs=1, batch_size=4)
    runs = (RunSpec("zero", "mobilenetv2", str(model), ()), RunSpec("ft", "mobilenetv2", str(model), ("ft", "he", "ip"), cfg))
    run_grid(table, Grid(runs, folds=2, seed=0, train=cfg), tmp_path / "cv", log=lambda s: None)
    assert_all_equal(rows(recorded), reference)
    recorded.clear()
    stem = finetune(table, tmp_path / "trained", init=str(model), techniques="ft,he,ip", train=cfg,
                    crop=CropSpec(), log=lambda s: None)
    assert_all_equal(rows(recorded), reference)
    # and the trained model's own spec says so: the same equalisation and statistics
    trained = load_meta(stem).spec
    assert (trained.mean, trained.std, trained.equalize, trained.size) == (
        load_meta(model).spec.mean, load_meta(model).spec.std, "luma", SIZE)


def test_teacher_feeds_the_reference_within_float_error(model, face, reference, recorded):
    meta = load_meta(model)
    student = PreprocessSpec((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    crop = meta.spec.pixels(meta.spec.crop_face(np.asarray(Image.open(face).convert("RGB")), None)[None])
    with pytest.raises(SignferError, match="equalised"):
        Teachers([str(model)], list(meta.labels))  # teachers take the student's pixels as they are
    plain = model.parent / "plain"
    obj = json.loads(model.with_suffix(".json").read_text())
    obj["equalize"] = False
    plain.with_suffix(".json").write_text(json.dumps(obj))
    plain.with_suffix(".safetensors").write_bytes(model.with_suffix(".safetensors").read_bytes())
    recorded.clear()
    # the student's batch holds the already equalised pixels, normalised its own way
    Teachers([str(plain)], list(meta.labels))(student(torch.from_numpy(crop)), student)
    first = rows(recorded)[:1]  # the batch, then its mirror image
    assert torch.allclose(first[0], reference, atol=1e-6)
