"""Reporting nodes: the ablation table (CSV + Markdown), the robustness table, the plots and the
self-contained HTML report, from every run's evaluation outputs."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from facescan import provenance
from facescan.evaluation.config import EvaluationConfig
from facescan.evaluation.plots import (
    plot_accuracy_ci,
    plot_accuracy_vs_gflops,
    plot_confusion_matrices,
    plot_robustness,
    plot_roc_curves,
    plot_training_curves,
)
from facescan.evaluation.report import caveats, dataset_counts, manifest_hash, render_report
from facescan.evaluation.tables import (
    TABLE_COLUMNS,
    RunResult,
    ablation_table,
    robustness_table,
    to_markdown,
)

logger = logging.getLogger(__name__)

#: What each run contributes to the reporting, in the order of :func:`gather_results`' inputs.
RUN_INPUTS = ("metrics", "test_predictions", "history", "robustness")


def gather_results(runs: Sequence[tuple[str, str, int | None]], *values: Any) -> list[RunResult]:
    """Bundle every run's evaluation outputs.

    Args:
        runs: ``(namespace, variant, seed)`` per run, in the configured order.
        *values: for each run, its :data:`RUN_INPUTS` in that order.

    Returns:
        One :class:`RunResult` per run.
    """
    k = len(RUN_INPUTS)
    if len(values) != k * len(runs):
        raise ValueError(f"expected {k * len(runs)} inputs for {len(runs)} runs, got {len(values)}")
    results = []
    for i, (namespace, variant, seed) in enumerate(runs):
        metrics, predictions, history, robustness = values[k * i : k * (i + 1)]
        results.append(
            RunResult(namespace, variant, seed, dict(metrics), predictions, history, robustness)
        )
    return results


def build_ablation_table(
    results: list[RunResult], ablation: dict[str, Any], evaluation: dict[str, Any]
) -> tuple[pd.DataFrame, str, list[str]]:
    """The ablation table, its Markdown rendering and the significance remarks.

    Args:
        results: every run's outputs (:func:`gather_results`).
        ablation: ``ablation`` parameters (``baseline``).
        evaluation: ``evaluation`` parameters (bootstrap, significance level).

    Returns:
        ``ablation_table`` (DataFrame), ``ablation_table_md`` (Markdown: the table, then one line
        per comparison with the baseline) and the remarks.
    """
    cfg = EvaluationConfig.from_params(evaluation)
    table, remarks = ablation_table(
        results, baseline=ablation.get("baseline"), alpha=cfg.alpha, **cfg.bootstrap_kwargs()
    )
    md = "# Ablation table\n\n" + to_markdown(table, columns=TABLE_COLUMNS)
    if remarks:
        md += "\n" + "\n".join(f"- {r}" for r in remarks) + "\n"
    for row in table.itertuples():
        logger.info(
            "%-22s acc %.4f  loss %.4f  auc %.4f  McNemar p %s",
            row.variant,
            row.acc,
            row.loss,
            row.auc,
            "-" if math.isnan(row.mcnemar_p) else f"{row.mcnemar_p:.3g}",
        )
    return table, md, remarks


def build_robustness_table(results: list[RunResult]) -> pd.DataFrame:
    """Accuracy and AUC per perturbation per variant (mean over seeds), drop from clean."""
    return robustness_table(results)


def plot_ablation(
    results: list[RunResult], table: pd.DataFrame, robustness: pd.DataFrame
) -> tuple[dict[str, Figure], dict[str, Figure]]:
    """Every plot of the report.

    Returns:
        The same ``{name}.png -> Figure`` mapping twice: for ``ablation_plots`` (versioned PNGs)
        and for ``ablation_figures`` (kept in memory for the HTML report, since Kedro's
        Matplotlib dataset is write-only).
    """
    first: dict[str, RunResult] = {}
    for r in results:
        first.setdefault(r.variant, r)
    histories = {}
    for r in results:
        if r.history is not None and len(r.history):
            histories[r.namespace] = r.history
    figures = {
        "roc_curves": plot_roc_curves(
            {v: (r.predictions["label"], r.predictions["p_fake"]) for v, r in first.items()}
        ),
        "accuracy_ci": plot_accuracy_ci(table),
        "accuracy_vs_gflops": plot_accuracy_vs_gflops(table),
        "training_curves": plot_training_curves(histories),
        "confusion_matrices": plot_confusion_matrices(
            {v: r.metrics["confusion_matrix"] for v, r in first.items()}
        ),
        "robustness": plot_robustness(robustness),
    }
    named = {f"{k}.png": fig for k, fig in figures.items()}
    return named, named


def _runs_table(results: list[RunResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        prov = r.metrics.get("training_provenance") or {}
        rows.append(
            {
                "namespace": r.namespace,
                "variant": r.variant,
                "seed": r.seed,
                "best_epoch": r.metrics.get("best_epoch"),
                "best_val_acc": r.metrics.get("best_val_acc"),
                "train_seconds": r.metrics.get("train_seconds"),
                "input_size": r.metrics.get("input_size"),
                "git_commit": str(prov.get("git_commit", "unknown"))[:12],
                "data_fingerprint": str(r.metrics.get("data_fingerprint") or "unknown")[:12],
                "test_cache_sha256": str(r.metrics.get("test_cache_sha256") or "unknown")[:12],
            }
        )
    return pd.DataFrame(rows)


def render_ablation_report(
    results: list[RunResult],
    table: pd.DataFrame,
    remarks: list[str],
    robustness: pd.DataFrame,
    figures: dict[str, Figure],
    split_manifest: pd.DataFrame,
    rejected_images: pd.DataFrame,
    stage_timings: dict[str, float] | None,
    parameters: dict[str, Any],
) -> str:
    """The self-contained HTML report.

    Args:
        results: every run's outputs.
        table: ``ablation_table``.
        remarks: comparisons with the baseline.
        robustness: ``robustness_table``.
        figures: ``ablation_figures``.
        split_manifest: the split (counts per split and class, data hash).
        rejected_images: files ingestion rejected, with reasons.
        stage_timings: wall seconds per stage (kept current by the project's timing hook).
        parameters: all parameters (the run settings shown).

    Returns:
        ``ablation_report``: the HTML page.
    """
    cfg = EvaluationConfig.from_params(parameters.get("evaluation"))
    test = split_manifest[split_manifest["split"] == "test"]
    data = parameters.get("data") or {}
    seeds = (parameters.get("ablation") or {}).get("seeds") or [None]
    notes = caveats(
        table,
        n_test_real=int((test["label"] == 0).sum()),
        n_test_fake=int((test["label"] == 1).sum()),
        source_type=(data.get("source") or {}).get("type"),
        n_seeds=len(seeds),
        alpha=cfg.alpha,
    )
    commits = {str((r.metrics.get("training_provenance") or {}).get("git_commit")) for r in results}
    if len(commits) > 1:
        notes.append(f"The runs were trained from different git commits ({sorted(commits)}).")
    fingerprints = {r.metrics.get("test_cache_sha256") for r in results}
    if len(fingerprints) > 1:
        notes.append("The runs were not all evaluated on the same test cache.")
    settings = {
        k: parameters[k]
        for k in ("data", "split", "preprocess", "model", "training", "ablation", "evaluation")
        if k in parameters
    }
    html = render_report(
        table=table,
        remarks=remarks,
        figures={name.removesuffix(".png"): fig for name, fig in figures.items()},
        settings=settings,
        counts=dataset_counts(split_manifest),
        rejected=rejected_images,
        notes=notes,
        provenance=provenance.collect(),
        runs=_runs_table(results),
        robustness=robustness,
        stage_timings=stage_timings,
        data_hash=manifest_hash(split_manifest),
    )
    logger.info(
        "ablation report: %d variants, %d caveats, %.0f kB",
        len(table),
        len(notes),
        len(html) / 1024,
    )
    return html
