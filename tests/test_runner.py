"""The grid runner end to end on a tiny FePh set: layout, leak-free folds, metrics, resuming.

One small grid (zero-shot from a tiny "FER" checkpoint, and FT+IP+HF from it)
runs once per module; the other tests read its folder or copy it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import accuracy_score, f1_score, recall_score

import signfer.training.fit as fit_module
from signfer.config import RunSpec, TrainConfig
from signfer.data import load_dataset
from signfer.data.cache import load_images
from signfer.data.spec import PreprocessSpec
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.experiments import runner
from signfer.experiments.grid import Grid, grid_from_yaml, named_grid
from signfer.experiments.runner import fold_dir, run_grid
from signfer.labels import canonical
from signfer.models.checkpoint import load_model
from signfer.training.loop import extract_features

SIZE = 32
K = 3
TRAIN = TrainConfig(head_epochs=1, epochs=1, batch_size=16)


def make_grid(tiny_fer: Path, *, folds: int = K, seed: int = 0, zero_shot_only: bool = False) -> Grid:
    runs = [RunSpec("no-FT", "mobilenetv2", str(tiny_fer), (), TRAIN)]
    if not zero_shot_only:
        runs.append(RunSpec("FT+IP+HF", "mobilenetv2", str(tiny_fer), ("ft", "hf", "ip"), TRAIN))
    return Grid(tuple(runs), folds=folds, seed=seed, input_size=SIZE, train=TRAIN)


class Log(list):
    def __call__(self, msg: str) -> None:
        self.append(msg)


@pytest.fixture(scope="module")
def table(feph_small):
    return load_dataset("feph", feph_small)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, table, tiny_fer):
    """The uninterrupted reference run: (out folder, grid, results, log)."""
    out = tmp_path_factory.mktemp("run") / "out"
    grid = make_grid(tiny_fer)
    log = Log()
    results = run_grid(table, grid, out, log=log)
    return out, grid, results, log


def predictions(out: Path, spec: RunSpec, fold: int) -> pd.DataFrame:
    return pd.read_csv(fold_dir(out, spec, fold) / "predictions.csv")


# --- layout and content -------------------------------------------------------------

def test_results_have_one_row_per_config_arch_fold(grid_run):
    out, grid, results, _ = grid_run
    on_disk = pd.read_csv(out / "results.csv")
    for col in ("config", "arch", "fold", "accuracy", "macro_f1"):
        assert col in on_disk.columns
    keys = list(zip(on_disk["config"], on_disk["arch"], on_disk["fold"]))
    assert keys == [(s.name, s.arch, f) for s in grid.runs for f in range(K)]
    assert len(set(keys)) == len(keys)
    assert on_disk["accuracy"].between(0, 1).all() and on_disk["macro_f1"].between(0, 1).all()
    pd.testing.assert_frame_equal(on_disk[["config", "fold", "accuracy"]], results[["config", "fold", "accuracy"]],
                                  check_dtype=False)


def test_every_fold_has_its_files(grid_run):
    out, grid, _, _ = grid_run
    for spec in grid.runs:
        for fold in range(K):
            d = fold_dir(out, spec, fold)
            assert (d / "metrics.json").is_file() and (d / "predictions.csv").is_file() and (d / "history.json").is_file()
    assert not list(out.rglob("*.tmp"))


def test_predictions_are_exactly_the_test_fold(grid_run, table):
    out, grid, _, _ = grid_run
    folds = pd.read_csv(out / "folds.csv")
    assert folds["path"].tolist() == table.samples["path"].tolist()
    assert sorted(folds["fold"].unique()) == list(range(K))
    for spec in grid.runs:
        for fold in range(K):
            pred = predictions(out, spec, fold)
            expected = folds[folds["fold"] == fold]
            assert pred["path"].tolist() == expected["path"].tolist()
            assert pred["label"].tolist() == expected["label"].tolist()


def test_every_sample_is_predicted_once_per_config(grid_run, table):
    out, grid, _, _ = grid_run
    for spec in grid.runs:
        paths = pd.concat([predictions(out, spec, f) for f in range(K)])["path"]
        assert sorted(paths) == sorted(table.samples["path"])
        assert paths.is_unique


def test_folds_are_grouped_by_video(grid_run):
    out, _, _, _ = grid_run
    folds = pd.read_csv(out / "folds.csv")
    assert (folds.groupby("group")["fold"].nunique() == 1).all()


def test_configurations_share_identical_test_sets(grid_run):
    out, grid, _, _ = grid_run
    for fold in range(K):
        sets = [predictions(out, spec, fold)["path"].tolist() for spec in grid.runs]
        assert all(s == sets[0] for s in sets)


def test_config_yaml_records_seed_and_runs(grid_run, table):
    out, grid, _, _ = grid_run
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["seed"] == grid.seed
    assert cfg["folds"] == K
    assert cfg["classes"] == list(table.classes)
    assert [r["name"] for r in cfg["runs"]] == [s.name for s in grid.runs]
    assert cfg["runs"][1]["train"]["epochs"] == 1
    assert cfg["runs"][1]["techniques"] == ["ft", "hf", "ip"]
    # the grid's input size applies to ImageNet and random inits only, and says so
    assert cfg["input_size"] == SIZE
    assert f"input_size: {SIZE}  # of ImageNet and random inits" in (out / "config.yaml").read_text()


def test_metrics_agree_with_scikit_learn(grid_run, table):
    out, grid, _, _ = grid_run
    results = pd.read_csv(out / "results.csv")
    prob_cols = [f"prob_{c}" for c in table.classes]
    for row in results.itertuples():
        spec = next(s for s in grid.runs if s.name == row.config)
        pred = predictions(out, spec, row.fold)
        assert list(pred.columns) == ["path", "label", "pred", *prob_cols]
        y, p = pred["label"], pred["pred"]
        assert row.accuracy == pytest.approx(accuracy_score(y, p), abs=1e-9)
        assert row.macro_f1 == pytest.approx(f1_score(y, p, average="macro", zero_division=0), abs=1e-9)
        assert row.weighted_f1 == pytest.approx(f1_score(y, p, average="weighted", zero_division=0), abs=1e-9)
        assert row.macro_recall == pytest.approx(recall_score(y, p, average="macro", zero_division=0), abs=1e-9)
        assert row.n_test == len(pred)
        probs = pred[prob_cols].to_numpy()
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
        # the predicted class is the most probable one (up to the 5-decimal rounding)
        top = probs[np.arange(len(pred)), [prob_cols.index(f"prob_{c}") for c in p]]
        assert (top >= probs.max(1) - 1e-5).all()


def test_zero_shot_maps_the_checkpoint_labels_by_name(grid_run, table, tiny_fer):
    out, grid, _, _ = grid_run
    model, meta = load_model(tiny_fer)
    images = torch.from_numpy(load_images(table, meta.input_size, progress=False))
    with torch.inference_mode():
        logits = model(PreprocessSpec(tuple(meta.mean), tuple(meta.std))(images))
    # FER2013 order in the checkpoint, canonical order in the data
    order = [[canonical(m) for m in meta.labels].index(c) for c in table.classes]
    expected = torch.softmax(logits[:, order], 1).numpy()
    paths = table.samples["path"].tolist()
    for fold in range(K):
        pred = predictions(out, grid.runs[0], fold)
        rows = [paths.index(p) for p in pred["path"]]
        got = pred[[f"prob_{c}" for c in table.classes]].to_numpy()
        np.testing.assert_allclose(got, expected[rows], atol=2e-5)


def test_fold_metrics_record_the_run(grid_run):
    out, grid, _, _ = grid_run
    m = runner.read_json(fold_dir(out, grid.runs[1], 2) / "metrics.json")
    assert m["config"] == "FT+IP+HF" and m["fold"] == 2 and m["seed"] == runner.fold_seed(0, 2)
    assert m["preprocessing"] == "checkpoint"
    assert m["n_train"] + m["n_val"] + m["n_test"] == 42
    assert m["train"]["epochs"] == 1


def test_image_cache_is_the_isolated_one(grid_run):
    from signfer.data.cache import cache_dir

    assert cache_dir() != Path.home() / ".cache" / "signfer"
    assert list(cache_dir().glob(f"images-{SIZE}px-*.npy"))


# --- resuming ---------------------------------------------------------------------------

def _files_of_other_folds(out: Path, grid: Grid, skip: tuple[str, int]) -> dict[Path, int]:
    stamps = {}
    for spec in grid.runs:
        for fold in range(K):
            if (spec.name, fold) != skip:
                for f in fold_dir(out, spec, fold).iterdir():
                    stamps[f] = f.stat().st_mtime_ns
    return stamps


def test_resume_recomputes_only_the_missing_fold(grid_run, table, tmp_path):
    ref_out, grid, ref_results, _ = grid_run
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)  # copy2: mtimes kept
    ft = grid.runs[1]
    (fold_dir(out, ft, 1) / "metrics.json").unlink()
    (out / "results.csv").unlink()
    stamps = _files_of_other_folds(out, grid, (ft.name, 1))
    log = Log()
    results = run_grid(table, grid, out, log=log)
    started = [m for m in log if m.startswith("[") and "skipped" not in m]
    skipped = [m for m in log if m.endswith("done before, skipped")]
    assert len(started) == 1 and f"{ft.name} mobilenetv2 fold 1" in started[0]
    assert len(skipped) == 2 * K - 1
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps  # nothing else rewritten
    # same seeds, same numbers: training on one CPU thread is bit-reproducible here
    cols = ["config", "arch", "fold", "accuracy", "macro_f1", "weighted_f1", "best_epoch", "val_accuracy"]
    pd.testing.assert_frame_equal(results[cols], ref_results[cols])
    pd.testing.assert_frame_equal(predictions(out, ft, 1), predictions(ref_out, ft, 1))


def test_kill_during_a_fold_loses_only_that_fold(table, tiny_fer, tmp_path, monkeypatch):
    grid = make_grid(tiny_fer, zero_shot_only=True)
    out = tmp_path / "out"
    real = runner.run_fold
    calls = []

    def dies_on_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_fold", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_grid(table, grid, out, log=Log())
    spec = grid.runs[0]
    done = fold_dir(out, spec, 0)
    assert sorted(p.name for p in done.iterdir()) == ["history.json", "metrics.json", "predictions.csv"]
    assert runner.read_json(done / "metrics.json")["fold"] == 0
    assert len(pd.read_csv(done / "predictions.csv")) == runner.read_json(done / "metrics.json")["n_test"]
    assert not fold_dir(out, spec, 1).exists() or not any(fold_dir(out, spec, 1).iterdir())
    assert not fold_dir(out, spec, 2).exists()
    assert not list(out.rglob("*.tmp"))
    assert pd.read_csv(out / "results.csv")["fold"].tolist() == [0]
    stamp = (done / "metrics.json").stat().st_mtime_ns

    monkeypatch.setattr(runner, "run_fold", real)
    log = Log()
    results = run_grid(table, grid, out, log=log)
    assert results["fold"].tolist() == [0, 1, 2]
    assert any("fold 0: done before, skipped" in m for m in log)
    assert (done / "metrics.json").stat().st_mtime_ns == stamp


def test_kill_inside_a_fit_resumes_that_fit_from_its_saved_state(table, tiny_fer, tmp_path, monkeypatch):
    monkeypatch.setattr(fit_module, "STATE_EVERY_S", 0.0)  # save after every epoch
    train = TrainConfig(head_epochs=1, epochs=3, batch_size=16, patience=10)
    spec = RunSpec("FT", "mobilenetv2", str(tiny_fer), ("ft", "hf"), train)
    grid = Grid((spec,), folds=K, seed=0, input_size=SIZE, train=train)
    ref = tmp_path / "ref"
    run_grid(table, grid, ref, log=Log())

    class DiesInFold1(Log):
        def __call__(self, msg: str) -> None:
            super().__call__(msg)
            if "fold 1" in "".join(self) and msg.strip().startswith("epoch 2:"):
                raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_grid(table, grid, out, log=DiesInFold1())
    assert (fold_dir(out, spec, 1) / runner.FIT_STATE).is_file()
    log = Log()
    run_grid(table, grid, out, log=log)
    assert any("resumed after epoch 1 of the all-layers stage" in m for m in log)
    assert not list(out.rglob(runner.FIT_STATE))  # removed once each fold is done
    for fold in range(K):
        pd.testing.assert_frame_equal(predictions(out, spec, fold), predictions(ref, spec, fold))


def test_resume_with_other_folds_is_refused(table, tiny_fer, tmp_path):
    out = tmp_path / "out"
    run_grid(table, make_grid(tiny_fer, zero_shot_only=True), out, log=Log())
    with pytest.raises(SignferError, match=r"config\.yaml: folds was 3, now 2"):
        run_grid(table, make_grid(tiny_fer, zero_shot_only=True, folds=2), out, log=Log())
    # folds.csv alone refuses too, e.g. in a folder whose config.yaml was lost
    (out / "config.yaml").unlink()
    with pytest.raises(SignferError, match="folds.csv"):
        run_grid(table, make_grid(tiny_fer, zero_shot_only=True, folds=2), out, log=Log())


def test_refused_resume_leaves_config_yaml_alone(table, tiny_fer, tmp_path):
    out = tmp_path / "out"
    run_grid(table, make_grid(tiny_fer, zero_shot_only=True, seed=0), out, log=Log())
    with pytest.raises(SignferError):
        run_grid(table, make_grid(tiny_fer, zero_shot_only=True, seed=1), out, log=Log())
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0


def test_a_fold_refused_for_other_settings_leaves_config_yaml_alone(zero_shot_run, table, tmp_path):
    out = copy_of(zero_shot_run[0], tmp_path)
    before = (out / "config.yaml").read_bytes()
    (spec,) = zero_shot_run[1].runs
    other = dataclasses.replace(zero_shot_run[1], runs=(dataclasses.replace(
        spec, train=dataclasses.replace(TRAIN, epochs=2)),))
    with pytest.raises(SignferError, match="made with other settings"):
        run_grid(table, other, out, log=Log())
    assert (out / "config.yaml").read_bytes() == before


def test_another_grid_in_the_folder_keeps_the_earlier_results(zero_shot_run, table, tiny_fer, tmp_path):
    out = copy_of(zero_shot_run[0], tmp_path)
    (spec,) = zero_shot_run[1].runs
    second = dataclasses.replace(zero_shot_run[1], runs=(dataclasses.replace(spec, name="no-FT 2"),))
    log = Log()
    results = run_grid(table, second, out, log=log)
    assert set(results["config"]) == {"no-FT 2"}  # what this grid ran
    kept = pd.read_csv(out / "results.csv")
    assert kept["config"].tolist() == ["no-FT"] * K + ["no-FT 2"] * K
    assert [r["name"] for r in yaml.safe_load((out / "config.yaml").read_text())["runs"]] == ["no-FT", "no-FT 2"]
    assert any("keeps 1 configuration(s) run here before" in m for m in log)
    # the same folds, so the report can pair them
    assert kept.groupby("fold")["n_test"].nunique().max() == 1


def test_a_large_seed_runs(table, tiny_fer, tmp_path):
    # fold seeds are seed * 1000 + fold, kept below 2**32 as numpy requires
    results = run_grid(table, make_grid(tiny_fer, seed=2**32 - 1), tmp_path / "out", log=Log())
    assert len(results) == 2 * K


@pytest.fixture(scope="module")
def zero_shot_run(tmp_path_factory, table, tiny_fer):
    """A finished zero-shot run folder to copy, and its grid."""
    out = tmp_path_factory.mktemp("zero-shot") / "out"
    grid = make_grid(tiny_fer, zero_shot_only=True)
    run_grid(table, grid, out, log=Log())
    return out, grid


def copy_of(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(run, out)
    return out


@pytest.mark.parametrize("change, message", [
    ({"crop_faces": "yunet"}, "crop_faces was None, now 'yunet'"),
    ({"dataset": {"name": "FePh", "keep_none": True}}, "dataset.keep_none was not recorded, now True"),
])
def test_resume_with_other_settings_is_refused_and_keeps_config_yaml(zero_shot_run, table, tmp_path,
                                                                     change, message):
    out = copy_of(zero_shot_run[0], tmp_path)
    before = (out / "config.yaml").read_bytes()
    grid = dataclasses.replace(zero_shot_run[1], input_size=change.pop("input_size", SIZE))
    with pytest.raises(SignferError) as refused:
        run_grid(table, grid, out, log=Log(), **change)
    text = str(refused.value)
    assert f"{out / 'config.yaml'}: {message}" in text and "new --out" in text and "\n" not in text
    assert (out / "config.yaml").read_bytes() == before


def test_the_input_size_matters_to_a_resume_only_where_a_fit_starts_from_imagenet_or_random(
        zero_shot_run, table, tmp_path, monkeypatch):
    out = copy_of(zero_shot_run[0], tmp_path)
    # checkpoint starts bring their own size: another recorded input_size is no other setting
    monkeypatch.setattr(runner, "run_fold", lambda *a, **k: pytest.fail("the folds are done"))
    run_grid(table, dataclasses.replace(zero_shot_run[1], input_size=48), out, log=Log())
    # a configuration from random weights added: now the size is this run's, and it differs
    out = copy_of(zero_shot_run[0], tmp_path / "again")
    random_head = RunSpec("HEAD", "mobilenetv2", "random", ("head",), TRAIN)
    grid = dataclasses.replace(zero_shot_run[1], runs=(*zero_shot_run[1].runs, random_head), input_size=48)
    with pytest.raises(SignferError, match="input_size was 32, now 48"):
        run_grid(table, grid, out, log=Log())


@pytest.mark.parametrize("grouping", ["none", "one per frame"])
def test_resume_with_other_groups_is_refused_and_keeps_config_yaml(zero_shot_run, table, tmp_path, grouping):
    out = copy_of(zero_shot_run[0], tmp_path)
    before = (out / "config.yaml").read_bytes()
    groups = None if grouping == "none" else table.samples["path"]
    regrouped = SampleTable(table.samples.assign(group=groups), name=table.name, classes=table.classes)
    with pytest.raises(SignferError, match=r"folds\.csv: .*group"):
        run_grid(regrouped, zero_shot_run[1], out, log=Log())
    assert (out / "config.yaml").read_bytes() == before


def test_resume_with_the_same_settings_skips_every_fold(zero_shot_run, table, tmp_path, monkeypatch):
    out = copy_of(zero_shot_run[0], tmp_path)
    # settings that do not change results may differ
    monkeypatch.setattr(runner.torch, "get_num_threads", lambda: 7)
    monkeypatch.setattr(runner, "__version__", "0.0.0+other")
    log = Log()
    results = run_grid(table, zero_shot_run[1], out, log=log)
    assert [m.endswith("done before, skipped") for m in log] == [True] * K
    assert results["fold"].tolist() == list(range(K))
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["torch_threads"], cfg["signfer_version"], cfg["input_size"]) == (7, "0.0.0+other", SIZE)


@pytest.mark.parametrize("content", [b"folds: [3\n", b"- a list\n", b"", b"\xff\xfe\x00"])
def test_damaged_config_yaml_is_a_clean_error_naming_it(zero_shot_run, table, tmp_path, content):
    out = copy_of(zero_shot_run[0], tmp_path)
    (out / "config.yaml").write_bytes(content)
    with pytest.raises(SignferError, match=rf"^{out / 'config.yaml'}: .*new --out") as refused:
        run_grid(table, zero_shot_run[1], out, log=Log())
    assert "\n" not in str(refused.value)
    assert (out / "config.yaml").read_bytes() == content


def _watch_features(monkeypatch) -> tuple[list[bool], list[bool]]:
    """Record each backbone pass of ``fit`` (its ``flip``), and per fit whether the
    cached plain features afterwards are this fit's own backbone's."""
    passes: list[bool] = []
    own: list[bool] = []

    def counting(model, images, preprocess, batch_size=256, flip=False):
        passes.append(flip)
        return extract_features(model, images, preprocess, batch_size, flip)

    real_fit = runner.fit

    def checking_fit(model, images, y, train_idx, val_idx, *, preprocess, cache, cache_key, **kw):
        expected = extract_features(model, images, preprocess)  # before training touches the model
        result = real_fit(model, images, y, train_idx, val_idx, preprocess=preprocess, cache=cache,
                          cache_key=cache_key, **kw)
        cached = cache.get(("features", *cache_key, False))
        own.append(cached is not None and torch.allclose(cached, expected))
        return result

    monkeypatch.setattr(fit_module, "extract_features", counting)
    monkeypatch.setattr(runner, "fit", checking_fit)
    return passes, own


def test_each_fold_of_a_random_init_caches_its_own_backbones_features(table, tmp_path, monkeypatch):
    # a random init draws another backbone per fold: sharing features across
    # folds would train every fold's head on the first fold's backbone
    spec = RunSpec("HEAD", "mobilenetv2", "random", ("head",), TRAIN)
    grid = Grid((spec,), folds=2, seed=0, input_size=SIZE, train=TRAIN)
    passes, own = _watch_features(monkeypatch)
    run_grid(table, grid, tmp_path / "out", log=Log())
    assert passes == [False, False]  # one backbone pass per fold
    assert own == [True, True]


def test_features_of_a_checkpoint_are_computed_once_for_all_folds_and_configurations(
        table, tiny_fer, tmp_path, monkeypatch):
    runs = (RunSpec("HEAD", "mobilenetv2", str(tiny_fer), ("head",), TRAIN),
            RunSpec("HEAD+HF", "mobilenetv2", str(tiny_fer), ("head", "hf"), TRAIN))
    grid = Grid(runs, folds=2, seed=0, input_size=SIZE, train=TRAIN)
    passes, own = _watch_features(monkeypatch)
    run_grid(table, grid, tmp_path / "out", log=Log())
    assert sorted(passes) == [False, True]  # plain once, mirrored once, for 4 fits
    assert own == [True] * 4


def test_configurations_whose_names_slug_alike_do_not_share_folders(table, tiny_fer, tmp_path):
    runs = tuple(RunSpec(name, "mobilenetv2", str(tiny_fer), (), TRAIN) for name in ("zero shot", "zero/shot"))
    try:
        results = run_grid(table, Grid(runs, folds=2, input_size=SIZE, train=TRAIN), tmp_path / "out", log=Log())
    except SignferError:
        return  # refusing the clash up front is fine too
    assert results["config"].tolist() == ["zero shot", "zero shot", "zero/shot", "zero/shot"]


def test_empty_grid_is_an_error(table, tmp_path):
    with pytest.raises(SignferError, match="no configuration"):
        run_grid(table, Grid(()), tmp_path / "out", log=Log())


def test_zero_shot_from_imagenet_is_an_error(table, tmp_path):
    grid = Grid((RunSpec("no-FT", "mobilenetv2", "imagenet", ()),), folds=K, input_size=SIZE)
    with pytest.raises(SignferError, match="zero-shot evaluation needs a FER-pretrained checkpoint"):
        run_grid(table, grid, tmp_path / "out", log=Log())


# --- YAML grids -------------------------------------------------------------------------

def write_yaml(path: Path, obj) -> Path:
    path.write_text(yaml.safe_dump(obj))
    return path


def test_yaml_unknown_top_level_key(tmp_path):
    p = write_yaml(tmp_path / "g.yaml", {"folds": 3, "fold": 2, "configs": [{"techniques": ["ft"]}]})
    with pytest.raises(SignferError, match=r"g\.yaml: unknown key\(s\) \['fold'\]"):
        grid_from_yaml(p)


def test_yaml_unknown_config_key(tmp_path):
    p = write_yaml(tmp_path / "g.yaml", {"configs": [{"techniques": ["ft"]}, {"technique": ["ft", "ip"]}]})
    with pytest.raises(SignferError, match=r"configs\[1\]: unknown key\(s\) \['technique'\]"):
        grid_from_yaml(p)


def test_yaml_unknown_train_key_and_technique(tmp_path):
    p = write_yaml(tmp_path / "g.yaml", {"train": {"epoch": 3}, "configs": [{"techniques": ["ft"]}]})
    with pytest.raises(SignferError, match=r"train: unknown key\(s\) \['epoch'\]"):
        grid_from_yaml(p)
    p = write_yaml(tmp_path / "g.yaml", {"configs": [{"techniques": ["ft", "mixup"]}]})
    with pytest.raises(SignferError, match="unknown technique"):
        grid_from_yaml(p)
    p = write_yaml(tmp_path / "g.yaml", {"configs": [{"techniques": ["ft"], "archs": ["vgg"]}]})
    with pytest.raises(SignferError, match="unknown architecture 'vgg'"):
        grid_from_yaml(p)
    (tmp_path / "bad.yaml").write_text("configs: [unclosed")
    with pytest.raises(SignferError, match="cannot read grid"):
        grid_from_yaml(tmp_path / "bad.yaml")


def test_yaml_settings_and_per_config_train(tmp_path, tiny_fer):
    p = write_yaml(tmp_path / "g.yaml", {
        "folds": 3, "seed": 4, "input_size": 32, "archs": ["mobilenetv2"], "init": str(tiny_fer),
        "train": {"epochs": 2, "lr": 1e-4},
        "configs": [{"techniques": []},
                    {"name": "fast", "techniques": "ft,ip", "train": {"epochs": 1}},
                    {"techniques": ["head"], "init": "imagenet"}]})
    grid = grid_from_yaml(p)
    assert (grid.folds, grid.seed, grid.input_size) == (3, 4, 32)
    assert [r.name for r in grid.runs] == ["no-FT", "fast", "HEAD"]
    assert [r.init for r in grid.runs] == [str(tiny_fer), str(tiny_fer), "imagenet"]
    assert grid.runs[0].train.epochs == 2 and grid.runs[0].train.lr == 1e-4
    assert grid.runs[1].train.epochs == 1 and grid.runs[1].train.lr == 1e-4  # merged, not replaced
    assert grid.runs[1].techniques == ("ft", "ip")


def test_yaml_shift_with_a_head_only_config_is_refused(tmp_path):
    p = write_yaml(tmp_path / "g.yaml", {"archs": ["mobilenetv2"], "train": {"shift": 2},
                                         "configs": [{"techniques": ["ft"]}, {"techniques": ["head"]}]})
    with pytest.raises(SignferError, match=r"HEAD: shift=2 would never apply"):
        grid_from_yaml(p)


def test_yaml_repeated_names_are_an_error(tmp_path):
    p = write_yaml(tmp_path / "g.yaml", {"archs": ["mobilenetv2"],
                                         "configs": [{"techniques": ["ft"]}, {"techniques": ["ft"]}]})
    with pytest.raises(SignferError, match="repeat"):
        grid_from_yaml(p)


def test_valid_yaml_grid_runs(table, tiny_fer, tmp_path):
    p = write_yaml(tmp_path / "g.yaml", {"folds": 2, "seed": 3, "archs": ["mobilenetv2"],
                                         "configs": [{"name": "zero", "techniques": [], "init": str(tiny_fer)}]})
    grid = named_grid(str(p))
    results = run_grid(table, grid, tmp_path / "out", log=Log())
    assert results["config"].tolist() == ["zero", "zero"] and results["fold"].tolist() == [0, 1]
    assert (pd.read_csv(tmp_path / "out" / "folds.csv")["seed"] == 3).all()
    with pytest.raises(SignferError, match="unknown grid"):
        named_grid("papers")


def test_paper_grid_starts_each_arch_from_its_fer_model_when_one_ships(monkeypatch):
    import signfer.models.checkpoint as checkpoint_mod

    monkeypatch.setattr(checkpoint_mod, "builtin_models", lambda: {"mobilenetv2-fer": Path("x")})
    grid = named_grid("paper")
    by_arch = {a: [r for r in grid.runs if r.arch == a] for a in ("mobilenetv2", "efficientnet_lite0")}
    # with a FER model: the paper's 7 rows, the first zero-shot; without: no zero-shot row
    assert [r.name for r in by_arch["mobilenetv2"]][0] == "no-FT" and len(by_arch["mobilenetv2"]) == 7
    assert {r.init for r in by_arch["mobilenetv2"]} == {"mobilenetv2-fer"}
    assert len(by_arch["efficientnet_lite0"]) == 6
    assert {r.init for r in by_arch["efficientnet_lite0"]} == {"imagenet"}
    assert all(r.techniques for r in by_arch["efficientnet_lite0"])


def test_each_fold_normalises_and_chooses_its_epoch_on_its_training_side_only(table, tmp_path, monkeypatch):
    preps, fits = [], []
    real_fit, real_prep = runner.fit, runner.choose_preprocess

    def spy_prep(techniques, init, cfg, meta, images, train_idx):
        preps.append(np.sort(np.asarray(train_idx)))
        return real_prep(techniques, init, cfg, meta, images, train_idx)

    def spy_fit(model, images, y, train_idx, val_idx, **kw):
        fits.append((np.asarray(train_idx).copy(), np.asarray(val_idx).copy()))
        return real_fit(model, images, y, train_idx, val_idx, **kw)

    monkeypatch.setattr(runner, "choose_preprocess", spy_prep)
    monkeypatch.setattr(runner, "fit", spy_fit)
    # a random init with ip: the statistics come from each fold's training side
    spec = RunSpec("HEAD+IP", "mobilenetv2", "random", ("head", "ip"), TRAIN)
    out = tmp_path / "out"
    run_grid(table, Grid((spec,), folds=K, seed=0, input_size=SIZE, train=TRAIN), out, log=Log())
    folds = pd.read_csv(out / "folds.csv")["fold"].to_numpy()
    assert len(preps) == len(fits) == K
    for f in range(K):
        train_side = np.flatnonzero(folds != f)
        np.testing.assert_array_equal(preps[f], train_side)
        tr, va = fits[f]
        assert len(va) and not set(tr) & set(va)
        assert set(tr) | set(va) == set(train_side)  # the test fold never trains or chooses


def test_kill_while_writing_a_fold_leaves_it_not_done(table, tiny_fer, tmp_path, monkeypatch):
    grid = make_grid(tiny_fer, zero_shot_only=True)
    out = tmp_path / "out"
    real = runner.write_json

    def dies(path, obj):
        if Path(path).name == "history.json":
            raise KeyboardInterrupt
        return real(path, obj)

    monkeypatch.setattr(runner, "write_json", dies)
    with pytest.raises(KeyboardInterrupt):
        run_grid(table, grid, out, log=Log())
    assert not (fold_dir(out, grid.runs[0], 0) / "metrics.json").exists()  # not marked done
    monkeypatch.setattr(runner, "write_json", real)
    assert run_grid(table, grid, out, log=Log())["fold"].tolist() == [0, 1, 2]
