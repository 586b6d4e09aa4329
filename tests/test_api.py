"""The Python front door (``signfer.api``): the README's example runs as written, Recognizer's contract.

The README's ```python block is executed with the dataset path, folds and
training settings swapped for tiny ones, in a folder holding the files it names.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import write_video
from PIL import Image

import signfer
from signfer.errors import SignferError
from signfer.faces.crop import Box
from signfer.inference.annotate import annotate_video
from signfer.models.checkpoint import build_model, save_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"
SIZE = 32
LABELS = ["surprise", "anger", "neutral", "happiness"]  # neither alphabetical nor canonical
FEPH_CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]


def readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 1, "README.md should hold one ```python block"
    return blocks[0]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return pytest.importorskip("skimage.data").astronaut()


def face_frames(astronaut: np.ndarray, n: int = 6):
    """160x120 frames: the astronaut's face moving over a grey background (YuNet finds it)."""
    face = np.asarray(Image.fromarray(astronaut[0:240, 120:330]).resize((70, 80)))
    for i in range(n):
        image = np.full((120, 160, 3), 90, np.uint8)
        image[20:100, 30 + 2 * i:100 + 2 * i] = face
        yield image


@pytest.fixture(scope="module")
def clip(astronaut, tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", face_frames(astronaut), 6)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model, meta = build_model("mobilenetv2", LABELS, "random", SIZE)
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("ckpt") / "tiny")


# ---------------------------------------------------------------- the README's example

