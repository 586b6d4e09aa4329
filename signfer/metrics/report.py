"""The Markdown report of a cross-validation run folder.

Reads what the experiment runner wrote::

    OUT/results.csv                                  one row per (config, arch, fold)
    OUT/runs/<config>/<arch>/fold<k>/metrics.json    compute_metrics() + config, arch, fold

and writes ``OUT/results.md`` beside PNG figures (and, on request, one
self-contained ``OUT/report.html``). Only files are read, so a report can be
(re)built for any finished or half-finished run.

Example:
    >>> write_report("runs/feph_grid")  # doctest: +SKIP
    PosixPath('runs/feph_grid/results.md')
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from signfer.errors import SignferError, first_line
from signfer.io import atomic_path
from signfer.metrics.core import KEYS, METRICS, aggregate, dedupe_folds, ordered_unique
from signfer.metrics.plots import plot_confusion, plot_fold_accuracy, plot_learning_curves
from signfer.metrics.stats import fold_test_train_ratio, paired_tests

DASH = "—"


def load_results(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``results.csv`` of a run folder, one row per (config, arch, fold).

    ``config`` and ``arch`` are read as text so that a configuration named
    ``"1"`` is not turned into a number; row order (the runner's grid order) is
    kept.

    Raises:
        SignferError: if the file is missing, empty, unreadable, or lacks a needed column.
    """
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise SignferError(f"no results to report: {path} does not exist")
    try:
        # only an empty cell is missing: a configuration may be named "None" or "NA"
        results = pd.read_csv(path, dtype={"config": str, "arch": str}, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise SignferError(f"no results to report: {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SignferError(f"{path}: damaged ({first_line(e)}); run the cv or grid "
                           "command again to write it from the folds") from None
    if results.empty:
        raise SignferError(f"no results to report: {path} has no rows")
    missing = [c for c in (*KEYS, "accuracy", "macro_f1") if c not in results.columns]
    if missing:
        raise SignferError(f"{path} lacks column(s) {', '.join(missing)}")
    return dedupe_folds(results).reset_index(drop=True)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def summary_table(
    results: pd.DataFrame, metric: str = "accuracy", secondary: str = "macro_f1"
) -> pd.DataFrame:
    """The paper-style table: configurations down, architectures across.

    Each cell reads ``"84.3 ± 1.2 (78.9)"``: the mean of ``metric`` over folds
    ± its sample standard deviation (ddof=1), then the mean of ``secondary`` in
    brackets, all in percent with one decimal. A single fold has no sd and
    shows ``"84.3 (78.9)"``; a combination that was not run shows ``"—"``.
    The last column, ``folds``, gives the number of folds behind each row (per
    architecture when they differ).

    Args:
        results: one row per (config, arch, fold), metrics as fractions.
        metric: the headline metric.
        secondary: the metric shown in brackets.

    Returns:
        A DataFrame of strings indexed by configuration (grid order), with one
        column per architecture (order of first appearance) and ``folds``.

    Example:
        >>> df = pd.DataFrame({"config": "base", "arch": "mobilenet", "fold": [0, 1],
        ...                    "accuracy": [0.80, 0.90], "macro_f1": [0.70, 0.72]})
        >>> summary_table(df).loc["base", "mobilenet"]
        '85.0 ± 7.1 (71.0)'
    """
    agg = aggregate(results, [metric, secondary]).set_index(["config", "arch"])
    configs = ordered_unique(agg.index.get_level_values("config"))
    archs = ordered_unique(agg.index.get_level_values("arch"))
    rows = []
    for config in configs:
        row, folds = {}, {}
        for arch in archs:
            if (config, arch) not in agg.index:
                row[arch] = DASH
                continue
            a = agg.loc[(config, arch)]
            folds[arch] = int(a[f"{metric}_n"])  # the folds that measured it
            if not folds[arch]:
                row[arch] = DASH
                continue
            sd = f" ± {_pct(a[f'{metric}_sd'])}" if not math.isnan(a[f"{metric}_sd"]) else ""
            second = a[f"{secondary}_mean"]
            row[arch] = f"{_pct(a[f'{metric}_mean'])}{sd} ({DASH if math.isnan(second) else _pct(second)})"
        distinct = set(folds.values())
        row["folds"] = (str(distinct.pop()) if len(distinct) == 1
                        else ", ".join(f"{a}: {n}" for a, n in folds.items()))
        rows.append(row)
    table = pd.DataFrame(rows, index=pd.Index(configs, name="configuration"),
                         columns=[*archs, "folds"])
    return table


def load_fold_metrics(out_dir: str | os.PathLike, results: pd.DataFrame) -> dict:
    """Collect the per-fold ``metrics.json`` files that belong to ``results``.

    The (config, arch, fold) keys stored inside each file are used rather than
    its folder names, which the runner may have had to sanitise. Files of folds
    that are not in ``results`` (stale or unfinished) are ignored so that
    figures and tables describe the same folds.

    Returns:
        ``{(config, arch): [metrics dict, ...]}`` in fold order.

    Raises:
        SignferError: if a file is not valid JSON or its class list differs
            from the other folds'.
    """
    wanted = {(str(c), str(a), str(f)) for c, a, f in results[list(KEYS)].itertuples(index=False)}
    found: dict[tuple[str, str], list[dict]] = {}
    classes = None
    for path in sorted((Path(out_dir) / "runs").rglob("metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SignferError(f"{path} is not readable JSON: {err}") from None
        needed = {"config", "arch", "fold", "confusion", "classes"}
        if not isinstance(m, dict) or not needed <= set(m):
            raise SignferError(f"{path} lacks config/arch/fold/confusion/classes keys")
        key = (str(m["config"]), str(m["arch"]), str(m["fold"]))
        if key not in wanted:
            continue
        if classes is None:
            classes = list(m["classes"])
        elif list(m["classes"]) != classes:
            raise SignferError(f"{path} has classes {m['classes']} but other folds have {classes}")
        m["_dir"] = str(path.parent)  # where its history.json is
        found.setdefault(key[:2], []).append(m)
    for folds in found.values():
        folds.sort(key=lambda m: str(m["fold"]))
    return found


def _no_tags(text: str) -> str:
    """``text`` with HTML tags made inert (``<script>`` shows as text), ``<0.001`` kept."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", str(text))


def _markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs tabulate)."""
    frame = df.reset_index() if index else df
    cells = [[_no_tags(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    header = [_no_tags(c).replace("|", "\\|") for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return DASH
    # Three significant digits, so the 5-fold Wilcoxon floor reads 0.0625, not 0.062.
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _slug(text: str) -> str:
    """File-name-safe text; grid names may hold spaces, '/', '=' or '+'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "x"


def _tests_table(tests: pd.DataFrame, scope: str) -> pd.DataFrame | None:
    sub = tests[tests["scope"] == scope]
    if sub.empty:
        return None
    metric = sub["metric"].iloc[0]
    return pd.DataFrame({
        "architecture": sub["arch"],
        "configuration": sub["config"],
        "best": sub["best"] if scope == "arch" else sub["best"] + " / " + sub["best_arch"],
        "pairs": sub["n_pairs"],
        # + 0.0 turns a -0.0 (a difference that rounds to nothing) into +0.0
        f"Δ {metric} (pp)": [f"{round(100 * d, 1) + 0.0:+.1f}" if not math.isnan(d) else DASH
                             for d in sub["mean_diff"]],
        "Wilcoxon p": [_p(p) for p in sub["wilcoxon_p"]],
        "corrected t-test p": [_p(p) for p in sub["corrected_t_p"]],
        "plain t-test p": [_p(p) for p in sub["ttest_p"]],
        "note": sub["note"].fillna(""),
    })


def _wilcoxon_floor_sentence(n: int) -> str:
    floor = 2.0 / 2**n
    text = (f"With {n} fold{'' if n == 1 else 's'} the smallest possible two-sided exact Wilcoxon p is "
            f"2/2^{n} = {floor:g}")
    return text + (", so it can never reach 0.05." if floor >= 0.05 else ".")


# ---------------------------------------------------------------- content, then two renderings

@dataclass
class Block:
    """One piece of the report: a heading, a paragraph, a table, a figure or preformatted text.

    The report is built once as a list of blocks (:func:`report_blocks`) and
    rendered as Markdown (``results.md``) or as one self-contained HTML page
    (:func:`signfer.metrics.html_report.render_html`), so both say the same.
    """

    kind: str  # "heading", "text", "table", "figure", "pre"
    text: str = ""  # heading or paragraph text (Markdown: **bold**, `code`), figure caption, pre text
    level: int = 2  # heading level
    table: pd.DataFrame | None = None
    file: str = ""  # figure: PNG file name in the run folder


def _history_curves(fold_metrics: dict) -> dict:
    """``{(config, arch): [(fold, history list), ...]}`` from each fold's history.json."""
    curves = {}
    for key, folds in fold_metrics.items():
        for m in folds:
            path = Path(m.get("_dir", "")) / "history.json"
            try:
                history = json.loads(path.read_text()) if path.is_file() else None
            except (OSError, ValueError) as err:
                raise SignferError(f"{path} is not readable JSON: {err}") from None
            if isinstance(history, list) and any(
                    isinstance(h, dict) and h.get("val_accuracy") is not None for h in history):
                curves.setdefault(key, []).append((m["fold"], history))
    return curves


def report_blocks(out_dir: str | os.PathLike) -> list[Block]:
    """Build the report of a run folder as :class:`Block` s, writing its PNG figures.

    The report holds the paper-style table (:func:`summary_table`), the same
    table of mean per-class recall ("sensitivity") when ``results.csv`` has it, paired
    tests of every configuration against the best one of its architecture and
    across architectures (:func:`~signfer.metrics.stats.paired_tests`, on
    accuracy, macro-F1 and sensitivity), per-class recall pooled over folds, a per-fold
    accuracy plot (``fold_accuracy.png``), learning curves from each fold's
    ``history.json`` (``learning_curves.png``, when any fold chose its epoch on
    an inner validation part), one confusion matrix summed over folds per
    (config, arch) (``confusion_<config>_<arch>.png``) and the resolved
    ``config.yaml``. Every file is written atomically.

    Raises:
        SignferError: if ``results.csv`` is missing or empty, or a
            ``metrics.json`` or ``history.json`` is unreadable.
    """
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    configs = ordered_unique(results["config"])
    archs = ordered_unique(results["arch"])
    agg = aggregate(results, [m for m in METRICS if m in results.columns])
    # older run folders have no macro_recall column (or an empty one): no sensitivity there
    measured = {m for m in METRICS if m in results.columns and results[m].notna().any()}
    fold_metrics = load_fold_metrics(out_dir, results)
    max_folds = int(agg["n_folds"].max())

    blocks = [
        Block("heading", f"Results: {out_dir.resolve().name}", level=1),
        Block("text", f"{len(configs)} configuration(s) × {len(archs)} architecture(s), "
                      f"up to {max_folds} cross-validation folds each, from `results.csv`."),
        Block("heading", "Accuracy by configuration and architecture"),
        Block("text", "Cells: accuracy mean ± sd over folds (macro-F1 mean), in percent; sd is the "
                      "sample standard deviation across folds (ddof=1). Bold: best mean accuracy "
                      "of the architecture. The best is picked on these same test folds, so its "
                      "lead over the others is optimistic (selection bias: the maximum of several "
                      "noisy means is biased upwards); no fold was held out of that choice."),
    ]
    table = summary_table(results)
    for arch in archs:
        means = agg[agg["arch"] == arch].set_index("config")["accuracy_mean"].dropna()
        if len(means) > 1:
            best = means.index[int(np.argmax(means.to_numpy()))]
            table.loc[best, arch] = f"**{table.loc[best, arch]}**"
    blocks.append(Block("table", table=table.reset_index()))
    if "macro_recall" in measured:
        blocks += [
            Block("heading", "Sensitivity (mean per-class recall) by configuration and architecture"),
            Block("text", "Cells: the mean over folds of each fold's recall averaged over the classes in "
                          "its test part (\"sensitivity\", the figure Nunnari, Singh & Gebhard 2025 report) "
                          "± sd (accuracy mean), in percent. Unlike accuracy, every class counts the "
                          "same, so a model that never predicts a rare class loses here."),
            Block("table", table=summary_table(results, "macro_recall", "accuracy").reset_index()),
        ]

    ratio = fold_test_train_ratio(dedupe_folds(results))
    ratio_text = f"{ratio.min():.3g}" + (f" to {ratio.max():.3g}" if ratio.max() - ratio.min() > 5e-4 else "")
    blocks += [
        Block("heading", "Paired tests against the best configuration"),
        Block("text", "Each configuration is compared with the best one (highest mean) on the folds "
                      "both ran, paired by fold. Δ = configuration − best, in percentage points. "
                      "Two-sided Wilcoxon signed-rank test, corrected resampled t-test "
                      "(Nadeau & Bengio 2003) and, for comparison, the plain paired t-test."),
        Block("text", "**Read the corrected t-test, not the plain one.** The training sets of "
                      "cross-validation folds overlap, so fold results are not independent and "
                      "the plain paired t-test underestimates the variance of the mean difference: "
                      "it finds differences too often. The corrected test multiplies the variance "
                      f"by (1/K + n_test/n_train) instead of 1/K (here n_test/n_train = {ratio_text}, "
                      "n_train being the whole training side, its inner validation part included)."),
        Block("text", "**Selection bias.** The reference configuration is the one with the best mean "
                      "on these same test folds. Picking it there favours it, so every Δ below is "
                      "biased against the others and the p-values are too small."),
        Block("text", f"{_wilcoxon_floor_sentence(max_folds)} Read the p-values as descriptive; "
                      "they are not corrected for multiple comparisons."),
    ]
    tested = [("accuracy", "Accuracy"), ("macro_f1", "Macro-F1"), ("macro_recall", "Sensitivity")]
    for metric, label in [(m, name) for m, name in tested if m in measured]:
        tests = paired_tests(results, metric=metric, overall=True)
        scopes = [("arch", "within each architecture")]
        if len(archs) > 1:
            scopes.append(("overall", "across architectures"))
        for scope, words in scopes:
            blocks.append(Block("heading", f"{label}, {words}", level=3))
            t = _tests_table(tests, scope)
            blocks.append(Block("table", table=t) if t is not None
                          else Block("text", "_Only one candidate: nothing to compare._"))

    # Confusions are summed over folds so rare classes have enough frames to read.
    summed = {}
    for key, folds in fold_metrics.items():
        summed[key] = (np.sum([np.asarray(m["confusion"], dtype=np.int64) for m in folds], axis=0),
                       len(folds))
    classes = next(iter(fold_metrics.values()))[0]["classes"] if fold_metrics else []

    if summed:
        blocks += [Block("heading", "Per-class recall, pooled over folds"),
                   Block("text", "Recall of each true class from the confusion matrix summed over folds, "
                                 "in percent; the support row (when all rows share the same folds) gives the "
                                 "number of test frames per class.")]
        rows = []
        supports = {tuple(conf.sum(axis=1)) for conf, _ in summed.values()}
        # One support row is only honest when every row was tested on the same frames.
        if len(supports) == 1:
            rows.append({"configuration": "support", "architecture": "",
                         **{c: str(int(n)) for c, n in zip(classes, supports.pop())}})
        for config in configs:
            for arch in archs:
                if (config, arch) not in summed:
                    continue
                conf = summed[(config, arch)][0]
                support = conf.sum(axis=1)
                rows.append({"configuration": config, "architecture": arch, **{
                    c: _pct(conf[i, i] / support[i]) if support[i] else DASH
                    for i, c in enumerate(classes)}})
        blocks.append(Block("table", table=pd.DataFrame(rows)))

    blocks.append(Block("heading", "Figures"))
    plot_fold_accuracy(results, out_dir / "fold_accuracy.png")
    blocks.append(Block("figure", "accuracy per fold", file="fold_accuracy.png"))
    curves = _history_curves(fold_metrics)
    if curves:
        plot_learning_curves({k: curves[k] for k in [(c, a) for c in configs for a in archs] if k in curves},
                             out_dir / "learning_curves.png")
        blocks += [Block("heading", "Learning curves", level=3),
                   Block("text", "Accuracy on each fold's inner validation part (carved from its training "
                                 "side, never the test fold) after each epoch: the head-only warm-up, then "
                                 "all layers (after the dashed line); a dot marks each fold's highest accuracy. "
                                 "The epoch a fold keeps is chosen on this curve, never on the test fold."),
                   Block("figure", "learning curves", file="learning_curves.png")]
    used: set[str] = set()
    for config in configs:
        for arch in archs:
            if (config, arch) not in summed:
                continue
            conf, n_folds = summed[(config, arch)]
            name = f"confusion_{_slug(config)}_{_slug(arch)}"
            # Different names can slug alike ("a b" and "a/b"); never overwrite.
            stem, i = name, 2
            while name in used:
                name, i = f"{stem}-{i}", i + 1
            used.add(name)
            title = f"{config} / {arch}, summed over {n_folds} fold(s)"
            plot_confusion(conf, classes, title, out_dir / f"{name}.png")
            blocks += [Block("heading", f"{config} / {arch}", level=3),
                       Block("figure", f"confusion {config} / {arch}", file=f"{name}.png")]
    if not summed:
        blocks.append(Block("text", "_No metrics.json files found under runs/: no confusion matrices._"))

    config_file = out_dir / "config.yaml"
    if config_file.is_file():
        blocks += [Block("heading", "Resolved configuration"),
                   Block("text", "`config.yaml` of the run: the grid, dataset and seed as resolved."),
                   Block("pre", config_file.read_text(encoding="utf-8", errors="replace"))]
    return blocks


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown; figures link their PNG files."""
    lines: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            lines += ["#" * b.level + " " + _no_tags(b.text), ""]
        elif b.kind == "text":
            lines += [_no_tags(b.text), ""]
        elif b.kind == "table":
            lines += [_markdown(b.table, index=False), ""]
        elif b.kind == "figure":
            alt = _no_tags(b.text).replace("]", "\\]")
            lines += [f"![{alt}]({b.file})", ""]
        elif b.kind == "pre":
            lines += ["```yaml", b.text.rstrip("\n"), "```", ""]
    return "\n".join(lines)


def write_report(out_dir: str | os.PathLike, html: bool = False) -> Path:
    """Write ``results.md`` (and with ``html`` also ``report.html``) and their figures.

    See :func:`report_blocks` for what the report holds. ``report.html`` is
    one self-contained page: the figures inlined as data URIs, the style
    inline, no external URL (:func:`signfer.metrics.html_report.render_html`). Every
    file is written atomically, so a reader never sees a half-written one.

    Args:
        out_dir: the run folder holding ``results.csv`` and ``runs/``.
        html: also write ``report.html``.

    Returns:
        The path of ``results.md``.

    Raises:
        SignferError: if ``results.csv`` is missing or empty, or a
            ``metrics.json`` is unreadable.
    """
    out_dir = Path(out_dir)
    blocks = report_blocks(out_dir)
    path = out_dir / "results.md"
    with atomic_path(path) as tmp:
        tmp.write_text(render_markdown(blocks), encoding="utf-8")
    if html:
        from signfer.metrics.html_report import render_html

        page = render_html(blocks, out_dir, title=f"Results: {out_dir.resolve().name}")
        with atomic_path(out_dir / "report.html") as tmp:
            tmp.write_text(page, encoding="utf-8")
    return path
