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

__all__ = ["EvaluationConfig", "PredictConfig", "ReportingConfig"]


def _perturbations(value: Any) -> Any:
    parse_perturbations(value)  # raises naming evaluation.robustness.perturbations.<name>
    return value


def _threshold(value: Any) -> Any:
    if value == "val":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError('expected "val" or a number in (0, 1)')
    return float(value)


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
    threshold: Annotated[float | str, BeforeValidator(_threshold)] = Field(
        "val",
        description='p_fake above this -> label 1 (fake); "val" = the threshold training tuned '
        "on the validation images (stored in the checkpoint; 0.5 for older checkpoints)",
    )
    num_workers: Integer(0, auto=True) = Field("auto", description='decoding workers, or "auto"')
    device: Device = Field("auto", description="auto | cpu | cuda")
    amp: Amp = Field("auto", description="auto | bf16 | fp16 | off")
    explain: StrictBool = Field(
        False, description="also write a class-activation map PNG per image (explanations/)"
    )
    explain_max: PositiveInt = Field(64, description="at most this many maps (the first files)")

    @classmethod
    def from_params(cls, predict: Any) -> PredictConfig:
        """Validate the ``predict`` block (or return a validated one as is).

        Raises:
            ValueError: naming ``predict.<key>`` for an unknown key or a bad value.
        """
        return cls.parse(predict)


class ExplainConfig(Params):
    """``reporting.explain``: the report's class-activation maps."""

    section = "reporting.explain"

    enabled: StrictBool = Field(True, description='the "Where the models look" section')
    n_images: PositiveInt = Field(
        8,
        description="test images shown (half real, half fake, the baseline's worst mistakes first)",
    )
    seed: Integer(0) = Field(0, description="which other images are drawn")


class ReportingConfig(Params):
    """The ``reporting`` parameters (conf/base/parameters_reporting.yml)."""

    section = "reporting"

    explain: ExplainConfig = Field(default_factory=ExplainConfig)
