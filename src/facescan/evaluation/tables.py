"""The ablation table, the per-run table and the robustness table (pandas only).

One row per variant in the ablation table. With several seeds (``ablation.seeds``) the point
metrics are the mean over seeds with ``<metric>_std`` beside them, and the intervals and the test
against the baseline resample test images and seeds together (see :func:`ablation_table`); the
per-run table (:func:`runs_table`) keeps every seed's own numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
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
    mcnemar_pooled,
    mean_std,
    seeds_bootstrap_ci,
    seeds_bootstrap_difference,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SEED_METRICS",
    "TABLE_COLUMNS",
    "RUN_COLUMNS",
    "RunResult",
    "ablation_table",
    "collapse_warning",
    "first_epoch_loss",
    "markdown_columns",
    "per_source_table",
    "SOURCE_COLUMNS",
    "robustness_table",
    "run_warnings",
    "runs_table",
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


def _align_all(
    groups: dict[str, list[RunResult]], baseline: str | None
) -> tuple[pd.Series, dict[str, pd.DataFrame]]:
    """The test labels, and every run's predictions (by namespace) in one image order.

    The order is that of the baseline's first run (else the first run's); pairing needs the same
    images, so a run scored on other images raises (:func:`_aligned`).
    """
    first = (groups[baseline] if baseline else next(iter(groups.values())))[0]
    reference = first.predictions.reset_index(drop=True)
    aligned = {
        r.namespace: _aligned(reference, r.predictions, (first.namespace, r.namespace))
        for runs in groups.values()
        for r in runs
    }
    return reference["label"], aligned


def _by_seed(runs: Sequence[RunResult], aligned: dict[str, pd.DataFrame]) -> dict[Any, pd.Series]:
    """Hard predictions of ``runs`` by training seed (seed-paired comparisons)."""
    return {r.seed: aligned[r.namespace]["pred"] for r in runs}


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

    With one seed per variant the intervals are percentile bootstraps over test images and the
    test against the baseline is McNemar's exact test (``test`` = ``McNemar``). With several seeds
    every metric is the mean over seeds (``<metric>_std`` beside it), the intervals of accuracy, AUC
    and the accuracy difference resample test images and seeds together
    (:func:`~facescan.evaluation.stats.seeds_bootstrap_ci`), and the test against the baseline is
    that bootstrap's two-sided p-value (``test`` = ``bootstrap``); ``mcnemar_p`` then pools the
    discordant images of the seed-paired runs (it holds the trained models fixed). ``p_value`` is the
    test's p-value and ``p_value_holm`` its Holm adjustment across variants: the remarks use them.
    Every interval contains the number it goes with.

    Args:
        results: every evaluated run (several per variant with several seeds).
        baseline: the variant every other one is tested against (``ablation.baseline``).
        n_resamples: bootstrap resamples (``evaluation.bootstrap.n_resamples``).
        confidence: interval coverage (``evaluation.bootstrap.confidence``).
        seed: bootstrap seed (``evaluation.bootstrap.seed``).
        alpha: significance level of the remarks.

    Returns:
        ``(table, remarks)``: the table with :data:`TABLE_COLUMNS` first, then ``delta_acc`` and its
        interval, ``mcnemar_p_holm``, ``p_value``, ``p_value_holm``, ``test``,
        ``acc_at_val_threshold``, ``val_threshold``, ``n_test``, ``n_seeds``, ``is_baseline`` and,
        with several seeds, ``<metric>_std``; and one plain sentence per non-baseline variant.

    Raises:
        ValueError: when there are no results, or two runs were scored on different test images.
    """
    if not results:
        raise ValueError("no evaluated runs: ablation.variants is empty or nothing was evaluated")
    groups = _by_variant(results)
    if baseline is not None and baseline not in groups:
        logger.warning(
            "ablation.baseline %r is not among the evaluated variants %s: no test against it",
            baseline,
            list(groups),
        )
        baseline = None
    labels, by_namespace = _align_all(groups, baseline)
    aligned = {v: [by_namespace[r.namespace] for r in runs] for v, runs in groups.items()}
    several_seeds = any(len(runs) > 1 for runs in groups.values())
    boot = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}

    rows, remarks = [], []
    for variant, runs in groups.items():
        first = runs[0]
        preds = aligned[variant]
        row: dict[str, Any] = {"variant": variant}
        for key in SEED_METRICS:
            mean, std = mean_std([r.metrics.get(key, math.nan) for r in runs])
            row[key] = mean
            if several_seeds:
                row[f"{key}_std"] = std
        if len(runs) == 1:
            row.update(bootstrap_ci(labels, preds[0]["p_fake"], preds[0]["pred"], **boot))
        else:
            ci = seeds_bootstrap_ci(
                labels, [p["p_fake"] for p in preds], [p["pred"] for p in preds], **boot
            )
            row.update({k: v for k, v in ci.items() if k.endswith(("_low", "_high"))})
        for key in ("acc", "auc"):  # the table's number is the metrics' mean: keep it inside
            if math.isfinite(row[key]) and math.isfinite(row[f"{key}_ci_low"]):
                row[f"{key}_ci_low"] = min(row[f"{key}_ci_low"], row[key])
                row[f"{key}_ci_high"] = max(row[f"{key}_ci_high"], row[key])
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
        row["ece"] = mean_std([r.metrics.get("ece", math.nan) for r in runs])[0]
        row["n_test"] = len(labels)
        row["n_seeds"] = len(runs)
        row["is_baseline"] = variant == baseline
        row.update(
            mcnemar_p=math.nan,
            delta_acc=math.nan,
            delta_acc_ci_low=math.nan,
            delta_acc_ci_high=math.nan,
            p_value=math.nan,
            test="",
        )
        if baseline is not None and variant != baseline:
            base = aligned[baseline]
            n_seeds = max(len(preds), len(base))
            if len(preds) == 1 and len(base) == 1:
                test = mcnemar_exact(labels, preds[0]["pred"], base[0]["pred"])
                diff, low, high = bootstrap_difference_ci(
                    labels, preds[0]["pred"], base[0]["pred"], **boot
                )
                row.update(
                    mcnemar_p=test.p_value,
                    p_value=test.p_value,
                    test="McNemar",
                    delta_acc=diff,
                    delta_acc_ci_low=low,
                    delta_acc_ci_high=high,
                )
                name = "McNemar"
            else:
                comp = seeds_bootstrap_difference(
                    labels, [p["pred"] for p in preds], [p["pred"] for p in base], **boot
                )
                base_by_seed = _by_seed(groups[baseline], by_namespace)
                pairs = [
                    (by_namespace[r.namespace]["pred"], base_by_seed[r.seed])
                    for r in runs
                    if r.seed in base_by_seed
                ]
                pooled = (
                    mcnemar_pooled(labels, [a for a, _ in pairs], [b for _, b in pairs]).p_value
                    if pairs
                    else math.nan
                )
                row.update(
                    mcnemar_p=pooled,
                    p_value=comp.p_value,
                    test="bootstrap",
                    delta_acc=comp.difference,
                    delta_acc_ci_low=comp.low,
                    delta_acc_ci_high=comp.high,
                )
                name = "bootstrap (images and seeds)"
            remarks.append(
                comparison_remark(
                    variant,
                    baseline,
                    row["delta_acc"],
                    (row["delta_acc_ci_low"], row["delta_acc_ci_high"]),
                    row["p_value"],
                    len(labels),
                    alpha=alpha,
                    test=name,
                    n_seeds=n_seeds,
                )
            )
        rows.append(row)

    table = pd.DataFrame(rows)
    table["mcnemar_p_holm"] = holm_adjust(table["mcnemar_p"].tolist())
    table["p_value_holm"] = holm_adjust(table["p_value"].tolist())
    extra = [
        "delta_acc",
        "delta_acc_ci_low",
        "delta_acc_ci_high",
        "mcnemar_p_holm",
        "p_value",
        "p_value_holm",
        "test",
        "acc_at_val_threshold",
        "val_threshold",
        "ece",
        "n_test",
        "n_seeds",
        "is_baseline",
    ]
    stds = [f"{k}_std" for k in SEED_METRICS] if several_seeds else []
    return table[list(TABLE_COLUMNS) + extra + stds], remarks


