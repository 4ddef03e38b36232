"""The ablation table and the robustness table, from per-run metrics and predictions (pandas only).

One row per variant. With several seeds (``ablation.seeds``) the point metrics are the mean over
seeds with ``<metric>_std`` beside them; intervals, McNemar and the accuracy difference use the first
seed's predictions, as the issue specifies, because a bootstrap over images says nothing about seeds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from facescan.evaluation.stats import (
    bootstrap_ci,
    bootstrap_difference_ci,
    comparison_remark,
    holm_adjust,
    mcnemar_exact,
    mean_std,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SEED_METRICS",
    "TABLE_COLUMNS",
    "RunResult",
    "ablation_table",
    "robustness_table",
    "to_markdown",
]

#: Metrics averaged over seeds (with a ``_std`` column when there are several seeds).
SEED_METRICS = ("acc", "loss", "auc", "ap", "eer", "acc_real", "acc_fake")

#: The table's leading columns, in order: the report's Table 1 (variant, ACC, LOSS) first.
TABLE_COLUMNS = (
    "variant",
    "acc",
    "loss",
    "auc",
    "ap",
    "eer",
    "acc_real",
    "acc_fake",
    "acc_ci_low",
    "acc_ci_high",
    "auc_ci_low",
    "auc_ci_high",
    "mcnemar_p",
    "params",
    "gflops",
    "images_per_s",
    "train_seconds",
    "best_epoch",
)


@dataclass
class RunResult:
    """What the evaluation of one trained run (namespace) produced.

    Attributes:
        namespace: the Kedro namespace (``variant`` or ``variant_seedN``).
        variant: the variant key.
        seed: the training seed.
        metrics: the ``{ns}.metrics`` dict.
        predictions: ``{ns}.test_predictions`` (``path``, ``label``, ``p_fake``, ``pred``).
        history: ``{ns}.history`` per-epoch table, if any.
        robustness: ``{ns}.robustness`` table, if any.
    """

    namespace: str
    variant: str
    seed: int | None
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    history: pd.DataFrame | None = None
    robustness: pd.DataFrame | None = field(default=None)


def _by_variant(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.variant, []).append(r)
    return groups


def _aligned(base: pd.DataFrame, other: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """The two runs' predictions on the same images, matched by path (pairing needs the same set)."""
    if set(base["path"]) != set(other["path"]) or len(base) != len(other):
        raise ValueError(
            f"{names[0]} and {names[1]} were not scored on the same test images "
            f"({len(base)} vs {len(other)} images): re-run the evaluation of both on one test split"
        )
    other = other.set_index("path").loc[base["path"]].reset_index()
    if not np.array_equal(base["label"].to_numpy(), other["label"].to_numpy()):
        raise ValueError(f"{names[0]} and {names[1]} disagree on the labels of the test images")
    return other


