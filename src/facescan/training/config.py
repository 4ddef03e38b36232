"""The validated training configuration (``training.*`` parameters).

:class:`TrainConfig` is a typed parameter section (:class:`facescan.params.Params`): Kedro validates
``params:training`` against it before any node runs, so a typo, a bad value or a GPU option this
machine cannot honour fails at once, with a message naming the parameter (``training.<key>``) and
the value received.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Annotated, Any

import torch
from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

from facescan import runtime
from facescan.models.tta import TTA_CHOICES
from facescan.models.variants import DEFAULT_OPTIONS, resolve_options
from facescan.params import (
    Amp,
    AutoOrBool,
    AutoOrInt,
    Backend,
    Choice,
    Device,
    Integer,
    NonNegativeFloat,
    NonNegativeInt,
    OptionalPath,
    Params,
    PositiveFloat,
    PositiveInt,
    StrictBool,
)
from facescan.thresholds import THRESHOLD_RULES

logger = logging.getLogger(__name__)

# The keys whose values change the trained weights. They (with the model options and the data) make
# the fingerprint that decides whether a run may resume or be skipped; the others (paths, workers,
# threads, compile, how often to checkpoint) only change how fast or where it runs.
RESULT_KEYS = (
    "max_epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "t_max",
    "eta_min",
    "warmup_epochs",
    "clip_grad_norm",
    "transformer_lr_scale",
    "patience",
    "keep",
    "tta",
    "threshold",
    "class_weights",
    "seed",
    "amp",
    "tf32",
    "sync_batchnorm",
)


def _class_weights(value: Any) -> str | tuple[float, ...] | None:
    if value is None or value == "balanced":
        return value
    if isinstance(value, list | tuple) and len(value) >= 2:
        weights = []
        for w in value:
            if isinstance(w, str):
                try:
                    w = float(w)
                except ValueError:
                    break
            if (
                isinstance(w, bool)
                or not isinstance(w, int | float)
                or not math.isfinite(w)
                or w <= 0
            ):
                break
            weights.append(float(w))
        else:
            return tuple(weights)
    raise ValueError(
        'training.class_weights: expected null, "balanced" or a list with one positive weight '
        f"per class (e.g. [1.0, 2.0]), got {value!r}"
    )


class DistributedConfig(Params):
    """``training.distributed.*``: how many workers one node starts, and how they talk."""

    section = "training.distributed"

    nproc_per_node: AutoOrInt = Field(
        "auto", description='workers on this node; "auto" = the number of visible GPUs, else 1'
    )
    backend: Backend = Field("auto", description="auto (nccl on GPU, gloo on CPU) | gloo | nccl")
    timeout_s: PositiveFloat = Field(
        600.0, description="process-group timeout: a stuck worker fails the node after it"
    )


class TrainConfig(Params):
    """The ``training`` parameters (see conf/base/parameters_training.yml).

    Cross-key checks (``eta_min`` above ``lr``, a warm-up longer than the run) and the machine
    check (``device: cuda``, ``amp: fp16``, ``distributed.backend: nccl`` or more workers than GPUs
    on a machine that cannot honour them) run with the validation; pass the validation context
    ``{"check_machine": False}`` (``TrainConfig.parse(values, check_machine=False)``) to skip the
    latter, e.g. to read a configuration written on another machine.
    """

    section = "training"

    max_epochs: PositiveInt = Field(6, description="upper bound on epochs")
    batch_size: PositiveInt = Field(
        32, description="the global batch, split evenly across DDP ranks"
    )
    lr: PositiveFloat = Field(2e-4, description="AdamW learning rate")
    weight_decay: NonNegativeFloat = Field(1e-4, description="AdamW (decoupled) weight decay")
    t_max: PositiveInt = Field(60, description="CosineAnnealingLR period in epochs")
    eta_min: NonNegativeFloat = Field(1e-6, description="CosineAnnealingLR floor")
    warmup_epochs: NonNegativeFloat = Field(
        0.0, description="linear warm-up per optimizer step over this many epochs; 0 = none"
    )
    clip_grad_norm: PositiveFloat | None = Field(
        None, description="clip the gradients' global L2 norm to this value; null = off"
    )
    transformer_lr_scale: PositiveFloat = Field(
        1.0, description="the ViTs' learning rate is lr times this; 1 = one rate (the report)"
    )
    patience: Integer(1, nullable=True) = Field(
        20, description="epochs without a better validation accuracy before stopping; null: never"
    )
    keep: Choice("best", "last") = Field(
        "best",
        description="which epoch's weights the run keeps: best (highest validation accuracy, ties: "
        "lower validation loss; the report's) or last (the end of the schedule)",
    )
    tta: Choice(*TTA_CHOICES) = Field(
        "none",
        description="how the trained model scores an image, stored in its checkpoint: none (the "
        "report's) or hflip (the mean of the image's and its mirror image's probabilities) for "
        "the validation-tuned threshold, evaluation, robustness, predict and evaluate_external",
    )
    threshold: Choice(*THRESHOLD_RULES) = Field(
        "balanced_accuracy",
        description="how the decision threshold stored in the checkpoint is tuned on the "
        "validation scores: balanced_accuracy (the gap between two validation scores with the "
        "highest balanced accuracy) or logistic (where a class-balanced logistic fit of the "
        "label on the scores' log-odds crosses 1/2: every score counts, steadier on small "
        "validation sets)",
    )
    class_weights: Annotated[str | tuple[float, ...] | None, BeforeValidator(_class_weights)] = (
        Field(None, description='null (all 1), "balanced" or one weight per class')
    )
    seed: NonNegativeInt = Field(42, description="seeds init, shuffling, augmentation, dropout")
    amp: Amp = Field("auto", description="auto | bf16 | fp16 | off")
    channels_last: AutoOrBool = Field("auto", description='"auto" (on where amp is on) or a bool')
    compile: StrictBool = Field(False, description="wrap the model in torch.compile")
    sync_batchnorm: AutoOrBool = Field(
        "auto",
        description="SyncBatchNorm across DDP workers: auto = on CUDA with more than one worker "
        "(BN over the global batch whatever the GPU count); true needs CUDA",
    )
    cudnn_benchmark: StrictBool = Field(
        True, description="cuDNN autotuning for the fixed input size (CUDA only)"
    )
    tf32: StrictBool = Field(
        True, description="TF32 matmuls and convolutions on Ampere and newer (CUDA only)"
    )
    device: Device = Field("auto", description="auto | cpu | cuda")
    num_workers: Integer(0, auto=True) = Field(
        "auto", description='DataLoader workers per rank, or "auto"'
    )
    threads: AutoOrInt = Field("auto", description='torch threads per rank, or "auto"')
    checkpoint_every: PositiveInt = Field(1, description="epochs between resume checkpoints")
    force: StrictBool = Field(False, description="retrain even when the same run already finished")
    tensorboard_dir: OptionalPath = Field(
        "data/08_reporting/tensorboard", description="TensorBoard root; null disables it"
    )
    resume_dir: OptionalPath = Field(
        "data/06_models/_resume",
        description="resume files root; null: a temporary folder, no resume and no skipping",
    )
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    @classmethod
    def from_params(cls, training: Any, *, check_machine: bool = True) -> TrainConfig:
        """Validate the ``training`` parameters; missing keys take the defaults above.

        Args:
            training: the ``training`` parameter dict (or a validated :class:`TrainConfig`).
            check_machine: also refuse GPU options this machine cannot honour (see
                :meth:`check_machine`).

        Raises:
            ValueError: naming ``training.<key>`` for an unknown key or a bad value, or (with
                ``check_machine``) for a GPU option on a machine without one.
        """
        config = cls.parse(training, check_machine=check_machine)
        if isinstance(training, cls) and check_machine:
            config.check_machine()
        return config

    @model_validator(mode="after")
    def _across_keys(self, info: ValidationInfo) -> TrainConfig:
        if self.eta_min > self.lr:
            raise ValueError(
                f"training.eta_min: {self.eta_min} is above training.lr ({self.lr}); "
                "the cosine schedule would rise instead of decay"
            )
        if self.warmup_epochs > self.max_epochs:
            raise ValueError(
                f"training.warmup_epochs: {self.warmup_epochs} is longer than training.max_epochs "
                f"({self.max_epochs}); the learning rate would never reach training.lr"
            )
        if self.keep == "last" and self.patience is not None:
            raise ValueError(
                f"training.keep: last keeps the end of the schedule, but training.patience "
                f"({self.patience}) would cut the schedule at an epoch chosen by validation "
                "accuracy; set training.patience: null, or training.keep: best"
            )
        if self.max_epochs > self.t_max:
            logger.warning(
                "training.max_epochs (%d) > training.t_max (%d): the cosine learning rate rises "
                "again after epoch %d (as in the authors' code); set t_max >= max_epochs to avoid it",
                self.max_epochs,
                self.t_max,
                self.t_max,
            )
        if (info.context or {}).get("check_machine", True):
            self.check_machine()
        return self

    def check_machine(self) -> str:
        """Check the GPU options against this machine, before any work; return the device type.

        ``training.device: cuda``, ``training.amp: fp16``, ``training.distributed.backend: nccl``
        and more ``training.distributed.nproc_per_node`` workers than GPUs are refused, each with
        one sentence saying what was requested, what the machine has, and what to set instead. The
        number of workers is not checked under torchrun, which starts them itself.

        Raises:
            ValueError: naming the parameter.
        """
        device = runtime.device_type(self.device)
        if self.amp == "fp16" and device == "cpu":
            runtime.resolve_precision(self.amp, torch.device("cpu"))
        runtime.resolve_backend(self.distributed.backend, device)
        runtime.use_sync_batchnorm(self.sync_batchnorm, torch.device(device), 1)
        if not ("TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ):
            runtime.resolve_nproc(self.distributed.nproc_per_node, device)
        return device

    def result_affecting(self) -> dict[str, Any]:
        """The options that change the trained weights (part of the run fingerprint)."""
        values = self.to_dict()
        return {k: values[k] for k in RESULT_KEYS}


class ModelParams(Params):
    """The ``model`` parameters: how the weights start, and architecture options applied on top of
    every variant's own (:class:`facescan.models.variants.ModelOptions`; null = the variant's)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    section = "model"

    pretrained: OptionalPath = Field(
        None,
        description="a torchvision resnet50 state dict file, or imagenet (torchvision's "
        "IMAGENET1K_V2 via torch.hub's cache, downloaded once); null = random initialisation",
    )

    @model_validator(mode="after")
    def _options(self) -> ModelParams:
        unknown = sorted(set(self.overrides()) - set(DEFAULT_OPTIONS))
        if unknown:
            raise ValueError(
                f"model.{unknown[0]}: unknown option; valid options are "
                f"{['pretrained', *DEFAULT_OPTIONS]}"
            )
        try:  # bad values fail now, naming the option
            resolve_options({}, **self.overrides())
        except ValueError as exc:
            raise ValueError(f"model.{str(exc).removeprefix('model options: ')}") from None
        return self

    def overrides(self) -> dict[str, Any]:
        """The architecture options set here (null ones left out: the variant's own apply)."""
        return {k: v for k, v in (self.model_extra or {}).items() if v is not None}
