"""Binary real (0) / fake (1) metrics from a model's logits, built on scikit-learn.

Conventions used everywhere in facescan:

- ``p_fake`` is the softmax probability of class 1 (fake).
- An image is called fake when ``p_fake > threshold``. At the default 0.5 this is the arg-max of the
  logits, ties going to real, exactly as the training loop counts accuracy.
- A threshold read off scikit-learn's ROC curve (whose operating points are ``score >= t``) is
  reported as the midpoint between that score and the next lower one: the same operating point
  under the ``>`` rule, and the value least tied to one particular image.
- The validation-tuned threshold maximises balanced accuracy, which is the same as maximising
  Youden's J = TPR - FPR (balanced accuracy = (J + 1) / 2).

Metrics that are undefined on the data (AUC with one class only, accuracy on fake images when there
are none) are NaN, with a warning, never an exception: a tiny or lopsided test split must not crash
a long run.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from facescan.thresholds import strict_thresholds
from facescan.thresholds import tune_threshold as _tune_threshold

logger = logging.getLogger(__name__)

__all__ = [
    "check_scores",
    "classification_metrics",
    "cross_entropy",
    "equal_error_rate",
    "json_ready",
    "p_fake_from_logits",
    "predict_labels",
    "tune_threshold",
]


def check_scores(
    labels: Any, scores: Any, *, name: str = "scores"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels and per-image scores.

    Args:
        labels: 0 (real) / 1 (fake) per image.
        scores: one value per image (``p_fake``) or a (N, 2) array of logits.
        name: how to call ``scores`` in error messages.

    Returns:
        ``labels`` as int64 (N,) and ``scores`` as float64.

    Raises:
        ValueError: on length mismatch, empty input, labels other than 0/1 or non-finite scores.
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if len(y) == 0:
        raise ValueError("labels is empty: there is nothing to evaluate")
    if s.shape[0] != len(y):
        raise ValueError(f"{name} has {s.shape[0]} rows but labels has {len(y)}")
    if not np.isin(y, (0, 1)).all():
        bad = sorted({int(v) for v in np.unique(y)} - {0, 1})
        raise ValueError(f"labels must be 0 (real) or 1 (fake), found {bad}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(s)).sum())} non-finite values")
    return y.astype(np.int64), s


def p_fake_from_logits(logits: Any) -> np.ndarray:
    """Softmax probability of the fake class (column 1) from (N, 2) logits, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"logits must have shape (N, 2), got {z.shape}")
    return softmax(z, axis=1)[:, 1]


def cross_entropy(labels: Any, logits: Any) -> float:
    """Mean cross-entropy in nats, computed from logits (the report's LOSS; no probability clipping).

    Computed with a float64 log-softmax so that it equals ``torch.nn.functional.cross_entropy`` on
    the same logits, including for saturated outputs where ``log(p)`` of a rounded probability
    would be infinite.
    """
    y, z = check_scores(labels, logits, name="logits")
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"logits must have shape (N, 2), got {z.shape}")
    return float(-log_softmax(z, axis=1)[np.arange(len(y)), y].mean())


def predict_labels(p_fake: Any, threshold: float = 0.5) -> np.ndarray:
    """Hard labels: 1 (fake) where ``p_fake > threshold``, else 0 (real)."""
    return (np.asarray(p_fake, dtype=np.float64) > threshold).astype(np.int64)


def _single_class(y: np.ndarray) -> bool:
    return len(np.unique(y)) < 2


def equal_error_rate(labels: Any, p_fake: Any) -> tuple[float, float]:
    """Equal error rate: where the false-positive rate equals the false-negative rate.

    The crossing is found on scikit-learn's full ROC curve (``drop_intermediate=False``) by linear
    interpolation between the two operating points around it (the usual ROC-convex-hull reading).

    Args:
        labels: 0 real / 1 fake per image.
        p_fake: score per image, higher = more likely fake.

    Returns:
        ``(eer, threshold)``: the rate, and the threshold of the first ROC point at or past the
        crossing (``p_fake > threshold`` called fake). Both NaN (with a warning) when a class is missing.
    """
    y, s = check_scores(labels, p_fake, name="p_fake")
    if _single_class(y):
        warnings.warn("EER is undefined with one class only: returning NaN", stacklevel=2)
        return float("nan"), float("nan")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # non-decreasing along the curve, from -1 to +1
    i = int(np.argmax(diff >= 0))
    if diff[i] == 0 or i == 0:
        eer = fpr[i]
    else:
        w = -diff[i - 1] / (diff[i] - diff[i - 1])
        eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    return float(eer), float(strict_thresholds(thresholds)[i])


def tune_threshold(labels: Any, p_fake: Any) -> float:
    """Threshold on ``p_fake`` that maximises balanced accuracy (:func:`facescan.thresholds.
    tune_threshold`, after checking the inputs); training stores it in each checkpoint.

    Returns:
        The threshold (``p_fake > threshold`` is called fake); 0.5 with a warning when a class is
        missing.
    """
    y, s = check_scores(labels, p_fake, name="p_fake")
    return _tune_threshold(y, s)


