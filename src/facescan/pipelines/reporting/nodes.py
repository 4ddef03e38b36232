"""Reporting nodes: the ablation table (CSV + Markdown), the robustness table, the plots and the
self-contained HTML report, from every run's evaluation outputs."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from facescan import provenance
from facescan.evaluation.config import EvaluationConfig, ReportingConfig
from facescan.evaluation.explain import choose_images, explain_runs
from facescan.evaluation.plots import (
    plot_accuracy_ci,
    plot_accuracy_vs_gflops,
    plot_confusion_matrices,
    plot_reliability,
    plot_robustness,
    plot_roc_curves,
    plot_training_curves,
)
from facescan.evaluation.report import (
    caveats,
    dataset_counts,
    manifest_hash,
    render_report,
    scoring_method,
)
from facescan.evaluation.scoring import load_run_model
from facescan.evaluation.tables import (
    RUN_COLUMNS,
    SOURCE_COLUMNS,
    RunResult,
    ablation_table,
    markdown_columns,
    per_source_table,
    robustness_table,
    run_warnings,
    runs_table,
    to_markdown,
)
from facescan.params import Params
from facescan.runtime import inference_settings

logger = logging.getLogger(__name__)

#: What each run contributes to the reporting, in the order of :func:`gather_results`' inputs.
RUN_INPUTS = ("metrics", "test_predictions", "history", "robustness")


def gather_results(
    runs: Sequence[tuple[str, str, int | None]], test_cache: Any, *values: Any
) -> list[RunResult]:
    """Bundle every run's evaluation outputs, refusing any scored on other test images than today's.

    Args:
        runs: ``(namespace, variant, seed)`` per run, in the configured order.
        test_cache: the current test cache (its content hash changes with the images, the split
            and the preprocessing); each run's metrics record the hash of the cache it scored.
        *values: for each run, its :data:`RUN_INPUTS` in that order.

    Returns:
        One :class:`RunResult` per run.

    Raises:
        ValueError: naming the run's metrics file and the command that evaluates it again.
    """
    k = len(RUN_INPUTS)
    if len(values) != k * len(runs):
        raise ValueError(f"expected {k * len(runs)} inputs for {len(runs)} runs, got {len(values)}")
    results = []
    for i, (namespace, variant, seed) in enumerate(runs):
        metrics, predictions, history, robustness = values[k * i : k * (i + 1)]
        scored = metrics.get("test_cache_sha256")
        if scored is not None and scored != test_cache.sha256:
            raise ValueError(
                f"{namespace}.metrics (data/07_model_output/{namespace}/metrics.json) was scored "
                f"on another test set than the current test_cache (test cache {str(scored)[:12]}, "
                f"now {test_cache.sha256[:12]}: the images, split or preprocessing changed since); "
                f"train and evaluate it again with kedro run --pipelines training,evaluation "
                f"--namespaces {namespace}"
            )
        results.append(
            RunResult(namespace, variant, seed, dict(metrics), predictions, history, robustness)
        )
    return results


def _scoring(results: list[RunResult]) -> str | None:
    """The table's 'Scoring.' sentences: how each run scored images and tuned its threshold."""
    return scoring_method(
        {r.namespace: r.metrics.get("tta") for r in results},
        {r.namespace: (r.metrics.get("training_config") or {}).get("threshold") for r in results},
    )


