"""Bootstrap, McNemar and Holm on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from facescan.evaluation.stats import (
    _resampled_acc_auc,
    bootstrap_ci,
    bootstrap_difference_ci,
    bootstrap_indices,
    comparison_remark,
    holm_adjust,
    mcnemar_exact,
    mcnemar_pooled,
    mean_std,
    seeds_bootstrap_ci,
    seeds_bootstrap_difference,
)


def test_mcnemar_ten_discordant_pairs_all_one_way() -> None:
    labels = np.ones(30, dtype=int)
    a = np.ones(30, dtype=int)  # a is always right
    b = a.copy()
    b[:10] = 0  # b is wrong on 10 images a gets right, and never right where a is wrong
    result = mcnemar_exact(labels, a, b)
    assert (result.only_a, result.only_b) == (10, 0)
    assert result.p_value == pytest.approx(2 * 0.5**10)  # two-sided exact binomial


def test_mcnemar_balanced_or_no_discordance_is_not_significant() -> None:
    labels = np.array([0, 1] * 10)
    a = labels.copy()
    b = labels.copy()
    a[:5] = 1 - a[:5]  # a wrong on 0..4
    b[5:10] = 1 - b[5:10]  # b wrong on 5..9
    assert mcnemar_exact(labels, a, b).p_value == pytest.approx(1.0)
    assert mcnemar_exact(labels, labels, labels).p_value == 1.0


def test_bootstrap_indices_are_seeded_and_shared_between_calls() -> None:
    first = np.concatenate(list(bootstrap_indices(50, 250, seed=3)))
    again = np.concatenate(list(bootstrap_indices(50, 250, seed=3)))
    other = np.concatenate(list(bootstrap_indices(50, 250, seed=4)))
    assert first.shape == (250, 50) and first.min() >= 0 and first.max() < 50
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # More resamples extend the same sequence: the first 250 do not change.
    longer = np.concatenate(list(bootstrap_indices(50, 400, seed=3)))
    np.testing.assert_array_equal(longer[:250], first)


def test_vectorised_auc_equals_sklearn_on_every_resample_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random(40) + 0.3 * labels, 1)  # rounding makes ties
    pred = (scores > 0.5).astype(int)
    idx = next(bootstrap_indices(40, 30, seed=1))
    acc, auc = _resampled_acc_auc(labels, scores, pred, idx)
    for row, (a, u) in zip(idx, zip(acc, auc, strict=True), strict=True):
        assert a == pytest.approx((pred[row] == labels[row]).mean())
        assert u == pytest.approx(roc_auc_score(labels[row], scores[row]))


def test_perfect_classifier_has_degenerate_intervals() -> None:
    labels = np.array([0, 1] * 20)
    ci = bootstrap_ci(labels, labels.astype(float), labels, n_resamples=200, seed=0)
    assert ci == {"acc_ci_low": 1.0, "acc_ci_high": 1.0, "auc_ci_low": 1.0, "auc_ci_high": 1.0}


def test_accuracy_interval_matches_the_normal_approximation() -> None:
    n, acc = 2000, 0.8
    labels = np.zeros(n, dtype=int)
    pred = np.zeros(n, dtype=int)
    pred[: int(n * (1 - acc))] = 1  # 20% wrong
    ci = bootstrap_ci(labels, np.linspace(0, 1, n), pred, n_resamples=1000, seed=0)
    half = 1.96 * math.sqrt(acc * (1 - acc) / n)  # 0.0175
    assert ci["acc_ci_low"] == pytest.approx(acc - half, abs=0.004)
    assert ci["acc_ci_high"] == pytest.approx(acc + half, abs=0.004)
    assert math.isnan(ci["auc_ci_low"])  # one class only: no AUC, no crash


def test_difference_interval_is_paired() -> None:
    labels = np.array([0, 1] * 50)
    same = bootstrap_difference_ci(labels, labels, labels, n_resamples=100)
    assert same == (0.0, 0.0, 0.0)
    better = labels.copy()
    worse = labels.copy()
    worse[:10] = 1 - worse[:10]
    diff, low, high = bootstrap_difference_ci(labels, better, worse, n_resamples=500)
    assert diff == pytest.approx(0.1)
    assert 0.0 < low < 0.1 < high  # always >= 0: a is never worse on any image


def test_holm_adjustment_matches_r_p_adjust() -> None:
    """Reference: R's ``p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm")`` (stats 4.x) gives
    0.05 0.08 0.09 0.09 0.09 (kept by hand: statsmodels' ``multipletests`` is not a dependency)."""
    assert holm_adjust([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(
        [0.05, 0.08, 0.09, 0.09, 0.09]
    )
    assert holm_adjust([0.04, 0.01, 0.9]) == pytest.approx([0.08, 0.03, 0.9])


def test_holm_adjustment() -> None:
    # Sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04).
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm_adjust([float("nan"), 0.5, 0.9])
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([1.0, 1.0])


def test_mean_std_across_seeds() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = mean_std([0.7])
    assert mean == 0.7 and math.isnan(std)


def test_remarks_say_within_noise_or_significant() -> None:
    noise = comparison_remark("vit", "resnet50", 0.01, (-0.02, 0.04), 0.42, 160)
    assert "within noise" in noise and "160 test images" in noise and "+1.0" in noise
    real = comparison_remark("vit", "resnet50", -0.08, (-0.12, -0.04), 0.001, 3000)
    assert "less accurate" in real and "beyond chance" in real


def test_bad_bootstrap_parameters_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="evaluation.bootstrap.n_resamples"):
        bootstrap_ci([0, 1], [0.1, 0.9], [0, 1], n_resamples=0)
    with pytest.raises(ValueError, match="evaluation.bootstrap.confidence"):
        bootstrap_ci([0, 1], [0.1, 0.9], [0, 1], confidence=95)


# --- several seeds -------------------------------------------------------------------------------


def _seeded_preds(n_wrong: int, n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(p_fake, pred) on labels ``[0, 1] * n/2`` with the first ``n_wrong`` images wrong."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    p = np.where(y == 1, 0.8, 0.2) + rng.uniform(-0.15, 0.15, n)
    p[:n_wrong] = 1 - p[:n_wrong]
    return p, (p > 0.5).astype(int)


def test_seeds_bootstrap_with_one_seed_is_the_image_bootstrap() -> None:
    y = np.tile([0, 1], 40)
    p, pred = _seeded_preds(9)
    one = seeds_bootstrap_ci(y, [p], [pred], n_resamples=300, seed=3)
    ref = bootstrap_ci(y, p, pred, n_resamples=300, seed=3)
    for key, value in ref.items():
        assert one[key] == pytest.approx(value)
    assert one["acc"] == pytest.approx(71 / 80)


def test_seeds_bootstrap_interval_holds_the_mean_and_the_seed_spread() -> None:
    y = np.tile([0, 1], 40)
    (p0, d0), (p1, d1) = _seeded_preds(4), _seeded_preds(30, seed=1)
    ci = seeds_bootstrap_ci(y, [p0, p1], [d0, d1], n_resamples=500, seed=0)
    acc0, acc1 = 76 / 80, 50 / 80
    assert ci["acc"] == pytest.approx((acc0 + acc1) / 2)
    assert ci["acc_ci_low"] <= ci["acc"] <= ci["acc_ci_high"]
    assert ci["auc_ci_low"] <= ci["auc"] <= ci["auc_ci_high"]
    # Two seeds 0.32 apart: the interval reaches towards both (an image bootstrap of the mean
    # alone would be about +-0.06 wide).
    assert ci["acc_ci_low"] < acc1 + 0.05 and ci["acc_ci_high"] > acc0 - 0.05
    image_only = bootstrap_ci(y, p0, d0, n_resamples=500, seed=0)
    assert ci["acc_ci_high"] - ci["acc_ci_low"] > 2 * (
        image_only["acc_ci_high"] - image_only["acc_ci_low"]
    )


def test_seeds_difference_separates_a_real_gap_and_not_a_seed_lottery() -> None:
    y = np.tile([0, 1], 40)
    good = [_seeded_preds(k, seed=k)[1] for k in (2, 3, 4)]
    bad = [_seeded_preds(k, seed=k)[1] for k in (20, 22, 24)]
    comp = seeds_bootstrap_difference(y, good, bad, n_resamples=400, seed=0)
    assert comp.difference == pytest.approx((20 + 22 + 24 - 2 - 3 - 4) / 3 / 80)
    assert comp.low <= comp.difference <= comp.high and comp.low > 0
    assert comp.p_value == pytest.approx(2 / 401)
    # One seed lucky, one not, against a steady baseline: no claim.
    lottery = [_seeded_preds(2)[1], _seeded_preds(30, seed=5)[1]]
    steady = [_seeded_preds(16, seed=6)[1], _seeded_preds(16, seed=7)[1]]
    comp = seeds_bootstrap_difference(y, lottery, steady, n_resamples=400, seed=0)
    assert comp.low < 0 < comp.high and comp.p_value > 0.05


def test_mcnemar_pooled_sums_the_discordant_pairs_of_seed_paired_runs() -> None:
    y = np.tile([0, 1], 40)
    a = [_seeded_preds(2)[1], _seeded_preds(3)[1]]
    b = [_seeded_preds(12)[1], _seeded_preds(10)[1]]
    pooled = mcnemar_pooled(y, a, b)
    assert (pooled.only_a, pooled.only_b) == (17, 0)
    assert pooled.p_value == pytest.approx(2 * 0.5**17)
    assert mcnemar_pooled(y, a[:1], b[:1]) == mcnemar_exact(y, a[0], b[0])
    with pytest.raises(ValueError, match="pairs runs by seed: 2 runs against 1"):
        mcnemar_pooled(y, a, b[:1])
