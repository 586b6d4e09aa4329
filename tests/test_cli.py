"""The ``signfer`` command: exit codes, one-line errors, tiny end-to-end runs.

Every call goes through ``signfer.cli.main([...])``; output is read with capsys.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures import feph_rows, make_feph, make_manifest, write_video
from PIL import Image

from signfer.cli import get_parser, main
from signfer.experiments import runner
from signfer.export.onnx import default_out
from signfer.models.checkpoint import builtin_dir
from signfer.models.registry import ARCHS

TINY = ["--input-size", "32", "--set", "epochs=1", "--set", "head_epochs=1", "--set", "batch_size=16"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(rc: int, err: str, *fragments: str, alone: bool = True) -> str:
    """Exit status 2, exactly one ``signfer: error:`` line (the last), no traceback."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("signfer: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    if alone:  # nothing else was printed before it
        assert len(lines) == 1, err
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def test_parser_is_returned_unparsed():
    args = get_parser().parse_args(["cv", "--dataset", "feph", "--root", "x", "--out", "o"])
    assert args.folds == 5 and args.techniques == "ft,ip,hf" and args.func.__name__ == "cmd_cv"


# --- data summary ---------------------------------------------------------------------

def test_data_summary_prints_counts_and_skipped_rows(tmp_path, capsys):
    root = make_feph(tmp_path / "FePh")  # the default rows: some kept, some skipped
    rc, out, err = cli(capsys, "data", "summary", "--dataset", "feph", "--root", root)
    assert rc == 0, err
    assert "FePh: 9 samples, 7 classes" in out
    counts = dict(re.findall(r"^  (\w+)\s+(\d+)$", out, re.MULTILINE))
    assert counts == {"anger": "1", "disgust": "1", "fear": "1", "happiness": "3", "sadness": "1",
                      "surprise": "1", "neutral": "1"}
    assert "groups: 4" in out
    assert "skipped: 7" in out
    assert "FePh_labels.csv:4: multi-label (happiness, sadness)" in out
    assert "FePh_labels.csv:5: empty label (face not visible)" in out
    assert re.search(r"FePh_labels\.csv:6: class none", out)
    assert "FePh_labels.csv:17: multi-label (anger, fear)" in out
    assert err.startswith("skipped 7 row(s)")  # the one-line note on stderr


# --- cv, grid, report ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, feph_small, tiny_fer):
    """One tiny FT+IP+HF cross-validation through the CLI: (exit status, out folder, argv)."""
    out = tmp_path_factory.mktemp("cv") / "out"
    argv = ["cv", "--dataset", "feph", "--root", str(feph_small), "--init", str(tiny_fer),
            "--techniques", "ft,ip,hf", "--folds", "3", "--keep-models", "--out", str(out), *TINY]
    return main(argv), out, argv


def test_cv_tiny_run(cv_run, capsys):
    rc, out, _ = cv_run
    assert rc == 0
    assert (out / "results.csv").is_file() and (out / "results.md").is_file()
    results = pd.read_csv(out / "results.csv")
    assert results["config"].unique().tolist() == ["FT+IP+HF"]
    assert results["fold"].tolist() == [0, 1, 2]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["dataset"]["kind"] == "feph" and cfg["seed"] == 0
    assert cfg["runs"][0]["train"]["epochs"] == 1 and cfg["runs"][0]["train"]["batch_size"] == 16


def test_cv_keep_models_saves_each_fold_model(cv_run):
    from signfer.models.checkpoint import load_meta

    _, out, _ = cv_run
    models = sorted((out / "runs").rglob("model.safetensors"))
    assert [m.parent.name for m in models] == ["fold0", "fold1", "fold2"]
    meta = load_meta(models[0].with_suffix(""))
    assert meta.techniques == ["ft", "hf", "ip"] and meta.input_size == 32


