"""Evaluation of trained variants: metrics, statistics, robustness, scoring, tables, plots, report.

Torch-free entry points are re-exported here; :mod:`facescan.evaluation.scoring` (model scoring),
:mod:`facescan.evaluation.robustness`, :mod:`facescan.evaluation.plots` and
:mod:`facescan.evaluation.report` are imported from their modules. Nothing here imports Kedro.
"""

from facescan.evaluation.metrics import (
    classification_metrics,
    cross_entropy,
    equal_error_rate,
    p_fake_from_logits,
    predict_labels,
    tune_threshold,
)
from facescan.evaluation.stats import (
    McNemarResult,
    bootstrap_ci,
    bootstrap_difference_ci,
    bootstrap_indices,
    comparison_remark,
    holm_adjust,
    mcnemar_exact,
    mean_std,
)
from facescan.evaluation.tables import RunResult, ablation_table, robustness_table, to_markdown

__all__ = [
    "McNemarResult",
    "RunResult",
    "ablation_table",
    "bootstrap_ci",
    "bootstrap_difference_ci",
    "bootstrap_indices",
    "classification_metrics",
    "comparison_remark",
    "cross_entropy",
    "equal_error_rate",
    "holm_adjust",
    "mcnemar_exact",
    "mean_std",
    "p_fake_from_logits",
    "predict_labels",
    "robustness_table",
    "to_markdown",
    "tune_threshold",
]
