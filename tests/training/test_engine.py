"""The engine functions on their own: exact metrics, order, the NaN guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facescan.data.loader import build_loader
from facescan.evaluation.scoring import predict_logits
from facescan.training import NonFiniteLossError, evaluate, train_one_epoch

from .conftest import INPUT, TINY_OPTIONS, TinyNet

CPU = torch.device("cpu")


def _all(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


def test_train_one_epoch_lowers_the_loss_and_beats_chance(caches) -> None:
    train, val = caches
    torch.manual_seed(0)
    model = TinyNet(TINY_OPTIONS)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = build_loader(train, train=True, input_size=INPUT, batch_size=8, seed=0)
    stats = [train_one_epoch(model, criterion, loader, optimizer, device=CPU) for _ in range(5)]
    assert stats[-1]["loss"] < stats[0]["loss"]
    assert stats[0]["images"] == 32 and stats[0]["images_per_s"] > 0
    val_loader = build_loader(val, train=False, input_size=INPUT, batch_size=5)
    assert evaluate(model, criterion, val_loader, device=CPU)["acc"] >= 0.75


def test_evaluate_is_exact_over_uneven_batches_and_class_weights(caches) -> None:
    _, val = caches
    torch.manual_seed(0)
    model = TinyNet(TINY_OPTIONS).eval()
    criterion = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0]))
    loader = build_loader(val, train=False, input_size=INPUT, batch_size=5)  # 5 + 5 + 5 + 1
    result = evaluate(model, criterion, loader, device=CPU)

    images, labels = _all(loader)
    with torch.no_grad():
        logits = model(images)
    assert result["images"] == 16
    assert result["loss"] == pytest.approx(float(criterion(logits, labels)), rel=1e-6)
    assert result["acc"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))


def test_predict_logits_keeps_the_loader_order(caches) -> None:
    _, val = caches
    model = TinyNet(TINY_OPTIONS)
    loader = build_loader(val, train=False, input_size=INPUT, batch_size=3)
    logits, labels = predict_logits(model, loader, device=CPU)
    assert logits.shape == (16, 2) and logits.dtype == np.float32
    assert labels.dtype == np.int64 and np.array_equal(labels, val.labels)
    images, _ = _all(loader)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model.eval()(images).numpy(), rtol=1e-5, atol=1e-6)


def test_a_nan_loss_raises_before_the_step_is_applied(caches) -> None:
    train, _ = caches
    model = TinyNet(TINY_OPTIONS)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = build_loader(train, train=True, input_size=INPUT, batch_size=8, seed=0)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at step 0"):
        train_one_epoch(model, nn.CrossEntropyLoss(), loader, optimizer, device=CPU)
    after = {k: p.detach() for k, p in model.named_parameters()}
    torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)


def test_clipping_bounds_each_step_and_reports_the_norm_before_it(caches) -> None:
    train, _ = caches
    torch.manual_seed(0)
    model = TinyNet(TINY_OPTIONS)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # the step is the (clipped) gradient
    loader = build_loader(train, train=True, input_size=INPUT, batch_size=32, seed=0)  # 1 step
    stats = train_one_epoch(
        model, nn.CrossEntropyLoss(), loader, optimizer, device=CPU, clip_grad_norm=1e-3
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.linalg.vector_norm(after - before) == pytest.approx(1e-3, rel=1e-3)
    assert stats["grad_norm_max"] > 1e-3  # the norm before clipping
    assert stats["lrs"] == [1.0]
    unclipped = train_one_epoch(model, nn.CrossEntropyLoss(), loader, optimizer, device=CPU)
    assert np.isnan(unclipped["grad_norm_max"])


def test_the_schedule_is_stepped_after_every_optimizer_step(caches) -> None:
    train, _ = caches
    model = TinyNet(TINY_OPTIONS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    loader = build_loader(train, train=True, input_size=INPUT, batch_size=8, seed=0)  # 4 steps
    stats = train_one_epoch(
        model, nn.CrossEntropyLoss(), loader, optimizer, device=CPU, scheduler=scheduler
    )
    assert stats["lrs"] == pytest.approx([1e-3, 1e-3 / 2, 1e-3 / 3, 1e-3 / 4])


def test_the_largest_gradient_norm_ignores_overflowed_steps() -> None:
    from facescan.training.engine import _finite_max

    current = torch.tensor(2.0)
    assert _finite_max(current, torch.tensor(float("inf"))) == 2.0  # an fp16 overflow step
    assert _finite_max(current, torch.tensor(float("nan"))) == 2.0
    assert _finite_max(current, torch.tensor(3.0)) == 3.0


def test_predict_logits_refuses_non_finite_scores(caches) -> None:
    """Issue 13 item 1: a NaN model's scores never become labels (argmax of NaN is 0, "real")."""
    model = TinyNet(TINY_OPTIONS)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    loader = build_loader(caches[1], train=False, input_size=INPUT, batch_size=4)
    with pytest.raises(ValueError, match=r"non-finite scores .* for \d+ of \d+ images"):
        predict_logits(model, loader, device=CPU)
