"""Global average pooling that stays fast in bf16 channels-last on CPUs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_HALF = (torch.bfloat16, torch.float16)


class GlobalAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(1)``: the mean over H and W, ``(B, C, H, W) -> (B, C, 1, 1)``.

    Same result, but half-precision channels-last maps on a CPU go through ``avg_pool2d``: there,
    adaptive pooling to 1x1 runs ``mean``, which first copies the whole map to float32, while
    ``avg_pool2d``'s channels-last kernel accumulates in float32 as it reads (16x faster forward;
    SE-ResNet-50 bf16 steps 1.2x faster, see benchmarks/README.md). Elsewhere ``mean`` is as fast
    or faster, so it is kept.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype in _HALF
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return F.avg_pool2d(x, x.shape[-2:])
        return F.adaptive_avg_pool2d(x, 1)
