"""HorizontalFlipTTA: the mean of an image's and its mirror image's class probabilities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facescan.models import HorizontalFlipTTA, create_model, single_view, with_tta


class Lopsided(nn.Module):
    """Logits from the left and right halves' means: a model that is not mirror-symmetric."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
        return torch.stack([left, 3.0 * right], dim=1)


def test_output_is_the_log_of_the_mean_of_both_views_probabilities() -> None:
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    inner = Lopsided()
    tta = HorizontalFlipTTA(inner)
    expected = (torch.softmax(inner(x), 1) + torch.softmax(inner(x.flip(-1)), 1)) / 2
    out = tta(x)
    assert out.shape == (5, 2)
    torch.testing.assert_close(torch.softmax(out, 1), expected)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5))  # log-probabilities already
    assert not torch.allclose(torch.softmax(inner(x), 1), expected)  # the mirror image counts
    # A face and its mirror image get the same score.
    torch.testing.assert_close(tta(x.flip(-1)), out)


def test_a_real_variant_keeps_its_weights_and_scores_symmetrically() -> None:
    torch.manual_seed(0)
    net = create_model("resnet50", zero_init_head=False).eval()
    tta = with_tta(net, "hflip")
    assert isinstance(tta, HorizontalFlipTTA) and single_view(tta) is net
    assert sum(p.numel() for p in tta.parameters()) == sum(p.numel() for p in net.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tta(x), tta(x.flip(-1)), rtol=1e-5, atol=1e-5)


def test_none_returns_the_model_and_a_bad_value_names_the_choices() -> None:
    net = Lopsided()
    assert with_tta(net, "none") is net and with_tta(net, None) is net
    assert single_view(net) is net
    with pytest.raises(ValueError, match="tta: expected one of none, hflip, got 'vflip'"):
        with_tta(net, "vflip")
