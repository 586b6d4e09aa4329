"""Distillation teachers: label order, input size and mirroring are handled for the student."""

from __future__ import annotations

import pytest
import torch
from fixtures import make_folder_dataset

from signfer.data.spec import PreprocessSpec
from signfer.errors import SignferError
from signfer.models.checkpoint import load_model
from signfer.training.pretrain import PretrainConfig, pretrain
from signfer.training.teacher import Teachers

CLASSES = ("angry", "happy", "neutral")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = make_folder_dataset(tmp_path_factory.mktemp("fer"), CLASSES, per_class=4,
                               splits=("train", "validation"), size=24)
    cfg = PretrainConfig(arch="mobilenetv2", init="imagenet", input_size=32, epochs=1, batch_size=6)
    return pretrain(root, tmp_path_factory.mktemp("run"), cfg)


def _direct(model, meta, pixels):
    prep = PreprocessSpec(tuple(meta.mean), tuple(meta.std))
    with torch.no_grad():
        views = [prep(pixels), prep(pixels, torch.ones(len(pixels), dtype=torch.bool))]
        return sum(torch.softmax(model(v), 1) for v in views) / 2


def test_teacher_probabilities_follow_the_students_label_order(checkpoint):
    model, meta = load_model(checkpoint)
    pixels = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    expected = _direct(model, meta, pixels)  # columns in the checkpoint's order
    student_classes = list(reversed(meta.labels))
    # the student normalises differently: the teacher must undo that first
    student = PreprocessSpec((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    got = Teachers([str(checkpoint)], student_classes)(student(pixels), student)
    assert got.shape == (5, 3)
    assert torch.allclose(got, expected.flip(1), atol=1e-4)
    assert torch.allclose(got.sum(1), torch.ones(5), atol=1e-5)


def test_teacher_resizes_a_batch_of_another_size(checkpoint):
    pixels = torch.randint(0, 256, (2, 48, 48, 3), dtype=torch.uint8)
    got = Teachers([str(checkpoint)] * 2, ["anger", "happiness", "neutral"])(PreprocessSpec()(pixels), PreprocessSpec())
    assert got.shape == (2, 3) and torch.isfinite(got).all()


def test_teacher_without_a_class_of_the_student_is_refused(checkpoint):
    with pytest.raises(SignferError, match="does not know the classes"):
        Teachers([str(checkpoint)], ["anger", "happiness", "fear"])
    with pytest.raises(SignferError, match="at least one teacher"):
        Teachers([], ["anger"])
