"""SelfAttention, ViTBlock and Dropout: PyTorch's results, computed the CPU-fast way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facescan.models import (
    UNFUSED_MAX_TOKENS,
    Dropout,
    SelfAttention,
    ViTBlock,
    count_forward_flops,
    create_model,
    dropout,
)

from .conftest import SMALL


def _pair(dim: int = 32, heads: int = 4) -> tuple[SelfAttention, nn.MultiheadAttention]:
    ours = SelfAttention(dim, heads)
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("tokens", [1, 7, UNFUSED_MAX_TOKENS + 3])  # unfused, unfused, fused
def test_self_attention_matches_multihead_attention(tokens: int) -> None:
    ours, ref = _pair()
    x = torch.randn(3, tokens, 32, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = ours(x, x, x, need_weights=False)[0]
    expected = ref(x_ref, x_ref, x_ref, need_weights=False)[0]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    for (name, p), p_ref in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_self_attention_defers_to_pytorch_for_masks_and_weights() -> None:
    ours, ref = _pair()
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[False] * 4 + [True], [False] * 5])
    out, weights = ours(x, x, x, key_padding_mask=mask)
    out_ref, weights_ref = ref(x, x, x, key_padding_mask=mask)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(weights, weights_ref)


def test_self_attention_applies_dropout_to_the_weights_in_training_only() -> None:
    ours, ref = _pair()
    ours.dropout = 0.5
    x = torch.randn(2, 6, 32)
    ours.eval()
    torch.testing.assert_close(ours(x, x, x, need_weights=False)[0], ref(x, x, x)[0])
    ours.train()
    torch.manual_seed(0)
    a = ours(x, x, x, need_weights=False)[0]
    assert not torch.allclose(a, ref(x, x, x)[0])
    torch.manual_seed(0)
    torch.testing.assert_close(ours(x, x, x, need_weights=False)[0], a)  # seeded


def test_vit_block_is_transformer_encoder_layer_with_same_state_dict() -> None:
    block = ViTBlock(32, 4, mlp_ratio=2.0, dropout=0.0, attention_dropout=0.0)
    ref = nn.TransformerEncoderLayer(
        32, 4, 64, 0.0, activation="gelu", batch_first=True, norm_first=True
    )
    assert isinstance(block, nn.TransformerEncoderLayer)
    ref.load_state_dict(block.state_dict())  # same names and shapes
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(block(x), ref(x), atol=1e-5, rtol=1e-4)  # training path
    block.eval(), ref.eval()
    with torch.no_grad():  # the fused inference fast path
        torch.testing.assert_close(block(x), ref(x), atol=1e-5, rtol=1e-4)


def test_bf16_autocast_training_path_stays_close_to_float32() -> None:
    ours, _ = _pair(64, 8)
    x = torch.randn(2, 50, 64)
    expected = ours(x, x, x, need_weights=False)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(x, x, x, need_weights=False)[0]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_1_minus_p_and_rescales(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000, dtype=torch.bfloat16)
    y = dropout(x, p)
    kept = (y != 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.005  # ~5 standard deviations
    scaled = x[0] * (1 / (1 - p))  # rescaled in the input's dtype, as F.dropout does
    assert torch.equal(y[y != 0], scaled.expand(int((y != 0).sum())))
    z = torch.ones(1000, requires_grad=True)
    out = dropout(z, p)
    out.sum().backward()
    torch.testing.assert_close(z.grad, (out != 0).float() / (1 - p))  # the mask, rescaled


def test_dropout_module_is_identity_in_eval_and_seeded_in_training() -> None:
    module = Dropout(0.3)
    x = torch.randn(4, 33)
    assert torch.equal(module.eval()(x), x)
    module.train()
    torch.manual_seed(1)
    a = module(x)
    torch.manual_seed(1)
    assert torch.equal(module(x), a)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_flops_count_attention_on_cpu_and_meta_alike() -> None:
    model = create_model("aspp_crossscan_vit", **SMALL)
    with torch.device("meta"):
        meta = create_model("aspp_crossscan_vit", **SMALL)
    assert count_forward_flops(model, 64) == count_forward_flops(meta, 64)


def test_feature_fusion_chooses_the_same_direction_under_bf16_autocast() -> None:
    """The direction kept unweighted is chosen on float32 means: in bf16, near-equal gates (about
    0.5 each at initialisation) tied and argmax picked direction 0 (14 of 64 images differed)."""
    from facescan.models.fusion import FeatureFusion

    torch.manual_seed(0)
    fusion = FeatureFusion(512, reduction=16).eval()
    x = torch.randn(64, 4, 512)
    with torch.no_grad():
        reference = FeatureFusion.choose(fusion.se(x.flatten(1)).view_as(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            gates = fusion.se(x.flatten(1)).view_as(x)
        assert gates.dtype == torch.bfloat16
        assert torch.equal(FeatureFusion.choose(gates), reference)
        assert not torch.equal(gates.mean(dim=2).argmax(dim=1), reference)  # the old choice