def ablation_table(
    results: Sequence[RunResult],
    *,
    baseline: str | None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[pd.DataFrame, list[str]]:
    """Build the ablation table: one row per variant, in run order.

    Args:
        results: every evaluated run (several per variant with several seeds; the first is used
            for intervals and tests).
        baseline: the variant every other one is tested against (``ablation.baseline``).
        n_resamples: bootstrap resamples (``evaluation.bootstrap.n_resamples``).
        confidence: interval coverage (``evaluation.bootstrap.confidence``).
        seed: bootstrap seed (``evaluation.bootstrap.seed``).
        alpha: significance level of the remarks.

    Returns:
        ``(table, remarks)``: the table with :data:`TABLE_COLUMNS` first, then ``delta_acc`` and its
        interval, ``mcnemar_p_holm``, ``acc_at_val_threshold``, ``val_threshold``, ``n_test``,
        ``n_seeds``, ``is_baseline`` and, with several seeds, ``<metric>_std``; and one plain
        sentence per non-baseline variant.

    Raises:
        ValueError: when there are no results, or two runs were scored on different test images.
    """
    if not results:
        raise ValueError("no evaluated runs: ablation.variants is empty or nothing was evaluated")
    groups = _by_variant(results)
    if baseline is not None and baseline not in groups:
        logger.warning(
            "ablation.baseline %r is not among the evaluated variants %s: no McNemar test",
            baseline,
            list(groups),
        )
        baseline = None
    base_preds = groups[baseline][0].predictions if baseline else None
    several_seeds = any(len(runs) > 1 for runs in groups.values())
    boot = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}

    rows, remarks = [], []
    for variant, runs in groups.items():
        first = runs[0]
        preds = first.predictions
        row: dict[str, Any] = {"variant": variant}
        for key in SEED_METRICS:
            mean, std = mean_std([r.metrics.get(key, math.nan) for r in runs])
            row[key] = mean
            if several_seeds:
                row[f"{key}_std"] = std
        row.update(bootstrap_ci(preds["label"], preds["p_fake"], preds["pred"], **boot))
        for key in ("params", "gflops"):
            row[key] = first.metrics.get(key, math.nan)
        for key in ("images_per_s", "train_seconds", "best_epoch"):
            row[key] = mean_std([r.metrics.get(key, math.nan) for r in runs])[0]
        if len(runs) == 1 and isinstance(first.metrics.get("best_epoch"), int):
            row["best_epoch"] = first.metrics["best_epoch"]
        row["acc_at_val_threshold"] = mean_std(
            [r.metrics.get("acc_at_val_threshold", math.nan) for r in runs]
        )[0]
        row["val_threshold"] = first.metrics.get("val_threshold", math.nan)
        row["n_test"] = len(preds)
        row["n_seeds"] = len(runs)
        row["is_baseline"] = variant == baseline
        if baseline is None or variant == baseline:
            row.update(
                mcnemar_p=math.nan,
                delta_acc=math.nan,
                delta_acc_ci_low=math.nan,
                delta_acc_ci_high=math.nan,
            )
        else:
            other = _aligned(base_preds, preds, (baseline, variant))
            test = mcnemar_exact(base_preds["label"], other["pred"], base_preds["pred"])
            diff, low, high = bootstrap_difference_ci(
                base_preds["label"], other["pred"], base_preds["pred"], **boot
            )
            row.update(
                mcnemar_p=test.p_value, delta_acc=diff, delta_acc_ci_low=low, delta_acc_ci_high=high
            )
            remarks.append(
                comparison_remark(
                    variant, baseline, diff, (low, high), test.p_value, len(preds), alpha=alpha
                )
            )
        rows.append(row)

    table = pd.DataFrame(rows)
    table["mcnemar_p_holm"] = holm_adjust(table["mcnemar_p"].tolist())
    extra = [
        "delta_acc",
        "delta_acc_ci_low",
        "delta_acc_ci_high",
        "mcnemar_p_holm",
        "acc_at_val_threshold",
        "val_threshold",
        "n_test",
        "n_seeds",
        "is_baseline",
    ]
    stds = [f"{k}_std" for k in SEED_METRICS] if several_seeds else []
    return table[list(TABLE_COLUMNS) + extra + stds], remarks


def robustness_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """Accuracy and AUC per perturbation per variant (mean over seeds), with the drop from clean.

    Returns:
        Columns ``variant``, ``perturbation`` (``clean`` first, then the configured order), ``acc``,
        ``auc``, ``loss``, ``acc_drop``, ``auc_drop`` (clean minus perturbed), ``n``, ``n_seeds``;
        empty (with those columns) when no run has robustness results.
    """
    columns = [
        "variant",
        "perturbation",
        "acc",
        "auc",
        "loss",
        "acc_drop",
        "auc_drop",
        "n",
        "n_seeds",
    ]
    frames = []
    for r in results:
        if r.robustness is not None and len(r.robustness):
            frames.append(r.robustness.assign(variant=r.variant))
    if not frames:
        return pd.DataFrame(columns=columns)
    long = pd.concat(frames, ignore_index=True)
    order = list(dict.fromkeys(long["perturbation"]))
    variants = list(dict.fromkeys(long["variant"]))
    agg = (
        long.groupby(["variant", "perturbation"], sort=False)
        .agg(
            acc=("acc", "mean"),
            auc=("auc", "mean"),
            loss=("loss", "mean"),
            n=("n", "first"),
            n_seeds=("acc", "size"),
        )
        .reset_index()
    )
    clean = agg[agg["perturbation"] == "clean"].set_index("variant")
    agg["acc_drop"] = agg["variant"].map(clean["acc"]) - agg["acc"]
    agg["auc_drop"] = agg["variant"].map(clean["auc"]) - agg["auc"]
    agg["_v"] = agg["variant"].map({v: i for i, v in enumerate(variants)})
    agg["_p"] = agg["perturbation"].map({p: i for i, p in enumerate(order)})
    return agg.sort_values(["_v", "_p"])[columns].reset_index(drop=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else ""
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if float(value).is_integer() and abs(value) >= 100:
            return f"{int(value):,}"
        return f"{value:.{digits}g}" if 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def to_markdown(table: pd.DataFrame, *, columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``x`` and ``x_std`` are shown as ``mean ± std``."""
    if columns is None:
        columns = [c for c in table.columns if not c.endswith("_std")]
    columns = list(columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            text = _fmt(row[c])
            std = row.get(f"{c}_std")
            if std is not None and isinstance(std, float) and not math.isnan(std):
                text += f" ± {_fmt(std)}"
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
