"""A corpus of bad inputs, each run through the ``signfer`` command (issue 13).

Every case is generated here: damaged images, CSVs, manifests, videos, ELAN
files, checkpoints, run folders, settings and output paths. Each must end in
exit status 2 with one ``signfer: error:`` line that names the file (and row)
at fault, no Python traceback, and every file that existed before the command
byte-identical after it. A few inputs that the README documents as counted
skips, or that must not be read wrong silently (a 16-bit PNG), have tests of
their own at the end.

Almost every case fails before any training; the one finished run that the
damaged-run cases need is a zero-shot cross-validation (no training).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures import feph_rows, make_feph, make_folder_dataset, make_manifest, write_image, write_video
from PIL import Image

from signfer.cli import main

SIZE = 32


@dataclass
class Bad:
    """One bad input: the command line and what its one error line must say."""

    argv: list
    fragments: tuple[str, ...]
    #: files and folders whose files must be unchanged afterwards (the tmp folder by default)
    watch: tuple[Path, ...] = ()
    #: other lines may come before the error (progress, the videos that were done)
    alone: bool = False
    setup: Callable[[pytest.MonkeyPatch], None] | None = None


class Ctx:
    """A case's tmp folder and, on demand, the shared fixtures (tiny_fer, feph_small, clip, ...)."""

    def __init__(self, request, tmp: Path):
        self.request, self.tmp = request, tmp

    def __getattr__(self, name):
        return self.request.getfixturevalue(name)


CASES: dict[str, Callable[[Ctx], Bad]] = {}


def case(kind: str):
    def register(build: Callable[[Ctx], Bad]) -> Callable[[Ctx], Bad]:
        CASES[f"{kind}-{build.__name__.strip('_').replace('_', '-')}"] = build
        return build
    return register


def run(argv) -> int:
    return main([str(a) for a in argv])


def snapshot(*roots: Path) -> dict[Path, bytes]:
    files = {}
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        files.update({p: p.read_bytes() for p in paths})
    return files


# --- shared inputs --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A short readable video (no face in it: the cases fail before detection matters)."""
    frames = (np.full((48, 64, 3), 40 * i, np.uint8) for i in range(4))
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, 4)


@pytest.fixture(scope="module")
def zero_shot_run(tmp_path_factory, feph_small, tiny_fer) -> tuple[Path, list[str]]:
    """A finished 3-fold zero-shot run (no training): its folder and the argv that made it."""
    out = tmp_path_factory.mktemp("run") / "run"
    argv = ["cv", "--dataset", "feph", "--root", str(feph_small), "--init", str(tiny_fer),
            "--techniques", "none", "--folds", "3", "--out", str(out)]
    assert main(argv) == 0
    return out, argv


def copy_run(c: Ctx) -> tuple[Path, list[str]]:
    """A copy of the finished run, and the argv that resumes it."""
    src, argv = c.zero_shot_run
    out = c.tmp / "run"
    shutil.copytree(src, out)
    return out, [*argv[:-1], str(out)]


def prior_out(c: Ctx) -> Path:
    """An --out folder that already holds earlier results."""
    out = c.tmp / "out"
    out.mkdir()
    (out / "config.yaml").write_text("earlier: run\n")
    (out / "results.csv").write_text("config,fold\nFT,0\n")
    return out


def feph(c: Ctx, rows=None, **kw) -> Path:
    """A FePh folder of 3 videos x 7 frames, each class in each video."""
    return make_feph(c.tmp / "FePh", rows or feph_rows(n_videos=3, frames=7), size=SIZE, **kw)


def feph_image(root: Path, i: int) -> Path:
    """The image of row ``i`` (CSV line ``i + 2``) of :func:`feph`'s rows."""
    return root / "FePh_images" / feph_rows(n_videos=3, frames=7)[i][0]


def summary(root, kind="feph", *extra) -> list:
    return ["data", "summary", "--dataset", kind, "--root", root, "--no-framing", *extra]


