"""Patch embedding by a strided convolution."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """``p x p`` patches of a feature map projected to ``dim`` channels by a ``p x p`` stride-``p`` conv.

    Maps whose sides are not multiples of ``p`` are zero-padded at the bottom and right first, so no
    row or column is dropped and any input size works (timm's ``dynamic_img_pad``).

    Args:
        in_channels: channels of the feature map.
        dim: embedding width.
        patch_size: ``p`` (1 makes it a per-position linear projection).
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int = 1) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The token grid ``(rows, columns)`` for a ``height x width`` map."""
        p = self.patch_size
        return -(-height // p), -(-width // p)

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, H, W) -> (B, dim, ceil(H/p), ceil(W/p))
        p = self.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.proj(x)
