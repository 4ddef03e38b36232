"""Building blocks: SE bottleneck, ASPP, Cross Scan, positions, patch embedding, fusion, ViT."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import SqueezeExcitation

from facescan.models import (
    ASPP,
    DIRECTIONS,
    CrossScanViT,
    FeatureFusion,
    MidViT,
    PatchEmbed,
    SEBottleneck,
    ViT,
    cross_scan,
    cross_scan_pos_embed,
    sincos_pos_embed_2d,
)


def _directions(x: torch.Tensor) -> list[torch.Tensor]:
    """The report's cross_scan, transcribed: the four direction maps (list, as they may differ)."""
    flipped = torch.flip(x, dims=[2, 3])
    return [x, flipped, x.transpose(2, 3), flipped.transpose(2, 3)]


def _row_major(m: torch.Tensor) -> torch.Tensor:
    return m.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)


# --- SE bottleneck -----------------------------------------------------------------------------


def test_se_bottleneck_is_torchvision_bottleneck_plus_se_after_bn3() -> None:
    block = SEBottleneck(64, 64, downsample=nn.Conv2d(64, 256, 1), se_reduction=16).eval()
    assert isinstance(block, Bottleneck)
    assert isinstance(block.se, SqueezeExcitation)
    assert (block.se.fc1.in_channels, block.se.fc1.out_channels) == (256, 16)
    x = torch.randn(2, 64, 5, 6)
    branch = block.bn3(
        block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))))
    )
    expected = torch.relu(block.se(branch) + block.downsample(x))
    torch.testing.assert_close(block(x), expected)


def test_se_bottleneck_rejects_a_reduction_larger_than_its_channels() -> None:
    with pytest.raises(ValueError, match="se_reduction"):
        SEBottleneck(64, 64, se_reduction=512)


# --- ASPP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(5, 7), (1, 1), (8, 12)])
def test_aspp_keeps_height_and_width(size: tuple[int, int]) -> None:
    aspp = ASPP(16, 8, rates=(3, 5, 7))
    assert aspp(torch.randn(2, 16, *size)).shape == (2, 8, *size)


def test_aspp_is_the_reports_layout_without_bn_in_the_branches() -> None:
    aspp = ASPP(16, 8, rates=(3, 5, 7))
    assert len(aspp.convs) == 5  # 1x1, three dilated 3x3, image pooling
    assert [c.dilation for c in aspp.convs[1:4]] == [(3, 3), (5, 5), (7, 7)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in aspp.convs.modules())
    assert [type(m) for m in aspp.project] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert aspp.project[0].in_channels == 5 * 8
    pooled = aspp.convs[4](torch.randn(1, 16, 4, 6))  # image-level branch is constant over H x W
    torch.testing.assert_close(pooled, pooled[..., :1, :1].expand_as(pooled))


def test_aspp_trains_at_batch_one() -> None:
    aspp = ASPP(16, 8).train()
    aspp(torch.randn(1, 16, 4, 4)).sum().backward()
    assert all(p.grad is not None for p in aspp.parameters())


# --- Cross Scan --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(3, 5), (4, 4), (6, 1)])
def test_each_cross_scan_sequence_is_its_direction_map_read_row_major(
    size: tuple[int, int],
) -> None:
    x = torch.randn(2, 3, *size)
    seq = cross_scan(x)
    n = size[0] * size[1]
    assert seq.shape == (2 * 4, n, 3)
    for d, direction in enumerate(_directions(x)):
        for b in range(2):
            torch.testing.assert_close(seq[b * 4 + d], _row_major(direction)[b], rtol=0, atol=0)
    assert len(DIRECTIONS) == 4


