"""The annotation loop, end to end through the command line.

annotate a video -> suggest frames -> correct the ELAN tier (here in code, as
an annotator would in ELAN) -> data from-elan -> train -> annotate again with
the trained model. The second annotation has the trained model's label
columns, and its ELAN file names the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures import write_video
from PIL import Image

from signfer.cli import main

pympi = pytest.importorskip("pympi")
pytest.importorskip("yuface")
data = pytest.importorskip("skimage.data")

FPS, N_FRAMES = 10, 20  # 2 s per video


def face_video(path: Path, shift: int) -> Path:
    """The astronaut's face drifting across a 320 x 240 frame (a real face: YuNet finds it)."""
    face = np.asarray(Image.fromarray(data.astronaut()).resize((200, 200), Image.BILINEAR))

    def frames():
        for i in range(N_FRAMES):
            frame = np.full((240, 320, 3), 40, np.uint8)
            x = shift + 3 * i
            frame[20:220, x:x + 200] = face
            yield frame

    return write_video(path, frames(), FPS)


def correct_tier(eaf_path: Path, out: Path) -> Path:
    """What an annotator does in ELAN: replace the model's labels with the right ones."""
    eaf = pympi.Elan.Eaf(str(eaf_path))
    eaf.remove_all_annotations_from_tier("expression")
    eaf.add_annotation("expression", 0, 1000, "happiness")
    eaf.add_annotation("expression", 1000, 2000, "sadness")
    eaf.to_file(str(out))
    return out


def run(*argv: str) -> None:
    assert main([*map(str, argv)]) == 0, argv


@pytest.mark.slow
def test_annotate_suggest_correct_import_train_annotate(tmp_path, tiny_fer):
    videos = tmp_path / "videos"
    videos.mkdir()
    clips = [face_video(videos / "signer1.mp4", 0), face_video(videos / "signer2.mp4", 50)]

    run("annotate", *clips, "--model", tiny_fer, "--backend", "torch", "--out", tmp_path / "first")
    first = pd.read_csv(tmp_path / "first" / "signer1.frames.csv")
    assert first["face"].all()  # the detector sees the face in every frame
    run("suggest", *clips, "--model", tiny_fer, "--backend", "torch", "--n", 3, "--out", tmp_path / "suggest")
    assert (tmp_path / "suggest" / "signer1.suggest.eaf").is_file()

    corrected = [correct_tier(tmp_path / "first" / f"{c.stem}.eaf", tmp_path / f"{c.stem}.eaf") for c in clips]
    manifest = tmp_path / "corrected" / "manifest.csv"
    run("data", "from-elan", *corrected, "--tier", "expression", "--video", videos, "--out", manifest,
        "--per-segment", 3)
    samples = pd.read_csv(manifest)
    assert sorted(samples["label"].unique()) == ["happiness", "sadness"]
    assert sorted(samples["group"].unique()) == ["signer1", "signer2"]

    model = tmp_path / "model" / "corrected"
    run("train", "--dataset", "manifest", "--root", manifest, "--init", tiny_fer, "--techniques", "ft,ip",
        "--set", "epochs=1", "--set", "head_epochs=1", "--set", "batch_size=4", "--out", model)
    assert model.with_suffix(".safetensors").is_file()

    run("annotate", clips[0], "--model", model, "--backend", "torch", "--out", tmp_path / "second")
    second = pd.read_csv(tmp_path / "second" / "signer1.frames.csv")
    assert [c for c in second.columns if c.startswith("prob_")] == ["prob_happiness", "prob_sadness"]
    assert set(second["label"]) <= {"happiness", "sadness"}
    eaf = pympi.Elan.Eaf(str(tmp_path / "second" / "signer1.eaf"))
    assert ("signfer_model", str(model)) in eaf.properties
    assert eaf.tiers["expression"][2]["ANNOTATOR"] == str(model)
    # the first pass named its model too
    assert ("signfer_model", str(tiny_fer)) in pympi.Elan.Eaf(str(tmp_path / "first" / "signer1.eaf")).properties


def test_video_faces_are_cut_with_the_framing_of_the_training_faces(tmp_path, tiny_fer):
    """A model trained on faces framed loosely (margin 1.8) records that framing, and
    annotating a generated video then cuts its faces the same way."""
    import json

    from signfer.faces import create_detector, largest
    from signfer.faces.crop import CropSpec, crop_rect
    from signfer.faces.framing import measure_framing
    from signfer.inference.annotate import annotate_frames
    from signfer.inference.classifier import load_classifier
    from signfer.video import iter_frames

    astronaut = data.astronaut()
    detector = create_detector("yunet")
    box = largest(detector.detect(astronaut))
    loose = CropSpec(margin=1.8)
    training_face = np.asarray(Image.fromarray(astronaut).crop(crop_rect(box, loose)))
    framing = measure_framing([training_face], detector)
    # the square side is the box's longer side (its height) x 1.8
    assert framing is not None and abs(framing.h - 1 / 1.8) < 0.05

    model = tmp_path / "framed"
    meta = json.loads(tiny_fer.with_suffix(".json").read_text())
    meta["crop"] = CropSpec(detector="yunet", framing=framing).to_dict()
    model.with_suffix(".json").write_text(json.dumps(meta))
    model.with_suffix(".safetensors").write_bytes(tiny_fer.with_suffix(".safetensors").read_bytes())

    clip = face_video(tmp_path / "clip.mp4", 20)
    clf = load_classifier(model, "torch")
    crops: list[np.ndarray] = []
    cut = clf.crop
    clf.crop = lambda image, b: crops.append(cut(image, b)) or crops[-1]
    annotate_frames(iter_frames(clip), clf, detector, detect_every=1)  # the framing alone, no tracking
    assert len(crops) == N_FRAMES
    expected = np.asarray(Image.fromarray(training_face).resize((clf.input_size,) * 2, Image.BILINEAR), float)
    default = load_classifier(tiny_fer, "torch")
    frame = next(iter_frames(clip)).image
    default_crop = default.crop(frame, largest(detector.detect(frame))).astype(float)
    errors = [np.abs(c.astype(float) - expected).mean() for c in crops]
    # video faces cut with the recorded framing look like the training face,
    # much more than the default margin's crop of the same frame does
    # (measured: 5-25 grey levels per frame, median 15, from the detector's
    # box jitter and the codec; the default margin's crop: 54)
    assert np.median(errors) < 20 and max(errors) < 0.5 * np.abs(default_crop - expected).mean()
