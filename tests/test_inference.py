"""Inference end to end on generated data: ONNX parity, image prediction, evaluation, CLI.

A tiny random-weight MobileNetV2 (32 px) with a label order of its own, so
that any code that assumed an order by position would fail; a copy of it with
its head biased towards ``happiness`` (by name) has an answer known without
training.
The synthetic video pastes the astronaut's face (scikit-image) into each frame,
so the real default detector finds it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import make_folder_dataset, write_video
from PIL import Image

from signfer.cli import main
from signfer.data.cache import load_images
from signfer.data.folder import load_folder
from signfer.export.onnx import export_onnx
from signfer.inference.classifier import (
    OnnxClassifier,
    TorchClassifier,
    load_classifier,
)
from signfer.inference.predict import evaluate_model, predict_images
from signfer.labels import mapping_by_name
from signfer.metrics import compute_metrics
from signfer.models.checkpoint import build_model, load_model, save_checkpoint

SIZE = 32
#: Neither alphabetical nor canonical, on purpose.
LABELS = ["surprise", "anger", "neutral", "happiness", "sadness", "fear", "disgust"]
FAVOURED = "happiness"
VIDEO_FRAMES, VIDEO_FPS = 8, 8


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model, meta = build_model("mobilenetv2", LABELS, "random", SIZE)
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def biased_ckpt(ckpt, tmp_path_factory) -> Path:
    """``ckpt`` with a bias that outweighs its random logits (|logit| < 7) on FAVOURED."""
    model, meta = load_model(ckpt)
    with torch.no_grad():
        model.get_classifier().bias[LABELS.index(FAVOURED)] += 20.0
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("ckpt") / "tiny-biased")


@pytest.fixture(scope="module")
def onnx_export(ckpt) -> tuple[Path, float]:
    return export_onnx(ckpt)


def crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory) -> Path:
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


def make_face_video(path: Path, face_png: Path, frames: int = VIDEO_FRAMES) -> Path:
    """A 160x120 MPEG-4 clip: the astronaut's face moving over a grey background."""
    face = np.asarray(Image.open(face_png).convert("RGB"))[0:240, 120:330]
    face = np.asarray(Image.fromarray(face).resize((70, 80), Image.BILINEAR))
    def images():
        for i in range(frames):
            image = np.full((120, 160, 3), 90, np.uint8)
            image[20:100, 30 + 2 * i:100 + 2 * i] = face
            yield image

    return write_video(path, images(), VIDEO_FPS)


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, astronaut_png) -> Path:
    return make_face_video(tmp_path_factory.mktemp("video") / "face_clip.mp4", astronaut_png)


# ---------------------------------------------------------------- ONNX parity

def test_export_onnx_parity(onnx_export):
    path, diff = onnx_export
    assert path.exists() and path.with_suffix(".json").exists()
    assert diff < 1e-4