def test_readme_python_example_runs(feph_small, astronaut, tmp_path, monkeypatch):
    code = readme_python()
    tiny = {'"~/data/FePh"': repr(str(feph_small)), "folds=5": "folds=3",
            "signfer.TrainConfig(epochs=5)": "signfer.TrainConfig(epochs=1, head_epochs=1, batch_size=16)"}
    for old, new in tiny.items():
        assert code.count(old) == 1, f"the README example no longer contains {old}"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)  # the example's relative paths land here
    write_video(tmp_path / "clip.mp4", face_frames(astronaut), 6)
    Image.fromarray(astronaut).save(tmp_path / "frame.jpg")
    Image.fromarray(astronaut[60:200, 150:290]).resize((48, 48)).save(tmp_path / "face.png")

    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 (the README's own example)

    assert isinstance(scope["results"], pd.DataFrame) and scope["results"]["fold"].tolist() == [0, 1, 2]
    model = Path(scope["model"])
    assert model.with_suffix(".safetensors").is_file() and model.with_suffix(".json").is_file()
    assert signfer.api.finetune is signfer.finetune
    probs = [f"prob_{c}" for c in FEPH_CLASSES]  # the trained model's labels, FePh's order
    frames, faces = scope["frames"], scope["faces"]
    assert [c for c in frames.columns if c.startswith("prob_")] == probs
    assert len(frames) == 6 and "label_smoothed" in frames.columns
    assert [c for c in faces.columns if c.startswith("prob_")] == probs
    assert faces["image"].tolist() == ["face.png", "frame.jpg"]
    assert faces.loc[1, "face_source"] == "detected"  # the whole astronaut photo
    assert set(faces["label"]) <= set(FEPH_CLASSES)


def test_import_signfer_is_cheap_and_sets_the_openmp_policy():
    code = ("import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); import signfer; "
            "assert 'torch' not in sys.modules, 'torch'; "
            "assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'")
    subprocess.run([sys.executable, "-c", code], check=True)
    from signfer.data import load_dataset

    assert signfer.load_dataset is load_dataset and "Recognizer" in dir(signfer)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        signfer.nope  # noqa: B018


# ---------------------------------------------------------------- Recognizer.predict

def test_predict_takes_an_array_a_pil_image_and_a_path(ckpt, tmp_path):
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(face).save(tmp_path / "face.png")
    rec = signfer.Recognizer(ckpt, detector=None, backend="torch")
    assert rec.labels == tuple(LABELS) and rec.spec.size == SIZE

    one = rec.predict(face)
    assert len(one) == 1 and one.loc[0, "image"] == 0
    table = rec.predict([face, Image.fromarray(face), tmp_path / "face.png", str(tmp_path / "face.png")])
    assert list(table.columns) == ["image", "face_source", "x", "y", "w", "h",
                                   *[f"prob_{c}" for c in LABELS], "label", "confidence"]
    assert table["image"].tolist() == [0, 1, str(tmp_path / "face.png"), str(tmp_path / "face.png")]
    assert (table["face_source"] == "whole image").all()
    assert table[["x", "y", "w", "h"]].to_numpy().tolist() == [[0, 0, 40, 40]] * 4
    probs = table[[f"prob_{c}" for c in LABELS]].to_numpy()
    assert np.allclose(probs, probs[0], atol=1e-5)  # the same face, however it came
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert table["label"].tolist() == [LABELS[probs[0].argmax()]] * 4
    assert np.allclose(table["confidence"], probs.max(1))
    # cut through the model's own spec, as video faces are
    expected = rec.classifier.predict_proba(np.stack([rec.classifier.crop(face, None)]))
    assert np.allclose(probs[0], expected[0], atol=1e-5)


class OneBoxDetector:
    """Finds a face only in images wider than 100 px."""

    name = "fake"

    def detect(self, image):
        return [Box(10, 20, 30, 40, 0.9)] if image.shape[1] > 100 else []


def test_predict_uses_the_detected_face_and_falls_back_to_the_whole_image(ckpt):
    rec = signfer.Recognizer(ckpt, detector=OneBoxDetector(), backend="torch")
    frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = frame[:48, :48].copy()
    table = rec.predict([frame, crop])
    assert table["face_source"].tolist() == ["detected", "whole image"]
    assert table.loc[0, ["x", "y", "w", "h"]].tolist() == [10, 20, 30, 40]
    assert table.loc[1, ["x", "y", "w", "h"]].tolist() == [0, 0, 48, 48]
    cut = rec.classifier.crop(frame, Box(10, 20, 30, 40, 0.9))
    expected = rec.classifier.predict_proba(np.stack([cut]))[0]
    assert np.allclose(table.loc[0, [f"prob_{c}" for c in LABELS]].to_numpy(float), expected, atol=1e-5)


def test_predict_refuses_a_float_array(ckpt):
    rec = signfer.Recognizer(ckpt, detector=None, backend="torch")
    with pytest.raises(SignferError, match="uint8"):
        rec.predict(np.zeros((8, 8, 3), np.float32))


def test_a_pil_image_is_read_as_its_file_would_be(ckpt, tmp_path):
    ramp = (np.arange(40 * 40, dtype=np.uint32).reshape(40, 40) * 40).astype(np.uint16)  # 16-bit grey
    image = Image.fromarray(ramp)
    image.save(tmp_path / "g16.png")
    rec = signfer.Recognizer(ckpt, detector=None, backend="torch")
    table = rec.predict([Image.open(tmp_path / "g16.png"), tmp_path / "g16.png"])
    by_pil, by_path = table.filter(like="prob_").to_numpy()
    assert np.allclose(by_pil, by_path, atol=1e-6)  # not clipped at 255, all white
    with pytest.raises(SignferError, match="mode 'F' is not supported"):
        rec.predict(Image.fromarray(np.zeros((8, 8), np.float32)))


def test_the_detector_defaults_to_the_one_the_model_records(ckpt, tmp_path):
    import json
    import shutil

    for suffix in (".safetensors", ".json"):
        shutil.copy(ckpt.with_suffix(suffix), tmp_path / f"m{suffix}")
    meta = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "crop": {"detector": "mtcnn", "margin": 1.15}}))
    assert signfer.Recognizer(tmp_path / "m", backend="torch").detector.name == "mtcnn"
    assert signfer.Recognizer(tmp_path / "m", detector="yunet", backend="torch").detector.name == "yunet"
    assert signfer.Recognizer(ckpt, backend="torch").detector.name == "yunet"  # records none


# ---------------------------------------------------------------- video

def test_predict_video_has_the_columns_of_the_annotate_csv(ckpt, clip, tmp_path):
    rec = signfer.Recognizer(ckpt, backend="torch")
    frames = rec.predict_video(clip, smooth=3)
    assert not list(tmp_path.iterdir())  # nothing written
    written = annotate_video(clip, tmp_path, rec.classifier, rec.detector, smooth=3, write_parquet=False)
    csv = pd.read_csv(written.outputs["csv"], keep_default_na=False)
    assert list(frames.columns) == list(csv.columns)
    assert len(frames) == len(csv) == 6 and frames["face"].all()
    assert np.allclose(frames["prob_anger"], csv["prob_anger"].astype(float), atol=1e-4)


def test_recognizer_annotate_writes_the_files(ckpt, clip, tmp_path):
    result = signfer.Recognizer(ckpt, backend="torch").annotate(clip, tmp_path / "ann", fps=3, write_parquet=False)
    assert result.outputs["csv"].is_file() and result.outputs["eaf"].is_file()
    assert result.n_frames == 3


