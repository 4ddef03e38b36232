"""Test helpers: a facescan checkpoint without training, and small image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from facescan.checkpoint import CHECKPOINT_FORMAT
from facescan.evaluation.metrics import classification_metrics
from facescan.evaluation.tables import RunResult
from facescan.models import create_model

#: The test environment's model sizes (conf/test/parameters_ablation.yml).
#: A random classifier (zero_init_head off): a zero head would give every image p_fake 0.5.
TEST_MODEL = {
    "vit_dim": 32,
    "vit_depth": 1,
    "vit_heads": 2,
    "aspp_channels": 32,
    "zero_init_head": False,
}


def fake_checkpoint(
    variant: str = "resnet50",
    *,
    namespace: str | None = None,
    cache_size: int = 40,
    input_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
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
        "data_fingerprint": None,  # not trained on any cache: evaluation does not compare it
        "provenance": {"git_commit": "fake"},
    }


def write_images(
    folder: Path, n: int, *, size: int = 48, seed: int = 0, prefix: str = ""
) -> list[Path]:
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


#: The fabricated test set of :func:`fake_run`: 60 images, alternating real and fake.
N = 60
LABELS = np.array([0, 1] * (N // 2))
PATHS = [f"/data/img{i:03d}.jpg" for i in range(N)]


def fake_run(variant: str, seed: int, n_wrong: int, shuffle: bool = False) -> RunResult:
    """A run scored on the 60 images whose first ``n_wrong`` are misclassified."""
    rng = np.random.default_rng(seed)
    p_fake = np.where(LABELS == 1, 0.8, 0.2) + rng.uniform(-0.1, 0.1, N)
    p_fake[:n_wrong] = 1 - p_fake[:n_wrong]  # the first n_wrong images are misclassified
    logits = np.stack([np.zeros(N), np.log(p_fake / (1 - p_fake))], axis=1)
    metrics = classification_metrics(LABELS, logits)
    metrics.update(
        params=1000 + len(variant),
        gflops=0.5 * len(variant),
        images_per_s=100.0,
        train_seconds=10.0,
        best_epoch=2,
        val_threshold=0.5,
        acc_at_val_threshold=0.9,
    )
    preds = pd.DataFrame(
        {"path": PATHS, "label": LABELS, "p_fake": p_fake, "pred": (p_fake > 0.5).astype(int)}
    )
    if shuffle:
        preds = preds.sample(frac=1.0, random_state=0)
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [0.7, 0.5],
            "val_loss": [0.6, 0.55],
            "train_acc": [0.5, 0.7],
            "val_acc": [0.6, 0.65],
        }
    )
    robustness = pd.DataFrame(
        {
            "perturbation": ["clean", "jpeg_q50"],
            "acc": [metrics["acc"], metrics["acc"] - 0.1],
            "auc": [metrics["auc"], 0.7],
            "loss": [0.5, 0.8],
            "n": [N, N],
        }
    )
    return RunResult(
        variant if seed == 0 else f"{variant}_seed{seed}",
        variant,
        seed,
        metrics,
        preds,
        history,
        robustness,
    )