def test_cv_rerun_resumes_without_training(cv_run, capsys):
    _, out, argv = cv_run
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.json")}
    assert len(stamps) == 3
    rc, stdout, err = cli(capsys, *argv)
    assert rc == 0, err
    assert err.count("done before, skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "FT+IP+HF" in stdout


def test_report_of_a_run(cv_run, capsys):
    _, out, _ = cv_run
    (out / "results.md").unlink()
    rc, stdout, err = cli(capsys, "report", out)
    assert rc == 0, err
    assert (out / "results.md").is_file()
    assert "FT+IP+HF" in stdout and "report:" in stdout


def test_report_of_an_empty_folder_is_an_error(tmp_path, capsys):
    rc, _, err = cli(capsys, "report", tmp_path)
    one_error(rc, err, "results.csv")


def write_grid(path: Path, obj) -> Path:
    path.write_text(yaml.safe_dump(obj))
    return path


def test_grid_from_yaml_tiny(feph_small, tiny_fer, tmp_path, capsys):
    g = write_grid(tmp_path / "grid.yaml", {"archs": ["mobilenetv2"], "init": str(tiny_fer), "configs": [
        {"techniques": []}, {"name": "head only", "techniques": ["head", "ip"]}]})
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "grid", "--dataset", "feph", "--root", feph_small, "--grid", g,
                          "--folds", "2", "--out", out, *TINY)
    assert rc == 0, err
    results = pd.read_csv(out / "results.csv")
    assert list(zip(results["config"], results["fold"])) == [("no-FT", 0), ("no-FT", 1),
                                                              ("head only", 0), ("head only", 1)]
    assert (out / "results.md").is_file()
    assert "no-FT" in stdout and "head only" in stdout
    assert (out / "runs" / "head-only" / "mobilenetv2" / "fold1" / "metrics.json").is_file()


class _Captured(Exception):
    pass


@pytest.fixture
def captured_grid(monkeypatch):
    """Stop ``grid`` at run_grid and keep the Grid it was given: the command's parsing, without training."""
    seen = {}

    def capture(table, grid, out, **kw):
        seen["grid"] = grid
        raise _Captured

    monkeypatch.setattr(runner, "run_grid", capture)
    return seen


def test_grid_command_passes_command_line_settings(feph_small, tiny_fer, tmp_path, captured_grid):
    g = write_grid(tmp_path / "grid.yaml", {"folds": 2, "seed": 7, "archs": ["mobilenetv2"],
                                            "configs": [{"techniques": [], "init": str(tiny_fer)}]})
    with pytest.raises(_Captured):
        main(["grid", "--dataset", "feph", "--root", str(feph_small), "--grid", str(g), "--folds", "4",
              "--seed", "3", "--input-size", "48", "--set", "epochs=2", "--out", str(tmp_path / "o")])
    grid = captured_grid["grid"]
    assert (grid.folds, grid.seed, grid.input_size) == (4, 3, 48)
    assert grid.runs[0].train.epochs == 2


def test_grid_yaml_settings_apply_when_not_given_on_the_command_line(feph_small, tiny_fer, tmp_path, captured_grid):
    g = write_grid(tmp_path / "grid.yaml", {"folds": 2, "seed": 7, "input_size": 48, "archs": ["mobilenetv2"],
                                            "configs": [{"techniques": [], "init": str(tiny_fer)}]})
    with pytest.raises(_Captured):
        main(["grid", "--dataset", "feph", "--root", str(feph_small), "--grid", str(g), "--out", str(tmp_path / "o")])
    grid = captured_grid["grid"]
    assert (grid.folds, grid.seed, grid.input_size) == (2, 7, 48)


def test_grid_set_overrides_apply_on_top_of_the_yaml_train(feph_small, tiny_fer, tmp_path, captured_grid):
    g = write_grid(tmp_path / "grid.yaml", {"archs": ["mobilenetv2"], "train": {"lr": 1.0e-4},
                                            "configs": [{"techniques": ["ft"], "train": {"epochs": 2}}]})
    with pytest.raises(_Captured):
        main(["grid", "--dataset", "feph", "--root", str(feph_small), "--grid", str(g), "--set", "patience=1",
              "--out", str(tmp_path / "o")])
    train = captured_grid["grid"].runs[0].train
    assert (train.patience, train.lr, train.epochs) == (1, 1.0e-4, 2)


def test_grid_yaml_with_unknown_key_names_the_file(feph_small, tmp_path, capsys):
    g = write_grid(tmp_path / "grid.yaml", {"configz": [{"techniques": ["ft"]}]})
    rc, _, err = cli(capsys, "grid", "--dataset", "feph", "--root", feph_small, "--grid", g, "--out", tmp_path / "o")
    one_error(rc, err, str(g), "configz")


# --- one-line errors ---------------------------------------------------------------------------

def test_missing_root(tmp_path, capsys):
    rc, _, err = cli(capsys, "data", "summary", "--dataset", "feph", "--root", tmp_path / "nowhere")
    one_error(rc, err, str(tmp_path / "nowhere" / "FePh_labels.csv"))


def test_feph_csv_without_required_columns(tmp_path, capsys):
    root = make_feph(tmp_path / "FePh", header=("External ID", "Label"))
    rc, _, err = cli(capsys, "data", "summary", "--dataset", "feph", "--root", root)
    one_error(rc, err, str(root / "FePh_labels.csv"), "Facial_label")


def test_manifest_without_required_columns(tmp_path, capsys):
    csv = make_manifest(tmp_path, [("a.png", "happy")], header=("file", "label"))
    rc, _, err = cli(capsys, "data", "summary", "--dataset", "manifest", "--root", csv)
    one_error(rc, err, str(csv), "path")


def test_unknown_feph_label_code(tmp_path, capsys):
    rows = feph_rows(n_videos=1, frames=3)
    rows[1] = (rows[1][0], "9")
    root = make_feph(tmp_path / "FePh", rows)
    rc, _, err = cli(capsys, "data", "summary", "--dataset", "feph", "--root", root)
    one_error(rc, err, "FePh_labels.csv:3", "'9'")


def test_class_with_fewer_members_than_folds(tmp_path, tiny_fer, capsys):
    root = make_feph(tmp_path / "FePh", feph_rows(n_videos=2, frames=7), size=32)
    rc, _, err = cli(capsys, "cv", "--dataset", "feph", "--root", root, "--folds", "3", "--techniques", "none",
                     "--init", tiny_fer, "--out", tmp_path / "out", *TINY)
    line = one_error(rc, err, "has 2 sample(s), fewer than the 3 folds")
    assert re.search(r"FePh: class '\w+' has 2 sample\(s\).*\(e\.g\. FePh_labels\.csv:\d+\)", line), line
    assert not (tmp_path / "out").exists()  # refused before the run folder is made


def test_unreadable_image_names_file_and_row(tmp_path, tiny_fer, capsys):
    rows = feph_rows(n_videos=3, frames=7)
    root = make_feph(tmp_path / "FePh", rows, size=32)
    bad = root / "FePh_images" / rows[4][0]
    bad.write_bytes(b"\x89PNG but not really" * 10)
    rc, _, err = cli(capsys, "cv", "--dataset", "feph", "--root", root, "--folds", "3", "--techniques", "none",
                     "--init", tiny_fer, "--out", tmp_path / "out", *TINY)
    # progress lines of the runner may come first; the error is the one last line
    one_error(rc, err, "FePh_labels.csv:6", str(bad), alone=False)


@pytest.mark.parametrize("argv, fragment", [
    (["--techniques", "ft,zz"], "unknown technique(s) ['zz']"),
    (["--techniques", "ft,head"], "exclude each other"),
    (["--arch", "vgg99"], "unknown architecture 'vgg99'"),
    (["--init", "no-such-checkpoint"], "no signfer checkpoint at 'no-such-checkpoint'"),
    (["--set", "epoch=1"], "--set: unknown key(s) ['epoch']"),
])
def test_bad_options(feph_small, tmp_path, capsys, argv, fragment):
    rc, _, err = cli(capsys, "cv", "--dataset", "feph", "--root", feph_small, "--folds", "3",
                     "--out", tmp_path / "out", *TINY, *argv)
    one_error(rc, err, fragment, alone=False)


