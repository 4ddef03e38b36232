"""One epoch of training and one pass of validation: objects in, numbers out (as DeiT).

The functions take built objects (model, criterion, loader, optimizer), not configuration, and
work the same in one process and under DistributedDataParallel: sums are all-reduced when a
process group is initialised, so every rank returns the same global metrics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from facescan.runtime import autocast

__all__ = ["NonFiniteLossError", "evaluate", "train_one_epoch"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the step that produced it was not applied."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"non-finite training loss ({value}) at step {step}")
        self.step = step
        self.value = value


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (DDP's forward syncs buffers across ranks, which
    must not happen during evaluation, where ranks see different numbers of batches)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _batch_weight(criterion: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """What a batch's mean loss is averaged over: the sum of the targets' class weights
    (``CrossEntropyLoss(weight=...)`` divides by it), or the batch size."""
    weight = getattr(criterion, "weight", None)
    if weight is None:
        return torch.tensor(float(targets.numel()), device=targets.device)
    return weight[targets].sum().float()


def _to_device(
    images: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    non_blocking = device.type == "cuda"
    images = images.to(device, non_blocking=non_blocking, memory_format=memory_format)
    return images, targets.to(device, non_blocking=non_blocking)


def _finite_max(current: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """The larger of the two, ignoring a non-finite ``norm`` (on the device: no sync)."""
    norm = norm.detach().float()
    return torch.where(torch.isfinite(norm), torch.maximum(current, norm), current)


def _all_reduce(values: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    progress: str | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip_grad_norm: float | None = None,
) -> dict[str, Any]:
    """Train ``model`` for one pass over ``loader``.

    Every step checks the loss before applying it: a NaN or infinite loss (on any rank) raises
    :class:`NonFiniteLossError` on every rank at the same step, with the weights still those of
    the previous step, so no rank is left waiting in a collective.

    Args:
        model: the model (possibly DistributedDataParallel-wrapped), on ``device``.
        criterion: the loss; a ``weight`` attribute (class weights) is honoured when averaging.
        loader: yields ``(images (B,3,H,W) float, targets (B,) int64)``.
        optimizer: stepped once per batch.
        device: where ``model`` lives.
        amp_dtype: autocast dtype, or None for float32.
        scaler: a ``GradScaler`` for fp16, or None.
        channels_last: move images in channels-last memory format.
        progress: label of the progress bar; None hides it (non-primary ranks).
        scheduler: a learning-rate schedule stepped after every optimizer step (warm-up and the
            cosine are per step: see ``facescan.training.schedule``), or None.
        clip_grad_norm: clip the global L2 norm of the gradients to this value before each
            optimizer step (after unscaling with fp16), or None.

    Returns:
        ``loss`` (weighted mean over the epoch, all ranks), ``acc``, ``images`` (global count),
        ``seconds``, ``images_per_s``, ``first_step_seconds`` (includes compilation), ``lrs``
        (the learning rate of every step) and ``grad_norm_max`` (the largest gradient norm
        before clipping; NaN when not clipping).

    Raises:
        NonFiniteLossError: when a loss is NaN or infinite.
    """
    model.train()
    distributed = _distributed()
    world = dist.get_world_size() if distributed else 1
    # [weighted loss sum, weight sum, correct, count], accumulated on the device.
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(
        loader,
        total=total,
        desc=progress,
        unit="batch",
        leave=False,
        disable=True if progress is None else None,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    first_step = math.nan
    seen = 0
    lrs: list[float] = []
    grad_norm_max = torch.zeros((), dtype=torch.float32, device=device)
    params = [p for p in model.parameters() if p.requires_grad] if clip_grad_norm else []
    for step, (images, targets) in enumerate(bar):
        images, targets = _to_device(images, targets, device, channels_last)
        with autocast(device, amp_dtype):
            logits = model(images)
            loss = criterion(logits.float(), targets)
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        # One scalar collective per step keeps ranks in lockstep when a loss goes bad on one.
        if _all_reduce(bad).item() > 0:
            raise NonFiniteLossError(step, float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        lrs.append(optimizer.param_groups[0]["lr"])
        (loss if scaler is None else scaler.scale(loss)).backward()
        if clip_grad_norm:
            if scaler is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            norm = nn.utils.clip_grad_norm_(params, clip_grad_norm)
            grad_norm_max = _finite_max(grad_norm_max, norm)  # fp16 overflow steps give inf
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            weight = _batch_weight(criterion, targets)
            correct = (logits.argmax(dim=1) == targets).sum()
            batch = torch.stack(
                [
                    loss.detach().double() * weight,
                    weight.double(),
                    correct.double(),
                    torch.tensor(targets.numel(), device=device, dtype=torch.float64),
                ]
            )
            totals += batch
        seen += targets.numel() * world
        if step == 0:
            first_step = time.perf_counter() - start
        if not bar.disable:
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{loss.item():.4f}",
                acc=f"{(totals[2] / totals[3]).item():.3f}",
                img_s=f"{seen / max(elapsed, 1e-9):.0f}",
                refresh=False,
            )
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    totals = _all_reduce(totals)
    loss_sum, weight_sum, correct, count = totals.tolist()
    if count == 0:
        raise ValueError(
            "the training loader yielded no batch: fewer training images than training.batch_size "
            "(the last incomplete batch is dropped)"
        )
    return {
        "loss": loss_sum / weight_sum,
        "acc": correct / count,
        "images": count,
        "seconds": seconds,
        "images_per_s": count / max(seconds, 1e-9),
        "first_step_seconds": first_step,
        "lrs": lrs,
        "grad_norm_max": float(grad_norm_max) if clip_grad_norm else math.nan,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Loss and accuracy of ``model`` over ``loader`` (eval mode).

    Under DDP each rank passes its own shard (shards may differ in size: no padding duplicates);
    the sums are all-reduced, so every rank returns the exact metrics of the whole set.

    Returns:
        ``loss`` (weighted mean, as the criterion averages), ``acc`` and ``images``.
    """
    net = _unwrap(model).eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    for images, targets in loader:
        images, targets = _to_device(images, targets, device, channels_last)
        with autocast(device, amp_dtype):
            logits = net(images)
        loss = criterion(logits.float(), targets)
        weight = _batch_weight(criterion, targets)
        totals += torch.stack(
            [
                loss.double() * weight,
                weight.double(),
                (logits.argmax(dim=1) == targets).sum().double(),
                torch.tensor(targets.numel(), device=device, dtype=torch.float64),
            ]
        )
    loss_sum, weight_sum, correct, count = _all_reduce(totals).tolist()
    if count == 0:
        raise ValueError("the evaluation loader yielded no batch (empty split)")
    return {"loss": loss_sum / weight_sum, "acc": correct / count, "images": count}