def build_ablation_table(
    results: list[RunResult], ablation: dict[str, Any], evaluation: EvaluationConfig
) -> tuple[pd.DataFrame, str, list[str], pd.DataFrame]:
    """The ablation table, its Markdown rendering, the significance remarks and the per-run table.

    Args:
        results: every run's outputs (:func:`gather_results`).
        ablation: ``ablation`` parameters (``baseline``).
        evaluation: ``evaluation`` parameters (bootstrap, significance level).

    Returns:
        ``ablation_table`` (one row per variant), ``ablation_table_md`` (Markdown: the table, one
        line per comparison with the baseline and, with several seeds, every run's row), the
        remarks, and ``ablation_runs`` (one row per variant and seed, with each run's provenance).
    """
    cfg = EvaluationConfig.from_params(evaluation)
    baseline = ablation.get("baseline")
    table, remarks = ablation_table(
        results, baseline=baseline, alpha=cfg.alpha, **cfg.bootstrap_kwargs()
    )
    runs = runs_table(results, baseline=baseline, **cfg.bootstrap_kwargs()).merge(
        _provenance_table(results), on="namespace", how="left"
    )
    several = bool((table["n_seeds"] > 1).any())
    md = "# Ablation table\n\n"
    if several:
        md += f"{SEEDS_METHOD}\n\n"
    scoring = _scoring(results)
    if scoring:
        md += f"{scoring}\n\n"
    md += to_markdown(table, columns=markdown_columns(table))
    if remarks:
        md += "\n" + "\n".join(f"- {r}" for r in remarks) + "\n"
    warnings = run_warnings(runs)
    if warnings:
        md += "\n## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings) + "\n"
    if several:
        md += "\n## Every run (one row per variant and seed)\n\n" + to_markdown(
            runs, columns=list(RUN_COLUMNS)
        )
    for row in table.itertuples():
        logger.info(
            "%-22s acc %.4f  loss %.4f  auc %.4f  %s p %s",
            row.variant,
            row.acc,
            row.loss,
            row.auc,
            row.test or "-",
            "-" if math.isnan(row.p_value) else f"{row.p_value:.3g}",
        )
    return table, md, remarks, runs


#: How the numbers of a table over several seeds are made (shown in the Markdown and the report).
SEEDS_METHOD = (
    "With several seeds each number is the mean over the variant's seeds (± the standard "
    "deviation across seeds). The 95% intervals resample the test images and the seeds together "
    "(a two-level percentile bootstrap, paired over images between variants) and always contain "
    "the mean; the test against the baseline (`test` = bootstrap, `p_value`) is the same "
    "bootstrap's two-sided p-value of the accuracy difference, Holm-adjusted across variants in "
    "`p_value_holm`. `mcnemar_p` pools the discordant images of the runs with the same seed, "
    "treats the trained models as fixed and counts each image once per seed: it is optimistic. "
    "With 2-3 seeds the seed part of an interval is an "
    "underestimate: read the per-run rows."
)


def build_per_source_table(
    results: list[RunResult], split_manifest: pd.DataFrame, evaluation: EvaluationConfig
) -> pd.DataFrame:
    """``per_source_table``: every variant's accuracy and AUC per test-image source.

    Args:
        results: every run's outputs (their test predictions).
        split_manifest: the split, whose ``source`` column names each image's source.
        evaluation: ``evaluation`` parameters (the bootstrap's settings).
    """
    cfg = EvaluationConfig.from_params(evaluation)
    if "source" not in split_manifest:
        return pd.DataFrame(columns=list(SOURCE_COLUMNS))
    sources = dict(zip(split_manifest["path"].astype(str), split_manifest["source"], strict=True))
    return per_source_table(
        results,
        sources,
        n_resamples=cfg.bootstrap.n_resamples,
        confidence=cfg.bootstrap.confidence,
        seed=cfg.bootstrap.seed,
    )


def build_robustness_table(results: list[RunResult]) -> pd.DataFrame:
    """Accuracy and AUC per perturbation per variant (mean over seeds), drop from clean."""
    return robustness_table(results)


