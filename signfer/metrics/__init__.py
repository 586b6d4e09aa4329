"""Metrics, paired tests, figures and the report of a run folder (Markdown, and one HTML page).

Metrics are pure functions on arrays (:mod:`signfer.metrics.core`); the
statistics, plots and report only read tables and files that the experiment
runner wrote.
"""

from signfer.metrics.core import METRICS, aggregate, compute_metrics
from signfer.metrics.plots import plot_confusion, plot_fold_accuracy
from signfer.metrics.report import load_results, summary_table, write_report
from signfer.metrics.stats import compare_paired, corrected_resampled_ttest, paired_tests

__all__ = [
    "METRICS",
    "aggregate",
    "compare_paired",
    "compute_metrics",
    "corrected_resampled_ttest",
    "load_results",
    "paired_tests",
    "plot_confusion",
    "plot_fold_accuracy",
    "summary_table",
    "write_report",
]
