"""The decision-threshold rules training stores in checkpoints (facescan.thresholds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from facescan.thresholds import (
    THRESHOLD_RULES,
    choose_threshold,
    logistic_threshold,
    tune_threshold,
)


def scores(rng: np.random.Generator, n_real: int, n_fake: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and p_fake whose log-odds are N(-1, 1) for reals and N(+1, 1) for fakes: the
    equal-prior optimum is log-odds 0, p_fake 0.5, whatever the class counts."""
    z = np.concatenate([rng.normal(-1.0, 1.0, n_real), rng.normal(1.0, 1.0, n_fake)])
    return np.repeat([0, 1], [n_real, n_fake]), expit(z)


def test_logistic_threshold_finds_the_equal_prior_optimum_despite_imbalance() -> None:
    labels, p_fake = scores(np.random.default_rng(0), 3000, 1000)
    t = logistic_threshold(labels, p_fake)
    # Balanced class weights: the 3:1 count does not pull the threshold towards "fake" (an
    # unweighted fit would cross 1/2 near log-odds log(3) / 2 = 0.55, p_fake 0.63).
    assert abs(logit(t)) < 0.1


def test_logistic_threshold_is_steadier_than_the_best_gap_on_small_validation_sets() -> None:
    rng = np.random.default_rng(1)
    gap, fit = [], []
    for _ in range(200):  # 48 reals and 16 fakes: the faces environment's validation split
        labels, p_fake = scores(rng, 48, 16)
        gap.append(logit(tune_threshold(labels, p_fake)))
        fit.append(logit(logistic_threshold(labels, p_fake)))
    assert np.std(fit) < 0.6 * np.std(gap)
    assert abs(np.mean(fit)) < 0.15  # centred on the optimum


def test_a_separated_validation_set_gives_a_threshold_inside_the_gap() -> None:
    t = logistic_threshold(np.array([0, 0, 0, 1, 1]), np.array([0.01, 0.05, 0.2, 0.7, 0.9]))
    assert 0.2 < t < 0.7


@pytest.mark.parametrize(
    ("labels", "p_fake", "message"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "one class only"),
        ([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2], "do not rank fakes above reals"),
    ],
)
def test_nothing_to_tune_keeps_half_with_a_warning(labels, p_fake, message) -> None:
    with pytest.warns(UserWarning, match=message):
        assert logistic_threshold(np.array(labels), np.array(p_fake)) == 0.5


def test_saturated_probabilities_stay_finite() -> None:
    t = logistic_threshold(np.array([0, 0, 1, 1, 0, 1]), np.array([0.0, 0.1, 1.0, 0.9, 0.6, 0.4]))
    assert 0.0 < t < 1.0


def test_choose_threshold_dispatches_and_names_the_parameter() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    p_fake = np.array([0.1, 0.3, 0.35, 0.8, 0.5, 0.6])
    assert THRESHOLD_RULES == ("balanced_accuracy", "logistic")
    assert choose_threshold(labels, p_fake, "balanced_accuracy") == tune_threshold(labels, p_fake)
    assert choose_threshold(labels, p_fake, "logistic") == logistic_threshold(labels, p_fake)
    with pytest.raises(ValueError, match=r"training\.threshold must be one of .*got 'youden'"):
        choose_threshold(labels, p_fake, "youden")