def expected_calibration_error(labels: Any, p_fake: Any, n_bins: int = 10) -> float:
    """Expected calibration error of ``p_fake`` as the probability of "fake" (Guo et al. 2017).

    Scores are put in ``n_bins`` equal-width bins over [0, 1] (the reliability plot's bins,
    :func:`sklearn.calibration.calibration_curve` with ``strategy="uniform"``); the ECE is the mean,
    weighted by each bin's share of the images, of |fraction of fakes - mean p_fake|. 0 = the
    scores are frequencies; a model that says 0.9 for images of which 60% are fake scores 0.3
    in that bin.
    """
    y, s = check_scores(labels, p_fake, name="p_fake")
    bins = np.clip((s * n_bins).astype(int), 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.mean() * abs(y[mask].mean() - s[mask].mean())
    return float(total)


def _class_accuracy(y: np.ndarray, pred: np.ndarray, cls: int) -> float:
    mask = y == cls
    if not mask.any():
        name = "real" if cls == 0 else "fake"
        warnings.warn(f"no {name} images: acc_{name} is NaN", stacklevel=3)
        return float("nan")
    return float((pred[mask] == cls).mean())


def classification_metrics(
    labels: Any,
    logits: Any,
    *,
    val_labels: Any | None = None,
    val_logits: Any | None = None,
    val_threshold: float | None = None,
) -> dict[str, Any]:
    """Every test metric facescan reports, from labels and (N, 2) logits.

    Args:
        labels: 0 real / 1 fake per test image.
        logits: (N, 2) logits per test image.
        val_labels: validation labels, to tune a threshold (optional).
        val_logits: validation logits, to tune a threshold (optional).
        val_threshold: the threshold to report accuracies at instead of tuning one (the one
            training stored in the checkpoint); with it, no validation scores are needed.

    Returns:
        A JSON-ready dict: ``n``, ``n_real``, ``n_fake``, ``acc``, ``loss`` (mean cross-entropy),
        ``auc``, ``ap`` (average precision, fake = positive), ``eer``, ``eer_threshold``,
        ``acc_real``, ``acc_fake``, ``balanced_acc``, ``confusion_matrix`` ([[TN, FP], [FN, TP]],
        rows = true real/fake), and with validation data ``val_threshold``,
        ``acc_at_val_threshold``, ``balanced_acc_at_val_threshold``, ``acc_real_at_val_threshold``,
        ``acc_fake_at_val_threshold``, ``val_acc``, ``val_loss``.
    """
    y, z = check_scores(labels, logits, name="logits")
    p = p_fake_from_logits(z)
    pred = predict_labels(p)
    out: dict[str, Any] = {
        "n": len(y),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "acc": float((pred == y).mean()),
        "loss": cross_entropy(y, z),
    }
    if _single_class(y):
        warnings.warn(
            f"the test set has one class only ({out['n_real']} real, {out['n_fake']} fake): "
            "AUC, AP and EER are NaN",
            stacklevel=2,
        )
        out["auc"] = out["ap"] = float("nan")
        out["eer"] = out["eer_threshold"] = float("nan")
        out["balanced_acc"] = float("nan")
    else:
        out["auc"] = float(roc_auc_score(y, p))
        out["ap"] = float(average_precision_score(y, p))
        out["eer"], out["eer_threshold"] = equal_error_rate(y, p)
        out["balanced_acc"] = float(balanced_accuracy_score(y, pred))
    out["acc_real"] = _class_accuracy(y, pred, 0)
    out["acc_fake"] = _class_accuracy(y, pred, 1)
    out["confusion_matrix"] = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    out["ece"] = expected_calibration_error(y, p)

    t = None if val_threshold is None else float(val_threshold)
    if val_labels is not None and val_logits is not None:
        vy, vz = check_scores(val_labels, val_logits, name="val_logits")
        vp = p_fake_from_logits(vz)
        t = tune_threshold(vy, vp) if t is None else t
        out["val_acc"] = float((predict_labels(vp) == vy).mean())
        out["val_loss"] = cross_entropy(vy, vz)
    if t is not None:
        tpred = predict_labels(p, t)
        out["val_threshold"] = t
        out["acc_at_val_threshold"] = float((tpred == y).mean())
        out["balanced_acc_at_val_threshold"] = (
            float("nan") if _single_class(y) else float(balanced_accuracy_score(y, tpred))
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # already warned above for the 0.5 threshold
            out["acc_real_at_val_threshold"] = _class_accuracy(y, tpred, 0)
            out["acc_fake_at_val_threshold"] = _class_accuracy(y, tpred, 1)
    return out


def json_ready(value: Any) -> Any:
    """``value`` with NumPy scalars/arrays made plain and NaN/inf replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value
