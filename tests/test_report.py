"""Tests for signfer.metrics.report and signfer.metrics.plots on a synthetic run folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from signfer.errors import SignferError
from signfer.metrics import compute_metrics, plot_confusion, summary_table, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["neutral", "happiness", "sadness"]
# Grid order on purpose not alphabetical, to catch a sorted table.
CONFIGS = ["baseline", "augment"]
ARCHS = ["mobilenet", "effnet"]
ACC = {
    ("baseline", "mobilenet"): [0.80, 0.82, 0.84, 0.86, 0.88],  # 84.0 ± 3.2
    ("baseline", "effnet"): [0.70, 0.70, 0.70, 0.70, 0.75],  # 71.0 ± 2.2
    ("augment", "mobilenet"): [0.90, 0.91, 0.92, 0.93, 0.94],  # 92.0 ± 1.6
    ("augment", "effnet"): [0.60, 0.65, 0.70, 0.75, 0.80],  # 70.0 ± 7.9
}
F1 = {("baseline", "mobilenet"): 0.70, ("baseline", "effnet"): 0.61,
      ("augment", "mobilenet"): 0.812, ("augment", "effnet"): 0.55}
# Per fold: 6 neutral, 3 happiness, 1 sadness, as imbalanced as FePh.
Y_TRUE = np.array([0] * 6 + [1] * 3 + [2])


def _write_run(out, archs=ARCHS, rename=None):
    """Write results.csv and runs/*/metrics.json; ``rename`` changes config names."""
    rename = rename or {}
    rows = []
    rng = np.random.default_rng(0)
    for key in CONFIGS:
        config = rename.get(key, key)
        for arch in archs:
            for fold, acc in enumerate(ACC[(key, arch)]):
                f1 = F1[(key, arch)]
                rows.append({"config": config, "arch": arch, "fold": fold, "accuracy": acc,
                             "macro_f1": f1, "weighted_f1": f1, "macro_recall": f1,
                             "n_test": 10, "seconds": 1.5})
                y_pred = np.where(rng.random(10) < 0.7, Y_TRUE, rng.integers(0, 3, 10))
                m = compute_metrics(Y_TRUE, y_pred, CLASSES) | {
                    "config": config, "arch": arch, "fold": fold}
                d = out / "runs" / config / arch / f"fold{fold}"
                d.mkdir(parents=True)
                (d / "metrics.json").write_text(json.dumps(m))
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    # A stale fold that results.csv does not list: must not enter the report.
    stale = out / "runs" / "baseline" / "mobilenet" / "fold9"
    stale.mkdir(parents=True)
    (stale / "metrics.json").write_text(json.dumps(
        compute_metrics([0, 1], [0, 1], ["x", "y"]) | {"config": "baseline", "arch": "mobilenet", "fold": 9}))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = _write_run(out)
    path = write_report(out)
    return out, path, path.read_text(encoding="utf-8"), results


def test_summary_table_cells_and_order(report):
    *_, results = report
    table = summary_table(results)
    assert table.index.tolist() == CONFIGS
    assert table.columns.tolist() == [*ARCHS, "folds"]
    assert table.loc["baseline", "mobilenet"] == "84.0 ± 3.2 (70.0)"
    assert table.loc["baseline", "effnet"] == "71.0 ± 2.2 (61.0)"
    assert table.loc["augment", "mobilenet"] == "92.0 ± 1.6 (81.2)"
    assert table.loc["augment", "effnet"] == "70.0 ± 7.9 (55.0)"
    assert table["folds"].tolist() == ["5", "5"]


def test_summary_table_marks_missing_combinations_and_uneven_folds():
    df = pd.DataFrame({"config": ["a", "a", "a", "b"], "arch": ["m", "m", "e", "m"],
                       "fold": [0, 1, 0, 0], "accuracy": 0.5, "macro_f1": 0.5})
    table = summary_table(df)
    assert table.loc["b", "e"] == "—"
    assert table.loc["b", "m"] == "50.0 (50.0)"  # one fold: no sd
    assert table.loc["a", "folds"] == "m: 2, e: 1"


def test_report_holds_the_table_in_grid_order(report):
    out, path, md, _ = report
    assert path == out / "results.md"
    assert "| baseline | 84.0 ± 3.2 (70.0) | **71.0 ± 2.2 (61.0)** | 5 |" in md
    assert "| augment | **92.0 ± 1.6 (81.2)** | 70.0 ± 7.9 (55.0) | 5 |" in md
    assert md.index("| baseline |") < md.index("| augment |")


def test_report_holds_paired_tests_and_the_wilcoxon_floor(report):
    _, _, md, _ = report
    assert "never reach 0.05" in md and "0.0625" in md
    # mobilenet: augment beats baseline by 8.0 pp on every fold.
    assert "| mobilenet | baseline | augment | 5 | -8.0 | 0.0625 |" in md
    assert "across architectures" in md


def test_report_per_class_recall_uses_only_listed_folds(report):
    out, _, md, _ = report
    # 5 folds x (6, 3, 1); the stale fold9 with other classes is ignored.
    assert "| support |  | 30 | 15 | 5 |" in md
    assert "| configuration | architecture | neutral | happiness | sadness |" in md
    folds = out / "runs" / "augment" / "effnet"
    conf = sum(np.array(json.loads((folds / f"fold{k}" / "metrics.json").read_text())["confusion"])
               for k in range(5))
    recall = [f"{100 * conf[i, i] / conf[i].sum():.1f}" for i in range(3)]
    assert f"| augment | effnet | {' | '.join(recall)} |" in md


def test_report_figures_are_valid_pngs_and_linked(report):
    out, _, md, _ = report
    names = ["fold_accuracy.png"] + [f"confusion_{c}_{a}.png" for c in CONFIGS for a in ARCHS]
    for name in names:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, name
        assert f"]({name})" in md
    # Atomic writes leave no temporaries behind, and files get the umask's mode.
    assert not list(out.glob(".*tmp"))
    plain = out / "plain.txt"
    plain.write_text("x")
    assert (out / "results.md").stat().st_mode == plain.stat().st_mode


def test_plot_confusion_handles_empty_row_and_odd_names(tmp_path):
    path = plot_confusion([[3, 1], [0, 0]], ["a", "b"], "t", tmp_path / "sub" / "c.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError):
        plot_confusion([[1, 2]], ["a", "b"], "t", tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_config_names_are_made_file_safe_without_collisions(tmp_path):
    # Both names slug to "lr-1e-3-ls": the second figure must not overwrite the first.
    _write_run(tmp_path, archs=["effnet"],
               rename={"baseline": "lr=1e-3 ls", "augment": "lr=1e-3/ls"})
    md = write_report(tmp_path).read_text(encoding="utf-8")
    first = "confusion_lr-1e-3-ls_effnet.png"
    second = "confusion_lr-1e-3-ls_effnet-2.png"
    for name in (first, second):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
    assert md.index(f"]({first})") < md.index(f"]({second})")


@pytest.mark.parametrize("content", [None, "", "config,arch,fold,accuracy,macro_f1\n"])
def test_missing_or_empty_results_is_a_signfer_error(tmp_path, content):
    if content is not None:
        (tmp_path / "results.csv").write_text(content)
    with pytest.raises(SignferError, match="results.csv"):
        write_report(tmp_path)
    assert not (tmp_path / "results.md").exists()
