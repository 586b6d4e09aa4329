"""The FER models shipped inside the package: metadata, size, and real predictions."""

from __future__ import annotations

import numpy as np
import pytest

from signfer.data.cache import read_rgb
from signfer.faces.crop import crop_face
from signfer.inference.classifier import TorchClassifier
from signfer.labels import CANONICAL
from signfer.models.checkpoint import builtin_models, load_checkpoint

MODELS = sorted(builtin_models())
pytestmark = pytest.mark.skipif(not MODELS, reason="no built-in model is installed")


@pytest.mark.parametrize("name", MODELS)
def test_metadata_is_complete_and_the_file_is_small(name):
    state, meta = load_checkpoint(name)
    assert sorted(meta.labels) == sorted(CANONICAL)
    assert meta.input_size > 0 and len(meta.mean) == 3 and len(meta.std) == 3
    assert meta.command.startswith("signfer ") and "pretrain" in meta.command
    assert meta.training_data and 0.0 < meta.val_accuracy <= 1.0
    assert builtin_models()[name].with_suffix(".safetensors").stat().st_size < 10e6
    assert meta.extra["check_faces"]


@pytest.mark.parametrize("name", MODELS)
def test_a_model_trained_from_another_records_how_that_one_was_made(name):
    """The chain back to ImageNet weights stays reproducible after a parent is replaced."""
    _, meta = load_checkpoint(name)
    step = {"command": meta.command, "config": meta.config, "init_from": meta.extra.get("init_from")}
    while step["config"].get("init", "imagenet") not in ("imagenet", "random"):
        parent = step["init_from"]
        assert parent and parent["command"].startswith("signfer ") and "pretrain" in parent["command"]
        assert f"--init {step['config']['init']}" in step["command"]
        step = {"command": parent["command"], "init_from": parent.get("init_from"),
                "config": {"init": _init_in(parent["command"])}}


@pytest.mark.parametrize("name", MODELS)
def test_a_distilled_model_records_its_teachers(name):
    _, meta = load_checkpoint(name)
    records = meta.extra.get("teachers", [])
    assert [t["name"] for t in records] == list(meta.config.get("teachers", []))
    for teacher in records:
        assert teacher["command"].startswith("signfer ") and "pretrain" in teacher["command"]
        assert 0.0 < teacher["val_accuracy"] <= 1.0


def _init_in(command: str) -> str:
    words = command.split()
    return words[words.index("--init") + 1] if "--init" in words else "imagenet"


@pytest.mark.parametrize("name", MODELS)
def test_predicts_faces_it_gets_right_at_full_scale(name, shared):
    """The faces recorded at shipping time, from FER2013 validation, still come out right."""
    _, meta = load_checkpoint(name)
    clf = TorchClassifier.load(name)
    root = shared / "data" / "fer2013" / "validation"
    faces = meta.extra["check_faces"]
    crops = np.stack([crop_face(read_rgb(str(root / f["face"])), None, clf.input_size) for f in faces])
    probs = clf.predict_proba(crops)
    got = [clf.labels[i] for i in probs.argmax(1)]
    assert got == [f["label"] for f in faces]
