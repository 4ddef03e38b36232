"""One epoch of training and one pass of validation: objects in, numbers out (as DeiT).

The functions take built objects (model, criterion, loader, optimizer), not configuration, and
work the same in one process and under DistributedDataParallel: sums are all-reduced when a
process group is initialised, so every rank returns the same global metrics.

A training step never waits for the GPU: sums and the non-finite-loss record stay on the device,
and the host reads them (one collective and one transfer) only every ``check_every`` steps and at
the end of the epoch.
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


#: Steps between two reads of the non-finite-loss record (a host-device sync, and under DDP one
#: collective); the epoch's end always reads it.
CHECK_EVERY = 50


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite.

    ``step`` is the first step (of the epoch, on any rank) whose loss was not finite, ``value``
    that loss. The check runs every ``check_every`` steps, so that step and up to
    ``check_every - 1`` more were applied to the weights: keep the previous epoch's checkpoint.
    """

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


def _batch_sums(
    criterion: nn.Module, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``[loss x weight, weight, correct, count]`` of a batch, float64, on the device (no sync).

    The weight is what the batch's mean loss is averaged over: the sum of the targets' class
    weights (``CrossEntropyLoss(weight=...)`` divides by it), or the batch size. The batch size
    is known on the host: it enters as a scalar argument, never as a host-to-device copy.
    """
    n = targets.numel()
    loss = loss.detach().double()
    correct = (logits.argmax(dim=1) == targets).sum().double()
    weight = getattr(criterion, "weight", None)
    if weight is None:
        count = torch.full_like(loss, n)
        return torch.stack((loss * n, count, correct, count))
    w = weight[targets].sum().double()
    return torch.stack((loss * w, w, correct, torch.full_like(loss, n)))


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


def _record_non_finite(record: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """``record`` (``[first non-finite step or inf, its loss]``, float64, on the device) updated
    with this step's loss, without a sync: the first non-finite step is kept."""
    value = loss.detach().double()
    first = torch.isinf(record[0]) & ~torch.isfinite(value)
    return torch.where(first, torch.stack((torch.full_like(value, step), value)), record)


def _first_non_finite(record: torch.Tensor) -> tuple[int, float] | None:
    """The earliest non-finite step and its loss over all ranks, or None (a host-device sync and,
    under DDP, one ``all_gather``: every rank gets the same answer, ties going to the lowest rank)."""
    if _distributed():
        gathered = [torch.empty_like(record) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, record)
        rows = torch.stack(gathered).tolist()
    else:
        rows = [record.tolist()]
    step, value = min(rows, key=lambda row: row[0])
    return None if math.isinf(step) else (int(step), value)


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
    check_every: int = CHECK_EVERY,
) -> dict[str, Any]:
    """Train ``model`` for one pass over ``loader``.

    The steps do not wait for the device: the sums and a record of the first non-finite loss stay
    on it. Every ``check_every`` steps and at the end of the epoch the record is read (under DDP
    gathered from every rank, so all ranks decide alike at the same step): a NaN or infinite loss
    raises :class:`NonFiniteLossError` naming the first such step and its loss. The steps up to
    the check were applied: the weights are then garbage, and the caller keeps the last
    checkpoint (the trainer keeps the previous epoch's).

    Args:
        model: the model (possibly DistributedDataParallel-wrapped), on ``device``.
        criterion: the loss; a ``weight`` attribute (class weights) is honoured when averaging.
        loader: yields ``(images (B,3,H,W) float, targets (B,) int64)``; on a GPU from pinned
            memory, so that the copies are asynchronous.
        optimizer: stepped once per batch.
        device: where ``model`` lives.
        amp_dtype: autocast dtype, or None for float32.
        scaler: a ``GradScaler`` for fp16, or None.
        channels_last: move images in channels-last memory format.
        progress: label of the progress bar; None hides it (non-primary ranks). Its loss and
            accuracy (running means) are updated at the checks.
        scheduler: a learning-rate schedule stepped after every optimizer step (warm-up and the
            cosine are per step: see ``facescan.training.schedule``), or None.
        clip_grad_norm: clip the global L2 norm of the gradients to this value before each
            optimizer step (after unscaling with fp16), or None.
        check_every: steps between two checks of the loss (each a host-device sync and, under
            DDP, one collective); the epoch's end is always checked.

    Returns:
        ``loss`` (weighted mean over the epoch, all ranks), ``acc``, ``images`` (global count),
        ``seconds``, ``images_per_s``, ``first_step_seconds`` (includes compilation), ``lrs``
        (the learning rate of every step) and ``grad_norm_max`` (the largest gradient norm
        before clipping; NaN when not clipping).

    Raises:
        NonFiniteLossError: when a loss was NaN or infinite (the first one, on any rank).
        ValueError: for a ``check_every`` below 1, or a loader that yields no batch.
    """
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
    model.train()
    distributed = _distributed()
    world = dist.get_world_size() if distributed else 1
    # [weighted loss sum, weight sum, correct, count], accumulated on the device.
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    # [first non-finite step (inf: none), its loss], on the device too.
    non_finite = torch.full((2,), math.inf, dtype=torch.float64, device=device)
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
    checked = 0  # steps checked so far
    for step, (images, targets) in enumerate(bar):
        images, targets = _to_device(images, targets, device, channels_last)
        with autocast(device, amp_dtype):
            logits = model(images)
            loss = criterion(logits.float(), targets)
        non_finite = _record_non_finite(non_finite, loss, step)
        optimizer.zero_grad(set_to_none=True)
        lrs.append(optimizer.param_groups[0]["lr"])
        (loss if scaler is None else scaler.scale(loss)).backward()
        if clip_grad_norm:
            if scaler is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            norm = nn.utils.clip_grad_norm_(params, clip_grad_norm)
            grad_norm_max = _finite_max(grad_norm_max, norm)  # fp16 overflow steps give inf
        if scaler is not None:
            scaler.step(optimizer)  # the project's fused AdamW takes the scale on the device
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            totals += _batch_sums(criterion, loss, logits, targets)
        seen += targets.numel() * world
        if step == 0:
            if device.type == "cuda":  # once per epoch: the first step's time, compilation included
                torch.cuda.synchronize(device)
            first_step = time.perf_counter() - start
        if (step + 1) % check_every == 0:
            checked = step + 1
            _raise_if_non_finite(non_finite)
            if not bar.disable:
                _show(bar, totals, seen, start)
    bar.close()
    if checked < len(lrs):
        _raise_if_non_finite(non_finite)
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


def _raise_if_non_finite(record: torch.Tensor) -> None:
    found = _first_non_finite(record)
    if found is not None:
        raise NonFiniteLossError(*found)


def _show(bar: Any, totals: torch.Tensor, seen: int, start: float) -> None:
    """The progress bar's running loss, accuracy and images/s (this rank's sums: one sync)."""
    loss_sum, weight_sum, correct, count = totals.tolist()
    elapsed = time.perf_counter() - start
    bar.set_postfix(
        loss=f"{loss_sum / max(weight_sum, 1e-12):.4f}",
        acc=f"{correct / max(count, 1):.3f}",
        img_s=f"{seen / max(elapsed, 1e-9):.0f}",
        refresh=False,
    )


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
        totals += _batch_sums(criterion, loss, logits, targets)
    loss_sum, weight_sum, correct, count = _all_reduce(totals).tolist()
    if count == 0:
        raise ValueError("the evaluation loader yielded no batch (empty split)")
    return {"loss": loss_sum / weight_sum, "acc": correct / count, "images": count}
