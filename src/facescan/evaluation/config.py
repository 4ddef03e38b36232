"""Typed ``evaluation`` and ``predict`` parameters (:class:`facescan.params.Params`).

Kedro validates ``params:evaluation`` and ``params:predict`` against these before any node runs;
every bad value is named by its key (``evaluation.bootstrap.n_resamples: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from facescan.evaluation.robustness import Perturbation, parse_perturbations
from facescan.params import (
    Amp,
    Device,
    Fraction,
    Integer,
    OptionalPath,
    Params,
    PositiveInt,
    StrictBool,
)

__all__ = ["EvaluationConfig", "PredictConfig"]


def _perturbations(value: Any) -> Any:
    parse_perturbations(value)  # raises naming evaluation.robustness.perturbations.<name>
    return value


class Bootstrap(Params):
    """``evaluation.bootstrap``: the paired percentile bootstrap over test images."""

    section = "evaluation.bootstrap"

    n_resamples: PositiveInt = Field(1000, description="bootstrap resamples")
    confidence: Fraction = Field(0.95, description="interval coverage")
    seed: Integer(0) = Field(0, description="same seed, same paired resamples for every variant")


class Robustness(Params):
    """``evaluation.robustness``: the test images perturbed identically for both classes."""

    section = "evaluation.robustness"

    enabled: StrictBool = Field(True, description="whether the robustness stage runs")
    perturbations: Annotated[Mapping[str, Any] | None, BeforeValidator(_perturbations)] = Field(
        None, description="name: {type: jpeg|blur|resize, quality|sigma|scale: value}"
    )


class EvaluationConfig(Params):
    """The ``evaluation`` parameters (conf/base/parameters_evaluation.yml)."""

    section = "evaluation"

    batch_size: PositiveInt = Field(64, description="images per forward pass")
    num_workers: Integer(0, auto=True) = Field("auto", description='DataLoader workers, or "auto"')
    device: Device = Field("auto", description="auto | cpu | cuda")
    amp: Amp = Field("auto", description="autocast while scoring: auto | bf16 | fp16 | off")
    bootstrap: Bootstrap = Field(default_factory=Bootstrap)
    significance_level: Fraction = Field(
        0.05, description="McNemar's exact test of each variant against ablation.baseline"
    )
    robustness: Robustness = Field(default_factory=Robustness)

    @classmethod
    def from_params(cls, evaluation: Any) -> EvaluationConfig:
        """Validate the ``evaluation`` block (or return a validated one as is).

        Raises:
            ValueError: naming ``evaluation.<key>`` for an unknown key or a bad value.
        """
        return cls.parse(evaluation)

    @property
    def n_resamples(self) -> int:
        """``bootstrap.n_resamples``."""
        return self.bootstrap.n_resamples

    @property
    def confidence(self) -> float:
        """``bootstrap.confidence``."""
        return self.bootstrap.confidence

    @property
    def alpha(self) -> float:
        """The significance level of the remarks."""
        return self.significance_level

    @property
    def perturbations(self) -> tuple[Perturbation, ...]:
        """The robustness perturbations, in order."""
        return tuple(parse_perturbations(self.robustness.perturbations))

    def bootstrap_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`facescan.evaluation.stats.bootstrap_ci`."""
        return {
            "n_resamples": self.bootstrap.n_resamples,
            "confidence": self.bootstrap.confidence,
            "seed": self.bootstrap.seed,
        }


class PredictConfig(Params):
    """The ``predict`` parameters (conf/base/parameters_predict.yml)."""

    section = "predict"

    input_path: OptionalPath = Field(
        None, description="a folder of images (searched recursively) or a text file listing them"
    )
    batch_size: PositiveInt = Field(64, description="images per forward pass")
    threshold: Fraction = Field(0.5, description="p_fake above this -> label 1 (fake)")
    num_workers: Integer(0, auto=True) = Field("auto", description='decoding workers, or "auto"')
    device: Device = Field("auto", description="auto | cpu | cuda")
    amp: Amp = Field("auto", description="auto | bf16 | fp16 | off")

    @classmethod
    def from_params(cls, predict: Any) -> PredictConfig:
        """Validate the ``predict`` block (or return a validated one as is).

        Raises:
            ValueError: naming ``predict.<key>`` for an unknown key or a bad value.
        """
        return cls.parse(predict)