def test_interrupt_is_a_one_line_message(feph_small, tiny_fer, tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_fold", interrupted)
    rc, _, err = cli(capsys, "cv", "--dataset", "feph", "--root", feph_small, "--folds", "3", "--techniques", "none",
                     "--init", tiny_fer, "--out", tmp_path / "out", *TINY)
    one_error(rc, err, "interrupted", alone=False)


# --- models, export ---------------------------------------------------------------------------

def test_models_lists_architectures(capsys):
    rc, out, err = cli(capsys, "models")
    assert rc == 0, err
    assert "architectures:" in out
    assert all(name in out for name in ARCHS)


def test_models_shows_the_parent_of_a_model_trained_from_another(capsys):
    from signfer.models.checkpoint import builtin_models, load_checkpoint

    children = [n for n in builtin_models() if load_checkpoint(n)[1].extra.get("init_from")]
    if not children:
        pytest.skip("no built-in model was pre-trained from another")
    rc, out, err = cli(capsys, "models")
    assert rc == 0, err
    lines = out.splitlines()
    start = lines.index(children[0]) + 1
    block = []
    for line in lines[start:]:  # the model's own indented lines
        if not line.startswith("  "):
            break
        block.append(line)
    block = "\n".join(block)
    parent = load_checkpoint(children[0])[1].extra["init_from"]
    assert f"started from {parent['name']} as it was then" in block
    assert parent["command"] in block


def test_models_shows_the_teachers_of_a_distilled_model(capsys):
    from signfer.models.checkpoint import builtin_models, load_checkpoint

    distilled = {n: load_checkpoint(n)[1] for n in builtin_models()}
    distilled = {n: m for n, m in distilled.items() if m.extra.get("teachers")}
    if not distilled:
        pytest.skip("no built-in model was distilled")
    rc, out, err = cli(capsys, "models")
    assert rc == 0, err
    for meta in distilled.values():
        for teacher in meta.extra["teachers"]:
            assert (f"distilled from {teacher['name']} as it was then "
                    f"(validation accuracy {teacher['val_accuracy']})") in out


def test_export_onnx_parity(tiny_fer, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_fer.with_suffix(suffix), tmp_path / f"tiny{suffix}")
    target = tmp_path / "export" / "tiny.onnx"
    rc, out, err = cli(capsys, "export", "onnx", tmp_path / "tiny", "--out", target)
    assert rc == 0, err
    assert target.is_file() and target.with_suffix(".json").is_file()
    diff = float(re.search(r"max \|logit diff\| vs PyTorch: ([0-9.e+-]+)", out).group(1))
    assert diff < 1e-4


def test_export_onnx_never_writes_over_a_checkpoint(tiny_fer, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    for name in ("a", "b"):
        for suffix in (".safetensors", ".json"):
            shutil.copy(tiny_fer.with_suffix(suffix), tmp_path / f"{name}{suffix}")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # b.json is b's metadata: a's would mislabel b without a word
    rc, _, err = cli(capsys, "export", "onnx", tmp_path / "a", "--out", tmp_path / "b.onnx")
    assert rc == 2 and "is the metadata of the checkpoint" in err
    rc, _, err = cli(capsys, "export", "onnx", tmp_path / "a", "--out", tmp_path / "a.safetensors")
    assert rc == 2 and "named .onnx" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # by default beside the checkpoint, whose own JSON is the metadata and stays as it was
    rc, _, err = cli(capsys, "export", "onnx", tmp_path / "a")
    assert rc == 0, err
    assert (tmp_path / "a.onnx").is_file() and (tmp_path / "a.json").read_bytes() == before["a.json"]
    # a built-in model is exported to the current folder, not into the installed package
    assert default_out(builtin_dir() / "mobilenetv2-fer") == Path("mobilenetv2-fer.onnx")


# --- train, and every consumer of the checkpoint it writes --------------------------------------

@pytest.fixture(scope="module")
def trained(cv_run, feph_small, tiny_fer, tmp_path_factory):
    """`signfer train` of the cv run's configuration, epochs from that run, with crop options:
    (exit status, stdout, checkpoint stem, argv)."""
    _, cv_out, _ = cv_run
    stem = tmp_path_factory.mktemp("train") / "feph-tiny"
    argv = ["train", "--dataset", "feph", "--root", str(feph_small), "--init", str(tiny_fer),
            "--techniques", "ft,ip,hf", "--epochs-from", str(cv_out), "--margin", "1.6", "--region", "upper",
            "--out", str(stem), "--preset", "fast", *TINY]  # cv's preset, with the same --set
    buf = io.StringIO()  # capsys is per test; this fixture is per module
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setattr("sys.argv", ["signfer", *argv])  # what the checkpoint records as its command
        rc = main(argv)
    return rc, buf.getvalue(), stem, argv


def test_train_with_epochs_from_alone_takes_the_runs_settings_and_init(cv_run, feph_small, tiny_fer, tmp_path,
                                                                        capsys):
    from signfer.models.checkpoint import load_meta

    _, cv_out, _ = cv_run
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", feph_small,
                     "--epochs-from", cv_out, "--out", tmp_path / "m")
    assert rc == 0, err
    meta = load_meta(tmp_path / "m")
    config = meta.config
    assert (config["epochs"], config["head_epochs"], config["batch_size"], config["patience"]) == (1, 1, 16, 2)
    assert meta.extra["cv"]["init"] == str(tiny_fer)  # the run's, not the accurate preset's 160 px start
    # with other settings than the run's, no fold matches
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", feph_small, "--init", tiny_fer,
                     "--epochs-from", cv_out, "--preset", "accurate", "--out", tmp_path / "m2")
    assert rc == 2 and "training settings" in err and not (tmp_path / "m2.json").exists()


