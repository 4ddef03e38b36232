"""Test-time augmentation: a trained classifier that scores an image and its mirror image.

``training.tta: hflip`` (stored in the checkpoint as ``tta``) makes every score of a trained model
(the validation-tuned threshold, evaluation, robustness, predict, evaluate_external) the mean of
the class probabilities of the image and of its horizontal mirror. Training already flips at random,
so both views are ones the model learnt; averaging them removes the part of a score that depends
on which way a face looks. The wrapper returns log-probabilities: ``softmax`` of its output is the
mean of the two views' probabilities, so code that takes a softmax, an argmax or a cross-entropy
of logits reads it unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TTA_CHOICES", "HorizontalFlipTTA", "single_view", "with_tta"]

#: The accepted values of ``training.tta`` (and of a checkpoint's ``tta``).
TTA_CHOICES = ("none", "hflip")


class HorizontalFlipTTA(nn.Module):
    """``model`` scoring each image and its horizontal mirror; returns the log of the mean of the
    two views' class probabilities, shape ``(B, C)`` like ``model``'s logits.

    The wrapped model is ``self.model`` (its state dict keys gain a ``model.`` prefix: save the
    inner model's weights, as training does).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        views = torch.stack(
            [
                torch.log_softmax(self.model(x).float(), dim=1),
                torch.log_softmax(self.model(torch.flip(x, dims=(-1,))).float(), dim=1),
            ]
        )
        return torch.logsumexp(views, dim=0) - math.log(2.0)


def with_tta(model: nn.Module, tta: str | None) -> nn.Module:
    """``model`` scoring as ``tta`` says: ``hflip`` wraps it in :class:`HorizontalFlipTTA`;
    ``none`` (or None) returns it as it is.

    Raises:
        ValueError: for another value, naming the accepted ones.
    """
    if tta is None or tta == "none":
        return model
    if tta == "hflip":
        return HorizontalFlipTTA(model)
    raise ValueError(f"tta: expected one of {', '.join(TTA_CHOICES)}, got {tta!r}")


def single_view(model: nn.Module) -> nn.Module:
    """The model under a :class:`HorizontalFlipTTA` wrapper (``model`` itself without one): what
    class-activation maps and parameter counts look at."""
    return model.model if isinstance(model, HorizontalFlipTTA) else model
