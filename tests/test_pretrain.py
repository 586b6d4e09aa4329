"""Pre-training: one epoch on a tiny folder, and a kill/resume that ends where an uninterrupted run ends."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from fixtures import make_folder_dataset
from safetensors.torch import load_file

from signfer.errors import SignferError
from signfer.models.checkpoint import load_model
from signfer.training.pretrain import STATE, PretrainConfig, pretrain

CLASSES = ("angry", "happy", "neutral", "sad")


@pytest.fixture(scope="module")
def fer_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("fer")
    return make_folder_dataset(root, CLASSES, per_class=6, splits=("train", "validation"), size=24)


def cfg(epochs: int) -> PretrainConfig:
    return PretrainConfig(arch="mobilenetv2", init="imagenet", input_size=32, epochs=epochs,
                          batch_size=8, shift=2)


def test_one_epoch_writes_a_checkpoint_with_its_metadata(fer_like, tmp_path):
    stem = pretrain(fer_like, tmp_path, cfg(1), command="signfer pretrain (test)")
    model, meta = load_model(stem)
    assert meta.labels == ["anger", "happiness", "sadness", "neutral"]  # canonical order
    assert meta.input_size == 32 and meta.normalize
    assert meta.command == "signfer pretrain (test)"
    assert 0.0 <= meta.val_accuracy <= 1.0
    assert "validation/ (24 faces)" in meta.training_data
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_killed_run_resumes_to_the_same_weights(fer_like, tmp_path):
    whole = pretrain(fer_like, tmp_path / "whole", cfg(2))
    # "killed" after one epoch: only state.pt is left; the re-run must pick up there
    assert pretrain(fer_like, tmp_path / "cut", cfg(2), max_epochs_this_run=1) is None
    assert (tmp_path / "cut" / STATE).exists()
    assert not (tmp_path / "cut" / "mobilenetv2-fer.safetensors").exists()
    resumed = pretrain(fer_like, tmp_path / "cut", cfg(2))
    a = load_file(str(whole.with_suffix(".safetensors")))
    b = load_file(str(resumed.with_suffix(".safetensors")))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    h1 = json.loads((tmp_path / "whole" / "history.json").read_text())
    h2 = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [h["val_accuracy"] for h in h1] == [h["val_accuracy"] for h in h2]


def test_resume_with_another_config_is_refused(fer_like, tmp_path):
    pretrain(fer_like, tmp_path, cfg(2), max_epochs_this_run=1)
    with pytest.raises(SignferError, match="another config"):
        pretrain(fer_like, tmp_path, cfg(3))


def test_resume_on_other_faces_is_refused_and_a_moved_dataset_resumes(fer_like, tmp_path):
    pretrain(fer_like, tmp_path / "run", cfg(3), max_epochs_this_run=1)
    # the same classes and counts, other images: its best epoch so far was chosen on other faces
    other = make_folder_dataset(tmp_path / "other", CLASSES, per_class=6, splits=("train", "validation"),
                                size=28)
    with pytest.raises(SignferError, match="holds a run on other faces"):
        pretrain(other, tmp_path / "run", cfg(3))
    # the same faces in another folder (another machine) are the same data
    moved = tmp_path / "moved"
    shutil.copytree(fer_like, moved)
    assert pretrain(moved, tmp_path / "run", cfg(3), max_epochs_this_run=1) is None


def test_a_run_refused_before_its_first_epoch_does_not_lock_its_folder(tmp_path):
    data = make_folder_dataset(tmp_path / "ck", ("angry", "contempt"), per_class=4,
                               splits=("train", "validation"), size=24)
    taught = dataclasses.replace(cfg(1), teachers=("mobilenetv2-fer",))
    with pytest.raises(SignferError, match="does not know the classes"):  # FER2013 has no contempt
        pretrain(data, tmp_path / "run", taught)
    assert not (tmp_path / "run" / "pretrain_config.json").exists()
    assert pretrain(data, tmp_path / "run", cfg(1)) is not None  # the corrected command runs


def test_a_state_of_another_run_is_a_one_line_error(fer_like, tmp_path):
    pretrain(fer_like, tmp_path, cfg(2), max_epochs_this_run=1)
    torch.save({"epoch": 1}, tmp_path / STATE)  # loads, but holds nothing of the run
    with pytest.raises(SignferError, match="not this run's state .KeyError.*delete it"):
        pretrain(fer_like, tmp_path, cfg(2))


def test_augmented_run_trains_and_an_old_config_file_still_resumes(fer_like, tmp_path):
    aug = PretrainConfig(arch="mobilenetv2", init="imagenet", input_size=32, epochs=2, batch_size=8,
                         shift=2, rotate=10.0, scale=0.1)
    assert pretrain(fer_like, tmp_path, aug, max_epochs_this_run=1) is None
    # a run started before rotate/scale existed has no such keys: they take their defaults
    path = tmp_path / "pretrain_config.json"
    saved = json.loads(path.read_text())
    assert saved["rotate"] == 10.0
    plain = dataclasses.replace(aug, rotate=0.0, scale=0.0)
    for key in ("rotate", "scale"):
        del saved[key]
    path.write_text(json.dumps(saved))
    stem = pretrain(fer_like, tmp_path, plain, device="cpu")
    assert stem is not None
    assert [h["epoch"] for h in json.loads((tmp_path / "history.json").read_text())] == [1, 2]


def test_unknown_device_is_a_clear_error(fer_like, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SignferError, match="no CUDA GPU"):
        pretrain(fer_like, tmp_path, cfg(1), device="cuda")


def test_a_model_pretrained_from_a_checkpoint_records_how_that_one_was_made(fer_like, tmp_path):
    first = pretrain(fer_like, tmp_path / "a", cfg(1), command="signfer pretrain (first)")
    second = pretrain(fer_like, tmp_path / "b", dataclasses.replace(cfg(1), init=str(first)),
                      command="signfer pretrain (second)")
    third = pretrain(fer_like, tmp_path / "c", dataclasses.replace(cfg(1), init=str(second)))
    assert "init_from" not in load_model(first)[1].extra
    parent = load_model(third)[1].extra["init_from"]
    assert parent["name"] == str(second) and parent["command"] == "signfer pretrain (second)"
    assert parent["init_from"]["command"] == "signfer pretrain (first)"
    assert parent["init_from"]["val_accuracy"] == load_model(first)[1].val_accuracy


def test_distilled_cutmix_run_records_its_teachers_and_resumes_to_the_same_weights(fer_like, tmp_path):
    teacher = pretrain(fer_like, tmp_path / "teacher", cfg(1), command="signfer pretrain (teacher)")
    student = dataclasses.replace(cfg(2), cutmix=1.0, teachers=(str(teacher),), distill_weight=0.5)
    whole = pretrain(fer_like, tmp_path / "whole", student)
    assert pretrain(fer_like, tmp_path / "cut", student, max_epochs_this_run=1) is None
    resumed = pretrain(fer_like, tmp_path / "cut", student)  # the tuple of teachers survives JSON
    a = load_file(str(whole.with_suffix(".safetensors")))
    b = load_file(str(resumed.with_suffix(".safetensors")))
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = load_model(whole)[1]
    assert [t["command"] for t in meta.extra["teachers"]] == ["signfer pretrain (teacher)"]
    assert meta.config["teachers"] == [str(teacher)] and meta.config["cutmix"] == 1.0


def test_time_limit_writes_the_best_epoch_so_far_and_a_rerun_finishes(fer_like, tmp_path):
    # a limit of 0 s: the first epoch always runs, then no other fits
    stem = pretrain(fer_like, tmp_path, cfg(3), time_limit_s=0.0)
    meta = load_model(stem)[1]
    assert meta.extra["stopped_early"] == "stopped by the time limit after epoch 1 of 3"
    assert meta.extra["epochs_run"] == 1
    stem = pretrain(fer_like, tmp_path, cfg(3))
    meta = load_model(stem)[1]
    assert "stopped_early" not in meta.extra and meta.extra["epochs_run"] == 3
    assert [h["epoch"] for h in json.loads((tmp_path / "history.json").read_text())] == [1, 2, 3]


def unique_names(root, out):
    """A copy of the folder dataset ``root`` whose file names are unique, as FER2013's
    are (duplicate lists match faces by file name)."""
    import shutil

    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root)
        target = out / rel.parent / f"{rel.parts[0]}_{rel.parts[1]}_{f.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return out


def test_deduplicated_run_selects_on_one_half_and_records_the_other(fer_like, tmp_path):
    import pandas as pd

    from signfer.data import load_dataset
    from signfer.data.halves import halves_of

    fer_like = unique_names(fer_like, tmp_path / "fer")
    train = load_dataset("folder", fer_like, split="train").samples["path"].tolist()
    val = load_dataset("folder", fer_like, split="validation").samples["path"].tolist()
    # two validation faces "occur in train": they and their two training copies must go
    listed = pd.DataFrame({"file": val[:2], "label": "x", "reason": "exact", "match": train[3:5]})
    listed.to_csv(tmp_path / "dups.csv", index=False)
    dedup = dataclasses.replace(cfg(2), exclude=str(tmp_path / "dups.csv"), select_on="selection")
    stem = pretrain(fer_like, tmp_path / "run", dedup)
    _, meta = load_model(stem)
    kept = [p for p in val[2:]]
    kept_table = load_dataset("folder", fer_like, split="validation")
    kept_table.samples = kept_table.samples[kept_table.samples["path"].isin(kept)].reset_index(drop=True)
    n_select = int((halves_of(kept_table) == "selection").sum())
    n_report = len(kept) - n_select
    assert 0 < n_select < len(kept)
    assert f"train/ (deduplicated) ({len(train) - 2} faces) for training" in meta.training_data
    assert f"selection half ({n_select} faces) for choosing the epoch" in meta.training_data
    assert f"report half ({n_report} faces) for reporting" in meta.training_data
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    best = max(range(len(history)), key=lambda i: history[i]["val_accuracy"])
    assert meta.extra["best_epoch"] == best + 1
    assert meta.extra["report_accuracy"] == round(history[best]["report_accuracy"], 4)
    assert meta.extra["report_faces"] == n_report
    # a report accuracy is a share of the n_report faces (recorded to 4 decimals)
    correct = meta.extra["report_accuracy"] * n_report
    assert abs(correct - round(correct)) <= 5e-5 * n_report
    assert "report_may_be_seen_by" not in meta.extra  # from ImageNet, no teacher: the report half is clean


def test_a_report_half_that_a_teacher_chose_on_is_recorded_as_not_clean(fer_like, tmp_path, capsys):
    from signfer.cli import main

    fer_like = unique_names(fer_like, tmp_path / "fer")
    taught = dataclasses.replace(cfg(1), select_on="selection", teachers=("mobilenetv2-fer",))
    stem = pretrain(fer_like, tmp_path / "run", taught)
    _, meta = load_model(stem)
    seen = meta.extra["report_may_be_seen_by"]
    assert len(seen) == 1 and seen[0].startswith("mobilenetv2-fer (fer2013: ")
    assert "validation/ (3589 faces) for choosing the epoch" in seen[0]
    main(["models", str(stem)])
    assert "but not clean: models it starts or learns from may have seen them" in capsys.readouterr().out


def test_models_not_chosen_on_a_selection_half_are_found_at_any_depth():
    from signfer.data.halves import SCHEME as HALVES_SCHEME
    from signfer.training.pretrain import not_known_clean

    clean = {"name": "s", "halves": HALVES_SCHEME,
             "training_data": "fer: train/ (9 faces) for training, validation/ selection half (4 faces) for "
                              "choosing the epoch"}
    old_halves = {**clean, "name": "o", "halves": None}  # chosen on halves that split copies of a face
    dirty = {"name": "d", "training_data": "fer: train/ (9 faces) for training, validation/ (8 faces) for "
                                           "choosing the epoch"}
    finetuned = {"name": "ck", "training_data": "validation: 40 samples for training, 8 for choosing the epoch"}
    assert not_known_clean([clean, None]) == []
    assert not_known_clean([old_halves]) == [f"o ({clean['training_data']})"]
    # a model fine-tuned on other faces (maybe the report half itself) is not known to be clean either
    assert not_known_clean([finetuned]) == [f"ck ({finetuned['training_data']})"]
    nested = {**clean, "init_from": {**clean, "teachers": [{**clean, "init_from": dirty}]}}
    assert not_known_clean([nested]) == [f"d ({dirty['training_data']})"]
    assert not_known_clean([dirty, {**clean, "teachers": [dirty]}]) == [f"d ({dirty['training_data']})"]


def test_a_duplicate_list_without_matches_cannot_deduplicate_train(fer_like, tmp_path):
    import pandas as pd

    from signfer.data import load_dataset

    val = load_dataset("folder", fer_like, split="validation").samples["path"].tolist()
    pd.DataFrame({"file": val[:2]}).to_csv(tmp_path / "dups.csv", index=False)
    with pytest.raises(SignferError, match="no `match` column"):
        pretrain(fer_like, tmp_path / "run", dataclasses.replace(cfg(1), exclude=str(tmp_path / "dups.csv")))
    with pytest.raises(SignferError, match="select_on"):
        dataclasses.replace(cfg(1), select_on="test")


def test_cli_pretrain_passes_exclude_and_select_on_into_the_config(fer_like, tmp_path, capsys):
    import pandas as pd

    from signfer.cli import main
    from signfer.data import load_dataset

    root = unique_names(fer_like, tmp_path / "fer")
    train = load_dataset("folder", root, split="train").samples["path"].tolist()
    val = load_dataset("folder", root, split="validation").samples["path"].tolist()
    pd.DataFrame({"file": val[:1], "match": train[:1]}).to_csv(tmp_path / "dups.csv", index=False)
    out = tmp_path / "run"
    rc = main(["pretrain", "--dataset", "folder", "--root", str(root), "--exclude", str(tmp_path / "dups.csv"),
               "--select-on", "selection", "--epochs", "1", "--input-size", "32", "--batch-size", "8",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    saved = json.loads((out / "pretrain_config.json").read_text())
    assert saved["exclude"] == str(tmp_path / "dups.csv") and saved["select_on"] == "selection"
    _, meta = load_model(out / "mobilenetv2-fer")
    assert f"train/ (deduplicated) ({len(train) - 1} faces)" in meta.training_data
    assert "report_accuracy" in meta.extra
    main(["models", str(out / "mobilenetv2-fer")])
    assert f"report half accuracy: {meta.extra['report_accuracy']}" in capsys.readouterr().out


def test_a_training_state_with_code_in_it_is_refused_without_running_it(fer_like, tmp_path):
    import os

    class Marker:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": Marker()}, run / STATE)
    with pytest.raises(SignferError, match="damaged"):
        pretrain(fer_like, run, cfg(1))
    assert not (tmp_path / "pwned").exists()


def test_a_student_of_teachers_chosen_on_the_same_halves_keeps_a_clean_report_half(fer_like, tmp_path):
    fer_like = unique_names(fer_like, tmp_path / "fer")
    teacher = pretrain(fer_like, tmp_path / "teacher", dataclasses.replace(cfg(1), select_on="selection"))
    _, meta = load_model(teacher)
    assert meta.extra["halves"] and "report_may_be_seen_by" not in meta.extra
    student = pretrain(fer_like, tmp_path / "student",
                       dataclasses.replace(cfg(1), select_on="selection", teachers=(str(teacher),)))
    _, meta = load_model(student)
    assert "report_may_be_seen_by" not in meta.extra
