"""Decision thresholds on ``p_fake``, shared by training (which stores one in each checkpoint) and
evaluation (which reports accuracy at it): NumPy, SciPy and scikit-learn only."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve

__all__ = [
    "THRESHOLD_RULES",
    "choose_threshold",
    "logistic_threshold",
    "strict_thresholds",
    "tune_threshold",
]


def _both_classes(y: np.ndarray) -> bool:
    """Whether ``y`` holds reals and fakes; warns (nothing to tune: 0.5 is kept) when not."""
    if len(np.unique(y)) < 2:
        warnings.warn("cannot tune a threshold on one class only: keeping 0.5", stacklevel=3)
        return False
    return True


def strict_thresholds(thresholds: np.ndarray) -> np.ndarray:
    """Map roc_curve thresholds (``score >= t``) to the same operating points under ``score > t``.

    Point k keeps exactly the scores >= thresholds[k]; any value in [thresholds[k+1], thresholds[k])
    does that with ``>``; the midpoint is taken. Point 0 (+inf, "nothing is fake") becomes a value
    at or above every probability (JSON has no infinity), the last one a value below every score.
    """
    t = np.asarray(thresholds, dtype=np.float64).copy()
    t[0] = max(1.0, float(t[1])) if len(t) > 1 else 1.0
    below = np.append(t[1:], min(0.0, float(t[-1])) - 1e-9)
    return (t + below) / 2.0


def tune_threshold(labels: np.ndarray, p_fake: np.ndarray) -> float:
    """Threshold on ``p_fake`` that maximises balanced accuracy (equivalently Youden's J).

    Meant for the validation split. Among equally good thresholds the one closest to 0.5 is taken,
    so a perfectly separated validation set does not push the threshold to the edge of its gap.

    Args:
        labels: 0 real / 1 fake per image (int array, already checked).
        p_fake: finite scores per image, higher = more likely fake.

    Returns:
        The threshold (``p_fake > threshold`` is called fake); 0.5 with a warning when a class is
        missing, since nothing can be tuned then.
    """
    y = np.asarray(labels)
    if not _both_classes(y):
        return 0.5
    fpr, tpr, thresholds = roc_curve(
        y, np.asarray(p_fake, dtype=np.float64), drop_intermediate=False
    )
    j = tpr - fpr
    best = np.flatnonzero(np.isclose(j, j.max(), rtol=0.0, atol=1e-12))
    strict = strict_thresholds(thresholds)
    return float(strict[best[np.argmin(np.abs(strict[best] - 0.5))]])


def logistic_threshold(labels: np.ndarray, p_fake: np.ndarray) -> float:
    """Threshold on ``p_fake`` where a class-balanced logistic fit of the label crosses 1/2.

    A logistic regression of the label on the scores' log-odds, each class weighted by the
    inverse of its count (scikit-learn's ``class_weight="balanced"``, default L2 penalty), is a
    smooth model of P(fake | score) under equal class priors; where it crosses 1/2 is the
    balanced-accuracy optimum under that model. Unlike :func:`tune_threshold`, which picks one gap
    between two neighbouring validation scores, every validation score moves it, so a few fakes
    on the wrong side of a small validation set shift it less.

    Args:
        labels: 0 real / 1 fake per image (int array, already checked).
        p_fake: finite scores in [0, 1] per image, higher = more likely fake.

    Returns:
        The threshold (``p_fake > threshold`` is called fake); 0.5 with a warning when a class is
        missing or when the scores do not rank fakes above reals (the fit's slope is not
        positive), since no threshold means anything then.
    """
    y = np.asarray(labels)
    if not _both_classes(y):
        return 0.5
    # Log-odds of p_fake, kept finite where a float32 softmax saturated to exactly 0 or 1.
    z = logit(np.clip(np.asarray(p_fake, dtype=np.float64), 1e-12, 1.0 - 1e-12))
    fit = LogisticRegression(class_weight="balanced").fit(z[:, None], y)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not slope > 0.0:
        warnings.warn(
            "the validation scores do not rank fakes above reals (logistic slope "
            f"{slope:.3g}): keeping 0.5",
            stacklevel=2,
        )
        return 0.5
    return float(expit(-intercept / slope))


def choose_threshold(labels: np.ndarray, p_fake: np.ndarray, rule: str) -> float:
    """The threshold by ``rule`` (``training.threshold``, one of :data:`THRESHOLD_RULES`):
    :func:`tune_threshold` for ``balanced_accuracy``, :func:`logistic_threshold` for ``logistic``.

    Raises:
        ValueError: naming ``training.threshold`` for another rule.
    """
    if rule not in _RULES:
        raise ValueError(
            f"training.threshold must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}"
        )
    return _RULES[rule](labels, p_fake)


_RULES = {"balanced_accuracy": tune_threshold, "logistic": logistic_threshold}
#: How training turns its validation scores into the stored threshold (``training.threshold``).
THRESHOLD_RULES: tuple[str, ...] = tuple(_RULES)
