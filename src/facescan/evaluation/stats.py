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
    "SeedsComparison",
    "bootstrap_ci",
    "bootstrap_difference_ci",
    "bootstrap_indices",
    "comparison_remark",
    "holm_adjust",
    "mcnemar_exact",
    "mcnemar_pooled",
    "mean_std",
    "seeds_bootstrap_ci",
    "seeds_bootstrap_difference",
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
    test: str = "McNemar",
    n_seeds: int = 1,
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
        test: the test's name in the sentence (``McNemar``, or the bootstrap with several seeds).
        n_seeds: seeds per variant (named in the sentence when more than one).
    """
    pts = 100.0 * difference
    on = f"{n_images} test images" + (f" and {n_seeds} seeds" if n_seeds > 1 else "")
    span = f"95% CI {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f} points"
    if not math.isfinite(p_value):
        return f"{name}: no test against {baseline} (p-value unavailable)."
    if p_value >= alpha:
        return (
            f"{name} vs {baseline}: {pts:+.1f} accuracy points ({span}), {test} p = {p_value:.3g}: "
            f"within noise on {on}; this test cannot tell them apart."
        )
    word = "more" if difference > 0 else "less"
    return (
        f"{name} vs {baseline}: {pts:+.1f} accuracy points ({span}), {test} p = {p_value:.3g}: "
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


# --- several seeds -------------------------------------------------------------------------------
#
# With several training seeds per variant a table entry is the mean over seeds, and its uncertainty
# has two sources: which test images were drawn, and which training run (seed) was drawn. The
# intervals below resample both together (a two-level bootstrap): every resample draws the test
# images with replacement (the same indices for every variant, as above, so comparisons stay
# paired over images) and, independently, the variant's seeds with replacement; the statistic is the
# mean over the drawn seeds on the drawn images. With one seed it is exactly the image bootstrap of
# :func:`bootstrap_ci`. With two or three seeds the seed part is an underestimate (a bootstrap over
# S values has variance (S-1)/S of the sample's); the per-seed rows of the report show the spread.


def _seed_draws(n_seeds: int, rows: int, seed: int, block: int, stream: int) -> np.ndarray:
    """(rows, n_seeds) seed indices drawn with replacement; stream 0 draws nothing (one seed)."""
    if n_seeds == 1:
        return np.zeros((rows, 1), dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), block, 1_000 + stream]))
    return rng.integers(0, n_seeds, size=(rows, n_seeds), dtype=np.int64)


def _stack(labels: Any, per_seed: Sequence[Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and one row of scores per seed (S, N), each checked against the labels."""
    if len(per_seed) == 0:
        raise ValueError(f"{name}: no seed to summarise")
    rows = []
    y = None
    for values in per_seed:
        y, v = check_scores(labels, values, name=name)
        rows.append(v)
    assert y is not None
    return y, np.vstack(rows)


def _contain(low: float, high: float, point: float) -> tuple[float, float]:
    """Widen a percentile interval to hold its estimate (it can miss it in degenerate cases)."""
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(point)):
        return low, high
    return min(low, point), max(high, point)


