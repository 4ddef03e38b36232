"""Tensor transforms from the uint8 cache to the network's input.

Both work on ``uint8`` tensors ``(3, S, S)`` (or batches ``(B, 3, S, S)``) with
``torchvision.transforms.v2``: geometry first, on uint8 (four times less memory traffic than
float), then conversion to ``float32`` in [0, 1] and ImageNet normalisation.

- training: the report's augmentation, ``RandomResizedCrop(scale=(0.8, 1.0))`` and a random
  horizontal flip;
- evaluation (validation, test, prediction): deterministic ``Resize`` + ``CenterCrop``, so a
  score never depends on a random draw (the authors' code cropped at random there).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "train_transform"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _check_input_size(input_size: int) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"preprocess.input_size must be a positive integer, got {input_size!r}")
    return input_size


def _to_normalised_float() -> list[v2.Transform]:
    return [
        v2.ToDtype(torch.float32, scale=True),  # uint8 0..255 -> float 0..1
        v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ]


def train_transform(input_size: int) -> v2.Compose:
    """The report's training augmentation.

    Args:
        input_size: side of the square network input (``preprocess.input_size``).

    Returns:
        uint8 ``(3, S, S)`` tensor -> normalised float32 ``(3, input_size, input_size)``.
    """
    size = _check_input_size(input_size)
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            *_to_normalised_float(),
        ]
    )


def eval_transform(input_size: int) -> v2.Compose:
    """Deterministic transform for validation, test and prediction.

    Args:
        input_size: side of the square network input (``preprocess.input_size``).

    Returns:
        uint8 ``(3, H, W)`` tensor -> normalised float32 ``(3, input_size, input_size)``
        (shorter side resized to ``input_size``, then a centre crop).
    """
    size = _check_input_size(input_size)
    return v2.Compose(
        [v2.Resize(size, antialias=True), v2.CenterCrop(size), *_to_normalised_float()]
    )
