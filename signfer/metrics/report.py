"""The Markdown report of a cross-validation run folder.

Reads what the experiment runner wrote::

    OUT/results.csv                                  one row per (config, arch, fold)
    OUT/runs/<config>/<arch>/fold<k>/metrics.json    compute_metrics() + config, arch, fold

and writes ``OUT/results.md`` beside PNG figures. Only files are read, so a
report can be (re)built for any finished or half-finished run.

Example:
    >>> write_report("runs/feph_grid")  # doctest: +SKIP
    PosixPath('runs/feph_grid/results.md')
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from signfer.errors import SignferError
from signfer.io import atomic_path
from signfer.metrics.core import KEYS, METRICS, aggregate, dedupe_folds, ordered_unique
from signfer.metrics.plots import plot_confusion, plot_fold_accuracy
from signfer.metrics.stats import paired_tests

DASH = "—"


def load_results(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``results.csv`` of a run folder, one row per (config, arch, fold).

    ``config`` and ``arch`` are read as text so that a configuration named
    ``"1"`` is not turned into a number; row order (the runner's grid order) is
    kept.

    Raises:
        SignferError: if the file is missing, empty, or lacks a needed column.
    """
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise SignferError(f"no results to report: {path} does not exist")
    try:
        results = pd.read_csv(path, dtype={"config": str, "arch": str})
    except pd.errors.EmptyDataError:
        raise SignferError(f"no results to report: {path} is empty") from None
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
            sd = f" ± {_pct(a[f'{metric}_sd'])}" if not math.isnan(a[f"{metric}_sd"]) else ""
            row[arch] = f"{_pct(a[f'{metric}_mean'])}{sd} ({_pct(a[f'{secondary}_mean'])})"
            folds[arch] = int(a["n_folds"])
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
        found.setdefault(key[:2], []).append(m)
    for folds in found.values():
        folds.sort(key=lambda m: str(m["fold"]))
    return found


def _markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs tabulate)."""
    frame = df.reset_index() if index else df
    cells = [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    header = [str(c).replace("|", "\\|") for c in frame.columns]
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


def _tests_markdown(tests: pd.DataFrame, scope: str) -> str:
    sub = tests[tests["scope"] == scope]
    if sub.empty:
        return "_Only one candidate: nothing to compare._"
    metric = sub["metric"].iloc[0]
    table = pd.DataFrame({
        "architecture": sub["arch"],
        "configuration": sub["config"],
        "best": sub["best"] if scope == "arch" else sub["best"] + " / " + sub["best_arch"],
        "pairs": sub["n_pairs"],
        f"Δ {metric} (pp)": [f"{100 * d:+.1f}" if not math.isnan(d) else DASH
                             for d in sub["mean_diff"]],
        "Wilcoxon p": [_p(p) for p in sub["wilcoxon_p"]],
        "t-test p": [_p(p) for p in sub["ttest_p"]],
        "note": sub["note"].fillna(""),
    })
    return _markdown(table, index=False)


def _wilcoxon_floor_sentence(n: int) -> str:
    floor = 2.0 / 2**n
    text = (f"With {n} folds the smallest possible two-sided exact Wilcoxon p is "
            f"2/2^{n} = {floor:g}")
    return text + (", so it can never reach 0.05." if floor >= 0.05 else ".")


def write_report(out_dir: str | os.PathLike) -> Path:
    """Write ``results.md`` and its figures into a run folder.

    The report holds the paper-style table (:func:`summary_table`), paired
    tests of every configuration against the best one of its architecture and
    across architectures (:func:`~signfer.metrics.stats.paired_tests`, on
    accuracy and macro-F1), per-class recall pooled over folds, a per-fold
    accuracy plot (``fold_accuracy.png``) and one confusion matrix summed over
    folds per (config, arch) (``confusion_<config>_<arch>.png``). Every file is
    written atomically, so a reader never sees a half-written one.

    Args:
        out_dir: the run folder holding ``results.csv`` and ``runs/``.

    Returns:
        The path of ``results.md``.

    Raises:
        SignferError: if ``results.csv`` is missing or empty, or a
            ``metrics.json`` is unreadable.
    """
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    configs = ordered_unique(results["config"])
    archs = ordered_unique(results["arch"])
    agg = aggregate(results, [m for m in METRICS if m in results.columns])
    fold_metrics = load_fold_metrics(out_dir, results)
    max_folds = int(agg["n_folds"].max())

    lines = [
        f"# Results: {out_dir.resolve().name}",
        "",
        f"{len(configs)} configuration(s) × {len(archs)} architecture(s), "
        f"up to {max_folds} cross-validation folds each, from `results.csv`.",
        "",
        "## Accuracy by configuration and architecture",
        "",
        "Cells: accuracy mean ± sd over folds (macro-F1 mean), in percent; sd is the "
        "sample standard deviation across folds (ddof=1). Bold: best mean accuracy "
        "of the architecture.",
        "",
    ]
    table = summary_table(results)
    for arch in archs:
        means = agg[agg["arch"] == arch].set_index("config")["accuracy_mean"].dropna()
        if len(means) > 1:
            best = means.index[int(np.argmax(means.to_numpy()))]
            table.loc[best, arch] = f"**{table.loc[best, arch]}**"
    lines += [_markdown(table), ""]

    lines += ["## Paired tests against the best configuration", ""]
    lines += [
        "Each configuration is compared with the best one (highest mean) on the folds "
        "both ran, paired by fold. Δ = configuration − best, in percentage points. "
        "Two-sided Wilcoxon signed-rank and paired t-tests.",
        "",
        f"{_wilcoxon_floor_sentence(max_folds)} Read the p-values as descriptive; "
        "they are not corrected for multiple comparisons.",
        "",
    ]
    for metric, label in (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1")):
        tests = paired_tests(results, metric=metric, overall=True)
        lines += [f"### {label}, within each architecture", "", _tests_markdown(tests, "arch"), ""]
        if len(archs) > 1:
            lines += [f"### {label}, across architectures", "",
                      _tests_markdown(tests, "overall"), ""]

    # Confusions are summed over folds so rare classes have enough frames to read.
    summed = {}
    for key, folds in fold_metrics.items():
        summed[key] = (np.sum([np.asarray(m["confusion"], dtype=np.int64) for m in folds], axis=0),
                       len(folds))
    classes = next(iter(fold_metrics.values()))[0]["classes"] if fold_metrics else []

    if summed:
        lines += ["## Per-class recall, pooled over folds", "",
                  "Recall of each true class from the confusion matrix summed over folds, "
                  "in percent; the support row (when all rows share the same folds) gives the "
                  "number of test frames per class.", ""]
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
        lines += [_markdown(pd.DataFrame(rows), index=False), ""]

    lines += ["## Figures", ""]
    plot_fold_accuracy(results, out_dir / "fold_accuracy.png")
    lines += ["![accuracy per fold](fold_accuracy.png)", ""]
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
            lines += [f"### {config} / {arch}", "",
                      f"![confusion {config} / {arch}]({name}.png)", ""]
    if not summed:
        lines += ["_No metrics.json files found under runs/: no confusion matrices._", ""]

    path = out_dir / "results.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path