#: The per-run table's columns (one row per variant and seed): nothing the means hide.
RUN_COLUMNS = (
    "namespace",
    "variant",
    "seed",
    *SEED_METRICS,
    "acc_ci_low",
    "acc_ci_high",
    "auc_ci_low",
    "auc_ci_high",
    "mcnemar_p",
    "first_epoch_train_loss",
    "best_epoch",
    "best_val_acc",
    "train_seconds",
    "warning",
)

#: A first-epoch mean training loss above this (chance is ln 2 = 0.69) means the start blew up.
BLOWN_UP_LOSS = 1.0


def runs_table(
    results: Sequence[RunResult],
    *,
    baseline: str | None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per trained run: its own test metrics, image-bootstrap intervals and test.

    ``mcnemar_p`` tests the run against the baseline's run with the same training seed (NaN for
    the baseline's own runs and when the baseline has no run with that seed);
    ``first_epoch_train_loss`` is the mean training loss of the first epoch (a two-class model at
    chance sits at ln 2 = 0.69; far above it, the start of training blew up).

    Returns:
        The columns of :data:`RUN_COLUMNS`, in run order.
    """
    if not results:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    groups = _by_variant(results)
    if baseline is not None and baseline not in groups:
        baseline = None
    labels, aligned = _align_all(groups, baseline)
    boot = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    base_by_seed = _by_seed(groups[baseline], aligned) if baseline else {}
    rows = []
    for r in results:
        preds = aligned[r.namespace]
        row: dict[str, Any] = {"namespace": r.namespace, "variant": r.variant, "seed": r.seed}
        for key in SEED_METRICS:
            row[key] = r.metrics.get(key, math.nan)
        row.update(bootstrap_ci(labels, preds["p_fake"], preds["pred"], **boot))
        row["mcnemar_p"] = math.nan
        if r.variant != baseline and r.seed in base_by_seed:
            row["mcnemar_p"] = mcnemar_exact(labels, preds["pred"], base_by_seed[r.seed]).p_value
        row["first_epoch_train_loss"] = first_epoch_loss(r.history)
        for key in ("best_epoch", "best_val_acc", "train_seconds"):
            row[key] = r.metrics.get(key, math.nan)
        row["warning"] = collapse_warning(preds["pred"], row["auc"], row["auc_ci_low"])
        rows.append(row)
    return pd.DataFrame(rows)[list(RUN_COLUMNS)]


def collapse_warning(pred: Any, auc: float, auc_ci_low: float) -> str:
    """Why a run's test results look collapsed, or ``""``.

    Collapsed: every test image got the same class, or the AUC's interval reaches 0.5 (the run
    cannot be told from chance on this test set).
    """
    classes = set(np.asarray(pred).tolist())
    if len(classes) == 1:
        return f"every test image called {'fake' if classes == {1} else 'real'}"
    if math.isfinite(auc_ci_low) and auc_ci_low <= 0.5:
        return f"AUC {auc:.3f} is within noise of chance (interval from {auc_ci_low:.3f})"
    return ""


def run_warnings(runs: pd.DataFrame) -> list[str]:
    """One sentence per run whose test results look collapsed, with its first-epoch loss."""
    out = []
    for row in runs.itertuples():
        warning = getattr(row, "warning", "")
        if not isinstance(warning, str) or not warning:  # "" reads back from CSV as NaN
            continue
        loss = row.first_epoch_train_loss
        start = ""
        if math.isfinite(loss):
            start = f"; its first-epoch training loss was {loss:.2f} (chance is 0.69"
            start += ": the start of training blew up)" if loss > BLOWN_UP_LOSS else ")"
        out.append(
            f"Run {row.namespace} looks collapsed: {row.warning}{start}. One such run says "
            "little about its variant: compare its other seeds (ablation.seeds) before reading "
            "its row."
        )
    return out


def first_epoch_loss(history: pd.DataFrame | None) -> float:
    """The first epoch's mean training loss from a run's history (NaN without one)."""
    if history is None or len(history) == 0 or "train_loss" not in history:
        return math.nan
    first = history.sort_values("epoch").iloc[0] if "epoch" in history else history.iloc[0]
    return float(first["train_loss"])


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


def markdown_columns(table: pd.DataFrame) -> list[str]:
    """The Markdown table's columns: :data:`TABLE_COLUMNS`, the accuracy at the validation-tuned
    threshold next to the one at 0.5, the calibration error, and the seed-aware test with seeds."""
    columns = [c for c in TABLE_COLUMNS if c in table]
    columns += [c for c in ("acc_at_val_threshold", "ece") if c in table]
    if "n_seeds" in table and (table["n_seeds"] > 1).any():
        at = columns.index("mcnemar_p") + 1 if "mcnemar_p" in columns else len(columns)
        columns[at:at] = ["p_value", "p_value_holm", "n_seeds"]
    return columns


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


#: Columns of :func:`per_source_table`.
SOURCE_COLUMNS = (
    "variant",
    "source",
    "class",
    "n",
    "acc",
    "acc_ci_low",
    "acc_ci_high",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "n_seeds",
)


def _rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum (ties averaged): what roc_auc_score computes."""
    from scipy.stats import rankdata

    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _source_stats(
    y: np.ndarray,
    scores: np.ndarray,
    calls: np.ndarray,
    cls: int,
    own: np.ndarray,
    other: np.ndarray,
) -> tuple[float, float]:
    """Mean over seeds of the accuracy on ``own`` and the AUC of ``own`` against ``other``."""
    idx = np.concatenate([own, other])
    acc = float((calls[:, own] == cls).mean())
    auc = float(np.mean([_rank_auc(y[idx], s[idx]) for s in scores]))
    return acc, auc