def seeds_bootstrap_ci(
    labels: Any,
    p_fake: Sequence[Any],
    pred: Sequence[Any],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Intervals of the across-seed mean accuracy and AUC, resampling images and seeds together.

    Args:
        labels: 0 real / 1 fake per test image (the same images for every seed, in one order).
        p_fake: one score array per seed.
        pred: one hard-prediction array per seed.
        n_resamples: bootstrap resamples.
        confidence: interval coverage.
        seed: resampling seed (image indices are those of :func:`bootstrap_indices`).

    Returns:
        ``acc``, ``auc`` (the means over seeds on all images) and ``acc_ci_low``, ``acc_ci_high``,
        ``auc_ci_low``, ``auc_ci_high``; each interval contains its estimate. With one seed the
        intervals equal :func:`bootstrap_ci`'s.
    """
    _check_confidence(confidence)
    y, p = _stack(labels, p_fake, "p_fake")
    _, hard = _stack(labels, pred, "pred")
    hard = hard.astype(np.int64)
    n_seeds = p.shape[0]
    accs, aucs = [], []
    for k, idx in enumerate(bootstrap_indices(len(y), n_resamples, seed)):
        per_acc, per_auc = zip(
            *(_resampled_acc_auc(y, p[s], hard[s], idx) for s in range(n_seeds)), strict=True
        )
        draws = _seed_draws(n_seeds, len(idx), seed, k, stream=0)
        accs.append(np.take_along_axis(np.stack(per_acc, axis=1), draws, axis=1).mean(axis=1))
        aucs.append(np.take_along_axis(np.stack(per_auc, axis=1), draws, axis=1).mean(axis=1))
    acc = float(np.mean([(hard[s] == y).mean() for s in range(n_seeds)]))
    auc = float(np.mean([_auc(y, p[s]) for s in range(n_seeds)]))
    acc_low, acc_high = _contain(*_interval(np.concatenate(accs), confidence, "accuracy"), acc)
    auc_low, auc_high = _contain(*_interval(np.concatenate(aucs), confidence, "AUC"), auc)
    return {
        "acc": acc,
        "auc": auc,
        "acc_ci_low": acc_low,
        "acc_ci_high": acc_high,
        "auc_ci_low": auc_low,
        "auc_ci_high": auc_high,
    }


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by the rank identity (NaN with one class), as the resampled AUCs are computed."""
    n1 = float(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float(((rankdata(p) * y).sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass(frozen=True)
class SeedsComparison:
    """A variant against the baseline over several seeds (:func:`seeds_bootstrap_difference`).

    Attributes:
        difference: mean accuracy over the variant's seeds minus the baseline's.
        low: lower bound of its interval.
        high: upper bound.
        p_value: two-sided bootstrap p-value of "no difference" (the share of resampled differences
            on the other side of 0, doubled, with the usual +1 correction: never below
            ``2 / (n_resamples + 1)``).
    """

    difference: float
    low: float
    high: float
    p_value: float


def seeds_bootstrap_difference(
    labels: Any,
    pred_a: Sequence[Any],
    pred_b: Sequence[Any],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> SeedsComparison:
    """Accuracy difference of two variants over seeds and images, with interval and p-value.

    Each resample draws the test images once for both variants (paired over images) and each
    variant's seeds independently (seed ``s`` of two architectures is not the same draw of
    anything). The interval and the p-value come from the same resamples, so they agree: the
    interval excludes 0 about when ``p`` is below ``1 - confidence``.

    Args:
        labels: 0 real / 1 fake per test image.
        pred_a: the variant's hard predictions, one array per seed.
        pred_b: the baseline's, one array per seed (the number of seeds may differ).
        n_resamples: bootstrap resamples.
        confidence: interval coverage.
        seed: resampling seed.
    """
    _check_confidence(confidence)
    y, a = _stack(labels, pred_a, "pred_a")
    _, b = _stack(labels, pred_b, "pred_b")
    ok_a = (a == y).astype(np.float64)  # (Sa, N)
    ok_b = (b == y).astype(np.float64)
    diffs = []
    for k, idx in enumerate(bootstrap_indices(len(y), n_resamples, seed)):
        acc_a = np.stack([row[idx].mean(axis=1) for row in ok_a], axis=1)  # (B, Sa)
        acc_b = np.stack([row[idx].mean(axis=1) for row in ok_b], axis=1)
        draw_a = _seed_draws(len(ok_a), len(idx), seed, k, stream=1)
        draw_b = _seed_draws(len(ok_b), len(idx), seed, k, stream=2)
        diffs.append(
            np.take_along_axis(acc_a, draw_a, axis=1).mean(axis=1)
            - np.take_along_axis(acc_b, draw_b, axis=1).mean(axis=1)
        )
    d = np.concatenate(diffs)
    point = float(ok_a.mean() - ok_b.mean())
    low, high = _contain(*_interval(d, confidence, "accuracy difference"), point)
    tail = min((d <= 0).sum(), (d >= 0).sum())
    p = min(1.0, 2.0 * (tail + 1) / (len(d) + 1))
    return SeedsComparison(point, low, high, p)


def mcnemar_pooled(labels: Any, pred_a: Sequence[Any], pred_b: Sequence[Any]) -> McNemarResult:
    """McNemar's exact test on the discordant pairs pooled over seed-paired runs.

    Run ``i`` of ``pred_a`` is paired with run ``i`` of ``pred_b`` (the same training seed); the
    discordant images of every pair are summed and tested as one McNemar test. It treats the trained
    models as fixed, so it says whether *these* runs differ on these images, not whether another
    seed would, and it counts the same test image once per seed as if independent, so its p-value
    is optimistic: the seed-aware test is :func:`seeds_bootstrap_difference`. With one run each it is
    :func:`mcnemar_exact`.

    Raises:
        ValueError: when the two sides have different numbers of runs.
    """
    if len(pred_a) != len(pred_b):
        raise ValueError(
            f"pooled McNemar pairs runs by seed: {len(pred_a)} runs against {len(pred_b)}"
        )
    only_a = only_b = 0
    for a, b in zip(pred_a, pred_b, strict=True):
        r = mcnemar_exact(labels, a, b)
        only_a += r.only_a
        only_b += r.only_b
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(only_a, only_b, min(p, 1.0))
