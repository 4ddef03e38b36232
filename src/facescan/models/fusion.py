"""The report's FeatureFusion of the four Cross Scan directions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FeatureFusion(nn.Module):
    """Fuse per-direction features ``(B, 4, C)`` into ``(B, C)`` exactly as the report writes it.

    1. flatten to ``(B, 4C)``; FC (4C -> 4C/r), ReLU, FC (4C/r -> 4C), sigmoid: weights ``(B, 4, C)``
       (the report's ``SEBlock1D``, bias-free as in its code);
    2. the direction whose weights have the largest channel mean is taken as is (unweighted);
    3. the other three are multiplied by their weights;
    4. the four are summed.

    Args:
        channels: ``C``.
        directions: number of directions (4).
        reduction: ``r``, the SE squeeze ratio.
    """

    def __init__(self, channels: int, directions: int = 4, reduction: int = 16) -> None:
        super().__init__()
        flat = channels * directions
        if not 1 <= reduction <= flat:
            raise ValueError(f"FeatureFusion reduction must be in 1..{flat}, got {reduction!r}")
        self.directions = directions
        self.se = nn.Sequential(
            nn.Linear(flat, flat // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(flat // reduction, flat, bias=False),
            nn.Sigmoid(),
        )

    @staticmethod
    def choose(weights: Tensor) -> Tensor:
        """The direction kept unweighted: the largest channel mean of its gates, ``(B,)``.

        The mean is taken in float32: under bf16 autocast the gates' bf16 means tie (they all
        start near 0.5) and argmax then picked direction 0 for about a quarter of the images.
        """
        return weights.float().mean(dim=2).argmax(dim=1)  # first maximum on ties

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, 4, C) -> (B, C)
        weights = self.se(x.flatten(1)).view_as(x)  # (B, 4, C)
        best = self.choose(weights)
        keep = F.one_hot(best, self.directions).unsqueeze(-1).bool()  # (B, 4, 1)
        return torch.where(keep, x, weights * x).sum(dim=1)
