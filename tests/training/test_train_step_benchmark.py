"""benchmarks/train_step.py steps as training does (GradScaler, epochs of several steps), on CPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from facescan import runtime
from facescan.training import engine

from .conftest import TINY_OPTIONS, TinyNet, load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("train_step")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record the engine calls instead of training."""
    recorded: list[dict] = []

    def record(model, criterion, loader, optimizer, **kwargs):
        recorded.append({"batches": len(loader), **kwargs})

    monkeypatch.setattr(engine, "train_one_epoch", record)
    return recorded


def test_the_benchmark_steps_with_the_grad_scaler_training_uses(bench, calls) -> None:
    """Issue "Ready for GPUs" item 8: fp16 gets a GradScaler, as in training; the reference
    stays float32 without one; a timed call is an epoch of ``steps`` steps."""
    args = {"size": 32, "batch_size": 4, "compile": False, "check_every": 7}
    fp16 = runtime.Precision(torch.float16, True)
    cpu = torch.device("cpu")
    bench._make_step(TinyNet(TINY_OPTIONS), args, cpu, fp16, False, project=True)(5)
    bench._make_step(TinyNet(TINY_OPTIONS), args, cpu, fp16, False, project=False)(5)
    project, reference = calls
    assert isinstance(project["scaler"], torch.amp.GradScaler)
    assert project["amp_dtype"] is torch.float16
    assert project["batches"] == 5 and project["check_every"] == 7
    assert reference["scaler"] is None and reference["amp_dtype"] is None
    assert bench._steps({"steps": None}, cpu) == 1
    assert bench._steps({"steps": None}, torch.device("cuda", 0)) == 20
    assert bench._per_step({"v": {"wall": [2.0, 4.0]}}, 4) == {"v": {"wall": [0.5, 1.0]}}


def test_host_syncs_count_the_sync_debug_warnings(bench, monkeypatch) -> None:
    modes: list = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    def step() -> None:
        for _ in range(2):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)

    assert bench.host_syncs(step, torch.device("cuda", 0)) == 2
    assert modes == ["warn", "default"]
    assert bench.host_syncs(step, torch.device("cpu")) is None