def explain_models(
    runs: Sequence[tuple[str, str]],
    results: list[RunResult],
    test_cache: Any,
    ablation: dict[str, Any],
    evaluation: EvaluationConfig,
    reporting: ReportingConfig,
    *checkpoints: dict[str, Any],
) -> tuple[dict[str, Figure], dict[str, Figure]]:
    """The "Where the models look" grid: class-activation maps of every variant on the same
    test images (:mod:`facescan.evaluation.explain`).

    Args:
        runs: ``(namespace, variant)`` of one run per variant (its first seed), bound when the
            pipeline is built; ``checkpoints`` are their ``{ns}.model`` in that order.
        results: every run's outputs (the test predictions: the baseline's choose the images).
        test_cache: the test images.
        ablation: ``ablation`` parameters (``baseline``).
        evaluation: ``evaluation`` parameters (device and autocast, as scoring).
        reporting: ``reporting`` parameters (``explain.n_images``, ``explain.seed``).

    Returns:
        The same ``{name}.png -> Figure`` mapping twice: for ``explain_plots`` (a versioned PNG)
        and ``explain_figures`` (kept in memory for the report); empty when disabled.
    """
    cfg = ReportingConfig.parse(reporting).explain
    if not cfg.enabled or not runs:
        return {}, {}
    scoring = EvaluationConfig.parse(evaluation)
    device, amp_dtype, channels_last = inference_settings(scoring.device, scoring.amp)
    by_namespace = {r.namespace: r for r in results}
    baseline = (ablation or {}).get("baseline")
    first = {r.variant: r for r in reversed(results)}  # each variant's first run
    reference = first.get(baseline) or results[0]
    predictions = reference.predictions
    indices = choose_images(
        predictions["label"].to_numpy(), predictions["p_fake"].to_numpy(), cfg.n_images, cfg.seed
    )
    models, p_fake = {}, {}
    for (namespace, variant), checkpoint in zip(runs, checkpoints, strict=True):
        model = load_run_model(checkpoint, variant, namespace, device, channels_last)
        models[variant] = (model, int(checkpoint["input_size"]))
        p_fake[variant] = by_namespace[namespace].predictions["p_fake"].to_numpy()
    figure = explain_runs(models, test_cache, indices, p_fake, device=device, amp_dtype=amp_dtype)
    named = {"where_models_look.png": figure}
    return named, named


def plot_ablation(
    results: list[RunResult], table: pd.DataFrame, robustness: pd.DataFrame
) -> tuple[dict[str, Figure], dict[str, Figure]]:
    """Every plot of the report.

    Returns:
        The same ``{name}.png -> Figure`` mapping twice: for ``ablation_plots`` (versioned PNGs)
        and for ``ablation_figures`` (kept in memory for the HTML report, since Kedro's
        Matplotlib dataset is write-only).
    """
    by_variant: dict[str, list[RunResult]] = {}
    for r in results:
        by_variant.setdefault(r.variant, []).append(r)
    histories = {}
    for r in results:
        if r.history is not None and len(r.history):
            histories[r.namespace] = r.history
    matrices = {}
    for variant, runs in by_variant.items():
        name = variant if len(runs) == 1 else f"{variant} ({len(runs)} seeds, summed)"
        matrices[name] = np.sum([np.asarray(r.metrics["confusion_matrix"]) for r in runs], axis=0)
    figures = {
        "roc_curves": plot_roc_curves(
            {
                v: [(r.predictions["label"], r.predictions["p_fake"]) for r in runs]
                for v, runs in by_variant.items()
            }
        ),
        "accuracy_ci": plot_accuracy_ci(
            table,
            {v: [r.metrics.get("acc", np.nan) for r in runs] for v, runs in by_variant.items()},
        ),
        "accuracy_vs_gflops": plot_accuracy_vs_gflops(table),
        "training_curves": plot_training_curves(
            histories, {r.namespace: r.variant for r in results}
        ),
        "confusion_matrices": plot_confusion_matrices(matrices),
        "robustness": plot_robustness(robustness),
        "reliability": plot_reliability(
            {
                v: [(r.predictions["label"], r.predictions["p_fake"]) for r in runs]
                for v, runs in by_variant.items()
            }
        ),
    }
    named = {f"{k}.png": fig for k, fig in figures.items()}
    return named, named


