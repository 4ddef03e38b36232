"""The validated training configuration (``training.*`` parameters).

Every key is checked once, here, so that a typo or a bad value fails before any worker starts, with
a message naming the parameter (``training.<key>``) and the value received.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
BACKEND_CHOICES = ("auto", "gloo", "nccl")

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
    "class_weights",
    "seed",
    "amp",
)


@dataclass(frozen=True)
class DistributedConfig:
    """``training.distributed.*``: how many workers one node starts, and how they talk.

    Attributes:
        nproc_per_node: workers on this node; ``"auto"`` = the number of visible GPUs, else 1.
        backend: ``"auto"`` (nccl on GPU, gloo on CPU), ``"gloo"`` or ``"nccl"``.
        timeout_s: process-group timeout: a worker stuck in a collective fails the node after it.
    """

    nproc_per_node: int | str = "auto"
    backend: str = "auto"
    timeout_s: float = 600.0


@dataclass(frozen=True)
class TrainConfig:
    """The ``training`` parameters, validated (see conf/base/parameters_training.yml).

    Attributes:
        max_epochs: upper bound on epochs.
        batch_size: the global batch, split evenly across DDP ranks.
        lr: AdamW learning rate.
        weight_decay: AdamW (decoupled) weight decay.
        t_max: CosineAnnealingLR period in epochs.
        eta_min: CosineAnnealingLR floor.
        warmup_epochs: linear learning-rate warm-up over this many epochs (fractions allowed),
            per optimizer step, before the cosine; 0 = none (the report).
        clip_grad_norm: clip the gradients' global L2 norm to this value; None = off (the report).
        transformer_lr_scale: the ViTs' learning rate is ``lr`` times this; 1 = one rate (report).
        patience: epochs without a better validation accuracy before stopping (None: never).
        class_weights: None (all 1), ``"balanced"`` (from the train counts) or one weight per class.
        seed: seeds model init, shuffling, augmentation and dropout.
        amp: ``auto`` | ``bf16`` | ``fp16`` | ``off``.
        channels_last: ``"auto"`` (on where amp is on) or a bool.
        compile: wrap the model in ``torch.compile``.
        device: ``auto`` | ``cpu`` | ``cuda``.
        num_workers: DataLoader workers per rank, or ``"auto"``.
        threads: torch intra-op threads per rank, or ``"auto"`` (cores // ranks).
        checkpoint_every: epochs between resume checkpoints.
        force: retrain even when the same fingerprint already finished.
        tensorboard_dir: TensorBoard root (one sub-folder per namespace); None disables it.
        resume_dir: resume files root (one sub-folder per namespace); None: a temporary folder,
            no resume and no skipping.
        distributed: see :class:`DistributedConfig`.
    """

    max_epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 1e-4
    t_max: int = 60
    eta_min: float = 1e-6
    warmup_epochs: float = 0.0
    clip_grad_norm: float | None = None
    transformer_lr_scale: float = 1.0
    patience: int | None = 20
    class_weights: str | tuple[float, ...] | None = None
    seed: int = 42
    amp: str = "auto"
    channels_last: bool | str = "auto"
    compile: bool = False
    device: str = "auto"
    num_workers: int | str = "auto"
    threads: int | str = "auto"
    checkpoint_every: int = 1
    force: bool = False
    tensorboard_dir: str | None = "data/08_reporting/tensorboard"
    resume_dir: str | None = "data/06_models/_resume"
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    @classmethod
    def from_params(
        cls, training: Mapping[str, Any] | None, *, check_machine: bool = True
    ) -> TrainConfig:
        """Validate the ``training`` parameters; missing keys take the defaults above.

        Args:
            training: the ``training`` parameter dict.
            check_machine: also refuse GPU options this machine cannot honour (``device: cuda``,
                ``amp: fp16`` or ``distributed.backend: nccl`` without a visible GPU, more
                workers than GPUs), so that they fail here, before data loading or any worker.

        Returns:
            The validated configuration.

        Raises:
            ValueError: naming ``training.<key>`` for an unknown key or a bad value, or (with
                ``check_machine``) for a GPU option on a machine without one.
        """
        if training is None:
            training = {}
        if not isinstance(training, Mapping):
            raise ValueError(f"training: expected a mapping of options, got {training!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(training) - known)
        if unknown:
            raise ValueError(
                f"training.{unknown[0]}: unknown option; valid options are {sorted(known)}"
            )
        p = dict(training)
        d = cls()
        config = cls(
            max_epochs=_int(p, "max_epochs", d.max_epochs, minimum=1),
            batch_size=_int(p, "batch_size", d.batch_size, minimum=1),
            lr=_float(p, "lr", d.lr, positive=True),
            weight_decay=_float(p, "weight_decay", d.weight_decay),
            t_max=_int(p, "t_max", d.t_max, minimum=1),
            eta_min=_float(p, "eta_min", d.eta_min),
            warmup_epochs=_float(p, "warmup_epochs", d.warmup_epochs),
            clip_grad_norm=(
                None
                if p.get("clip_grad_norm") is None
                else _float(p, "clip_grad_norm", d.clip_grad_norm, positive=True)
            ),
            transformer_lr_scale=_float(
                p, "transformer_lr_scale", d.transformer_lr_scale, positive=True
            ),
            patience=_int(p, "patience", d.patience, minimum=1, nullable=True),
            class_weights=_class_weights(p.get("class_weights", d.class_weights)),
            seed=_int(p, "seed", d.seed, minimum=0),
            amp=_choice(p, "amp", d.amp, AMP_CHOICES),
            channels_last=_auto_or_bool(p, "channels_last", d.channels_last),
            compile=_bool(p, "compile", d.compile),
            device=_choice(p, "device", d.device, DEVICE_CHOICES),
            num_workers=_int(p, "num_workers", d.num_workers, minimum=0, auto=True),
            threads=_int(p, "threads", d.threads, minimum=1, auto=True),
            checkpoint_every=_int(p, "checkpoint_every", d.checkpoint_every, minimum=1),
            force=_bool(p, "force", d.force),
            tensorboard_dir=_path(p, "tensorboard_dir", d.tensorboard_dir),
            resume_dir=_path(p, "resume_dir", d.resume_dir),
            distributed=_distributed(p.get("distributed")),
        )
        if config.eta_min > config.lr:
            raise ValueError(
                f"training.eta_min: {config.eta_min} is above training.lr ({config.lr}); "
                "the cosine schedule would rise instead of decay"
            )
        if config.warmup_epochs > config.max_epochs:
            raise ValueError(
                f"training.warmup_epochs: {config.warmup_epochs} is longer than training.max_epochs "
                f"({config.max_epochs}); the learning rate would never reach training.lr"
            )
        if config.max_epochs > config.t_max:
            logger.warning(
                "training.max_epochs (%d) > training.t_max (%d): the cosine learning rate rises "
                "again after epoch %d (as in the authors' code); set t_max >= max_epochs to avoid it",
                config.max_epochs,
                config.t_max,
                config.t_max,
            )
        if check_machine:
            config.check_machine()
        return config

    def check_machine(self) -> str:
        """Refuse GPU options this machine cannot honour; return the device type (cpu/cuda).

        Raises:
            ValueError: one sentence naming the parameter, what was requested, what the machine
                has and what to set instead (see
                :func:`facescan.training.runtime.check_training_machine`).
        """
        from facescan.training.runtime import check_training_machine

        return check_training_machine(self)

    def result_affecting(self) -> dict[str, Any]:
        """The options that change the trained weights (part of the run fingerprint)."""
        values = self.to_dict()
        return {k: values[k] for k in RESULT_KEYS}

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON-able, ``weights_only``-loadable) dict of every option."""
        values = dataclasses.asdict(self)
        if isinstance(values["class_weights"], tuple):
            values["class_weights"] = list(values["class_weights"])
        return values


def _int(
    p: Mapping[str, Any],
    key: str,
    default: Any,
    *,
    minimum: int,
    nullable: bool = False,
    auto: bool = False,
    prefix: str = "training",
) -> Any:
    value = p.get(key, default)
    if value is None and nullable:
        return None
    if auto and value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}"
        if auto:
            allowed += ' or "auto"'
        if nullable:
            allowed += " or null"
        raise ValueError(f"{prefix}.{key}: expected {allowed}, got {value!r}")
    return value


