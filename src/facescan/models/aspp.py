"""Atrous spatial pyramid pooling as the report defines it (no BN inside the branches)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facescan.models.pooling import GlobalAvgPool2d


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average pool, 1x1 convolution, bilinear back to the input size.

    No BN here (unlike torchvision's DeepLab ``ASPPPooling``): BN on a 1x1 map cannot train at batch 1.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            GlobalAvgPool2d(),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """The report's ASPP: 1x1 and dilated 3x3 branches plus image pooling, concatenated, then
    1x1 convolution, BN, ReLU.

    As in the report's code the branches are bare (bias-free) convolutions: BN and ReLU come once,
    after the projection. Spatial size is kept.

    Args:
        in_channels: input channels (2048 after layer4).
        out_channels: channels of every branch and of the output (256 in the report).
        rates: dilation rates of the 3x3 branches (the report's 3, 5, 7).
    """

    def __init__(
        self, in_channels: int, out_channels: int, rates: Sequence[int] = (3, 5, 7)
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=False)]
        branches += [
            nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r, bias=False)
            for r in rates
        ]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        # (B, C_in, H, W) -> (B, C_out, H, W)
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))
