"""Tests for signfer.metrics.report and signfer.metrics.plots on a synthetic run folder."""

from __future__ import annotations

import base64
import html.parser
import json
import shutil
import subprocess

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
                             "macro_f1": f1, "weighted_f1": f1, "macro_recall": acc - 0.1,
                             "n_train": 34, "n_val": 6, "n_test": 10, "seconds": 1.5})
                y_pred = np.where(rng.random(10) < 0.7, Y_TRUE, rng.integers(0, 3, 10))
                m = compute_metrics(Y_TRUE, y_pred, CLASSES) | {
                    "config": config, "arch": arch, "fold": fold}
                d = out / "runs" / config / arch / f"fold{fold}"
                d.mkdir(parents=True)
                (d / "metrics.json").write_text(json.dumps(m))
                # two head-only epochs, then four of all layers, as fit() logs them
                val = [acc - 0.1, acc - 0.05, acc - 0.07, acc - 0.02, acc, acc - 0.01]
                (d / "history.json").write_text(json.dumps(
                    [{"stage": "head", "epoch": e + 1, "val_accuracy": v} for e, v in enumerate(val[:2])]
                    + [{"stage": "all", "epoch": e + 1, "val_accuracy": v} for e, v in enumerate(val[2:])]))
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    (out / "config.yaml").write_text("folds: 5\nseed: 0\ndataset: {kind: feph, root: /data/FePh}\n")
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


def test_summary_table_counts_only_the_folds_that_measured_the_metric():
    # folds written before macro_recall existed sit beside newer ones
    df = pd.DataFrame({"config": ["a"] * 3 + ["b"] * 2, "arch": "m", "fold": [0, 1, 2, 0, 1],
                       "accuracy": [0.5, 0.7, np.nan, np.nan, np.nan], "macro_f1": 0.5})
    table = summary_table(df)
    assert table.loc["a", "m"] == "60.0 ± 14.1 (50.0)" and table.loc["a", "folds"] == "2"
    assert table.loc["b", "m"] == "—" and table.loc["b", "folds"] == "0"


def test_configurations_named_like_missing_values_or_html_keep_their_names(tmp_path):
    names = {"baseline": "None", "augment": "NA <script>x</script>"}
    _write_run(tmp_path, rename=names)
    md = write_report(tmp_path).read_text(encoding="utf-8")
    assert "| None |" in md and "| NA &lt;script>x&lt;/script> |" in md  # read as names, not NaN
    assert "<script>" not in md


def test_report_holds_the_table_in_grid_order(report):
    out, path, md, _ = report
    assert path == out / "results.md"
    assert "| baseline | 84.0 ± 3.2 (70.0) | **71.0 ± 2.2 (61.0)** | 5 |" in md
    assert "| augment | **92.0 ± 1.6 (81.2)** | 70.0 ± 7.9 (55.0) | 5 |" in md
    assert md.index("| baseline |") < md.index("| augment |")


def test_report_gives_sensitivity_beside_accuracy(report):
    _, _, md, _ = report
    table = md.split("## Sensitivity (mean per-class recall)", 1)[1].split("\n## ", 1)[0]
    assert "| baseline | 74.0 ± 3.2 (84.0) | 61.0 ± 2.2 (71.0) | 5 |" in table
    assert "| augment | 82.0 ± 1.6 (92.0) | 60.0 ± 7.9 (70.0) | 5 |" in table


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


def test_an_atomic_rewrite_keeps_the_files_permissions(tmp_path):
    from signfer.io import atomic_path

    private = tmp_path / "private.csv"
    private.write_text("old")
    private.chmod(0o600)
    with atomic_path(private) as tmp:
        tmp.write_text("new")
    assert private.read_text() == "new" and private.stat().st_mode & 0o777 == 0o600


def test_an_atomic_write_killed_midway_keeps_the_old_file_and_leaves_nothing_else(tmp_path):
    from signfer.io import atomic_path

    target = tmp_path / "results.csv"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


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