def test_cross_scan_orders_pixels_as_the_report_for_a_non_square_map() -> None:
    x = torch.arange(6.0).view(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    seq = cross_scan(x)[:, :, 0]
    assert seq.tolist() == [
        [0, 1, 2, 3, 4, 5],  # as is
        [5, 4, 3, 2, 1, 0],  # flipped over H and W
        [0, 3, 1, 4, 2, 5],  # transposed
        [5, 2, 4, 1, 3, 0],  # flipped, then transposed
    ]


def test_cross_scan_embeds_each_direction_map_with_the_shared_embedding() -> None:
    embed = PatchEmbed(3, 8, patch_size=2)
    x = torch.randn(2, 3, 5, 7)  # odd sides: each direction map is padded as its own map
    seq = cross_scan(x, embed)
    assert seq.shape == (8, 3 * 4, 8)
    for d, direction in enumerate(_directions(x)):
        torch.testing.assert_close(seq[d::4], _row_major(embed(direction)))


def test_cross_scan_positions_follow_each_directions_grid() -> None:
    pos = cross_scan_pos_embed(2, 3, 8)
    assert pos.shape == (4, 6, 8)
    torch.testing.assert_close(pos[0], sincos_pos_embed_2d(2, 3, 8))
    torch.testing.assert_close(pos[1], sincos_pos_embed_2d(2, 3, 8))
    torch.testing.assert_close(pos[2], sincos_pos_embed_2d(3, 2, 8))
    torch.testing.assert_close(pos[3], sincos_pos_embed_2d(3, 2, 8))


def test_cross_scan_vit_equals_the_report_direction_by_direction() -> None:
    vit = CrossScanViT(6, 16, patch_size=2, depth=1, heads=2, dropout=0.0).eval()
    x = torch.randn(2, 6, 5, 8)
    out = vit(x)
    assert out.shape == (2, 4, 3 * 4, 16)
    with torch.no_grad():
        for d, direction in enumerate(_directions(x)):
            emb = vit.patch_embed(direction)
            tokens = _row_major(emb) + sincos_pos_embed_2d(*emb.shape[-2:], 16)
            torch.testing.assert_close(out[:, d], vit.encoder(tokens), atol=1e-5, rtol=1e-5)


# --- positions and patches ---------------------------------------------------------------------


def test_sincos_positions_are_deterministic_distinct_and_bounded() -> None:
    a = sincos_pos_embed_2d(4, 6, 32)
    assert a.shape == (24, 32)
    torch.testing.assert_close(a, sincos_pos_embed_2d(4, 6, 32), rtol=0, atol=0)
    distances = torch.cdist(a, a) + torch.eye(24) * 1e9
    assert distances.min() > 0.1
    assert a.abs().max() <= 1
    assert not torch.allclose(sincos_pos_embed_2d(6, 4, 32), a)  # the grid's shape matters
    # (i, j) encodes the column in the first half and the row in the second.
    torch.testing.assert_close(a[7, :16], a[1, :16])  # same column (1), rows 1 and 0
    torch.testing.assert_close(a[7, 16:], a[6, 16:])  # same row (1), columns 1 and 0
    assert sincos_pos_embed_2d(1, 1, 4).tolist() == [[0.0, 1.0, 0.0, 1.0]]


def test_sincos_positions_reject_a_width_not_multiple_of_four() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_pos_embed_2d(2, 2, 30)


def test_vit_modules_have_no_position_parameters() -> None:
    for cls in (ViT, MidViT, CrossScanViT):
        vit = cls(8, 16, patch_size=1, depth=1, heads=2)
        assert not [n for n, _ in vit.named_parameters() if "pos" in n]


def test_patch_embed_pads_to_whole_patches() -> None:
    embed = PatchEmbed(3, 4, patch_size=2)
    assert embed(torch.randn(1, 3, 5, 4)).shape == (1, 4, 3, 2)
    assert embed.grid_size(5, 4) == (3, 2)
    assert embed(torch.randn(1, 3, 1, 1)).shape == (1, 4, 1, 1)


def test_mid_vit_returns_a_map_for_layer4() -> None:
    vit = MidViT(24, 16, patch_size=1, depth=1, heads=2)
    assert vit(torch.randn(2, 24, 3, 5)).shape == (2, 16, 3, 5)
    assert vit.patch_embed.proj.kernel_size == (1, 1)


def test_vit_encoder_blocks_are_pre_norm_and_independently_initialised() -> None:
    vit = ViT(8, 16, patch_size=1, depth=2, heads=2)
    blocks = vit.encoder.blocks
    assert all(b.norm_first and b.self_attn.batch_first for b in blocks)
    assert not torch.equal(blocks[0].linear1.weight, blocks[1].linear1.weight)


# --- FeatureFusion -----------------------------------------------------------------------------


def _report_fusion(fusion: FeatureFusion, x_c: torch.Tensor) -> torch.Tensor:
    """The report's FeatureFusion.forward, transcribed, after its mean pooling (x_c: [B, 4, C])."""
    b, d, c = x_c.shape
    x_c_flat = x_c.view(b, d * c)
    w_c = fusion.se(x_c_flat).view(b, d, c)
    w_c_mean = w_c.mean(dim=2)
    _, i_max = torch.max(w_c_mean, dim=1)
    fused_x = torch.zeros(b, c)
    for i in range(d):
        weight = w_c[:, i, :]
        mask = (i == i_max).float().unsqueeze(1)
        fused_x += mask * x_c[:, i, :] + (1 - mask) * (weight * x_c[:, i, :])
    return fused_x


def test_feature_fusion_matches_the_reports_loop() -> None:
    fusion = FeatureFusion(32, reduction=16)
    assert [m.out_features for m in fusion.se if isinstance(m, nn.Linear)] == [8, 128]
    x = torch.randn(64, 4, 32) * 3
    with torch.no_grad():
        out = fusion(x)
        weights = fusion.se(x.flatten(1)).view_as(x)
    assert out.shape == (64, 32)
    assert len(set(weights.mean(2).argmax(1).tolist())) > 1  # several directions win: not a fluke
    torch.testing.assert_close(out, _report_fusion(fusion, x))


def test_feature_fusion_takes_the_winning_direction_unweighted() -> None:
    fusion = FeatureFusion(4, reduction=2)
    with torch.no_grad():
        fusion.se[2].weight.zero_()  # all weights sigmoid(0) = 0.5 -> tie -> first direction wins
    x = torch.randn(3, 4, 4)
    torch.testing.assert_close(fusion(x), x[:, 0] + 0.5 * x[:, 1:].sum(1))