def test_train_epochs_from_checks_the_runs_faces_wherever_the_dataset_lies(cv_run, feph_small, tmp_path, capsys):
    _, cv_out, _ = cv_run
    moved = tmp_path / "elsewhere" / "FePh"
    shutil.copytree(feph_small, moved)
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", moved, "--epochs-from", cv_out,
                     "--out", tmp_path / "m")
    assert rc == 0, err  # the same faces, moved: accepted
    # one face relabelled: other data
    csv = next(moved.glob("*.csv"))
    rows = csv.read_text().splitlines()
    rows[1] = rows[1].rsplit(",", 1)[0] + "," + ("1" if not rows[1].endswith(",1") else "2")
    csv.write_text("\n".join(rows) + "\n")
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", moved, "--epochs-from", cv_out,
                     "--out", tmp_path / "m2")
    one_error(rc, err, "folds.csv: the run cross-validated other faces", " there, ")
    # a run folder without its folds.csv cannot say what it ran on
    run = tmp_path / "run"
    shutil.copytree(cv_out, run)
    (run / "folds.csv").unlink()
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", feph_small, "--epochs-from", run,
                     "--out", tmp_path / "m3")
    one_error(rc, err, "folds.csv: not found")


def _set_folds(run, **changes):
    for path in sorted(run.glob("runs/*/*/fold*/metrics.json")):
        m = json.loads(path.read_text())
        fold = m["fold"]
        for key, values in changes.items():
            if key == "head_epochs":
                m["train"]["head_epochs"] = values[fold]
            else:
                m[key] = values[fold]
        path.write_text(json.dumps(m))


def test_train_epochs_from_rounds_half_up_and_refuses_to_train_nothing(cv_run, feph_small, tmp_path, capsys):
    from signfer.training.train import epochs_from_run

    _, cv_out, _ = cv_run
    run = tmp_path / "run"
    shutil.copytree(cv_out, run)
    _set_folds(run, best_epoch=[0, 1, 5])
    assert epochs_from_run(run, arch="mobilenetv2", init=None, techniques=("ft", "hf", "ip"), cfg=None)["epochs"] == 1
    (run / "runs" / "FT+IP+HF" / "mobilenetv2" / "fold2" / "metrics.json").unlink()  # folds chose 0 and 1
    assert epochs_from_run(run, arch="mobilenetv2", init=None, techniques=("ft", "hf", "ip"), cfg=None)["epochs"] == 1
    # every fold kept the starting model and nothing warms up the head: nothing would train it
    _set_folds(run, best_epoch=[0, 0, 0], head_epochs=[0, 0, 0])
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", feph_small, "--epochs-from", run,
                     "--out", tmp_path / "m")
    one_error(rc, err, "chose epoch 0", "train nothing")
    assert not (tmp_path / "m.json").exists()


def test_train_writes_a_checkpoint_with_its_record(trained, feph_small):
    from signfer.models.checkpoint import load_meta

    rc, out, stem, argv = trained
    assert rc == 0
    assert f"checkpoint: {stem}.safetensors" in out
    assert stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()
    meta = load_meta(stem)
    assert meta.labels == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert meta.techniques == ["ft", "hf", "ip"]
    assert meta.command.startswith("signfer train ") and "--epochs-from" in meta.command
    assert meta.crop["margin"] == 1.6 and meta.crop["region"] == "upper" and meta.crop["square"] is True
    assert meta.extra["cv"]["folds"] == 3 and meta.extra["cv"]["run"] == str(argv[argv.index("--epochs-from") + 1])
    assert meta.data_fingerprint["n_samples"] == 42


def test_models_path_shows_one_checkpoint(trained, tiny_fer, capsys):
    _, _, stem, _ = trained
    rc, out, err = cli(capsys, "models", stem)
    assert rc == 0, err
    for fragment in ("arch mobilenetv2, input 32 px",
                     "labels (output order): anger, disgust, fear, happiness, sadness, surprise, neutral",
                     "margin 1.6", "region upper", "techniques: ft+hf+ip", "trained on: FePh",
                     "data fingerprint: 42 samples", "validation accuracy:",
                     "epochs from cross-validation:", f"started from {tiny_fer}", "command: signfer train",
                     "signfer version: "):
        assert fragment in out, fragment
    assert "architectures:" not in out  # one model, not the list


