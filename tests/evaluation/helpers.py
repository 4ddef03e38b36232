"""Test helpers: a facescan checkpoint without training, and small image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from facescan.models import create_model
from facescan.training.checkpoint import CHECKPOINT_FORMAT

#: The test environment's model sizes (conf/test/parameters_ablation.yml).
TEST_MODEL = {"vit_dim": 32, "vit_depth": 1, "vit_heads": 2, "aspp_channels": 32}


def fake_checkpoint(variant: str = "resnet50", *, namespace: str | None = None,
                    cache_size: int = 40, input_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """A checkpoint as training writes it, with random (seeded) weights: no training needed."""
    torch.manual_seed(seed)
    model = create_model(variant, **TEST_MODEL)
    return {
        "format": CHECKPOINT_FORMAT,
        "namespace": namespace or variant,
        "variant": variant,
        "seed": seed,
        "model_options": dict(model.options),
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "config": {"max_epochs": 0},
        "history": [],
        "best_epoch": 1,
        "best_val_acc": 0.5,
        "best_val_loss": 0.7,
        "train_seconds": 0.0,
        "input_size": input_size,
        "cache_size": cache_size,
        "data_fingerprint": "fake",
        "provenance": {"git_commit": "fake"},
    }


def write_images(folder: Path, n: int, *, size: int = 48, seed: int = 0,
                 prefix: str = "") -> list[Path]:
    """``n`` small random RGB JPEGs named ``<prefix><i>.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size + 8 * (i % 3), 3), dtype=np.uint8)
        path = folder / f"{prefix}{i}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths
