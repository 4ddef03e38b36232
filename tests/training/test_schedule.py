"""The learning-rate schedule: the report's per-epoch cosine, with an optional linear warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from facescan.training.schedule import cosine_with_warmup, seek, warmup_steps


def _lrs(steps: int, **kwargs) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=kwargs["lr"])
    scheduler = cosine_with_warmup(optimizer, **kwargs)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_without_warmup_it_is_the_reports_per_epoch_cosine() -> None:
    steps_per_epoch, epochs = 3, 8
    ours = _lrs(steps_per_epoch * epochs, lr=1e-3, t_max=6, eta_min=1e-6, steps_per_epoch=3)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6, eta_min=1e-6)
    expected = []
    for _ in range(epochs):  # stepped once per epoch, as the report (and rising after T_max)
        expected += [optimizer.param_groups[0]["lr"]] * steps_per_epoch
        optimizer.step()
        reference.step()
    assert ours == pytest.approx(expected, rel=1e-9)


def test_warmup_ramps_linearly_per_step_then_follows_the_cosine() -> None:
    lrs = _lrs(12, lr=1e-3, t_max=60, eta_min=1e-6, steps_per_epoch=4, warmup_epochs=1.5)
    assert warmup_steps(1.5, 4) == 6
    cosine_epoch1 = 1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi / 60)) / 2
    # The ramp multiplies the cosine: epoch 0 is steps 0-3, epoch 1 (0-based) steps 4-7.
    cosine = [1e-3] * 4 + [cosine_epoch1] * 2
    assert lrs[:6] == pytest.approx([c * k / 6 for c, k in zip(cosine, range(1, 7), strict=True)])
    assert lrs[6:8] == pytest.approx([cosine_epoch1] * 2)
    assert lrs[8] < lrs[7]


def test_the_schedule_resumes_from_its_state() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    kwargs = {"lr": 1e-3, "t_max": 5, "eta_min": 0.0, "steps_per_epoch": 2, "warmup_epochs": 1}
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = cosine_with_warmup(optimizer, **kwargs)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    optimizer2 = torch.optim.AdamW([param], lr=1e-3)
    resumed = cosine_with_warmup(optimizer2, **kwargs)
    resumed.load_state_dict(state)
    optimizer2.param_groups[0]["lr"] = resumed.get_last_lr()[0]
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_steps_per_epoch_must_be_positive() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        cosine_with_warmup(optimizer, lr=1e-3, t_max=1, eta_min=0, steps_per_epoch=0)


def test_seek_puts_a_resumed_schedule_on_its_epoch_whatever_the_steps_per_epoch() -> None:
    # Saved after 2 epochs of 4 steps; resumed where an epoch has 5 steps (another GPU count).
    kwargs = {"lr": 1e-3, "t_max": 10, "eta_min": 0.0, "warmup_epochs": 1.0}
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = cosine_with_warmup(optimizer, steps_per_epoch=5, **kwargs)
    seek(scheduler, 2 * 5)  # the first step of epoch 3 (0-based epoch 2)
    cosine_epoch2 = 1e-3 * (1 + math.cos(math.pi * 2 / 10)) / 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cosine_epoch2)
    assert scheduler.get_last_lr() == pytest.approx([cosine_epoch2])
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cosine_epoch2)  # same epoch
    seek(scheduler, 2)  # inside the warm-up: 3 of its 5 steps
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 3 / 5)
