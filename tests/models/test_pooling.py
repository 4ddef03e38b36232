"""GlobalAvgPool2d: nn.AdaptiveAvgPool2d(1)'s result in every dtype and memory format."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facescan.models import ASPP, GlobalAvgPool2d, SEBottleneck, create_model

from .conftest import SMALL

CASES = [
    (torch.float32, torch.contiguous_format),
    (torch.float32, torch.channels_last),
    (torch.bfloat16, torch.contiguous_format),
    (torch.bfloat16, torch.channels_last),  # the avg_pool2d path
]


@pytest.mark.parametrize(("dtype", "memory_format"), CASES)
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 8)])
def test_matches_adaptive_avg_pool_forward_and_backward(
    dtype: torch.dtype, memory_format: torch.memory_format, size: tuple[int, int]
) -> None:
    x = torch.randn(3, 16, *size).to(dtype).contiguous(memory_format=memory_format)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(3, 16, 1, 1).to(dtype)
    ours, ref = GlobalAvgPool2d()(a), nn.AdaptiveAvgPool2d(1)(b)
    assert ours.shape == ref.shape == (3, 16, 1, 1)
    assert ours.dtype == dtype
    ours.backward(grad)
    ref.backward(grad)
    tol = {"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(ours, ref, **tol)
    torch.testing.assert_close(a.grad, b.grad, **tol)


def test_bf16_channels_last_mean_is_accumulated_in_float32() -> None:
    # 4096 values of 1 + small noise: a bf16 running sum would lose the noise entirely.
    x = (1 + 1e-3 * torch.randn(2, 8, 64, 64)).to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)
    expected = x.float().mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(GlobalAvgPool2d()(x).float(), expected, atol=4e-3, rtol=0)


def test_blocks_and_models_use_it() -> None:
    assert isinstance(
        SEBottleneck(64, 64, downsample=nn.Conv2d(64, 256, 1)).se.avgpool, GlobalAvgPool2d
    )
    assert isinstance(ASPP(32, 8).convs[-1][0], GlobalAvgPool2d)
    assert isinstance(create_model("resnet50", **SMALL).global_pool[0], GlobalAvgPool2d)