def test_models_path_of_a_builtin_model(capsys):
    from signfer.models.checkpoint import builtin_models

    if not builtin_models():
        pytest.skip("no built-in model")
    name = next(iter(builtin_models()))
    rc, out, err = cli(capsys, "models", name)
    assert rc == 0, err
    assert out.startswith(name) and "labels (output order):" in out and "crop: " in out


def test_models_path_that_is_not_a_checkpoint(tmp_path, capsys):
    rc, _, err = cli(capsys, "models", tmp_path / "nothing")
    one_error(rc, err, "no signfer checkpoint")


def test_evaluate_a_trained_checkpoint(trained, feph_small, capsys):
    _, _, stem, _ = trained
    rc, out, err = cli(capsys, "evaluate", "--dataset", "feph", "--root", feph_small, "--model", stem,
                       "--backend", "torch")
    assert rc == 0, err
    assert re.search(r"\(42 faces\): accuracy [0-9.]+", out), out


def test_predict_with_a_trained_checkpoint(trained, feph_small, capsys):
    _, _, stem, _ = trained
    png = min((feph_small / "FePh_images").glob("*.png"))
    rc, out, err = cli(capsys, "predict", png, "--model", stem, "--backend", "torch")
    assert rc == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert [c for c in df.columns if c.startswith("prob_")] == [
        f"prob_{c}" for c in ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")]
    assert df["face_source"].tolist() == ["whole image"]  # a face crop, as Recognizer.predict names it


def test_predict_fuses_several_models(trained, tiny_fer, feph_small, capsys):
    _, _, stem, _ = trained
    png = min((feph_small / "FePh_images").glob("*.png"))

    def probs(*models):
        argv = [a for m in models for a in ("--model", m)]
        rc, out, err = cli(capsys, "predict", png, *argv, "--backend", "torch")
        assert rc == 0, err
        return pd.read_csv(io.StringIO(out)).filter(like="prob_").sort_index(axis=1).to_numpy()[0]

    one, other = probs(stem), probs(tiny_fer)
    assert np.allclose(probs(stem, tiny_fer), (one + other) / 2, atol=2e-4)  # 4 decimals printed


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    skimage_data = pytest.importorskip("skimage.data")
    face = np.asarray(Image.fromarray(skimage_data.astronaut()[0:240, 120:330]).resize((70, 80)))

    def images():
        for i in range(6):
            image = np.full((120, 160, 3), 90, np.uint8)
            image[20:100, 30 + 2 * i:100 + 2 * i] = face
            yield image

    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", images(), 6)


def test_annotate_and_suggest_with_a_trained_checkpoint(trained, face_clip, tmp_path, capsys):
    _, _, stem, _ = trained
    rc, out, err = cli(capsys, "annotate", face_clip, "--model", stem, "--backend", "torch",
                       "--out", tmp_path / "ann")
    assert rc == 0, err
    table = pd.read_csv(tmp_path / "ann" / "clip.frames.csv")
    assert len(table) == 6 and table["face"].all()
    assert "prob_neutral" in table.columns
    rc, out, err = cli(capsys, "suggest", face_clip, "--model", stem, "--backend", "torch", "--n", "2",
                       "--out", tmp_path / "sug")
    assert rc == 0, err
    assert (tmp_path / "sug" / "clip.suggest.eaf").is_file()
    assert "2 frames to annotate first" in out


def test_a_trained_checkpoint_is_fine_tuned_further_with_init(trained, feph_small, tmp_path, capsys):
    from signfer.models.checkpoint import load_meta

    _, _, stem, _ = trained
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", feph_small, "--init", stem,
                     "--out", tmp_path / "further", "--preset", "fast", *TINY)
    assert rc == 0, err
    meta = load_meta(tmp_path / "further")
    assert meta.extra["init_from"]["name"] == str(stem)
    assert meta.labels == load_meta(stem).labels


def test_a_trained_checkpoint_teaches_a_pretraining(trained, tmp_path, capsys):
    from fixtures import make_folder_dataset

    from signfer.models.checkpoint import load_meta

    _, _, stem, _ = trained
    root = make_folder_dataset(tmp_path / "fer", classes=("angry", "happy", "neutral"), per_class=4,
                               splits=("train", "validation"), size=32)
    rc, _, err = cli(capsys, "pretrain", "--dataset", "folder", "--root", root, "--init", "random",
                     "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--teacher", stem,
                     "--out", tmp_path / "student")
    assert rc == 0, err
    student = tmp_path / "student" / "mobilenetv2-fer"  # pretrain names its checkpoint after the arch
    assert load_meta(student).extra["teachers"][0]["name"] == str(stem)


