"""Tiny caches, a tiny stand-in model and a config factory for the training tests.

The real variants all carry a ResNet-50 trunk (23.5 M parameters): a few of those steps cost
seconds on a 2-core CPU. Tests of the loop's logic (resume, early stopping, skipping, TensorBoard,
NaN) swap ``facescan.models.create_model`` for :class:`TinyNet` in-process; the DDP, checkpoint and
pipeline tests use the real models.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from facescan.data.cache import ImageCache, ImageStream, write_cache
from facescan.training import TrainConfig

SIZE, INPUT = 40, 32
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module, leaving ``sys.path`` as it was (the script
    puts benchmarks/ on it for ``_common``)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


def make_cache(path: Path, n: int, seed: int, size: int = SIZE) -> ImageCache:
    """``n`` noisy images, label i % 2: class 1 is brighter (an easy, learnable difference)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = [
        np.clip(rng.normal(80 + 90 * y, 30, (3, size, size)), 0, 255).astype(np.uint8)
        for y in labels
    ]
    stream = ImageStream(
        size, labels, [f"/img/{seed}/{i}.png" for i in range(n)], lambda: iter(images)
    )
    return write_cache(path, stream)


@pytest.fixture(scope="session")
def caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageCache, ImageCache]:
    """(train 32 images, val 16 images), 40 px."""
    root = tmp_path_factory.mktemp("caches")
    return make_cache(root / "train", 32, seed=0), make_cache(root / "val", 16, seed=1)


class TinyNet(nn.Module):
    """Conv-BN-ReLU x2, pooling, dropout, linear: the shape of a classifier, in 1 k parameters."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__()
        self.options = dict(options)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.1),
        )
        self.head = nn.Linear(8, int(options.get("num_classes", 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> type[TinyNet]:
    """Make ``facescan.models.create_model`` build a :class:`TinyNet` (in this process only)."""
    import facescan.models

    monkeypatch.setattr(facescan.models, "create_model", lambda options, **_: TinyNet(options))
    return TinyNet


TINY_OPTIONS = {"num_classes": 2, "tiny": True}


def make_config(tmp_path: Path, **overrides: Any) -> TrainConfig:
    """A fast, deterministic config writing its side files under ``tmp_path``."""
    params: dict[str, Any] = {
        "max_epochs": 3,
        "batch_size": 8,
        "lr": 1e-2,
        "t_max": 3,
        "patience": 5,
        "seed": 0,
        "amp": "off",
        "num_workers": 0,
        "threads": 1,
        "resume_dir": str(tmp_path / "resume"),
        "tensorboard_dir": str(tmp_path / "tb"),
    }
    params.update(overrides)
    return TrainConfig.from_params(params)


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """One torch thread: these tiny models gain nothing from more, and OpenMP threads that
    spin-wait for a busy core make CPU tests many times slower when other processes share it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
