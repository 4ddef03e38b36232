"""Validated ``evaluation`` and ``predict`` parameters (every bad value named by its key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from facescan.evaluation.robustness import Perturbation, parse_perturbations

__all__ = ["EvaluationConfig", "PredictConfig"]

_DEVICES = ("auto", "cpu", "cuda")
_AMP = ("auto", "bf16", "fp16", "off")


def _unknown(p: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(p) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown key(s) {extra}; valid keys are {sorted(allowed)}")


def _positive_int(p: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = p.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}.{key} must be a positive integer, got {value!r}")
    return value


def _workers(p: Mapping[str, Any], where: str) -> int | str:
    value = p.get("num_workers", "auto")
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}.num_workers must be 'auto' or an integer >= 0, got {value!r}")
    return value


def _choice(p: Mapping[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = p.get(key, choices[0])
    if value is False:  # YAML `off` is read as False
        value = "off"
    if value not in choices:
        raise ValueError(f"{where}.{key} must be one of {list(choices)}, got {value!r}")
    return value


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class EvaluationConfig:
    """The ``evaluation`` parameters.

    Attributes:
        batch_size: images per forward pass.
        num_workers: DataLoader workers (``auto`` = from the machine).
        device: ``auto`` | ``cpu`` | ``cuda``.
        amp: autocast for scoring, ``auto`` | ``bf16`` | ``fp16`` | ``off``.
        n_resamples: bootstrap resamples.
        confidence: bootstrap interval coverage.
        bootstrap_seed: bootstrap seed (same seed, same paired resamples for every variant).
        alpha: significance level of the remarks.
        robustness: whether the robustness stage runs.
        perturbations: the robustness perturbations, in order.
    """

    batch_size: int = 64
    num_workers: int | str = "auto"
    device: str = "auto"
    amp: str = "auto"
    n_resamples: int = 1000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    alpha: float = 0.05
    robustness: bool = True
    perturbations: tuple[Perturbation, ...] = field(default_factory=tuple)

    @classmethod
    def from_params(cls, evaluation: Mapping[str, Any] | None) -> EvaluationConfig:
        """Validate the ``evaluation`` block.

        Raises:
            ValueError: naming ``evaluation.<key>`` for an unknown key or a bad value.
        """
        p = dict(evaluation or {})
        w = "evaluation"
        _unknown(
            p,
            {
                "batch_size",
                "num_workers",
                "device",
                "amp",
                "bootstrap",
                "significance_level",
                "robustness",
            },
            w,
        )
        boot = p.get("bootstrap") or {}
        if not isinstance(boot, Mapping):
            raise ValueError(f"evaluation.bootstrap must be a mapping, got {boot!r}")
        _unknown(boot, {"n_resamples", "confidence", "seed"}, "evaluation.bootstrap")
        seed = boot.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"evaluation.bootstrap.seed must be an integer, got {seed!r}")
        rob = p.get("robustness") or {}
        if not isinstance(rob, Mapping):
            raise ValueError(f"evaluation.robustness must be a mapping, got {rob!r}")
        _unknown(rob, {"enabled", "perturbations"}, "evaluation.robustness")
        enabled = rob.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(
                f"evaluation.robustness.enabled must be true or false, got {enabled!r}"
            )
        return cls(
            batch_size=_positive_int(p, "batch_size", 64, w),
            num_workers=_workers(p, w),
            device=_choice(p, "device", _DEVICES, w),
            amp=_choice(p, "amp", _AMP, w),
            n_resamples=_positive_int(boot, "n_resamples", 1000, "evaluation.bootstrap"),
            confidence=_fraction(boot.get("confidence", 0.95), "evaluation.bootstrap.confidence"),
            bootstrap_seed=seed,
            alpha=_fraction(p.get("significance_level", 0.05), "evaluation.significance_level"),
            robustness=enabled,
            perturbations=tuple(parse_perturbations(rob.get("perturbations"))),
        )

    def bootstrap_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`facescan.evaluation.stats.bootstrap_ci`."""
        return {
            "n_resamples": self.n_resamples,
            "confidence": self.confidence,
            "seed": self.bootstrap_seed,
        }


@dataclass(frozen=True)
class PredictConfig:
    """The ``predict`` parameters.

    Attributes:
        input_path: a folder of images (searched recursively) or a text file listing them.
        batch_size: images per forward pass.
        threshold: ``p_fake`` above which an image is labelled fake (1).
        num_workers: decoding workers (``auto`` = from the machine).
        device: ``auto`` | ``cpu`` | ``cuda``.
        amp: ``auto`` | ``bf16`` | ``fp16`` | ``off``.
    """

    input_path: str | None
    batch_size: int = 64
    threshold: float = 0.5
    num_workers: int | str = "auto"
    device: str = "auto"
    amp: str = "auto"

    @classmethod
    def from_params(cls, predict: Mapping[str, Any] | None) -> PredictConfig:
        """Validate the ``predict`` block.

        Raises:
            ValueError: naming ``predict.<key>`` for an unknown key or a bad value.
        """
        p = dict(predict or {})
        w = "predict"
        _unknown(p, {"input_path", "batch_size", "threshold", "num_workers", "device", "amp"}, w)
        path = p.get("input_path")
        if path is not None and not isinstance(path, str):
            raise ValueError(f"predict.input_path must be a path, got {path!r}")
        return cls(
            input_path=path,
            batch_size=_positive_int(p, "batch_size", 64, w),
            threshold=_fraction(p.get("threshold", 0.5), "predict.threshold"),
            num_workers=_workers(p, w),
            device=_choice(p, "device", _DEVICES, w),
            amp=_choice(p, "amp", _AMP, w),
        )