def test_report_gives_the_corrected_resampled_ttest_and_marks_selection_bias(report):
    from scipy import stats

    _, _, md, _ = report
    # mobilenet, baseline - augment per fold: -0.10, -0.09, -0.08, -0.07, -0.06; n_test/n_train
    # = 10 / (34 + 6) = 0.25 for K = 5: t = -0.08 / sqrt((1/5 + 1/4) * 0.00025)
    t = -0.08 / np.sqrt((1 / 5 + 1 / 4) * 0.00025)
    corrected = 2 * stats.t.sf(abs(t), df=4)
    plain = 2 * stats.t.sf(0.08 / np.sqrt(0.00025 / 5), df=4)
    assert corrected == pytest.approx(0.00166, abs=1e-5) and plain < corrected
    assert f"| mobilenet | baseline | augment | 5 | -8.0 | 0.0625 | {corrected:.3g} | <0.001 |" in md
    assert "Nadeau & Bengio" in md and "n_test/n_train = 0.25" in md
    assert "Selection bias" in md and "selection bias" in md


class _Page(html.parser.HTMLParser):
    """Collects what a self-contained page may not have: tags and the URLs it points at."""

    def __init__(self):
        super().__init__()
        self.tags, self.urls, self.images, self.tables = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.tables += tag == "table"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster") and value:
                self.urls.append(value)
            if tag == "img" and name == "src":
                self.images.append(value)


@pytest.fixture(scope="module")
def html_report(report):
    out = report[0]
    write_report(out, html=True)
    return out / "report.html"


def test_html_report_is_self_contained(html_report):
    text = html_report.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    # no server, no network: every image inline, no script, style sheet or font from elsewhere
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    assert "@import" not in text and "url(" not in text
    assert page.urls and all(u.startswith("data:image/png;base64,") for u in page.urls)
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_SIGNATURE
    # the fold accuracy plot, the learning curves and one confusion matrix per (config, arch)
    assert len(page.images) == 2 + len(CONFIGS) * len(ARCHS)
    # the paper-style table, the tests, per-class recall, the resolved config
    assert page.tables >= 4
    assert "<strong>92.0 ± 1.6 (81.2)</strong>" in text
    assert "corrected t-test p" in text and "Selection bias" in text
    assert "Per-class recall" in text and "Learning curves" in text
    assert "dataset: {kind: feph, root: /data/FePh}" in text


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _headless(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    # --no-sandbox: tests run as root in CI; a profile of its own keeps runs apart
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium for a real browser "
                    "(`make test` installs it with apt-get when it can)")
def test_html_report_renders_in_headless_chromium(html_report, tmp_path):
    """The page as a browser shows it: the table is there, every image decoded, a screenshot."""
    expected = 2 + len(CONFIGS) * len(ARCHS)
    # A copy with a probe that records, once the page has loaded, how many images decoded.
    probe = ("<script>window.addEventListener('load', () => { const i = [...document.images];"
             " document.body.dataset.images = i.length;"
             " document.body.dataset.decoded = i.filter(x => x.complete && x.naturalWidth > 0).length;"
             " document.body.dataset.tables = document.querySelectorAll('table').length; });</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(html_report.read_text(encoding="utf-8").replace("</body>", probe + "</body>"),
                      encoding="utf-8")
    done = _headless(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert f'data-images="{expected}"' in dom, dom[:500]
    assert f'data-decoded="{expected}"' in dom
    assert "92.0 ± 1.6 (81.2)" in dom and "data-tables=" in dom

    shot = tmp_path / "report.png"
    done = _headless(["--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}",
                      html_report.as_uri()], tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        grey = np.asarray(im.convert("L"), dtype=float)
    assert grey.std() > 10  # text, tables and figures, not a blank page


def test_report_command_writes_the_html_page(report, capsys):
    from signfer.cli import main

    out = report[0]
    (out / "report.html").unlink(missing_ok=True)
    assert main(["report", str(out), "--html"]) == 0
    assert f"html: {out / 'report.html'}" in capsys.readouterr().out
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