def test_video_options_are_checked_first(ckpt, tmp_path):
    rec = signfer.Recognizer(ckpt, backend="torch")
    with pytest.raises(SignferError, match="--smooth"):
        rec.predict_video(tmp_path / "missing.mp4", smooth=0)
    with pytest.raises(SignferError, match="--detect-every"):
        rec.annotate(tmp_path / "missing.mp4", tmp_path / "out", detect_every=0)
    with pytest.raises(SignferError, match="face detector"):
        signfer.Recognizer(ckpt, detector=None, backend="torch").predict_video(tmp_path / "missing.mp4")


def test_library_annotate_and_suggest_check_options_before_loading(tmp_path):
    from signfer.inference.predict import annotate, suggest

    missing = tmp_path / "no-model"  # never loaded: the option is refused first
    for call, fragment in ((lambda: annotate(["v.mp4"], tmp_path, model=missing, detect_every=0), "--detect-every"),
                           (lambda: annotate(["v.mp4"], tmp_path, model=missing, smooth=0), "--smooth"),
                           (lambda: suggest(["v.mp4"], tmp_path, model=missing, n=0), "--n"),
                           (lambda: suggest(["v.mp4"], tmp_path, model=missing, method="max"), "--method")):
        with pytest.raises(SignferError, match=fragment):
            call()


def test_library_annotate_returns_results_and_errors(ckpt, clip, tmp_path):
    from signfer.inference.predict import annotate

    res = annotate([tmp_path / "missing.mp4", clip], tmp_path / "out", model=ckpt, backend="torch",
                   detector=OneBoxDetector())
    assert [r.video.name for r in res.results] == ["clip.mp4"]
    assert len(res.errors) == 1 and "missing.mp4" in res.errors[0]


# ---------------------------------------------------------------- cross_validate

def test_cross_validate_takes_a_dict_of_training_overrides(feph_small, tiny_fer, tmp_path):
    results = signfer.cross_validate(signfer.load_dataset("feph", feph_small), tmp_path / "cv", init=str(tiny_fer),
                                     techniques="head,ip", folds=2, train={"epochs": 1, "head_epochs": 1},
                                     log=lambda s: None)
    assert results["config"].unique().tolist() == ["HEAD+IP"] and results["fold"].tolist() == [0, 1]
    with pytest.raises(SignferError, match="unknown key"):
        signfer.cross_validate(signfer.load_dataset("feph", feph_small), tmp_path / "cv2", train={"epoch": 1})


def test_finetune_takes_a_dict_of_training_overrides(feph_small, tiny_fer, tmp_path):
    from signfer.models.checkpoint import load_meta

    stem = signfer.finetune(signfer.load_dataset("feph", feph_small), tmp_path / "m", init=str(tiny_fer),
                            techniques="ft,ip", train={"epochs": 1, "head_epochs": 0}, log=lambda s: None)
    assert load_meta(stem).config["epochs"] == 1
    with pytest.raises(SignferError, match="unknown key"):
        signfer.finetune(signfer.load_dataset("feph", feph_small), tmp_path / "m2", train={"epoch": 1})


def test_a_killed_finetune_resumes_with_the_same_call(feph_small, tiny_fer, tmp_path, monkeypatch):
    import signfer.training.fit as fit_module
    from safetensors.torch import load_file

    from signfer.training.train import fit_state_path

    monkeypatch.setattr(fit_module, "STATE_EVERY_S", 0.0)
    table = signfer.load_dataset("feph", feph_small)
    kw = {"init": str(tiny_fer), "techniques": "ft,ip,hf", "train": {"epochs": 3, "head_epochs": 1, "patience": 9}}
    signfer.finetune(table, tmp_path / "ref", log=lambda s: None, **kw)

    def dies(line: str) -> None:
        if line.strip().startswith("epoch 2:"):
            raise KeyboardInterrupt

    out = tmp_path / "feph-v1.5"  # a dot in the name stays in the file names
    with pytest.raises(KeyboardInterrupt):
        signfer.finetune(table, out, log=dies, **kw)
    assert fit_state_path(out).is_file() and not (tmp_path / "feph-v1.5.safetensors").exists()
    lines: list[str] = []
    stem = signfer.finetune(table, out, log=lines.append, **kw)
    assert any("resumed after epoch 1" in line for line in lines)
    assert (tmp_path / "feph-v1.5.safetensors").is_file() and not fit_state_path(out).exists()
    ref, got = load_file(tmp_path / "ref.safetensors"), load_file(f"{stem}.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    from signfer.export.onnx import default_out
    from signfer.models.checkpoint import load_meta

    assert load_meta(out).labels == list(table.classes)  # read back by the name it was given
    assert fit_state_path(f"{out}.safetensors") == fit_state_path(out)  # one checkpoint, one state
    assert default_out(stem) == tmp_path / "feph-v1.5.onnx"
