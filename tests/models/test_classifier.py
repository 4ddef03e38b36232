"""FaceScanNet across every variant: shapes, gradients, strides, baseline identity, formats."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from facescan.models import (
    ASPP,
    CrossScanViT,
    FaceScanNet,
    MidViT,
    TokenMeanPool,
    ViT,
    count_parameters,
    create_model,
    list_variants,
)

from .conftest import SMALL

VARIANTS = list_variants()


@pytest.fixture(scope="module")
def built() -> Callable[[str], FaceScanNet]:
    """A fresh copy of each small variant, built once per module (building dominates eval tests)."""
    cache: dict[str, FaceScanNet] = {}

    def get(name: str) -> FaceScanNet:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = create_model(name, **SMALL)
        return copy.deepcopy(cache[name])

    return get


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward_reaches_every_parameter(name: str) -> None:
    # With zero_init_residual the residual branches get no gradient until their last BN moves off
    # zero, and with zero_init_head nothing behind the classifier does until it moves (by design:
    # the tests below); every parameter is checked here with both off.
    torch.manual_seed(0)
    model = create_model(name, **SMALL, zero_init_residual=False).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert zero == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", VARIANTS)
def test_training_step_at_batch_one_on_a_non_square_image(name: str, built: Callable) -> None:
    model = built(name).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.fc.weight.detach().clone()
    logits = model(torch.randn(1, 3, 64, 96))
    assert logits.shape == (1, 2)
    loss = nn.functional.cross_entropy(logits, torch.tensor([1]))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
    assert not torch.equal(model.fc.weight, before)


@pytest.mark.parametrize(
    ("name", "stride"), [("resnet50", 32), ("se_resnet50", 32), ("dilated", 8), ("aspp", 8)]
)
def test_output_stride(name: str, stride: int, built: Callable) -> None:
    model = built(name).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 64, 96))
    assert features.shape[-2:] == (64 // stride, 96 // stride)


def test_dilated_backbone_uses_torchvisions_rates_or_the_configured_ones(built: Callable) -> None:
    model = built("dilated")
    rates = [[b.conv2.dilation[0] for b in layer] for layer in (model.layer3, model.layer4)]
    assert rates == [[1, 2, 2, 2, 2, 2], [2, 4, 4]]
    assert all(b.conv2.stride == (1, 1) for b in (*model.layer3, *model.layer4))
    custom = create_model("dilated", dilation_rates=[3, 6], **SMALL).eval()
    assert [b.conv2.dilation[0] for b in custom.layer4] == [3, 6, 6]
    assert [b.conv2.padding[0] for b in custom.layer4] == [3, 6, 6]
    with torch.no_grad():
        assert custom.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 2048, 8, 8)


def test_modules_follow_the_options() -> None:
    def kinds(name: str) -> tuple[str, ...]:
        with torch.device("meta"):
            m = create_model(name, **SMALL)
        return tuple(type(x).__name__ for x in (m.mid_vit, m.aspp, m.tail_vit))

    assert kinds("resnet50") == ("Identity", "Identity", "Identity")
    assert kinds("vit_aspp") == ("MidViT", "ASPP", "Identity")
    assert kinds("aspp_vit") == ("Identity", "ASPP", "ViT")
    assert kinds("aspp_crossscan_vit") == ("Identity", "ASPP", "CrossScanViT")


def test_full_size_modules_have_the_authors_sizes() -> None:
    with torch.device("meta"):  # full sizes without allocating or initialising 30M weights
        mid = create_model("vit_aspp")
        tail = create_model("aspp_crossscan_vit")
    assert isinstance(mid.mid_vit, MidViT) and isinstance(mid.aspp, ASPP)
    proj = mid.mid_vit.patch_embed.proj
    assert (proj.in_channels, proj.out_channels, proj.kernel_size) == (1024, 512, (1, 1))
    assert mid.layer4[0].conv1.in_channels == 512
    assert mid.aspp.project[0].out_channels == 256 and mid.fc.in_features == 256
    assert isinstance(tail.tail_vit, CrossScanViT)
    proj = tail.tail_vit.patch_embed.proj
    assert (proj.in_channels, proj.out_channels, proj.kernel_size, proj.stride) == (
        256,
        512,
        (2, 2),
        (2, 2),
    )
    blocks = tail.tail_vit.encoder.blocks
    assert len(blocks) == 4 and blocks[0].self_attn.num_heads == 8
    assert blocks[0].linear1.out_features == 2048 and blocks[0].dropout.p == 0.1
    assert isinstance(tail.global_pool[0], TokenMeanPool)
    assert tail.global_pool[1].se[0].out_features == 4 * 512 // 16
    assert tail.fc.out_features == 2


def test_full_size_cross_scan_model_runs_at_the_smallest_input() -> None:
    model = create_model("aspp_crossscan_vit").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def test_baseline_is_torchvision_resnet50_with_two_classes(built: Callable) -> None:
    model = built("resnet50").eval()  # the ViT/ASPP sizes have no effect here
    assert count_parameters(model) == 23_512_130
    reference = resnet50(num_classes=2).eval()
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    model.load_state_dict(theirs)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_round_trip_gives_identical_outputs(name: str, built: Callable) -> None:
    model = built(name).eval()
    torch.manual_seed(1)
    fresh = create_model(name, **SMALL).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert not torch.equal(model(x), fresh(x))
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_channels_last_and_bf16_autocast(name: str, built: Callable) -> None:
    model = built(name).eval()
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        x_cl = x.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x_cl), reference, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x_cl)
    assert low.shape == (2, 2) and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), reference, rtol=0.1, atol=0.1)


def test_forward_head_pre_logits_gives_pooled_features(built: Callable) -> None:
    model = built("aspp_crossscan_vit").eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 64, 64))
        pooled = model.forward_head(features, pre_logits=True)
    assert features.shape == (2, 4, 16, 32)
    assert pooled.shape == (2, model.num_features) == (2, 32)


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 1, 64, 64), (1, 3, 16, 64)])
def test_bad_input_shape_is_a_clear_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) with H, W >= 32"):
        FaceScanNet()(torch.randn(*shape))


def test_constructor_rejects_inconsistent_placements() -> None:
    with pytest.raises(ValueError, match="vit must be"):
        FaceScanNet(vit="head")
    with pytest.raises(ValueError, match="cross_scan: true needs vit: tail"):
        FaceScanNet(cross_scan=True, vit="mid")


def test_model_keeps_its_resolved_options(built: Callable) -> None:
    model = built("aspp_vit")
    assert model.options["vit"] == "tail" and model.options["vit_dim"] == 32
    assert "pretrained" not in model.options and model.pretrained is None
    assert isinstance(model.tail_vit, ViT)


@pytest.mark.parametrize("name", ["resnet50", "vit", "aspp_crossscan_vit"])
def test_zero_init_residual_starts_every_bottleneck_as_the_identity(
    name: str, built: Callable
) -> None:
    from torchvision.models.resnet import Bottleneck

    model = built(name).eval()
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    x = torch.randn(2, blocks[0].conv1.in_channels, 8, 8)
    identity = blocks[0].downsample(x) if blocks[0].downsample is not None else x
    assert torch.allclose(blocks[0](x), identity.relu())
    assert all(float(b.bn3.weight.abs().sum()) == 0.0 for b in blocks)
    off = create_model(name, **SMALL, zero_init_residual=False)
    assert all(
        float(b.bn3.weight.abs().sum()) > 0 for b in off.modules() if isinstance(b, Bottleneck)
    )


@pytest.mark.parametrize("name", ["resnet50", "aspp_vit", "aspp_crossscan_vit"])
def test_zero_init_head_starts_every_image_at_one_half(name: str) -> None:
    model = create_model(name, **{**SMALL, "zero_init_head": True}).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 48, 48))
    assert torch.equal(logits, torch.zeros_like(logits))  # p_fake 0.5, loss ln 2
    legacy = create_model(name, **SMALL).eval()
    with torch.no_grad():
        assert legacy(torch.randn(3, 3, 48, 48)).abs().sum() > 0


def test_head_norm_puts_a_layernorm_before_the_classifier_of_tail_vits_only() -> None:
    for name in ("aspp_vit", "aspp_crossscan_vit"):
        pool = create_model(name, **SMALL).global_pool
        assert isinstance(pool[-1], nn.LayerNorm) and pool[-1].normalized_shape == (32,)
        off = create_model(name, **SMALL, head_norm=False).global_pool
        assert not any(isinstance(m, nn.LayerNorm) for m in off.modules())
    for name in ("resnet50", "vit_aspp"):  # CNN tails keep torchvision's pooling and head
        assert not any(
            isinstance(m, nn.LayerNorm) for m in create_model(name, **SMALL).global_pool.modules()
        )
    # FeatureFusion sums four directions (about 2.5x one direction's scale): normalised here.
    model = create_model("aspp_crossscan_vit", vit_depth=1).eval()
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(torch.randn(4, 3, 48, 48)), True)
    assert pooled.pow(2).mean().sqrt() == pytest.approx(1.0, rel=0.05)


def test_vit_init_timm_gives_truncated_normal_002_and_zero_biases() -> None:
    model = create_model("aspp_crossscan_vit", vit_depth=2)
    block = model.tail_vit.encoder.blocks[0]
    for weight in (block.linear1.weight, block.linear2.weight, block.self_attn.in_proj_weight):
        assert weight.std().item() == pytest.approx(0.02 * 0.88, rel=0.05)  # cut at 2 std
        assert weight.abs().max().item() <= 0.04 + 1e-6
    assert block.linear1.bias.abs().sum() == 0 and block.self_attn.in_proj_bias.abs().sum() == 0
    assert block.self_attn.out_proj.bias.abs().sum() == 0
    torch_init = create_model("aspp_crossscan_vit", vit_depth=2, vit_init="torch")
    b = torch_init.tail_vit.encoder.blocks[0]
    assert b.linear2.weight.abs().max().item() > 0.02  # PyTorch's kaiming-uniform bound
    assert b.linear1.bias.abs().sum() > 0
    # The trunk and ASPP are built (and drawn) before the transformer: the same either way.
    torch.manual_seed(1)
    a = create_model("aspp_vit", vit_depth=1)
    torch.manual_seed(1)
    b = create_model("aspp_vit", vit_depth=1, vit_init="torch")
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert torch.equal(a.aspp.project[0].weight, b.aspp.project[0].weight)
