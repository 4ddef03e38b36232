"""Decision thresholds on ``p_fake``, shared by training (which stores one in each checkpoint) and
evaluation (which reports accuracy at it): numpy and scikit-learn only."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import roc_curve

__all__ = ["strict_thresholds", "tune_threshold"]


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
    if len(np.unique(y)) < 2:
        warnings.warn("cannot tune a threshold on one class only: keeping 0.5", stacklevel=2)
        return 0.5
    fpr, tpr, thresholds = roc_curve(
        y, np.asarray(p_fake, dtype=np.float64), drop_intermediate=False
    )
    j = tpr - fpr
    best = np.flatnonzero(np.isclose(j, j.max(), rtol=0.0, atol=1e-12))
    strict = strict_thresholds(thresholds)
    return float(strict[best[np.argmin(np.abs(strict[best] - 0.5))]])