def test_export_onnx_of_a_trained_checkpoint(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    _, _, stem, _ = trained
    rc, _, err = cli(capsys, "export", "onnx", stem, "--out", tmp_path / "m.onnx")
    assert rc == 0, err
    assert (tmp_path / "m.onnx").is_file()


def test_video_commands_check_options_before_loading_anything(tmp_path, capsys):
    # the model and the video do not exist: the option is refused first
    for argv, fragment in ((["annotate", "--smooth", "0"], "--smooth"), (["suggest", "--n", "0"], "--n"),
                           (["annotate", "--every", "0"], "--every"),
                           (["suggest", "--detect-every", "0"], "--detect-every")):
        rc, _, err = cli(capsys, *argv, tmp_path / "none.mp4", "--model", tmp_path / "none",
                         "--out", tmp_path / "out")
        one_error(rc, err, fragment)
    assert not (tmp_path / "out").exists()


def test_annotate_with_a_missing_video_exits_2_after_the_others(trained, face_clip, tmp_path, capsys):
    _, _, stem, _ = trained
    rc, out, err = cli(capsys, "annotate", tmp_path / "missing.mp4", face_clip, "--model", stem,
                       "--backend", "torch", "--out", tmp_path / "ann")
    one_error(rc, err, "missing.mp4")
    assert "clip.mp4: 6 frames" in out


# --- crop options, --keep-models, --epochs-from: parsing and errors ---------------------------------

class _Stop(Exception):
    pass


@pytest.fixture
def captured_calls(monkeypatch):
    """Stop cv, grid and train at the library call and keep its keyword arguments."""
    import signfer.api
    import signfer.training.train

    seen = {}

    def capture(name):
        def stop(*args, **kw):
            seen[name] = kw
            raise _Stop
        return stop

    monkeypatch.setattr(runner, "run_grid", capture("run_grid"))
    monkeypatch.setattr(signfer.api, "finetune", capture("finetune"))
    monkeypatch.setattr(signfer.training.train, "finetune", capture("finetune"))
    return seen


@pytest.mark.parametrize("command", ["cv", "grid", "train"])
def test_crop_options_become_one_crop_spec(command, feph_small, tmp_path, captured_calls, monkeypatch):
    from signfer.faces.crop import CropSpec

    monkeypatch.setattr("sys.argv", ["signfer", command, "..."])
    with pytest.raises(_Stop):
        main([command, "--dataset", "feph", "--root", str(feph_small), "--margin", "1.8", "--no-square",
              "--align", "--region", "lower", "--out", str(tmp_path / "o"),
              *(["--keep-models"] if command != "train" else [])])
    kw = next(iter(captured_calls.values()))
    assert kw["crop"] == CropSpec(margin=1.8, square=False, align=True, region="lower")
    assert kw["command"] == f"signfer {command} ..."
    if command != "train":
        assert kw["keep_models"] is True


def test_no_crop_option_leaves_the_default(feph_small, tmp_path, captured_calls):
    with pytest.raises(_Stop):
        main(["cv", "--dataset", "feph", "--root", str(feph_small), "--out", str(tmp_path / "o")])
    assert captured_calls["run_grid"]["crop"] is None and captured_calls["run_grid"]["keep_models"] is False


@pytest.mark.parametrize("command", ["cv", "grid", "train", "evaluate"])
@pytest.mark.parametrize("argv, fragment", [
    (["--region", "middle"], "--region must be one of full, upper, lower, got 'middle'"),
    (["--margin", "0"], "--margin must be > 0"),
    (["--margin", "nan"], "--margin must be > 0"),
])
def test_bad_crop_options_are_one_line_errors(command, argv, fragment, tmp_path, capsys):
    # the dataset does not exist: the crop option is refused before it is read
    extra = ["--model", "x"] if command == "evaluate" else ["--out", tmp_path / "o"]
    rc, _, err = cli(capsys, command, "--dataset", "feph", "--root", tmp_path / "nowhere", *argv, *extra)
    one_error(rc, err, fragment)


def test_train_epochs_from_a_folder_without_runs(feph_small, tiny_fer, tmp_path, capsys):
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", feph_small, "--init", tiny_fer,
                     "--epochs-from", tmp_path, "--out", tmp_path / "m", *TINY)
    one_error(rc, err, "folds.csv: not found", "--epochs-from", alone=False)
    assert not (tmp_path / "m.safetensors").exists()


