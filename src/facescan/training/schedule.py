"""The learning-rate schedule: optional linear warm-up, then the report's cosine, stepped per step.

The report's schedule is ``CosineAnnealingLR(T_max=60, eta_min=1e-6)`` stepped once per epoch. The
same values are produced here by one ``LambdaLR`` stepped after every optimizer step: during epoch
``e`` (0-based) the factor is the closed form of the cosine at ``e``,
``eta_min + (lr - eta_min) (1 + cos(pi e / T_max)) / 2``, constant within the epoch as before. A
linear warm-up (``training.warmup_epochs``, as in DeiT/timm and the ViT paper) multiplies it over
the first ``round(warmup_epochs * steps_per_epoch)`` steps, from ``1 / warmup_steps`` to 1; with no
warm-up the schedule is the report's. Its state (the step count) is part of the resume state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from facescan import runtime

if TYPE_CHECKING:
    from facescan.training.config import TrainConfig

__all__ = ["cosine_with_warmup", "optimizer_and_schedule", "seek", "warmup_steps"]


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """Optimizer steps of the linear warm-up (0: none)."""
    return max(0, round(warmup_epochs * steps_per_epoch))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    *,
    lr: float,
    t_max: int,
    eta_min: float,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR``: linear warm-up, then the per-epoch cosine of the report.

    Every parameter group follows the same factor times its own initial rate (a group of the
    transformer parts at ``lr * transformer_lr_scale`` stays in that ratio).

    Args:
        optimizer: its first group's initial rate is ``lr``.
        lr: the peak learning rate (``training.lr``).
        t_max: cosine period in epochs (``training.t_max``).
        eta_min: cosine floor (``training.eta_min``).
        steps_per_epoch: optimizer steps in one epoch (the training loader's length).
        warmup_epochs: warm-up length in epochs, fractions allowed (``training.warmup_epochs``).

    Raises:
        ValueError: when ``steps_per_epoch`` is not positive.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    warm = warmup_steps(warmup_epochs, steps_per_epoch)

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        cosine = eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * epoch / t_max)) / 2.0
        ramp = min(1.0, (step + 1) / warm) if warm else 1.0
        return ramp * cosine / lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_and_schedule(
    net: nn.Module, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The recipe's optimizer and schedule for ``net``, from the ``training`` configuration.

    Fused AdamW (:func:`~facescan.runtime.make_optimizer`) over the parameter groups of
    :func:`~facescan.runtime.parameter_groups` (the ViTs at ``lr *
    transformer_lr_scale``), and :func:`cosine_with_warmup` stepped once per optimizer step.
    """
    optimizer = runtime.make_optimizer(
        runtime.parameter_groups(net, config.lr, config.transformer_lr_scale),
        config.lr,
        config.weight_decay,
    )
    scheduler = cosine_with_warmup(
        optimizer,
        lr=config.lr,
        t_max=config.t_max,
        eta_min=config.eta_min,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.warmup_epochs,
    )
    return optimizer, scheduler


def seek(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Put ``scheduler`` (and its optimizer's rates) at optimizer step ``step``.

    On resume the saved step count is not enough when the number of steps per epoch changed (the
    same run resumed on another number of GPUs: ``DistributedSampler`` pads each rank's share, so
    the count per epoch can differ by one); seeking to ``(start_epoch - 1) * steps_per_epoch``
    keeps the cosine on its epoch and the warm-up on its fraction of an epoch.
    """
    scheduler.last_epoch = step
    rates = [
        base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, lr in zip(scheduler.optimizer.param_groups, rates, strict=True):
        group["lr"] = lr
    scheduler._last_lr = rates  # what get_last_lr() reports