def _float(
    p: Mapping[str, Any],
    key: str,
    default: float,
    *,
    positive: bool = False,
    prefix: str = "training",
) -> float:
    value = p.get(key, default)
    # YAML 1.1 reads "2e-4" (no dot) as a string; accept any number written as text.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{prefix}.{key}: expected a finite number {bound}, got {value!r}")
    return float(value)


def _bool(p: Mapping[str, Any], key: str, default: bool) -> bool:
    value = p.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"training.{key}: expected true or false, got {value!r}")
    return value


def _auto_or_bool(p: Mapping[str, Any], key: str, default: bool | str) -> bool | str:
    value = p.get(key, default)
    if value != "auto" and not isinstance(value, bool):
        raise ValueError(f'training.{key}: expected "auto", true or false, got {value!r}')
    return value


def _choice(
    p: Mapping[str, Any],
    key: str,
    default: str,
    choices: tuple[str, ...],
    prefix: str = "training",
) -> str:
    value = p.get(key, default)
    # YAML reads a bare `off` as False.
    if value is False and "off" in choices:
        value = "off"
    if value not in choices:
        raise ValueError(f"{prefix}.{key}: expected one of {list(choices)}, got {value!r}")
    return value


def _path(p: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = p.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"training.{key}: expected a folder path or null, got {value!r}")
    return value


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


def _distributed(value: Any) -> DistributedConfig:
    if value is None:
        return DistributedConfig()
    if not isinstance(value, Mapping):
        raise ValueError(f"training.distributed: expected a mapping, got {value!r}")
    known = {f.name for f in dataclasses.fields(DistributedConfig)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(
            f"training.distributed.{unknown[0]}: unknown option; valid options are {sorted(known)}"
        )
    d = DistributedConfig()
    prefix = "training.distributed"
    return DistributedConfig(
        nproc_per_node=_int(
            value, "nproc_per_node", d.nproc_per_node, minimum=1, auto=True, prefix=prefix
        ),
        backend=_choice(value, "backend", d.backend, BACKEND_CHOICES, prefix=prefix),
        timeout_s=_float(value, "timeout_s", d.timeout_s, positive=True, prefix=prefix),
    )