def test_train_without_ft_or_head_is_refused(feph_small, tmp_path, capsys):
    rc, _, err = cli(capsys, "train", "--dataset", "feph", "--root", feph_small, "--techniques", "none",
                     "--out", tmp_path / "m")
    one_error(rc, err, "'ft' or 'head'")


# --- pretrain: its defaults are PretrainConfig's ---------------------------------------------------

def test_pretrain_defaults_come_from_pretrain_config(tmp_path, monkeypatch):
    import signfer.training.pretrain as pretrain_module

    seen = {}

    def capture(root, out, cfg, **kw):
        seen["cfg"] = cfg

    monkeypatch.setattr(pretrain_module, "pretrain", capture)
    assert main(["pretrain", "--dataset", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--epochs", "3", "--teacher", "a", "--teacher", "b"]) == 0
    assert seen["cfg"] == pretrain_module.PretrainConfig(epochs=3, teachers=("a", "b"))
    args = get_parser().parse_args(["pretrain", "--dataset", "folder", "--root", "r", "--out", "o"])
    assert args.epochs is None and args.lr is None  # nothing repeated here


def test_pretrain_help_shows_pretrain_config_defaults(capsys):
    from signfer.training.pretrain import PretrainConfig

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default {PretrainConfig.epochs})" in out and f"(default {PretrainConfig.lr})" in out


def test_evaluate_crop_options_change_the_model_s_own_crop(trained, feph_small, monkeypatch):
    from signfer.faces.crop import CropSpec
    from signfer.inference import predict

    _, _, stem, _ = trained
    seen = {}

    def capture(table, model, **kw):
        seen.update(kw)
        raise _Stop

    monkeypatch.setattr(predict, "evaluate_model", capture)
    with pytest.raises(_Stop):
        main(["evaluate", "--dataset", "feph", "--root", str(feph_small), "--model", str(stem), "--align"])
    # the trained model's margin 1.6 and region upper stay; --align is added
    assert seen["crop"] == CropSpec(detector="yunet", margin=1.6, region="upper", align=True)
    with pytest.raises(_Stop):
        main(["evaluate", "--dataset", "feph", "--root", str(feph_small), "--model", str(stem)])
    assert seen["crop"] is None  # evaluate_model then uses the model's own


@pytest.mark.parametrize("command", ["cv", "train"])
def test_techniques_help_names_every_technique(command, capsys):
    from signfer.config import TECHNIQUES

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = "".join(capsys.readouterr().out.split())
    listed = out.split("anyof", 1)[1].split(";", 1)[0].split(",")
    assert listed == list(TECHNIQUES)


def test_an_input_size_that_a_checkpoint_start_would_ignore_is_refused(feph_small, tiny_fer, tmp_path, capsys):
    # tiny_fer is a 32 px model: 48 would be ignored, yet recorded in config.yaml
    for command in (["cv", "--folds", "2"], ["train"]):
        rc, _, err = cli(capsys, *command, "--dataset", "feph", "--root", feph_small, "--init", tiny_fer,
                         "--input-size", "48", "--out", tmp_path / command[0])
        one_error(rc, err, "--input-size 48: applies to --init imagenet or random only", "32 px")
    assert not (tmp_path / "cv").exists()


def test_a_reader_that_goes_away_ends_the_command_quietly():
    import subprocess
    import sys

    run = subprocess.run(f"{sys.executable} -m signfer models | head -c 5", shell=True, capture_output=True,
                         text=True, timeout=120)
    assert len(run.stdout) == 5 and "error" not in run.stderr and "Traceback" not in run.stderr


def test_every_and_fps_are_alternatives(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["annotate", "clip.mp4", "--out", "ann", "--every", "2", "--fps", "5"])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    from signfer.errors import SignferError
    from signfer.inference.predict import check_video_options

    with pytest.raises(SignferError, match="give one of --every"):  # the library says so too
        check_video_options(every=2, fps=5.0)


def test_sigterm_ends_a_command_as_ctrl_c_does():
    import os
    import signal

    from signfer.cli import _terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    restore = _terminate_as_interrupt()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
            for _ in range(1000):
                pass
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == before  # main() leaves the process as it found it
