"""The engine functions on their own: exact metrics, order, the NaN guard, no per-step syncs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from facescan import runtime
from facescan.data.loader import build_loader
from facescan.evaluation.scoring import predict_logits
from facescan.training import NonFiniteLossError, engine, evaluate, train_one_epoch

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


class _Batches:
    """A list of batches that counts how many the engine took."""

    def __init__(self, batches: list) -> None:
        self.batches, self.taken = batches, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            self.taken += 1
            yield batch


def _random_batches(n: int, batch: int = 4, poison: int | None = None) -> _Batches:
    """``n`` random batches at the tiny input size; batch ``poison`` holds NaN pixels."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        images = torch.randn(batch, 3, INPUT, INPUT, generator=g)
        if i == poison:
            images[0] = float("nan")
        out.append((images, torch.arange(batch) % 2))
    return _Batches(out)


@pytest.mark.parametrize(("check_every", "taken"), [(50, 10), (2, 4), (1, 3)])
def test_a_nan_loss_names_the_first_non_finite_step_at_the_next_check(
    check_every: int, taken: int
) -> None:
    """The loss is read every ``check_every`` steps and at the epoch's end, not after every
    forward (a host-device sync): the first non-finite step is still the one reported."""
    torch.manual_seed(0)
    model = TinyNet(TINY_OPTIONS)
    optimizer = runtime.make_optimizer(model.parameters(), lr=1e-2, weight_decay=0.0)
    loader = _random_batches(10, poison=2)  # NaN from step 2 on (the weights turn NaN)
    with pytest.raises(
        NonFiniteLossError, match=r"^non-finite training loss \(nan\) at step 2$"
    ) as caught:
        train_one_epoch(
            model, nn.CrossEntropyLoss(), loader, optimizer, device=CPU, check_every=check_every
        )
    assert caught.value.step == 2 and np.isnan(caught.value.value)
    assert loader.taken == taken  # stopped at the first check after step 2 (or the end)


def test_check_every_must_be_positive() -> None:
    model = TinyNet(TINY_OPTIONS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="check_every must be a positive integer, got 0"):
        train_one_epoch(
            model, nn.CrossEntropyLoss(), _random_batches(1), optimizer, device=CPU, check_every=0
        )


@pytest.fixture
def host_syncs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the Python-level reads of tensor values by the host (``.item()``, ``.tolist()``,
    ``float()``/``int()``/``bool()`` of a tensor, ``.numpy()``) and ``torch.tensor(..., device=)``
    (a host-to-device copy): on a GPU each one waits for the device."""
    counts: dict[str, int] = {}

    def counting(name: str, real):
        def wrapper(*args, **kwargs):
            if name != "torch.tensor" or kwargs.get("device") is not None:
                counts[name] = counts.get(name, 0) + 1
            return real(*args, **kwargs)

        return wrapper

    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tensor", counting("torch.tensor", torch.tensor))
    return counts


def _syncs_of_one_epoch(counts: dict[str, int], steps: int, **kwargs) -> int:
    torch.manual_seed(0)
    model = TinyNet(TINY_OPTIONS)
    optimizer = runtime.make_optimizer(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    counts.clear()
    train_one_epoch(
        model,
        nn.CrossEntropyLoss(**kwargs.pop("criterion", {})),
        _random_batches(steps),
        optimizer,
        device=CPU,
        scheduler=scheduler,
        **kwargs,
    )
    return sum(counts.values())


@pytest.mark.parametrize(
    "options",
    [
        {},
        # fp16's path: GradScaler (with the project's fused AdamW), clipping, class weights
        {
            "scaler": "GradScaler",
            "clip_grad_norm": 1.0,
            "criterion": {"weight": torch.tensor([0.5, 2.0])},
        },
    ],
)
def test_a_training_step_does_not_wait_for_the_device(
    host_syncs: dict[str, int], options: dict
) -> None:
    """Issue "Ready for GPUs" item 3: host-device syncs are a constant per epoch, not per step
    (the CPU stands in for the GPU: the same Python calls would wait for a GPU)."""

    def syncs(steps: int, **extra) -> int:
        kwargs = {**options, **extra}
        if kwargs.get("scaler") == "GradScaler":
            kwargs["scaler"] = torch.amp.GradScaler("cpu")
        return _syncs_of_one_epoch(host_syncs, steps, **kwargs)

    few, many = syncs(3), syncs(12)
    assert few == many <= 3, host_syncs  # the end-of-epoch check, the sums, the largest norm
    # Checked every 4 steps: one more read per check, still not one per step.
    assert syncs(12, check_every=4) <= many + 3


def test_evaluation_does_not_wait_for_the_device_per_batch(host_syncs: dict[str, int]) -> None:
    model = TinyNet(TINY_OPTIONS)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0]))
    counts = []
    for n in (2, 8):
        loader = _random_batches(n)
        host_syncs.clear()
        evaluate(model, criterion, loader, device=CPU)
        counts.append(sum(host_syncs.values()))
    assert counts[0] == counts[1] == 1  # the sums, once


class _FakeRanks:
    """Collectives of a 2-rank job, in one process: the other rank's non-finite record at each
    check is scripted (the last one repeats); every collective the engine makes is counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *other: list[float]) -> None:
        self.other = [torch.tensor(record, dtype=torch.float64) for record in other]
        self.calls: list[str] = []
        monkeypatch.setattr(engine, "_distributed", lambda: True)
        monkeypatch.setattr(engine.dist, "get_world_size", lambda *a, **k: 2)
        monkeypatch.setattr(engine.dist, "all_gather", self.all_gather)
        monkeypatch.setattr(engine.dist, "all_reduce", self.all_reduce)

    def all_gather(self, out: list[torch.Tensor], mine: torch.Tensor) -> None:
        out[0].copy_(mine)
        out[1].copy_(self.other[min(self.calls.count("all_gather"), len(self.other) - 1)])
        self.calls.append("all_gather")

    def all_reduce(self, values: torch.Tensor, op=None) -> None:
        self.calls.append("all_reduce")
        values.mul_(2)  # the other rank's sums equal this one's


def test_under_ddp_the_ranks_agree_at_the_checks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """One collective per check (and one for the epoch's sums), none per step; a NaN on another
    rank stops this one at the same check, naming the other rank's first non-finite step."""
    torch.manual_seed(0)
    model = TinyNet(TINY_OPTIONS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ranks = _FakeRanks(monkeypatch, [math.inf, math.inf])  # the other rank stays finite
    stats = train_one_epoch(
        model, nn.CrossEntropyLoss(), _random_batches(10), optimizer, device=CPU, check_every=4
    )
    # checks after steps 4 and 8 and at the end (10), then the sums
    assert ranks.calls == ["all_gather"] * 3 + ["all_reduce"]
    assert stats["images"] == 80  # both ranks' 10 x 4

    # The other rank's loss is finite up to the first check, then inf at step 5.
    ranks = _FakeRanks(monkeypatch, [math.inf, math.inf], [5.0, math.inf])
    loader = _random_batches(12)
    with pytest.raises(NonFiniteLossError, match=r"\(inf\) at step 5$") as caught:
        train_one_epoch(model, nn.CrossEntropyLoss(), loader, optimizer, device=CPU, check_every=4)
    assert (caught.value.step, caught.value.value) == (5, math.inf)
    assert loader.taken == 8 and ranks.calls == ["all_gather"] * 2  # stopped at the 2nd check


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
