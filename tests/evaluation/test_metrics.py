"""Metrics against values computed by hand on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facescan.evaluation.metrics import (
    classification_metrics,
    cross_entropy,
    equal_error_rate,
    predict_labels,
    tune_threshold,
)


def logits_for(p_fake: list[float]) -> np.ndarray:
    """(N, 2) logits whose softmax gives exactly these p_fake."""
    p = np.asarray(p_fake, dtype=np.float64)
    return np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1)


LABELS = [0, 0, 1, 1]
P_FAKE = [0.1, 0.4, 0.35, 0.8]


def test_metrics_on_four_images_match_hand_computation() -> None:
    m = classification_metrics(LABELS, logits_for(P_FAKE))
    # p > 0.5 -> [0, 0, 0, 1]: the fake at 0.35 is missed.
    assert m["acc"] == pytest.approx(0.75)
    assert m["acc_real"] == 1.0 and m["acc_fake"] == 0.5
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    assert m["loss"] == pytest.approx(
        -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    )
    # Pairs (fake, real) ranked correctly: (0.35,0.1) yes, (0.35,0.4) no, (0.8, both) yes -> 3/4.
    assert m["auc"] == pytest.approx(0.75)
    # Ranked: 0.8 (fake) precision 1 at recall 1/2; 0.35 (fake) precision 2/3 at recall 1.
    assert m["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Calling 0.4 and above fake: FPR 1/2 (the real at 0.4), FNR 1/2 (the fake at 0.35).
    assert m["eer"] == pytest.approx(0.5)
    assert m["eer_threshold"] == pytest.approx(0.375)  # midway between 0.4 and 0.35
    assert (m["n"], m["n_real"], m["n_fake"]) == (4, 2, 2)


def test_eer_interpolates_between_roc_points() -> None:
    # ROC points (FPR, FNR): ... (1/3, 1/2) at t=0.7, then (1/3, 0) at t=0.6: the crossing
    # FPR = FNR lies on that segment at 1/3.
    eer, threshold = equal_error_rate([0, 0, 0, 1, 1], [0.1, 0.2, 0.7, 0.6, 0.9])
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.4)  # first point past the crossing: >= 0.6, i.e. > 0.4


def test_perfect_separation_has_zero_eer_and_unit_auc() -> None:
    m = classification_metrics([0, 0, 1, 1], logits_for([0.2, 0.3, 0.6, 0.7]))
    assert m["eer"] == 0.0 and m["auc"] == 1.0 and m["acc"] == 1.0


def test_tuned_threshold_maximises_balanced_accuracy_and_is_used_on_test() -> None:
    # Validation separates at any threshold in [0.2, 0.3): the midpoint 0.25 is taken.
    assert tune_threshold([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.25)
    m = classification_metrics(
        [0, 0, 1, 1],
        logits_for([0.1, 0.26, 0.3, 0.45]),
        val_labels=[0, 0, 1, 1],
        val_logits=logits_for([0.1, 0.2, 0.3, 0.4]),
    )
    assert m["val_threshold"] == pytest.approx(0.25)
    assert m["acc"] == pytest.approx(0.5)  # at 0.5 every test image is called real
    assert m["acc_at_val_threshold"] == pytest.approx(0.75)  # > 0.25: only 0.1 is real
    assert m["acc_real_at_val_threshold"] == 0.5 and m["acc_fake_at_val_threshold"] == 1.0
    assert m["val_acc"] == pytest.approx(0.5)


def test_tuned_threshold_ties_go_to_the_one_closest_to_half() -> None:
    # Youden's J = 1/2 both at "> 0.85" (only the top fake) and at "> 0.2" (all but the 0.1 real).
    assert tune_threshold([0, 1, 0, 1], [0.1, 0.3, 0.8, 0.9]) == pytest.approx(0.2)


def test_predictions_at_half_follow_the_argmax_with_ties_to_real() -> None:
    assert predict_labels([0.5, 0.5000001, 0.2]).tolist() == [0, 1, 0]
    assert predict_labels([0.3, 0.2], threshold=0.25).tolist() == [1, 0]


def test_cross_entropy_equals_torch_even_when_saturated() -> None:
    logits = np.array([[100.0, -100.0], [0.3, -1.2], [2.0, 2.0]], dtype=np.float32)
    labels = np.array([1, 0, 1])
    expected = F.cross_entropy(torch.from_numpy(logits).double(), torch.from_numpy(labels)).item()
    assert cross_entropy(labels, logits) == pytest.approx(expected)
    assert cross_entropy(labels, logits) > 60  # 200 / 3: no clipping of log(0)


def test_one_class_gives_nan_and_warnings_not_a_crash() -> None:
    with pytest.warns(UserWarning) as record:
        m = classification_metrics(
            [0, 0, 0],
            logits_for([0.2, 0.7, 0.1]),
            val_labels=[0, 0],
            val_logits=logits_for([0.1, 0.2]),
        )
    messages = " | ".join(str(w.message) for w in record)
    assert "one class only" in messages and "no fake images" in messages
    assert math.isnan(m["auc"]) and math.isnan(m["ap"]) and math.isnan(m["eer"])
    assert math.isnan(m["acc_fake"]) and m["acc_real"] == pytest.approx(2 / 3)
    assert m["val_threshold"] == 0.5  # nothing to tune on one class


@pytest.mark.parametrize(
    ("labels", "logits", "message"),
    [
        ([0, 2], [[0, 1], [1, 0]], "0 \\(real\\) or 1 \\(fake\\)"),
        ([0, 1, 1], [[0, 1], [1, 0]], "2 rows but labels has 3"),
        ([], np.zeros((0, 2)), "empty"),
        ([0, 1], [[0, np.nan], [1, 0]], "non-finite"),
    ],
)
def test_bad_inputs_raise_clear_errors(labels, logits, message) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(labels, logits)