def _provenance_table(results: list[RunResult]) -> pd.DataFrame:
    """Where each run came from: input size, code, data (joined to the per-run table)."""
    rows = []
    for r in results:
        prov = r.metrics.get("training_provenance") or {}
        rows.append(
            {
                "namespace": r.namespace,
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
    runs: pd.DataFrame,
    robustness: pd.DataFrame,
    figures: dict[str, Figure],
    split_manifest: pd.DataFrame,
    rejected_images: pd.DataFrame,
    stage_timings: dict[str, float] | None,
    parameters: dict[str, Any],
    report_history: list[dict[str, Any]] | None = None,
    report_run: dict[str, Any] | None = None,
    per_source: pd.DataFrame | None = None,
    explain_figures: dict[str, Figure] | None = None,
) -> tuple[str, str]:
    """The self-contained HTML report: the stable copy and the versioned one.

    Args:
        results: every run's outputs.
        table: ``ablation_table``.
        remarks: comparisons with the baseline.
        runs: ``ablation_runs`` (one row per variant and seed).
        robustness: ``robustness_table``.
        figures: ``ablation_figures``.
        split_manifest: the split (counts per split and class, data hash).
        rejected_images: files ingestion rejected, with reasons.
        stage_timings: wall seconds per stage (kept current by the project's timing hook).
        parameters: all parameters (the run settings shown).
        report_history: earlier reports (``ablation_report_history``), listed with links.
        report_run: this run's Kedro save version and environment (the project's hook gives it).
        per_source: ``per_source_table`` (accuracy and AUC per image source).
        explain_figures: ``explain_figures`` (the class-activation maps' grid), if any.

    Returns:
        ``ablation_report`` (data/08_reporting/ablation_report.html, always the latest) and
        ``ablation_report_version`` (the same page under data/08_reporting/reports/, versioned
        with the run's timestamp like the table and plots). Links to earlier reports are relative
        to data/08_reporting/; the versioned copy gets a ``<base>`` pointing there.
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
    notes = run_warnings(runs) + notes  # collapsed runs first: they change how to read the table
    commits = {str((r.metrics.get("training_provenance") or {}).get("git_commit")) for r in results}
    if len(commits) > 1:
        notes.append(f"The runs were trained from different git commits ({sorted(commits)}).")
    fingerprints = {r.metrics.get("test_cache_sha256") for r in results}
    if len(fingerprints) > 1:
        notes.append("The runs were not all evaluated on the same test cache.")
    # Kedro hands typed sections (training, model, evaluation...) as validated models.
    settings = {
        k: parameters[k].to_dict() if isinstance(parameters[k], Params) else parameters[k]
        for k in ("data", "split", "preprocess", "model", "training", "ablation", "evaluation")
        if k in parameters
    }
    run = dict(report_run or {})
    run["variants"] = list(dict.fromkeys(r.variant for r in results))
    run["seeds"] = sorted({r.seed for r in results if r.seed is not None})
    html = render_report(
        table=table,
        remarks=remarks,
        figures={name.removesuffix(".png"): fig for name, fig in figures.items()},
        settings=settings,
        counts=dataset_counts(split_manifest),
        rejected=rejected_images,
        notes=notes,
        provenance=provenance.collect(),
        runs=runs,
        seeds_method=SEEDS_METHOD if bool((table["n_seeds"] > 1).any()) else None,
        scoring=_scoring(results),
        robustness=robustness,
        per_source=per_source,
        explain=explain_figures,
        stage_timings=stage_timings,
        data_hash=manifest_hash(split_manifest),
        run=run,
        history=report_history or [],
    )
    logger.info(
        "ablation report: %d variants, %d caveats, %.0f kB",
        len(table),
        len(notes),
        len(html) / 1024,
    )
    # The versioned copy lives at reports/ablation_report.html/<version>/ablation_report.html:
    # three folders below data/08_reporting/, which the links are relative to.
    versioned = html.replace("<head>", '<head><base href="../../../">', 1)
    return html, versioned