@pytest.mark.parametrize("normalize", [True, False])
def test_onnx_and_torch_classifiers_agree(ckpt, onnx_export, normalize):
    model, meta = load_model(ckpt)
    meta = dataclasses.replace(meta, normalize=normalize)
    torch_clf, onnx_clf = TorchClassifier(model, meta), OnnxClassifier(onnx_export[0], meta)
    x = crops(5)
    p_torch, p_onnx = torch_clf.predict_proba(x), onnx_clf.predict_proba(x)
    assert p_torch.shape == p_onnx.shape == (5, len(LABELS))
    assert np.abs(p_torch - p_onnx).max() < 1e-4
    assert np.allclose(p_onnx.sum(1), 1, atol=1e-5)
    assert torch_clf.labels == onnx_clf.labels == tuple(LABELS)

    # The preprocessing that the metadata asks for, written out by hand: pixels
    # in [0, 1], then normalised only when meta.normalize. Column k is output k.
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    if normalize:
        t = (t - torch.tensor(meta.mean).view(1, 3, 1, 1)) / torch.tensor(meta.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = torch.softmax(model(t), 1).numpy()
    assert np.abs(p_onnx - expected).max() < 1e-4


def test_normalize_flag_changes_the_input(ckpt, onnx_export):
    _, meta = load_model(ckpt)
    raw = OnnxClassifier(onnx_export[0], dataclasses.replace(meta, normalize=False))
    normed = OnnxClassifier(onnx_export[0], meta)
    assert np.abs(raw.predict_proba(crops(3)) - normed.predict_proba(crops(3))).max() > 1e-4


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_label_order_comes_from_the_checkpoint(biased_ckpt, backend):
    clf = load_classifier(biased_ckpt, backend)
    probs = clf.predict_proba(crops(6, seed=1))
    assert clf.labels == tuple(LABELS)
    assert [clf.labels[k] for k in probs.argmax(1)] == [FAVOURED] * 6


# ---------------------------------------------------------------- images

def test_predict_images_on_face_crops(ckpt, tmp_path):
    paths = []
    for i, side in enumerate((24, 32, 48)):
        paths.append(str(tmp_path / f"face{i}.png"))
        Image.fromarray(crops(1, seed=i)[0]).resize((side, side)).save(paths[-1])
    df = predict_images(paths, str(ckpt), backend="torch")
    assert df["image"].tolist() == paths
    probs = df[[f"prob_{c}" for c in LABELS]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert df["label"].tolist() == [LABELS[k] for k in probs.argmax(1)]
    assert np.allclose(df["confidence"], probs.max(1))
    assert df["face"].all()


def test_predict_images_with_detector_finds_the_astronaut(ckpt, astronaut_png):
    df = predict_images([str(astronaut_png)], str(ckpt), detector="default", backend="torch")
    assert len(df) == 1
    assert bool(df.loc[0, "face"])
    assert df.loc[0, "label"] in LABELS


# ---------------------------------------------------------------- evaluation

def test_evaluate_model_matches_metrics_by_hand(ckpt, tmp_path):
    # 'contempt' is unknown to the model; the model's other classes are absent here.
    root = make_folder_dataset(tmp_path / "ds", classes=("happy", "angry", "neutral", "contempt"),
                               per_class=3, size=SIZE, mode="RGB")
    table = load_folder(root)
    m = evaluate_model(table, str(ckpt), backend="torch")

    clf = load_classifier(ckpt, "torch")
    probs = clf.predict_proba(load_images(table, SIZE, use_cache=False, progress=False))
    classes = list(table.classes)
    target = mapping_by_name(clf.labels, classes)
    known = [k for k, t in enumerate(target) if t is not None]
    pred = np.array([target[known[j]] for j in probs[:, known].argmax(1)])
    expected = compute_metrics(table.y(), pred, classes)
    for key in ("accuracy", "macro_f1", "weighted_f1", "confusion", "n"):
        assert m[key] == expected[key], key
    assert m["unmapped"] == ["contempt"]
    assert m["faces_per_s"] > 0


# ---------------------------------------------------------------- command line

def test_cli_predict_json(biased_ckpt, tmp_path, capsys):
    png = tmp_path / "crop.png"
    Image.fromarray(crops(1)[0]).save(png)
    rc = main(["predict", str(png), "--model", str(biased_ckpt), "--format", "json"])
    out = capsys.readouterr().out
    assert rc == 0
    records = json.loads(out)
    assert len(records) == 1 and records[0]["image"] == str(png)
    assert records[0]["label"] == FAVOURED
    assert sum(records[0][f"prob_{c}"] for c in LABELS) == pytest.approx(1, abs=1e-4)


def test_cli_annotate_writes_table_and_eaf(biased_ckpt, face_video, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["annotate", str(face_video), "--out", str(out), "--model", str(biased_ckpt)])
    assert rc == 0, capsys.readouterr().err
    table = pd.read_csv(out / "face_clip.frames.csv")
    assert len(table) == VIDEO_FRAMES
    assert table["face"].all()
    assert (table["label"] == FAVOURED).all()
    eaf = (out / "face_clip.eaf").read_text()
    assert "face_clip.mp4" in eaf and f"<ANNOTATION_VALUE>{FAVOURED}</ANNOTATION_VALUE>" in eaf


def test_cli_annotate_detect_every_tracks_between_detections(biased_ckpt, face_video, tmp_path,
                                                            capsys):
    out = tmp_path / "out"
    rc = main(["annotate", str(face_video), "--out", str(out), "--model", str(biased_ckpt),
               "--detect-every", "2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "frames/s" in captured.out
    table = pd.read_csv(out / "face_clip.frames.csv", keep_default_na=False)
    assert len(table) == VIDEO_FRAMES and table["face"].all()
    assert table["box_source"].tolist() == ["detected", "tracked"] * (VIDEO_FRAMES // 2)


def test_cli_detect_every_below_one_is_refused(ckpt, face_video, tmp_path, capsys):
    for command in ("annotate", "suggest"):
        rc = main([command, str(face_video), "--out", str(tmp_path / "out"), "--model",
                   str(ckpt), "--detect-every", "0"])
        assert rc == 2
        assert "--detect-every" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def annotate_with_a_bad_input(ckpt, video, tmp_path, capsys) -> tuple[int, str, Path, Path]:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    out = tmp_path / "out"
    rc = main(["annotate", str(bad), str(video), "--out", str(out), "--model", str(ckpt),
               "--backend", "torch"])
    return rc, capsys.readouterr().err, bad, out


def test_cli_annotate_bad_input_is_an_error_and_the_rest_is_done(
        ckpt, face_video, tmp_path, capsys):
    rc, err, bad, out = annotate_with_a_bad_input(ckpt, face_video, tmp_path, capsys)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith("signfer: error:")]
    assert len(lines) == 1 and str(bad) in lines[0]
    assert len(pd.read_csv(out / "face_clip.frames.csv")) == VIDEO_FRAMES
    assert (out / "face_clip.eaf").exists()


def test_cli_annotate_bad_input_is_one_line_on_stderr(ckpt, face_video, tmp_path, capsys,
                                                      monkeypatch):
    # As in a real `signfer` process: no logging handler anywhere (pytest adds its own).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    rc, err, bad, _ = annotate_with_a_bad_input(ckpt, face_video, tmp_path, capsys)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("signfer: error:") and str(bad) in lines[0]


def test_cli_suggest_writes_n_annotations(ckpt, face_video, tmp_path, capsys):
    pympi = pytest.importorskip("pympi")
    out = tmp_path / "out"
    rc = main(["suggest", str(face_video), "--model", str(ckpt), "--n", "3", "--out", str(out),
               "--backend", "torch", "--min-gap", "0"])
    assert rc == 0, capsys.readouterr().err
    eaf = pympi.Elan.Eaf(str(out / "face_clip.suggest.eaf"))
    assert len(eaf.get_annotation_data_for_tier("suggest")) == 3


def test_cli_suggest_spaces_its_frames_apart_by_default(ckpt, face_video, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["suggest", str(face_video), "--model", str(ckpt), "--n", str(VIDEO_FRAMES), "--out", str(out),
               "--backend", "torch"])
    assert rc == 0, capsys.readouterr().err
    times = np.sort(pd.read_csv(out / "face_clip.suggest.csv")["time_s"].to_numpy())
    assert 1 <= len(times) < VIDEO_FRAMES  # the clip has a face in every frame, but not 0.5 s apart
    assert np.diff(times).min(initial=np.inf) >= 0.5


def test_cli_suggest_passes_detect_every_on(ckpt, face_video, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["suggest", str(face_video), "--model", str(ckpt), "--n", str(VIDEO_FRAMES), "--min-gap", "0",
               "--out", str(out), "--backend", "torch", "--detect-every", "2", "--track", "hold"])
    assert rc == 0, capsys.readouterr().err
    ranked = pd.read_csv(out / "face_clip.suggest.csv", keep_default_na=False)
    assert ranked.sort_values("frame")["box_source"].tolist() == (
        ["detected", "tracked"] * (VIDEO_FRAMES // 2))


# ---------------------------------------------------------------- a real clip

@pytest.mark.shared
def test_annotate_real_clip(ckpt, shared, tmp_path):
    from signfer.faces import create_detector
    from signfer.inference.annotate import annotate_video
    from signfer.video import probe

    clip = shared / "data" / "videos" / "asl_soup.mp4"
    if not clip.exists():
        pytest.skip(f"{clip} not found")
    result = annotate_video(clip, tmp_path, load_classifier(ckpt, "onnx"), create_detector(),
                            every=4, write_parquet=False)
    assert result.n_frames == len(range(0, probe(clip)["frames"], 4))
    assert result.detection_rate >= 0.9
    assert set(result.table.loc[result.table["face"], "label"]) <= set(LABELS)


# ---------------------------------------------------------------- resuming annotate

def annotate_cli(capsys, videos, out, *extra):
    rc = main(["annotate", *map(str, videos), "--model", str(extra[0]), "--out", str(out), "--backend", "torch",
               *map(str, extra[1:])])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir())}


def test_annotate_again_skips_the_videos_done_with_the_same_model_and_settings(
        ckpt, biased_ckpt, face_video, astronaut_png, tmp_path, capsys):
    other = make_face_video(tmp_path / "other_clip.mp4", astronaut_png, frames=4)
    out = tmp_path / "ann"
    annotate_cli(capsys, [face_video, other], out, ckpt)
    assert (out / "face_clip.done.json").is_file() and (out / "other_clip.done.json").is_file()
    before = stamps(out)
    printed = annotate_cli(capsys, [face_video, other], out, ckpt)
    assert printed.count("with the same model and settings, skipped") == 2
    assert stamps(out) == before  # nothing written again
    # another setting, another model, or --redo: annotated again
    for extra in (["--every", "2"], ["--redo"]):
        printed = annotate_cli(capsys, [face_video], out, ckpt, *extra)
        assert "skipped" not in printed and "face_clip.mp4: " in printed
    printed = annotate_cli(capsys, [face_video], out, biased_ckpt)
    assert "skipped" not in printed
    assert set(pd.read_csv(out / "face_clip.frames.csv")["label"]) == {FAVOURED}
    # a file gone: that video is annotated again, the other one is still skipped
    (out / "other_clip.eaf").unlink()
    printed = annotate_cli(capsys, [face_video, other], out, biased_ckpt)
    assert "face_clip.mp4: annotated before" in printed and "other_clip.mp4: annotated before" not in printed
    assert (out / "other_clip.eaf").is_file()


def test_a_killed_annotate_goes_on_with_the_video_it_stopped_at(ckpt, face_video, astronaut_png, tmp_path,
                                                                capsys, monkeypatch):
    from signfer.inference import annotate as annotate_module

    videos = [face_video, make_face_video(tmp_path / "second.mp4", astronaut_png, frames=4),
              make_face_video(tmp_path / "third.mp4", astronaut_png, frames=4)]
    real, calls = annotate_module.annotate_one, []

    def killed_at_the_second(path, *args, **kwargs):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(annotate_module, "annotate_one", killed_at_the_second)
    out = tmp_path / "ann"
    rc = main(["annotate", *map(str, videos), "--model", str(ckpt), "--out", str(out), "--backend", "torch"])
    assert rc != 0 and "the finished videos are kept" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.done.json")) == ["face_clip.done.json"]
    monkeypatch.setattr(annotate_module, "annotate_one", real)
    capsys.readouterr()
    printed = annotate_cli(capsys, videos, out, ckpt)
    assert "face_clip.mp4: annotated before" in printed
    assert "second.mp4: 4 frames" in printed and "third.mp4: 4 frames" in printed


def test_the_model_fingerprint_tells_models_apart(ckpt, biased_ckpt):
    from signfer.inference.classifier import FusedClassifier
    from signfer.inference.resume import model_fingerprint

    a, again, b = (TorchClassifier.load(p) for p in (ckpt, ckpt, biased_ckpt))
    assert model_fingerprint(a) == model_fingerprint(again)
    assert model_fingerprint(a) != model_fingerprint(b)
    # another crop of the same weights is another model too
    a_tight = TorchClassifier.load(ckpt)
    a_tight.spec = dataclasses.replace(a.spec, crop=dataclasses.replace(a.spec.crop, margin=1.0))
    assert model_fingerprint(a_tight) != model_fingerprint(a)
    fused = FusedClassifier([a, b])
    assert model_fingerprint(fused) not in (model_fingerprint(a), model_fingerprint(b))


def test_an_eaf_corrected_in_elan_is_kept_not_overwritten(ckpt, biased_ckpt, face_video, tmp_path, capsys):
    out = tmp_path / "ann"
    annotate_cli(capsys, [face_video], out, ckpt)
    eaf = out / "face_clip.eaf"
    # a run with another model rewrites signfer's own file in place: nothing is kept aside
    annotate_cli(capsys, [face_video], out, biased_ckpt)
    assert list(out.glob("*.edited-*.eaf")) == []
    corrected = eaf.read_text().replace(f">{FAVOURED}<", ">anger<")  # stands for a correction in ELAN
    assert corrected != eaf.read_text()
    eaf.write_text(corrected)
    printed = annotate_cli(capsys, [face_video], out, ckpt)  # another model: annotated again
    kept = list(out.glob("face_clip.edited-*.eaf"))
    assert len(kept) == 1 and kept[0].read_text() == corrected
    assert f"kept as {kept[0].name}" in printed
    assert eaf.read_text() != corrected  # the new annotation
    # the same again keeps nothing more: the new .eaf is signfer's own
    annotate_cli(capsys, [face_video], out, ckpt, "--redo")
    assert len(list(out.glob("face_clip.edited-*.eaf"))) == 1


def test_the_library_path_keeps_an_edited_eaf_too(ckpt, face_video, tmp_path):
    from signfer.inference.annotate import annotate_video
    from signfer.inference.classifier import load_classifier
    from signfer.faces import create_detector

    clf, det = load_classifier(str(ckpt), backend="torch"), create_detector("yunet")
    out = tmp_path / "ann"
    annotate_video(face_video, out, clf, det)
    annotate_video(face_video, out, clf, det)  # its own file: replaced
    assert list(out.glob("*.edited-*.eaf")) == []
    (out / "face_clip.eaf").write_text((out / "face_clip.eaf").read_text() + "\n")
    result = annotate_video(face_video, out, clf, det)
    assert result.kept_eaf is not None and result.kept_eaf.is_file()


def test_outputs_of_earlier_settings_that_this_run_does_not_write_are_removed(ckpt, face_video, tmp_path, capsys):
    out = tmp_path / "ann"
    annotate_cli(capsys, [face_video], out, ckpt, "--overlay")
    assert (out / "face_clip.overlay.mp4").is_file()
    printed = annotate_cli(capsys, [face_video], out, ckpt, "--smooth", "3")
    # a stale overlay (or a parquet written without pyarrow now) would not match the new table
    assert not (out / "face_clip.overlay.mp4").exists()
    assert "removed face_clip.overlay.mp4 of earlier settings" in printed
    record = json.loads((out / "face_clip.done.json").read_text())
    assert record["backend"] == "torch" and record["options"]["smooth"] == 3
