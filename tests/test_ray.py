"""The Ray backend gives what the local one gives: grids, a killed worker, video annotation.

One local Ray with 2 CPUs serves every test here (starting Ray takes tens of
seconds); the data are the runner's and the video tests' tiny fixtures. Skipped
when Ray is not installed (``pip install 'signfer[ray]'``; ``make test``
installs it).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'signfer[ray]'")

from test_runner import make_grid

from signfer.data import load_dataset
from signfer.experiments import runner
from signfer.experiments.executors import LocalExecutor, RayExecutor
from signfer.experiments.runner import fold_dir, run_grid

#: results.csv columns that time the run, and so differ between any two runs.
TIMING = ["seconds", "train_img_per_s"]


@pytest.fixture(scope="module")
def ray_executor():
    """One local Ray for the module: 2 CPUs, no dashboard."""
    # the worker-killing wrapper below lives in this module: the workers import it from tests/
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield RayExecutor()  # uses the Ray started above, and leaves it running
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def table(feph_small):
    return load_dataset("feph", feph_small)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, table, tiny_fer):
    out = tmp_path_factory.mktemp("local") / "out"
    run_grid(table, make_grid(tiny_fer), out, log=lambda msg: None, executor=LocalExecutor())
    return out


def same_run_folders(a: Path, b: Path, grid) -> None:
    ra, rb = pd.read_csv(a / "results.csv"), pd.read_csv(b / "results.csv")
    pd.testing.assert_frame_equal(ra.drop(columns=TIMING), rb.drop(columns=TIMING))
    assert (a / "folds.csv").read_bytes() == (b / "folds.csv").read_bytes()
    for spec in grid.runs:
        for fold in range(grid.folds):
            name = "predictions.csv"  # every probability, to 5 decimals
            assert (fold_dir(a, spec, fold) / name).read_bytes() == (fold_dir(b, spec, fold) / name).read_bytes()


def test_grid_on_ray_gives_the_local_results(ray_executor, local_run, table, tiny_fer, tmp_path):
    grid = make_grid(tiny_fer)
    out = tmp_path / "out"
    results = run_grid(table, grid, out, log=lambda msg: None, executor=ray_executor)
    assert len(results) == len(grid.runs) * grid.folds
    same_run_folders(local_run, out, grid)
    # a driver that stopped can resume with the other backend: nothing is left to run
    again = run_grid(table, grid, out, log=lambda msg: None, executor=LocalExecutor())
    pd.testing.assert_frame_equal(again, results)


def _die_once(marker: str, spec, fold, *args, **kwargs):
    """run_fold, except that the first attempt of fine-tuning fold 1 kills its worker process.

    Runs in a Ray worker, where signfer's runner is not patched.
    """
    if spec.techniques and fold == 1 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return runner.run_fold(spec, fold, *args, **kwargs)


def test_a_killed_worker_is_retried_and_the_results_are_the_same(ray_executor, local_run, table, tiny_fer,
                                                                   tmp_path, monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setattr(runner, "run_fold", functools.partial(_die_once, str(marker)))
    grid = make_grid(tiny_fer)
    out = tmp_path / "out"
    run_grid(table, grid, out, log=lambda msg: None, executor=ray_executor)
    assert marker.exists()  # the worker did die, and its fold was run again
    same_run_folders(local_run, out, grid)


# ---------------------------------------------------------------- video

@pytest.fixture(scope="module")
def face_videos(tmp_path_factory) -> list[Path]:
    """Three short clips of the astronaut's face, each moving its own way."""
    skimage_data = pytest.importorskip("skimage.data")
    from fixtures import write_video
    from PIL import Image

    face = np.asarray(Image.fromarray(skimage_data.astronaut()[0:240, 120:330]).resize((70, 80)))
    folder = tmp_path_factory.mktemp("videos")
    paths = []
    for k in range(3):
        frames = []
        for i in range(4 + k):
            image = np.full((120, 160, 3), 60 + 30 * k, np.uint8)
            image[20:100, 20 + 3 * i * (k + 1):90 + 3 * i * (k + 1)] = face
            frames.append(image)
        paths.append(write_video(folder / f"clip{k}.mp4", frames, fps=8))
    return paths


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import torch

    from signfer.models.checkpoint import build_model, save_checkpoint

    torch.manual_seed(0)
    net, meta = build_model("mobilenetv2", ["anger", "happiness", "neutral"], "random", 32)
    return save_checkpoint(net, meta, tmp_path_factory.mktemp("ckpt") / "tiny")


def test_videos_annotated_on_ray_give_the_same_files(ray_executor, face_videos, model, tmp_path, capsys):
    from signfer.cli import main

    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    runs = {}
    for name, extra in (("local", []), ("ray", ["--ray"])):
        rc = main(["--quiet", "annotate", *map(str, face_videos), str(bad), "--out", str(tmp_path / name),
                   "--model", str(model), "--backend", "onnx", *extra])
        runs[name] = rc, capsys.readouterr().err
    assert runs["ray"] == runs["local"]  # exit status 2 and the same one error line, for the bad video
    rc, err = runs["ray"]
    assert rc == 2 and err.count("signfer: error:") == 1 and "broken.mp4" in err
    for v in face_videos:
        local = pd.read_csv(tmp_path / "local" / f"{v.stem}.frames.csv")
        assert local["face"].all()  # the detector did find the face: the tables are not trivial
        assert (tmp_path / "ray" / f"{v.stem}.frames.csv").read_bytes() == \
            (tmp_path / "local" / f"{v.stem}.frames.csv").read_bytes()
        assert sorted(p.name for p in (tmp_path / "ray").glob(f"{v.stem}.*")) == \
            sorted(p.name for p in (tmp_path / "local").glob(f"{v.stem}.*"))


def test_videos_cut_into_stretches_on_ray_give_the_files_of_one_piece(ray_executor, face_videos, model,
                                                                     tmp_path):
    from signfer.inference.annotate import annotate_many
    from signfer.inference.predict import make_classifier, make_detector

    clf, det = make_classifier(str(model), "onnx"), make_detector(None)
    options = dict(detect_every=1, batch_size=2)  # stretches of 2 frames: 2-3 tasks per clip
    whole = annotate_many(face_videos, tmp_path / "whole", clf, det, **options)
    cut = annotate_many(face_videos, tmp_path / "cut", clf, det, executor=ray_executor, chunk_s=0.2, **options)
    assert not whole.errors and not cut.errors
    for v in face_videos:
        table = (tmp_path / "cut" / f"{v.stem}.frames.csv").read_bytes()
        assert table == (tmp_path / "whole" / f"{v.stem}.frames.csv").read_bytes()
        assert pd.read_csv(tmp_path / "cut" / f"{v.stem}.frames.csv")["face"].all()


def test_evaluate_on_ray_gives_the_local_metrics(ray_executor, feph_small, tiny_fer, capsys):
    from signfer.cli import main

    outputs = []
    for extra in ([], ["--ray"]):
        rc = main(["evaluate", "--dataset", "feph", "--root", str(feph_small), "--model", str(tiny_fer),
                   "--backend", "torch", *extra])
        assert rc == 0
        out = capsys.readouterr().out
        outputs.append([line.split(", ")[:2] if "faces/s" in line else line for line in out.splitlines()])
    assert outputs[0] == outputs[1]