def per_source_table(
    runs: Sequence[Any],
    sources: Mapping[str, str],
    *,
    threshold: float | None = 0.5,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy and AUC per image source (camera, generator), the cross-generator protocol of
    CNNDetection / DeepfakeBench: each source's images against every image of the other class.

    For a fake source: accuracy on its images (called fake) and the AUC of its fakes against all
    reals; for a real source: accuracy on its images (called real) and the AUC of all fakes
    against its reals. With several seeds each number is the mean over seeds; the intervals are
    percentile bootstraps that resample the source's images and the other class's (the same
    resample for every seed).

    Args:
        runs: objects with ``variant`` and ``predictions`` (``path``, ``label``, ``p_fake``); the
            runs of one variant scored the same images.
        sources: image path -> source (the manifest's ``source``).
        threshold: the decision threshold for the accuracies (0.5), or None to use each run's
            ``metrics["val_threshold"]``.
        n_resamples: bootstrap resamples (``evaluation.bootstrap``).
        confidence: interval coverage.
        seed: the bootstrap's seed.

    Returns:
        One row per variant and source (:data:`SOURCE_COLUMNS`), variants in the given order.
    """
    by_variant: dict[str, list[Any]] = {}
    for r in runs:
        by_variant.setdefault(r.variant, []).append(r)
    rows = []
    alpha = (1 - confidence) / 2
    for variant, group in by_variant.items():
        first = group[0].predictions.reset_index(drop=True)
        paths = first["path"].astype(str).tolist()
        y = first["label"].to_numpy(dtype=np.int64)
        scores = np.stack(
            [
                r.predictions.set_index("path").loc[paths, "p_fake"].to_numpy(dtype=np.float64)
                for r in group
            ]
        )
        cuts = np.array(
            [
                (r.metrics.get("val_threshold", 0.5) if threshold is None else threshold)
                for r in group
            ],
            dtype=np.float64,
        )[:, None]
        calls = (scores > cuts).astype(np.int64)
        src = np.array([sources.get(p, "unknown") for p in paths], dtype=object)
        rng = np.random.default_rng(seed)
        for name in sorted(set(src)):
            own = np.flatnonzero(src == name)
            cls = int(np.bincount(y[own]).argmax())
            other = np.flatnonzero(y != cls)

            acc, auc = _source_stats(y, scores, calls, cls, own, other)
            boot = np.array(
                [
                    _source_stats(
                        y,
                        scores,
                        calls,
                        cls,
                        rng.choice(own, len(own)),
                        rng.choice(other, len(other)),
                    )
                    for _ in range(n_resamples if len(other) else 0)
                ]
            ).reshape(-1, 2)
            low = np.nanquantile(boot, alpha, axis=0) if len(boot) else [math.nan] * 2
            high = np.nanquantile(boot, 1 - alpha, axis=0) if len(boot) else [math.nan] * 2
            rows.append(
                {
                    "variant": variant,
                    "source": str(name),
                    "class": "fake" if cls == 1 else "real",
                    "n": len(own),
                    "acc": acc,
                    "acc_ci_low": min(float(low[0]), acc),
                    "acc_ci_high": max(float(high[0]), acc),
                    "auc": auc,
                    "auc_ci_low": min(float(low[1]), auc) if math.isfinite(auc) else math.nan,
                    "auc_ci_high": max(float(high[1]), auc) if math.isfinite(auc) else math.nan,
                    "n_seeds": len(group),
                }
            )
    return pd.DataFrame(rows, columns=list(SOURCE_COLUMNS))
