"""Statistics a reader can trust: paired bootstrap intervals, McNemar's exact test, seed spread.

Pairing. The bootstrap resamples *test images*. The resample indices depend only on the number of
images, the number of resamples and the seed (:func:`bootstrap_indices`), so every variant scored on
the same test set is resampled with the same indices even when each variant is evaluated in its own
Kedro node: intervals of different variants, and of their differences, are paired.

Intervals are percentile intervals (the 2.5th and 97.5th percentiles of the bootstrap distribution for
95%). AUC is computed for all resamples at once through the Mann-Whitney identity
``AUC = (R1 - n1 (n1 + 1) / 2) / (n1 n0)`` with ties ranked by average (``scipy.stats.rankdata``),
which is exactly ``sklearn.metrics.roc_auc_score``; a resample holding one class only has no AUC and
is left out of the AUC interval.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest, rankdata

from facescan.evaluation.metrics import check_scores

logger = logging.getLogger(__name__)

__all__ = [
    "McNemarResult",
    "bootstrap_ci",
    "bootstrap_difference_ci",
    "bootstrap_indices",
    "comparison_remark",
    "holm_adjust",
    "mcnemar_exact",
    "mean_std",
]

# Resamples are drawn in blocks of this many rows, each block from its own child seed, so memory
# stays bounded (block x N indices) and the indices never depend on how they are consumed.
_BLOCK = 100


def bootstrap_indices(
    n: int, n_resamples: int, seed: int, *, block: int = _BLOCK
) -> Iterator[np.ndarray]:
    """Yield the bootstrap resample indices in blocks of (<= block, n) int64 arrays.

    Deterministic in ``(n, n_resamples, seed)``: block k is drawn from ``SeedSequence([seed, k])``.
    Two calls with the same arguments yield the same indices, which is what pairs the variants.

    Raises:
        ValueError: naming the parameter when ``n`` or ``n_resamples`` is not positive.
    """
    if n <= 0:
        raise ValueError(f"cannot bootstrap an empty set (n={n})")
    if n_resamples <= 0:
        raise ValueError(
            f"evaluation.bootstrap.n_resamples must be a positive integer, got {n_resamples}"
        )
    for k, start in enumerate(range(0, n_resamples, _BLOCK)):
        rows = min(_BLOCK, n_resamples - start)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), k]))
        yield rng.integers(0, n, size=(rows, n), dtype=np.int64)


def _resampled_acc_auc(
    labels: np.ndarray, p_fake: np.ndarray, pred: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and AUC of every resample in one block: idx (B, N) -> (B,), (B,)."""
    y = labels[idx]  # (B, N)
    acc = (pred[idx] == y).mean(axis=1)
    ranks = rankdata(p_fake[idx], axis=1)  # average ranks within each resample
    n1 = y.sum(axis=1).astype(np.float64)
    n0 = y.shape[1] - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = ((ranks * y).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    auc[(n1 == 0) | (n0 == 0)] = np.nan
    return acc, auc


def _interval(values: np.ndarray, confidence: float, what: str) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    if len(finite) < len(values):
        warnings.warn(
            f"{len(values) - len(finite)} of {len(values)} bootstrap resamples had one class only "
            f"and no {what}: the {what} interval uses the others",
            stacklevel=3,
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"evaluation.bootstrap.confidence must be in (0, 1), got {confidence}")


def bootstrap_ci(
    labels: Any,
    p_fake: Any,
    pred: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap intervals of accuracy and ROC AUC over resampled test images.

    Args:
        labels: 0 real / 1 fake per image.
        p_fake: score per image (for AUC).
        pred: hard prediction per image (for accuracy).
        n_resamples: number of bootstrap resamples.
        confidence: interval coverage, e.g. 0.95.
        seed: resampling seed; the same seed gives the same (paired) resamples for every variant.

    Returns:
        ``acc_ci_low``, ``acc_ci_high``, ``auc_ci_low``, ``auc_ci_high``.
    """
    _check_confidence(confidence)
    y, p = check_scores(labels, p_fake, name="p_fake")
    _, hard = check_scores(labels, pred, name="pred")
    accs, aucs = [], []
    for idx in bootstrap_indices(len(y), n_resamples, seed):
        acc, auc = _resampled_acc_auc(y, p, hard.astype(np.int64), idx)
        accs.append(acc)
        aucs.append(auc)
    acc_low, acc_high = _interval(np.concatenate(accs), confidence, "accuracy")
    auc_low, auc_high = _interval(np.concatenate(aucs), confidence, "AUC")
    return {
        "acc_ci_low": acc_low,
        "acc_ci_high": acc_high,
        "auc_ci_low": auc_low,
        "auc_ci_high": auc_high,
    }


def bootstrap_difference_ci(
    labels: Any,
    pred_a: Any,
    pred_b: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Paired bootstrap interval of the accuracy difference ``acc(a) - acc(b)`` on the same images.

    Returns:
        ``(difference, low, high)`` with the observed difference and its percentile interval.
    """
    _check_confidence(confidence)
    y, a = check_scores(labels, pred_a, name="pred_a")
    _, b = check_scores(labels, pred_b, name="pred_b")
    # Per-image difference of correctness, then resample it: acc(a) - acc(b) of each resample.
    delta = (a == y).astype(np.float64) - (b == y).astype(np.float64)
    diffs = np.concatenate(
        [delta[idx].mean(axis=1) for idx in bootstrap_indices(len(y), n_resamples, seed)]
    )
    low, high = _interval(diffs, confidence, "accuracy difference")
    return float(delta.mean()), low, high


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's exact test on paired predictions.

    Attributes:
        only_a: images variant A classifies correctly and B does not.
        only_b: images B classifies correctly and A does not.
        p_value: two-sided exact p-value (binomial test of ``only_a`` among the discordant pairs
            against 1/2); 1.0 when there are no discordant pairs.
    """

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(labels: Any, pred_a: Any, pred_b: Any) -> McNemarResult:
    """McNemar's exact test of two classifiers on the same images (``scipy.stats.binomtest``).

    Only the discordant pairs (one right, the other wrong) carry information; under the null
    hypothesis of equal accuracy each of them goes either way with probability 1/2.
    """
    y, a = check_scores(labels, pred_a, name="pred_a")
    _, b = check_scores(labels, pred_b, name="pred_b")
    ok_a, ok_b = a == y, b == y
    only_a = int((ok_a & ~ok_b).sum())
    only_b = int((~ok_a & ok_b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(only_a, only_b, min(p, 1.0))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, family-wise error rate); NaN stays NaN.

    With eight variants compared with one baseline, some raw p-values below 0.05 are expected by
    chance alone; the adjusted ones keep the chance of any false claim below the level.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def comparison_remark(
    name: str,
    baseline: str,
    difference: float,
    ci: tuple[float, float],
    p_value: float,
    n_images: int,
    *,
    alpha: float = 0.05,
) -> str:
    """One plain-language sentence on a variant's accuracy against the baseline.

    Args:
        name: the variant.
        baseline: the baseline variant.
        difference: ``acc(name) - acc(baseline)`` as a fraction.
        ci: its paired bootstrap interval.
        p_value: McNemar's exact p-value.
        n_images: test images both were scored on.
        alpha: significance level.
    """
    pts = 100.0 * difference
    span = f"95% CI {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f} points"
    if not math.isfinite(p_value):
        return f"{name}: no test against {baseline} (p-value unavailable)."
    if p_value >= alpha:
        return (
            f"{name} vs {baseline}: {pts:+.1f} accuracy points ({span}), McNemar p = {p_value:.3g}: "
            f"within noise on {n_images} test images; this test cannot tell them apart."
        )
    word = "more" if difference > 0 else "less"
    return (
        f"{name} vs {baseline}: {pts:+.1f} accuracy points ({span}), McNemar p = {p_value:.3g}: "
        f"{name} is {word} accurate than {baseline} beyond chance at the {alpha:g} level "
        "(one comparison; see the Holm-adjusted p-value when several variants are compared)."
    )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) across seeds; std is NaN for a single seed."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    std = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    return float(np.mean(v)), std