def checkpoint_copy(c: Ctx, name: str = "m") -> Path:
    """A writable copy of the tiny checkpoint: its stem."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(c.tiny_fer.with_suffix(suffix), c.tmp / f"{name}{suffix}")
    return c.tmp / name


def face_png(c: Ctx) -> Path:
    return write_image(c.tmp / "face.png", "happy", size=SIZE)


def predict(image, model) -> list:
    return ["predict", image, "--model", model, "--backend", "torch"]


def edit_json(path: Path, **changes) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


def write_eaf(path: Path, video: Path | None, tier: str = "expression") -> Path:
    import pympi

    eaf = pympi.Elan.Eaf()
    if video is not None:
        eaf.add_linked_file(str(video), mimetype="video/mp4")
    eaf.add_tier(tier)
    eaf.add_annotation(tier, 0, 500, "happy")
    eaf.to_file(str(path))
    return path


# --- images ---------------------------------------------------------------------------------------

@case("image")
def _truncated_png(c):
    png = face_png(c)
    png.write_bytes(png.read_bytes()[:40])
    return Bad(predict(png, c.tiny_fer), ("cannot read image", str(png)))


@case("image")
def _empty_file(c):
    png = c.tmp / "empty.png"
    png.write_bytes(b"")
    return Bad(predict(png, c.tiny_fer), ("cannot read image", str(png)))


@case("image")
def _text_named_png(c):
    png = c.tmp / "notes.png"
    png.write_text("not an image at all\n")
    return Bad(predict(png, c.tiny_fer), ("cannot read image", str(png)))


@case("image")
def _missing(c):
    return Bad(predict(c.tmp / "gone.png", c.tiny_fer), ("image not found", "gone.png"))


@case("image")
def _folder(c):
    (c.tmp / "dir.png").mkdir()
    return Bad(predict(c.tmp / "dir.png", c.tiny_fer), ("cannot read image", "dir.png"))


@case("image")
def _symlink_loop(c):
    os.symlink("loop.png", c.tmp / "loop.png")
    return Bad(predict(c.tmp / "loop.png", c.tiny_fer), ("symbolic link loop", "loop.png"))


@case("image")
def _int32_tiff(c):
    tif = c.tmp / "deep.tif"
    Image.fromarray(np.full((SIZE, SIZE), 70000, np.int32)).save(tif)
    return Bad(predict(tif, c.tiny_fer), ("pixel mode 'I' is not supported", str(tif)))


@case("image")
def _float_tiff(c):
    tif = c.tmp / "float.tif"
    Image.fromarray(np.full((SIZE, SIZE), 0.5, np.float32)).save(tif)
    return Bad(predict(tif, c.tiny_fer), ("pixel mode 'F' is not supported", str(tif)))


@case("image")
def _decompression_bomb(c):
    png = face_png(c)  # 32 x 32 = 1024 pixels, over twice the limit set below
    return Bad(predict(png, c.tiny_fer), ("refused image", str(png), "decompression bomb"),
               setup=lambda mp: mp.setattr(Image, "MAX_IMAGE_PIXELS", 400))


@case("image")
def _corrupt_in_dataset(c):
    root = feph(c)
    feph_image(root, 4).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    return Bad(["evaluate", "--dataset", "feph", "--root", root, "--model", c.tiny_fer, "--backend", "torch"],
               ("FePh_labels.csv:6", str(feph_image(root, 4))))


@case("image")
def _feph_id_is_symlink_loop(c):
    root = feph(c)
    target = feph_image(root, 2)
    target.unlink()
    os.symlink(target.name, target)
    return Bad(summary(root), ("FePh_labels.csv:4", "symbolic link loop", target.name))


@case("image")
def _feph_id_is_broken_link(c):
    root = feph(c)
    target = feph_image(root, 3)
    target.unlink()
    os.symlink("elsewhere.png", target)
    return Bad(summary(root), ("FePh_labels.csv:5", "broken symbolic link", target.name))


@case("image")
def _feph_id_is_folder(c):
    root = feph(c)
    target = feph_image(root, 5)
    target.unlink()
    target.mkdir()
    return Bad(summary(root), ("FePh_labels.csv:7", "a folder, not an image", target.name))


@case("image")
def _folder_dataset_symlink_loop(c):
    root = make_folder_dataset(c.tmp / "faces")
    os.symlink("x.jpg", root / "happy" / "x.jpg")
    return Bad(summary(root, "folder"), ("symbolic link loop", str(root / "happy" / "x.jpg")))


@case("image")
def _folder_dataset_class_folder_loop(c):
    root = make_folder_dataset(c.tmp / "faces")
    os.symlink("sad", root / "sad")
    return Bad(summary(root, "folder"), ("symbolic link loop", str(root / "sad")))


@case("image")
def _folder_dataset_broken_link(c):
    root = make_folder_dataset(c.tmp / "faces")
    os.symlink("/nonexistent/y.jpg", root / "angry" / "y.jpg")
    return Bad(summary(root, "folder"), ("broken symbolic link", str(root / "angry" / "y.jpg")))


@case("image")
def _folder_dataset_fifo(c):
    # a named pipe would block the reader for ever
    root = make_folder_dataset(c.tmp / "faces")
    os.mkfifo(root / "happy" / "pipe.png")
    return Bad(summary(root, "folder"), ("happy/pipe.png", "not a regular file"))


@case("image")
def _manifest_path_is_symlink_loop(c):
    csv = make_manifest(c.tmp, [("a.png", "happy", "v1")], missing=["a.png"])
    os.symlink("a.png", c.tmp / "a.png")
    return Bad(summary(csv, "manifest"), ("manifest.csv:2", "symbolic link loop", "a.png"))


# --- FePh CSVs ------------------------------------------------------------------------------------

def feph_csv(c: Ctx, text: str | bytes) -> Path:
    root = feph(c)
    csv = root / "FePh_labels.csv"
    csv.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


@case("csv")
def _feph_empty_file(c):
    root = feph_csv(c, "")
    return Bad(summary(root), ("FePh_labels.csv", "empty"))


@case("csv")
def _feph_header_only(c):
    root = feph_csv(c, "External ID,Facial_label\n")
    return Bad(summary(root), ("FePh_labels.csv", "no usable samples"))


@case("csv")
def _feph_missing_column(c):
    root = make_feph(c.tmp / "FePh", feph_rows(1, 3), header=("External ID", "Label"))
    return Bad(summary(root), ("FePh_labels.csv", "Facial_label"))


def feph_label(c: Ctx, i: int, label: str) -> Path:
    rows = feph_rows(n_videos=3, frames=7)
    rows[i] = (rows[i][0], label)
    return feph(c, rows)


@case("csv")
def _feph_label_code_9(c):
    return Bad(summary(feph_label(c, 1, "9")), ("FePh_labels.csv:3", "'9'"))


@case("csv")
def _feph_label_text(c):
    return Bad(summary(feph_label(c, 2, "happy")), ("FePh_labels.csv:4", "'happy'"))


@case("csv")
def _feph_label_decimal(c):
    return Bad(summary(feph_label(c, 3, "4.5")), ("FePh_labels.csv:5", "'4.5'"))


@case("csv")
def _feph_label_negative(c):
    return Bad(summary(feph_label(c, 0, "-4")), ("FePh_labels.csv:2", "'-4'"))


@case("csv")
def _feph_empty_id(c):
    rows = feph_rows(n_videos=3, frames=7)
    rows[2] = ("", "4")
    return Bad(summary(feph(c, rows, missing=[""])), ("FePh_labels.csv:4", "empty 'External ID'"))


@case("csv")
def _feph_id_leaves_the_folder(c):
    rows = feph_rows(n_videos=3, frames=7)
    rows[1] = ("../../etc/passwd", "4")
    return Bad(summary(feph(c, rows)), ("FePh_labels.csv:3", "leaves the dataset folder"))


@case("csv")
def _feph_absolute_id(c):
    rows = feph_rows(n_videos=3, frames=7)
    rows[1] = ("/etc/passwd", "4")
    return Bad(summary(feph(c, rows)), ("FePh_labels.csv:3", "absolute path"))


@case("csv")
def _feph_nul_byte(c):
    rows = feph_rows(n_videos=3, frames=7)
    text = "External ID,Facial_label\n" + "".join(f"{i},{lab}\n" for i, lab in rows[:3]) + "a\0b.png,4\n"
    return Bad(summary(feph_csv(c, text)), ("FePh_labels.csv:5",))


@case("csv")
def _feph_not_utf8(c):
    root = feph_csv(c, "External ID,Facial_label\n".encode() + "caf\xe9.png,4\n".encode("latin-1"))
    return Bad(summary(root), ("FePh_labels.csv", "not UTF-8"))


@case("csv")
def _feph_unquoted_comma(c):
    rows = feph_rows(n_videos=3, frames=7)
    text = "External ID,Facial_label\n" + "".join(f"{i},{lab}\n" for i, lab in rows[:2]) + f"{rows[2][0]},4,5\n"
    return Bad(summary(feph_csv(c, text)), ("FePh_labels.csv:4", "quote values"))


@case("csv")
def _feph_quote_left_open(c):
    # Read leniently, the open quote would swallow rows 4-7 into one field.
    rows = feph_rows(n_videos=3, frames=7)
    lines = [f"{i},{lab}\n" for i, lab in rows[:6]]
    lines[2] = '"' + lines[2]
    text = "External ID,Facial_label\n" + "".join(lines)
    return Bad(summary(feph_csv(c, text)), ("FePh_labels.csv:4", "quote left open"))


@case("csv")
def _feph_missing_image(c):
    rows = feph_rows(n_videos=3, frames=7)
    root = make_feph(c.tmp / "FePh", rows, missing=[rows[6][0]], size=SIZE)
    return Bad(summary(root), ("FePh_labels.csv:8", "image not found", rows[6][0]))


@case("csv")
def _feph_no_images_folder(c):
    root = feph(c)
    shutil.rmtree(root / "FePh_images")
    return Bad(summary(root), ("FePh_images",))


@case("csv")
def _feph_root_missing(c):
    return Bad(summary(c.tmp / "nowhere"), (str(c.tmp / "nowhere" / "FePh_labels.csv"),))


@case("csv")
def _feph_every_label_empty(c):
    rows = [(ident, "") for ident, _ in feph_rows(n_videos=1, frames=3)]
    return Bad(summary(feph(c, rows)), ("FePh_labels.csv", "no usable samples", "3 skipped"))


@case("csv")
def _feph_class_smaller_than_folds(c):
    root = make_feph(c.tmp / "FePh", feph_rows(n_videos=2, frames=7), size=SIZE)
    return Bad(["cv", "--dataset", "feph", "--root", root, "--folds", "3", "--techniques", "none",
                "--init", c.tiny_fer, "--out", c.tmp / "out"], ("fewer than the 3 folds", "FePh_labels.csv:"))


# --- manifests ------------------------------------------------------------------------------------

def manifest(c: Ctx, rows, **kw) -> Path:
    return make_manifest(c.tmp / "m", rows, **kw)


@case("manifest")
def _unknown_label(c):
    csv = manifest(c, [("a.png", "happy", "v1"), ("b.png", "hapy", "v2")])
    return Bad(summary(csv, "manifest"), ("manifest.csv:3", "unknown label 'hapy'", "did you mean 'happy'",
                                          "anger, disgust", "--allow-new-labels"))


@case("manifest")
def _group_nan(c):
    csv = manifest(c, [("a.png", "happy", "v1"), ("b.png", "sad", "NaN")])
    return Bad(summary(csv, "manifest"), ("manifest.csv:3", "group 'NaN' is a missing value"))


@case("manifest")
def _group_null(c):
    csv = manifest(c, [("a.png", "happy", "null"), ("b.png", "sad", "v1")])
    return Bad(summary(csv, "manifest"), ("manifest.csv:2", "missing value"))


@case("manifest")
def _group_empty(c):
    csv = manifest(c, [("a.png", "happy", "v1"), ("b.png", "sad", "")])
    return Bad(summary(csv, "manifest"), ("manifest.csv:3", "empty group"))


@case("manifest")
def _image_in_two_groups(c):
    # Written two ways, one image; in two groups it could sit on both sides of a split.
    csv = manifest(c, [("a.png", "happy", "v1"), ("b.png", "sad", "v2"), ("./a.png", "happy", "v3")])
    return Bad(summary(csv, "manifest"), ("manifest.csv:4", "in group 'v3' here but in 'v1' on manifest.csv:2"))


@case("manifest")
def _empty_path(c):
    csv = manifest(c, [("a.png", "happy", "v1"), ("", "sad", "v1")])
    return Bad(summary(csv, "manifest"), ("manifest.csv:3", "empty path"))


@case("manifest")
def _path_leaves_folder(c):
    csv = manifest(c, [("../outside.png", "happy", "v1")])
    return Bad(summary(csv, "manifest"), ("manifest.csv:2", "leaves the dataset folder"))


@case("manifest")
def _missing_image(c):
    csv = manifest(c, [("a.png", "happy", "v1"), ("gone.png", "sad", "v1")], missing=["gone.png"])
    return Bad(summary(csv, "manifest"), ("manifest.csv:3", "image not found", "gone.png"))


@case("manifest")
def _is_a_folder(c):
    (c.tmp / "m.csv").mkdir()
    return Bad(summary(c.tmp / "m.csv", "manifest"), (str(c.tmp / "m.csv"), "is a folder"))


@case("manifest")
def _not_found(c):
    return Bad(summary(c.tmp / "none.csv", "manifest"), ("manifest not found", "none.csv"))


@case("manifest")
def _without_label_column(c):
    csv = manifest(c, [("a.png", "happy")], header=("path", "emotion"))
    return Bad(summary(csv, "manifest"), (str(csv), "['label']"))


@case("manifest")
def _binary_garbage(c):
    csv = c.tmp / "m.csv"
    csv.write_bytes(bytes(range(128, 256)) * 4)
    return Bad(summary(csv, "manifest"), (str(csv), "not UTF-8"))


@case("manifest")
def _allow_new_labels_on_feph(c):
    return Bad(summary(c.feph_small, "feph", "--allow-new-labels"), ("--allow-new-labels", "manifest only"))


# --- videos ---------------------------------------------------------------------------------------

def annotate(c: Ctx, *videos, command="annotate", extra=()) -> list:
    return [command, *videos, "--model", c.tiny_fer, "--backend", "torch", "--out", prior_annotations(c), *extra]


def prior_annotations(c: Ctx) -> Path:
    out = c.tmp / "ann"
    if not out.exists():
        out.mkdir()
        (out / "earlier.frames.csv").write_text("video,frame\nearlier.mp4,0\n")
    return out


@case("video")
def _missing(c):
    return Bad(annotate(c, c.tmp / "gone.mp4"), ("gone.mp4", "video not found"))


@case("video")
def _empty_file(c):
    (c.tmp / "empty.mp4").write_bytes(b"")
    return Bad(annotate(c, c.tmp / "empty.mp4"), ("empty.mp4", "empty file"))


@case("video")
def _text_file(c):
    (c.tmp / "notes.mp4").write_text("this is not a video\n" * 20)
    return Bad(annotate(c, c.tmp / "notes.mp4"), ("notes.mp4", "cannot be read as a video"))


@case("video")
def _truncated(c):
    cut = c.tmp / "cut.mp4"
    cut.write_bytes(c.clip.read_bytes()[:200])
    return Bad(annotate(c, cut), ("cut.mp4",))


@case("video")
def _folder(c):
    (c.tmp / "dir.mp4").mkdir()
    return Bad(annotate(c, c.tmp / "dir.mp4"), ("dir.mp4", "not a file"))


@case("video")
def _suggest_missing(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", command="suggest"), ("gone.mp4", "video not found"))


@case("video")
def _same_stem_twice(c):
    other = c.tmp / "other"
    other.mkdir()
    shutil.copy(c.clip, other / c.clip.name)
    return Bad(annotate(c, c.clip, other / c.clip.name), (str(other / c.clip.name), "same file name stem"))


@case("video")
def _suggest_same_stem_twice(c):
    other = c.tmp / "other"
    other.mkdir()
    shutil.copy(c.clip, other / c.clip.name)
    return Bad(annotate(c, c.clip, other / c.clip.name, command="suggest"),
               (str(other / c.clip.name), "same file name stem"))


@case("video")
def _fps_infinite(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", extra=["--fps", "inf"]), ("--fps", "inf"), alone=True)


@case("video")
def _smooth_negative(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", extra=["--smooth", "-2"]), ("--smooth", "-2"), alone=True)


@case("video")
def _suggest_n_negative(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", command="suggest", extra=["--n", "-3"]), ("--n", "-3"), alone=True)


@case("csv")
def _feph_signers_missing_a_video(c):
    root = feph(c)
    corpus = c.tmp / "train.corpus.csv"
    corpus.write_text("id|folder|signer|annotation\n02May_2011_Monday_heute_default-1|x|Signer01|A\n")
    return Bad(summary(root, "feph", "--signers", corpus),
               ("--signers: 2 of the 3 FePh videos are in none of the corpus files",))


@case("setting")
def _signers_for_a_folder_dataset(c):
    return Bad(summary(c.tmp, "folder", "--signers", c.tmp / "x.csv"), ("--signers apply to --dataset feph only",),
               alone=True)


@case("video")
def _suggest_min_gap_negative(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", command="suggest", extra=["--min-gap", "-1"]),
               ("--min-gap", "-1"), alone=True)


@case("video")
def _fps_zero(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", extra=["--fps", "0"]), ("--fps",), alone=True)


@case("video")
def _chunk_zero(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", extra=["--chunk", "0"]), ("--chunk", "0"), alone=True)


@case("video")
def _every_negative(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", extra=["--every", "-1"]), ("--every",), alone=True)


@case("video")
def _min_duration_negative(c):
    return Bad(annotate(c, c.tmp / "gone.mp4", extra=["--min-duration", "-1"]), ("--min-duration",), alone=True)


# --- ELAN files -----------------------------------------------------------------------------------

def from_elan(c: Ctx, *eafs, extra=()) -> list:
    return ["data", "from-elan", *eafs, "--tier", "expression", "--out", c.tmp / "data" / "m.csv", *extra]


@case("elan")
def _missing(c):
    return Bad(from_elan(c, c.tmp / "gone.eaf"), ("gone.eaf", "ELAN file not found"))


@case("elan")
def _garbage(c):
    (c.tmp / "bad.eaf").write_text("<ANNOTATION_DOCUMENT><oops")
    return Bad(from_elan(c, c.tmp / "bad.eaf"), ("bad.eaf", "not a readable ELAN file"))


@case("elan")
def _no_such_tier(c):
    eaf = write_eaf(c.tmp / "a.eaf", c.clip, tier="gloss")
    return Bad(from_elan(c, eaf), ("a.eaf", "no tier 'expression'", "gloss"))


@case("elan")
def _linked_video_missing(c):
    eaf = write_eaf(c.tmp / "a.eaf", c.tmp / "gone.mp4")
    return Bad(from_elan(c, eaf), ("a.eaf", "linked video not found"))


@case("elan")
def _size_negative(c):
    eaf = write_eaf(c.tmp / "a.eaf", c.clip)
    return Bad(from_elan(c, eaf, extra=["--size", "-5"]), ("size", "-5"))


@case("elan")
def _per_segment_zero(c):
    eaf = write_eaf(c.tmp / "a.eaf", c.clip)
    return Bad(from_elan(c, eaf, extra=["--per-segment", "0"]), ("per_segment",))


# --- checkpoints ----------------------------------------------------------------------------------

@case("checkpoint")
def _json_cut_short(c):
    stem = checkpoint_copy(c)
    text = stem.with_suffix(".json").read_text()
    stem.with_suffix(".json").write_text(text[: len(text) // 2])
    return Bad(predict(face_png(c), stem), (str(stem.with_suffix(".json")), "unreadable checkpoint metadata"))


@case("checkpoint")
def _json_cut_short_onnx_path(c):
    stem = checkpoint_copy(c)
    stem.with_suffix(".json").write_text('{"format": "signfer-checkpoint/1", "arch": ')
    return Bad(["predict", face_png(c), "--model", stem], (str(stem.with_suffix(".json")),))


@case("checkpoint")
def _json_is_a_list(c):
    stem = checkpoint_copy(c)
    stem.with_suffix(".json").write_text("[1, 2, 3]\n")
    return Bad(predict(face_png(c), stem), (str(stem.with_suffix(".json")), "not a signfer checkpoint"))


@case("checkpoint")
def _json_wrong_format(c):
    stem = checkpoint_copy(c)
    edit_json(stem.with_suffix(".json"), format="something-else/2")
    return Bad(predict(face_png(c), stem), ("m.json", "not a signfer checkpoint"))


@case("checkpoint")
def _json_without_labels(c):
    stem = checkpoint_copy(c)
    obj = json.loads(stem.with_suffix(".json").read_text())
    del obj["labels"]
    stem.with_suffix(".json").write_text(json.dumps(obj))
    return Bad(predict(face_png(c), stem), ("m.json", "incomplete checkpoint metadata"))


@case("checkpoint")
def _weights_garbage(c):
    stem = checkpoint_copy(c)
    stem.with_suffix(".safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    return Bad(predict(face_png(c), stem), ("m.safetensors", "damaged or not a safetensors file"))


@case("checkpoint")
def _weights_empty(c):
    stem = checkpoint_copy(c)
    stem.with_suffix(".safetensors").write_bytes(b"")
    return Bad(predict(face_png(c), stem), ("m.safetensors", "damaged or not a safetensors file"))


@case("checkpoint")
def _weights_of_another_arch(c):
    stem = checkpoint_copy(c)
    edit_json(stem.with_suffix(".json"), arch="efficientnet_lite0")
    return Bad(predict(face_png(c), stem), (str(stem), "weights do not fit", "tensor '", "in the weights",
                                            "in the model"))


@case("checkpoint")
def _labels_do_not_match_the_head(c):
    stem = checkpoint_copy(c)
    edit_json(stem.with_suffix(".json"), labels=["anger", "happiness", "neutral"])
    return Bad(predict(face_png(c), stem), ("tensor 'classifier.weight' is (7, 1280) in the weights, "
                                            "(3, 1280) in the model",))


@case("checkpoint")
def _labels_empty(c):
    stem = checkpoint_copy(c)
    edit_json(stem.with_suffix(".json"), labels=[])
    return Bad(predict(face_png(c), stem), ("m.json", "labels must be two or more different names, got []"))


@case("checkpoint")
def _labels_repeated(c):
    # one prob_neutral column would silently hide the other
    stem = checkpoint_copy(c)
    labels = json.loads(stem.with_suffix(".json").read_text())["labels"]
    edit_json(stem.with_suffix(".json"), labels=[labels[1], *labels[1:]])
    return Bad(predict(face_png(c), stem), ("m.json", "labels must be two or more different names"))


@case("checkpoint")
def _json_without_weights(c):
    stem = checkpoint_copy(c)
    stem.with_suffix(".safetensors").unlink()
    return Bad(predict(face_png(c), stem), ("no signfer checkpoint at", str(stem)))


@case("checkpoint")
def _damaged_init_for_cv(c):
    stem = checkpoint_copy(c)
    stem.with_suffix(".json").write_text("{")
    return Bad(["cv", "--dataset", "feph", "--root", c.feph_small, "--init", stem, "--techniques", "none",
                "--folds", "3", "--out", c.tmp / "out"], ("m.json", "unreadable checkpoint metadata"))


@case("checkpoint")
def _models_shows_a_damaged_one(c):
    stem = checkpoint_copy(c)
    stem.with_suffix(".json").write_text("{")
    return Bad(["models", stem], ("m.json",))


@case("checkpoint")
def _export_a_damaged_one(c):
    stem = checkpoint_copy(c)
    stem.with_suffix(".safetensors").write_bytes(b"nonsense")
    return Bad(["export", "onnx", stem, "--out", c.tmp / "x.onnx"], ("m.safetensors",))


# --- settings -------------------------------------------------------------------------------------

def cv_set(c: Ctx, *settings: str) -> list:
    args = [a for s in settings for a in ("--set", s)]
    return ["cv", "--dataset", "feph", "--root", c.feph_small, "--init", c.tiny_fer, "--folds", "3",
            "--out", prior_out(c), *args]


for _key, _value, _fragment in [
    ("epochs", "-1", "epochs must be >= 1, got -1"),
    ("head_epochs", "-5", "head_epochs must be >= 0"),
    ("epochs", "abc", "epochs must be a whole number, got 'abc'"),
    ("lr", "fast", "lr must be a number, got 'fast'"),
    ("batch_size", "1", "batch_size must be >= 2 (batch norm cannot train on one image), got 1"),
    ("epochs", "1.5", "epochs must be a whole number, got 1.5"),
    ("epochs", "", "epochs must be a whole number, got None"),
    ("lr", "-1e-3", "lr must be > 0"),
    ("lr", ".nan", "lr must be > 0, got nan"),
    ("val_fraction", "0.9", "val_fraction must be in (0, 0.5)"),
    ("label_smoothing", "1.5", "label_smoothing must be in [0, 1)"),
    ("patience", "0", "patience must be >= 1"),
    ("norm_stats", "median", "norm_stats must be 'checkpoint' or 'train'"),
    ("weight_decay", "-1", "weight_decay must be >= 0"),
    ("shift", "-2", "shift must be >= 0"),
]:
    def _make(c, key=_key, value=_value, fragment=_fragment):
        return Bad(cv_set(c, f"{key}={value}"), ("--set: " + fragment,), alone=True)

    _make.__name__ = f"set_{_key}_{_value or 'empty'}"
    case("setting")(_make)


@case("setting")
def _set_without_equals(c):
    return Bad(cv_set(c, "epochs"), ("'epochs' is not KEY=VALUE",), alone=True)


@case("setting")
def _set_on_train(c):
    return Bad(["train", "--dataset", "feph", "--root", c.feph_small, "--set", "epochs=0",
                "--out", c.tmp / "m"], ("--set: epochs must be >= 1, got 0",), alone=True)


@case("setting")
def _train_seed_out_of_range(c):
    return Bad(["train", "--dataset", "feph", "--root", c.feph_small, "--init", c.tiny_fer, "--seed", "4294967296",
                "--out", c.tmp / "m"], ("seed must be a whole number in [0, 2**32), got 4294967296",))


@case("run")
def _train_epochs_from_a_damaged_fold(c):
    out, _ = copy_run(c)
    (out / "runs" / "no-FT" / "mobilenetv2" / "fold1" / "metrics.json").write_text("[]")
    return Bad(["train", "--dataset", "feph", "--root", c.feph_small, "--epochs-from", out, "--out", c.tmp / "m"],
               ("fold1/metrics.json: damaged fold result",), watch=(out,))


@case("run")
def _train_epochs_from_a_run_on_other_data(c):
    # its epochs and its score would be recorded as this model's
    out, _ = copy_run(c)
    return Bad(["train", "--dataset", "feph", "--root", feph(c), "--epochs-from", out, "--out", c.tmp / "m"],
               ("folds.csv: the run cross-validated other faces", "on the same data"), watch=(out,))


@case("run")
def _report_of_a_damaged_results_csv(c):
    out, _ = copy_run(c)
    (out / "results.csv").write_text('config,arch,fold,accuracy,macro_f1\n"no-FT,mobilenetv2,0,0.5,0.4\n')
    return Bad(["report", out], (str(out / "results.csv"), "damaged"), watch=(out,))


@case("setting")
def _align_without_crop_faces(c):
    # face crops are not levelled in training, so video faces must not be either
    return Bad(["cv", "--dataset", "feph", "--root", c.feph_small, "--init", c.tiny_fer, "--techniques", "ft",
                "--align", "--folds", "3", "--out", prior_out(c)], ("--align", "needs --crop-faces"))


@case("setting")
def _train_align_without_crop_faces(c):
    return Bad(["train", "--dataset", "feph", "--root", c.feph_small, "--init", c.tiny_fer, "--align",
                "--out", c.tmp / "m"], ("--align", "needs --crop-faces"))


@case("setting")
def _arch_without_offline_weights(c):
    # found before config.yaml and folds.csv are written, not after the first fold
    out = c.tmp / "out"
    return Bad(["cv", "--dataset", "feph", "--root", c.feph_small, "--arch", "mobilenetv3_large", "--init",
                "imagenet", "--folds", "3", "--out", out], ("no offline ImageNet weights for 'mobilenetv3_large'",),
               setup=None)


@case("setting")
def _pretrain_device_unknown(c):
    root = make_folder_dataset(c.tmp / "fer", splits=("train", "validation"))
    return Bad(["pretrain", "--dataset", "folder", "--root", root, "--device", "tpu", "--out", c.tmp / "pre"],
               ("--device tpu: not a device",))


@case("setting")
def _pretrain_dataset_options_that_do_not_apply(c):
    return Bad(["pretrain", "--dataset", "folder", "--root", c.tmp / "nowhere", "--crop-faces", "--split", "test",
                "--out", c.tmp / "pre"], ("--split, --crop-faces: not for pretrain",), alone=True)


@case("setting")
def _train_input_size_zero(c):
    return Bad(["train", "--dataset", "feph", "--root", c.feph_small, "--init", "imagenet", "--input-size", "0",
                "--out", c.tmp / "m"], ("input_size must be >= 16",))


@case("setting")
def _cv_input_size_zero(c):
    return Bad(["cv", "--dataset", "feph", "--root", c.feph_small, "--init", "imagenet", "--input-size", "0",
                "--folds", "3", "--out", c.tmp / "out"], ("input_size must be >= 16",))


@case("setting")
def _threads_negative(c):
    return Bad(["--threads", "-3", "models"], ("--threads must be >= 1, got -3",), alone=True)


@case("setting")
def _threads_zero(c):
    return Bad(["--threads", "0", "models"], ("--threads must be >= 1, got 0",), alone=True)


@case("setting")
def _folds_one(c):
    return Bad(["cv", "--dataset", "feph", "--root", c.feph_small, "--folds", "1", "--out", prior_out(c)],
               ("folds must be >= 2, got 1",))


@case("setting")
def _input_size_tiny(c):
    return Bad(["grid", "--dataset", "feph", "--root", c.feph_small, "--input-size", "4", "--out", prior_out(c)],
               ("--input-size must be >= 16",))


def grid_file(c: Ctx, obj) -> Path:
    path = c.tmp / "grid.yaml"
    path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))
    return path


def grid(c: Ctx, obj) -> list:
    return ["grid", "--dataset", "feph", "--root", c.feph_small, "--grid", grid_file(c, obj), "--out", prior_out(c)]


@case("setting")
def _grid_folds_two(c):
    return Bad(grid(c, {"folds": "two", "configs": [{"techniques": ["ft"]}]}),
               ("grid.yaml", "folds must be a whole number, got 'two'"))


@case("setting")
def _grid_seed_negative(c):
    return Bad(grid(c, {"seed": -1, "configs": [{"techniques": ["ft"]}]}), ("grid.yaml", "seed must be in"))


@case("setting")
def _grid_train_epochs_negative(c):
    return Bad(grid(c, {"train": {"epochs": -1}, "configs": [{"techniques": ["ft"]}]}),
               ("grid.yaml: train: epochs must be >= 1, got -1",))


@case("setting")
def _grid_train_not_a_mapping(c):
    return Bad(grid(c, {"train": 5, "configs": [{"techniques": ["ft"]}]}), ("grid.yaml: train", "mapping"))


@case("setting")
def _grid_config_train_not_a_mapping(c):
    return Bad(grid(c, {"configs": [{"techniques": ["ft"], "train": [1]}]}), ("grid.yaml: configs[0]", "mapping"))


@case("setting")
def _grid_archs_a_string(c):
    return Bad(grid(c, {"archs": "mobilenetv2", "configs": [{"techniques": ["ft"]}]}),
               ("grid.yaml: archs must be a list of names",))


@case("setting")
def _grid_configs_a_number(c):
    return Bad(grid(c, {"configs": 5}), ("grid.yaml", "'configs' must be a list"))


@case("setting")
def _grid_techniques_a_number(c):
    return Bad(grid(c, {"configs": [{"techniques": 5}]}), ("grid.yaml: configs[0]", "techniques must be a list"))


@case("setting")
def _grid_name_a_number(c):
    return Bad(grid(c, {"configs": [{"name": 5, "techniques": ["ft"]}]}), ("grid.yaml: configs[0]", "name must be text"))


@case("setting")
def _grid_unknown_detector_in_a_later_config(c):
    # found before the first config trains, not hours later
    return Bad(grid(c, {"configs": [{"techniques": ["ft"]}, {"name": "B", "techniques": ["ft"],
                                                             "crop_faces": "nosuch"}]}),
               ("grid.yaml: configs[1]", "unknown face detector 'nosuch'"))


@case("setting")
def _summary_unknown_detector(c):
    return Bad(summary(c.feph_small, "feph", "--crop-faces", "nosuch"), ("unknown face detector 'nosuch'",))


@case("setting")
def _grid_not_yaml(c):
    return Bad(grid(c, "configs: [\n  - {techniques: [ft]\n"), ("grid.yaml",))


@case("setting")
def _grid_a_list(c):
    return Bad(grid(c, [1, 2]), ("grid.yaml", "must be a mapping"))


for _flag, _value, _fragment in [
    ("--epochs", "0", "--epochs must be >= 1, got 0"),
    ("--batch-size", "1", "--batch-size must be >= 2"),
    ("--cutmix", "2", "--cutmix must be a probability in [0, 1]"),
    ("--lr", "-1", "--lr must be > 0"),
    ("--input-size", "0", "--input-size must be >= 16"),
]:
    def _make(c, flag=_flag, value=_value, fragment=_fragment):
        return Bad(["pretrain", "--dataset", "folder", "--root", c.tmp / "nowhere", flag, value,
                    "--out", c.tmp / "pre"], (fragment,), alone=True)

    _make.__name__ = f"pretrain_{_flag.strip('-')}_{_value}"
    case("setting")(_make)


# --- output paths ---------------------------------------------------------------------------------

def a_file(c: Ctx) -> Path:
    path = c.tmp / "taken"
    path.write_text("an earlier file\n")
    return path


PROC = Path("/proc/signfer-cannot-write-here")


@case("out")
def _annotate_out_is_a_file(c):
    out = a_file(c)
    return Bad(["annotate", c.clip, "--model", c.tiny_fer, "--backend", "torch", "--out", out],
               (str(out), "is a file"), alone=True)


@case("out")
def _annotate_out_under_proc(c):
    return Bad(["annotate", c.clip, "--model", c.tiny_fer, "--backend", "torch", "--out", PROC],
               (str(PROC), "cannot write"), alone=True)


@case("out")
def _annotate_output_name_is_a_folder(c):
    out = prior_annotations(c)
    (out / "clip.eaf").mkdir()  # checked before the video is read: a bad video would say otherwise
    return Bad(["annotate", c.tmp / "clip.mp4", "--model", c.tiny_fer, "--out", out],
               (str(out / "clip.eaf"), "is a folder"), alone=True)


@case("out")
def _annotate_out_inside_a_file(c):
    out = a_file(c) / "ann"
    return Bad(["annotate", c.clip, "--model", c.tiny_fer, "--out", out], (str(out), "cannot write"), alone=True)


@case("out")
def _suggest_out_is_a_file(c):
    out = a_file(c)
    return Bad(["suggest", c.clip, "--model", c.tiny_fer, "--out", out], (str(out), "is a file"), alone=True)


@case("out")
def _suggest_output_name_is_a_folder(c):
    out = prior_annotations(c)
    (out / "clip.suggest.csv").mkdir()
    return Bad(["suggest", c.tmp / "clip.mp4", "--model", c.tiny_fer, "--out", out],
               (str(out / "clip.suggest.csv"), "is a folder"), alone=True)


def cv_to(c: Ctx, out) -> list:
    return ["cv", "--dataset", "feph", "--root", c.feph_small, "--init", c.tiny_fer, "--techniques", "none",
            "--folds", "3", "--out", out]


@case("out")
def _cv_out_is_a_file(c):
    out = a_file(c)
    return Bad(cv_to(c, out), (str(out), "is a file"))


@case("out")
def _cv_out_under_proc(c):
    return Bad(cv_to(c, PROC), (str(PROC), "cannot write"))


@case("out")
def _cv_results_csv_is_a_folder(c):
    out = prior_out(c)
    (out / "results.csv").unlink()
    (out / "results.csv").mkdir()
    return Bad(cv_to(c, out), (str(out / "results.csv"), "is a folder"))


@case("out")
def _grid_out_is_a_file(c):
    out = a_file(c)
    return Bad(["grid", "--dataset", "feph", "--root", c.feph_small, "--out", out], (str(out), "is a file"))


@case("out")
def _train_out_under_proc(c):
    return Bad(["train", "--dataset", "feph", "--root", c.feph_small, "--init", c.tiny_fer, "--out", PROC / "m"],
               (str(PROC), "cannot write"))


@case("out")
def _train_json_is_a_folder(c):
    (c.tmp / "m.json").mkdir()
    return Bad(["train", "--dataset", "feph", "--root", c.feph_small, "--init", c.tiny_fer, "--out", c.tmp / "m"],
               (str(c.tmp / "m.json"), "is a folder"))


@case("out")
def _train_out_inside_a_file(c):
    out = a_file(c) / "m"
    return Bad(["train", "--dataset", "feph", "--root", c.feph_small, "--init", c.tiny_fer, "--out", out],
               (str(out.parent), "is a file"))


@case("out")
def _export_out_is_a_folder(c):
    (c.tmp / "m.onnx").mkdir()
    return Bad(["export", "onnx", c.tiny_fer, "--out", c.tmp / "m.onnx"], (str(c.tmp / "m.onnx"), "is a folder"),
               alone=True)


@case("out")
def _export_out_under_proc(c):
    return Bad(["export", "onnx", c.tiny_fer, "--out", PROC / "m.onnx"], (str(PROC), "cannot write"), alone=True)


@case("out")
def _export_json_beside_is_a_folder(c):
    (c.tmp / "m.json").mkdir()
    return Bad(["export", "onnx", c.tiny_fer, "--out", c.tmp / "m.onnx"], (str(c.tmp / "m.json"), "is a folder"),
               alone=True)


@case("out")
def _from_elan_out_is_a_folder(c):
    eaf = write_eaf(c.tmp / "a.eaf", c.clip)
    (c.tmp / "m.csv").mkdir()
    return Bad(["data", "from-elan", eaf, "--tier", "expression", "--out", c.tmp / "m.csv"],
               (str(c.tmp / "m.csv"), "is a folder"), alone=True)


@case("out")
def _from_elan_out_under_proc(c):
    eaf = write_eaf(c.tmp / "a.eaf", c.clip)
    return Bad(["data", "from-elan", eaf, "--tier", "expression", "--out", PROC / "m.csv"],
               (str(PROC), "cannot write"), alone=True)


@case("out")
def _from_elan_faces_folder_is_a_file(c):
    eaf = write_eaf(c.tmp / "a.eaf", c.clip)
    (c.tmp / "m_faces").write_text("in the way\n")
    return Bad(["data", "from-elan", eaf, "--tier", "expression", "--out", c.tmp / "m.csv"],
               (str(c.tmp / "m_faces"), "is a file"), alone=True)


# --- damaged run folders --------------------------------------------------------------------------

def damaged(c: Ctx, name: str, damage: Callable[[Path], None], fold: int = 1) -> tuple[list, Path]:
    out, argv = copy_run(c)
    path = out / "runs" / "no-FT" / "mobilenetv2" / f"fold{fold}" / name
    damage(path)
    return argv, path


@case("run")
def _metrics_json_half_written(c):
    argv, path = damaged(c, "metrics.json", lambda p: p.write_text(p.read_text()[:50]))
    return Bad(argv, (str(path), "unreadable", "--redo-damaged"))


@case("run")
def _metrics_json_empty(c):
    argv, path = damaged(c, "metrics.json", lambda p: p.write_text(""))
    return Bad(argv, (str(path), "unreadable"))


@case("run")
def _metrics_json_a_list(c):
    argv, path = damaged(c, "metrics.json", lambda p: p.write_text("[]"))
    return Bad(argv, (str(path), "incomplete"))


@case("run")
def _predictions_csv_deleted(c):
    argv, path = damaged(c, "predictions.csv", Path.unlink)
    return Bad(argv, (str(path), "missing"))


@case("run")
def _predictions_csv_cut_short(c):
    argv, path = damaged(c, "predictions.csv", lambda p: p.write_text("\n".join(p.read_text().splitlines()[:3])))
    return Bad(argv, (str(path), "incomplete (2 rows for 14 test samples)"))


@case("run")
def _predictions_csv_empty(c):
    argv, path = damaged(c, "predictions.csv", lambda p: p.write_text(""), fold=0)
    return Bad(argv, (str(path), "unreadable"))


@case("run")
def _history_json_deleted(c):
    argv, path = damaged(c, "history.json", Path.unlink, fold=2)
    return Bad(argv, (str(path), "missing"))


@case("run")
def _history_json_garbage(c):
    argv, path = damaged(c, "history.json", lambda p: p.write_text("{'epoch':"))
    return Bad(argv, (str(path), "unreadable"))


def damaged_folds(c: Ctx, text: str) -> tuple[list, Path]:
    out, argv = copy_run(c)
    (out / "folds.csv").write_text(text)
    return argv, out / "folds.csv"


@case("run")
def _folds_csv_empty(c):
    argv, path = damaged_folds(c, "")
    return Bad(argv, (str(path), "damaged", "--redo-damaged"))


@case("run")
def _folds_csv_header_only(c):
    argv, path = damaged_folds(c, "path,label,group,fold,seed\n")
    return Bad(argv, (str(path), "no rows"))


@case("run")
def _folds_csv_fold_not_a_number(c):
    out, argv = copy_run(c)
    lines = (out / "folds.csv").read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 2)[0] + ",x,0"  # path,label,group,fold,seed
    (out / "folds.csv").write_text("\n".join(lines) + "\n")
    return Bad(argv, (str(out / "folds.csv"), "fold 'x' on line 5"))


@case("run")
def _config_yaml_garbage(c):
    out, argv = copy_run(c)
    (out / "config.yaml").write_text("folds: [unclosed\n")
    return Bad(argv, (str(out / "config.yaml"), "unreadable"))


# --- the corpus ----------------------------------------------------------------------------------

@pytest.fixture(params=sorted(CASES), ids=str)  # after every case is registered
def bad(request, tmp_path) -> Bad:
    return CASES[request.param](Ctx(request, tmp_path))


def test_the_corpus_is_large_enough():
    kinds = {name.split("-")[0] for name in CASES}
    assert len(CASES) >= 60, len(CASES)
    assert kinds >= {"image", "csv", "manifest", "video", "elan", "checkpoint", "setting", "out", "run"}


def test_bad_input_is_one_line_and_loses_nothing(bad, tmp_path, capsys, monkeypatch):
    """Exit status 2, one error line (the last) naming the file, no traceback, earlier files unchanged."""
    watch = bad.watch or (tmp_path,)
    before = snapshot(*watch)
    if bad.setup:
        bad.setup(monkeypatch)
    rc = run(bad.argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("signfer: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    if bad.alone:
        assert len(lines) == 1, err
    for fragment in bad.fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "\n" not in errors[0]
    after = {p: p.read_bytes() if p.is_file() else None for p in before}
    assert after == before, [str(p) for p in before if after[p] != before[p]]


# --- counted skips, and inputs that must not be read wrong ---------------------------------------

def test_duplicated_feph_rows_are_counted_dropped_and_listed(tmp_path, capsys):
    rows = feph_rows(n_videos=3, frames=7)
    rows += [rows[0], (rows[1][0], "6" if rows[1][1] != "6" else "5")]  # a repeat, and a conflict
    root = make_feph(tmp_path / "FePh", rows, size=SIZE)
    rc = run(summary(root))
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err
    assert "FePh: 20 samples" in out  # 21 images, one of them with conflicting labels
    assert f"FePh_labels.csv:{len(rows)}: duplicate row (same image as FePh_labels.csv:2)" in out
    assert "FePh_labels.csv:3: conflicting labels for one image (FePh_labels.csv:3 " in out
    assert f"FePh_labels.csv:{len(rows) + 1}: conflicting labels" in out
    assert "skipped: 3" in out
    assert "1 duplicate row" in err and "2 conflicting labels for one image" in err


def test_unknown_manifest_label_is_kept_with_allow_new_labels(tmp_path, capsys):
    csv = make_manifest(tmp_path, [("a.png", "happy", "v1"), ("b.png", "hapy", "v2")])
    rc = run(summary(csv, "manifest", "--allow-new-labels"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "manifest: 2 samples, 2 classes" in out and "hapy" in out


def test_a_16_bit_png_is_scaled_not_white(tmp_path, tiny_fer, capsys):
    grey8 = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 251).astype(np.uint8)
    Image.fromarray(grey8).save(tmp_path / "eight.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # the same picture in 16 bits
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    from signfer.data.cache import read_rgb

    assert (read_rgb(str(tmp_path / "sixteen.png")) == read_rgb(str(tmp_path / "eight.png"))).all()
    rc = run(["predict", tmp_path / "eight.png", tmp_path / "sixteen.png", "--model", tiny_fer, "--backend", "torch"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    probs = pd.read_csv(pd.io.common.StringIO(out)).filter(like="prob_").to_numpy()
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)


def test_a_large_image_gets_a_note_not_a_raw_warning(tmp_path, tiny_fer, capsys, monkeypatch):
    png = write_image(tmp_path / "big.png", "happy", size=SIZE)  # 1024 pixels: over the limit, under twice it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)
    rc = run(predict(png, tiny_fer))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "DecompressionBombWarning" not in err and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"note: {png}: very large image (32 x 32 pixels")


def test_cv_resume_runs_a_fold_left_without_metrics(zero_shot_run, tmp_path, capsys):
    """A fold killed before its metrics.json (written last) is not done and not damaged: it just runs again."""
    src, argv = zero_shot_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    (out / "runs" / "no-FT" / "mobilenetv2" / "fold1" / "metrics.json").unlink()
    rc = main([*argv[:-1], str(out)])
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert err.count("done before, skipped") == 2
    assert pd.read_csv(out / "results.csv").drop(columns="seconds").equals(
        pd.read_csv(src / "results.csv").drop(columns="seconds"))


def test_redo_damaged_runs_the_damaged_folds_again(zero_shot_run, tmp_path, capsys):
    src, argv = zero_shot_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    fold = out / "runs" / "no-FT" / "mobilenetv2"
    (fold / "fold0" / "metrics.json").write_text('{"accuracy": 0.')
    (fold / "fold2" / "predictions.csv").unlink()
    (out / "folds.csv").write_text("")
    rc = main([*argv[:-1], str(out), "--redo-damaged"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert "--redo-damaged" in err and err.count("done before, skipped") == 1
    assert pd.read_csv(out / "folds.csv").equals(pd.read_csv(src / "folds.csv"))  # the same seed, the same folds
    assert pd.read_csv(out / "results.csv").drop(columns="seconds").equals(
        pd.read_csv(src / "results.csv").drop(columns="seconds"))
    assert (fold / "fold2" / "predictions.csv").is_file()


def test_annotate_checks_outputs_before_reading_the_video(clip, tiny_fer, tmp_path, capsys, monkeypatch):
    import signfer.inference.annotate as annotate_module

    def never(*a, **k):
        raise AssertionError("the video was read before the outputs were checked")

    monkeypatch.setattr(annotate_module, "annotate_frames", never)
    (tmp_path / "ann" / "clip.timeline.png").mkdir(parents=True)
    rc = main(["annotate", str(clip), "--model", str(tiny_fer), "--backend", "torch", "--out", str(tmp_path / "ann")])
    _, err = capsys.readouterr()
    assert rc == 2 and "clip.timeline.png: is a folder" in err
