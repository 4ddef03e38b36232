"""Class-activation maps (captum Grad-CAM), FeatureFusion's direction weights, image choice, figure."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from facescan.evaluation.explain import (
    DIRECTION_ARROWS,
    TokenGrid,
    _GridView,
    cam_layer,
    choose_images,
    class_activation_maps,
    explain_grid,
    fusion_direction_weights,
)
from facescan.models import DIRECTIONS, FaceScanNet, FeatureFusion, PatchEmbed, create_model
from facescan.models import cross_scan as cross_scan_fn

from .helpers import TEST_MODEL

#: A non-square input: 64 x 96 gives stride-32 maps of 2 x 3 and dilated ones of 8 x 12.
HW = (64, 96)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def built() -> Callable[[str], FaceScanNet]:
    """A copy of each small variant with a random head (conf/test sizes), built once."""
    cache: dict[str, FaceScanNet] = {}

    def get(name: str) -> FaceScanNet:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = create_model(name, **TEST_MODEL).eval()
        return copy.deepcopy(cache[name])

    return get


def _images(n: int, hw: tuple[int, int] = HW, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, *hw, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("variant", "layer", "grid"),
    [
        ("resnet50", "layer4", None),
        ("se_resnet50", "layer4", None),
        ("dilated", "layer4", None),
        ("vit", "layer4", None),
        ("dilated_vit", "layer4", None),
        ("aspp", "aspp", None),
        ("vit_aspp", "aspp", None),
        ("aspp_vit", "tail_vit", TokenGrid(2, cross_scan=False)),
        ("aspp_crossscan_vit", "tail_vit", TokenGrid(2, cross_scan=True)),
    ],
)
def test_cam_layer_per_variant(variant: str, layer: str, grid: TokenGrid | None) -> None:
    with torch.device("meta"):  # decided from the options and modules alone: no weights needed
        model = create_model(variant)
    chosen = cam_layer(model)
    assert chosen.layer is getattr(model, layer)
    assert chosen.to_grid == grid


def test_cam_layer_refuses_other_models() -> None:
    with pytest.raises(ValueError, match="FaceScanNet"):
        cam_layer(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("variant", ["resnet50", "aspp", "aspp_vit", "aspp_crossscan_vit"])
def test_maps_at_a_non_square_input(built: Callable[[str], FaceScanNet], variant: str) -> None:
    model = built(variant)
    x = _images(3)
    maps = class_activation_maps(model, x, device=CPU, batch_size=2)
    assert maps.shape == (3, *HW)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    peaks = maps.reshape(3, -1).max(1)
    assert np.all((peaks == 0) | np.isclose(peaks, 1.0)), peaks  # normalised per image
    assert peaks.max() == pytest.approx(1.0)
    assert not np.allclose(maps[0], maps[1])  # different images, different maps
    # batching does not change a map
    np.testing.assert_allclose(
        class_activation_maps(model, x[1:2], device=CPU), maps[1:2], atol=1e-5
    )


def test_a_zero_head_gives_all_zero_maps() -> None:
    torch.manual_seed(0)
    model = create_model("aspp_vit", **{**TEST_MODEL, "zero_init_head": True})
    maps = class_activation_maps(model, _images(2), device=CPU)
    assert maps.shape == (2, *HW)
    assert np.array_equal(maps, np.zeros_like(maps))  # no NaN from 0 / 0


def test_model_mode_and_gradient_flags_are_restored(built: Callable[[str], FaceScanNet]) -> None:
    model = built("aspp_crossscan_vit").train()
    model.fc.weight.requires_grad_(False)
    class_activation_maps(model, _images(2), device=CPU)
    assert model.training
    assert not model.fc.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "fc.weight")
    assert all(p.grad is None for p in model.parameters())


def test_target_per_image(built: Callable[[str], FaceScanNet]) -> None:
    model = built("aspp")
    x = _images(2)
    per_image = class_activation_maps(model, x, target=[0, 1], device=CPU)
    np.testing.assert_allclose(
        per_image[0], class_activation_maps(model, x[:1], target=0, device=CPU)[0], atol=1e-5
    )
    np.testing.assert_allclose(
        per_image[1], class_activation_maps(model, x[1:], target=1, device=CPU)[0], atol=1e-5
    )
    with pytest.raises(ValueError, match="one class per image"):
        class_activation_maps(model, x, target=[0, 1, 1], device=CPU)
    with pytest.raises(ValueError, match="float"):
        class_activation_maps(model, (x * 50).to(torch.uint8), device=CPU)
    with pytest.raises(ValueError, match="score"):
        class_activation_maps(model, x, device=CPU, score="softmax")  # type: ignore[arg-type]


def _reference_gradcam(model: FaceScanNet, x: torch.Tensor, score: str) -> np.ndarray:
    """Grad-CAM by hand on forward_features' output, for comparison: a map; tail-ViT tokens on
    their 2 x 2-patch grid; Cross Scan tokens weighted per direction (the gradient's mean over that
    direction's tokens), taken back to the map by TokenGrid (tested on its own below)."""
    seen: list[torch.Size] = []
    hook = model.tail_vit.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape))
    with torch.no_grad():
        feats = model.forward_features(x)
    hook.remove()
    feats.requires_grad_(True)
    logits = model.forward_head(feats)
    target = logits[:, 1] - (logits[:, 0] if score == "log_odds" else 0)  # class 1, fake
    target.sum().backward()
    assert feats.grad is not None
    if model.options["cross_scan"]:  # tokens (B, 4, N, D)
        terms = feats.grad.mean(2, keepdim=True) * feats.detach()
        grid = TokenGrid(2, cross_scan=True)
        hw = (int(seen[0][-2]), int(seen[0][-1]))
        cam = grid.direction_maps(grid(terms, hw), hw).sum(1, keepdim=True)
        cam = F.interpolate(cam.relu(), size=x.shape[-2:], mode="bilinear")[:, 0]
        return (cam / cam.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]).numpy()
    if feats.ndim == 3:  # tokens (B, N, D) of a tail ViT with patch 2: back onto the patch grid
        height, width = seen[0][-2:]
        h, w = -(-height // 2), -(-width // 2)
        act = feats.detach().transpose(1, 2).unflatten(2, (h, w))
        grad = feats.grad.transpose(1, 2).unflatten(2, (h, w))
    else:
        act, grad = feats.detach(), feats.grad
    cam = (grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True)
    if feats.ndim == 3:
        cam = cam.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :height, :width]
    cam = F.interpolate(cam.relu(), size=x.shape[-2:], mode="bilinear")[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-30)
    return (cam / peak[:, None, None]).numpy()


@pytest.mark.parametrize(
    ("variant", "hw", "score"),
    [
        ("resnet50", HW, "log_odds"),
        ("aspp", HW, "logit"),
        ("aspp_vit", HW, "log_odds"),
        ("aspp_vit", (40, 56), "logit"),
        ("aspp_crossscan_vit", HW, "log_odds"),
        ("aspp_crossscan_vit", (40, 56), "log_odds"),
    ],
)
def test_maps_are_grad_cam_of_the_chosen_layer(
    built: Callable[[str], FaceScanNet], variant: str, hw: tuple[int, int], score: str
) -> None:
    """40 x 56 gives ASPP a 5 x 7 map: the tail ViT's 2 x 2 patches overhang it (padding)."""
    model = built(variant)
    x = _images(2, hw)
    maps = class_activation_maps(model, x, device=CPU, score=score)  # type: ignore[arg-type]
    np.testing.assert_allclose(maps, _reference_gradcam(model, x, score), atol=1e-4)


@pytest.mark.parametrize("variant", ["aspp_vit", "aspp_crossscan_vit"])
def test_grid_view_keeps_the_models_output(
    built: Callable[[str], FaceScanNet], variant: str
) -> None:
    model = built(variant)
    layer, to_grid = cam_layer(model)
    assert to_grid is not None
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(_GridView(model, layer, to_grid)(x), model(x))


@pytest.mark.parametrize(("height", "width", "patch"), [(4, 6, 1), (6, 8, 2), (5, 7, 2), (7, 4, 3)])
def test_cross_scan_tokens_map_back_to_their_pixels(height: int, width: int, patch: int) -> None:
    """A one-pixel map read by the model's own cross_scan + PatchEmbed lands, in every direction,
    on that pixel again; with 1 x 1 patches each direction gives back the map exactly."""
    hot = torch.eye(height * width).reshape(-1, 1, height, width)  # one image per pixel
    embed = PatchEmbed(1, 1, patch)
    with torch.no_grad():
        embed.proj.weight.fill_(1.0)  # each token = sum of its patch
        embed.proj.bias.zero_()
        tokens = cross_scan_fn(hot, embed).unflatten(0, (len(hot), 4))  # (B, 4, N, 1)
    grid = TokenGrid(patch, cross_scan=True)
    grids = grid(tokens, (height, width))
    torch.testing.assert_close(grid.tokens(grids), tokens)
    maps = grid.direction_maps(grids, (height, width))  # (B, 4, H, W)
    assert maps.shape == (len(hot), 4, height, width)
    rows, cols = np.divmod(np.arange(height * width), width)
    for d in range(4):
        assert torch.all(maps[np.arange(len(hot)), d, rows, cols] == 1), DIRECTIONS[d]
        if patch == 1:
            torch.testing.assert_close(maps[:, d : d + 1], hot)
        # each token covers at most one patch around the pixel
        assert torch.all(maps[:, d].flatten(1).sum(1) <= patch * patch)
    total = grid.to_map(grids, (height, width))
    torch.testing.assert_close(total, maps.sum(1, keepdim=True))


def test_tail_vit_tokens_round_trip() -> None:
    grid = TokenGrid(2)
    tokens = torch.randn(2, 3 * 4, 8)  # a 5 x 7 map -> 3 x 4 patches
    grids = grid(tokens, (5, 7))
    assert grids.shape == (2, 8, 3, 4)
    torch.testing.assert_close(grid.tokens(grids), tokens)


def test_fusion_direction_weights(built: Callable[[str], FaceScanNet]) -> None:
    model = built("aspp_crossscan_vit")
    x = _images(3)
    weights = fusion_direction_weights(model, x, device=CPU, batch_size=2)
    assert weights is not None
    assert weights.shape == (3, 4) and weights.dtype == np.float32
    assert np.all((weights > 0) & (weights < 1))
    fusion = next(m for m in model.modules() if isinstance(m, FeatureFusion))
    with torch.no_grad():
        pooled = model.forward_features(x).mean(2)  # (B, 4, D): each direction's token mean
        gates = fusion.se(pooled.flatten(1)).view_as(pooled)
    np.testing.assert_allclose(weights, gates.mean(2).numpy(), rtol=1e-5)


@pytest.mark.parametrize("variant", ["resnet50", "aspp_vit"])
def test_no_direction_weights_without_cross_scan(
    built: Callable[[str], FaceScanNet], variant: str
) -> None:
    assert fusion_direction_weights(built(variant), _images(1), device=CPU) is None


def test_choose_images_balanced_mistakes_first_deterministic() -> None:
    labels = np.array([0] * 10 + [1] * 10)
    p = np.full(20, 0.5)
    p[:10] = np.linspace(0.05, 0.3, 10)  # reals, correct...
    p[10:] = np.linspace(0.7, 0.95, 10)  # fakes, correct...
    p[3], p[7], p[8] = 0.9, 0.6, 0.95  # ...except three reals called fake
    p[12], p[15] = 0.2, 0.01  # ...and two fakes called real
    chosen = choose_images(labels, p, 8, seed=0)
    assert chosen == choose_images(labels, p, 8, seed=0)
    assert len(chosen) == len(set(chosen)) == 8
    assert sorted(labels[chosen].tolist()) == [0] * 4 + [1] * 4
    # up to half of each class's places are mistakes, the most confident first
    assert chosen[:4] == [15, 8, 3, 12]
    assert 7 not in chosen[:4]
    assert all(0 <= i < 20 for i in chosen)
    # the fill depends on the seed only
    others = {tuple(choose_images(labels, p, 8, seed=s)) for s in range(5)}
    assert len(others) > 1
    assert all(list(c[:4]) == [15, 8, 3, 12] for c in others)


def test_choose_images_edge_cases() -> None:
    labels = np.array([0, 0, 0, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    chosen = choose_images(labels, p, 4)
    assert sorted(labels[chosen].tolist()) == [0, 0, 0, 1]  # one fake only: reals fill in
    assert sorted(choose_images(labels, p, 9)) == [0, 1, 2, 3, 4]
    assert choose_images(labels, p, 0) == []
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        choose_images([0, 2], [0.1, 0.2], 2)
    with pytest.raises(ValueError, match="differ in length"):
        choose_images([0, 1], [0.1], 2)


def test_explain_grid() -> None:
    rng = np.random.default_rng(0)
    n, hw = 3, HW
    images = rng.integers(0, 256, (n, 3, *hw), dtype=np.uint8)
    variants = ["resnet50", "aspp_vit", "aspp_crossscan_vit"]
    maps = {v: rng.random((n, *hw), dtype=np.float32) for v in variants}
    p_fake = {v: rng.random(n) for v in variants}
    weights = {"aspp_crossscan_vit": rng.random((n, 4)), "resnet50": None}
    fig = explain_grid(images, maps, p_fake, np.array([0, 1, 1]), weights)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n * (1 + len(variants))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts if "0." in t.get_text()]
    assert len(texts) == n and all(DIRECTION_ARROWS["identity"] in t for t in texts)
    assert all(t.count("*") == 1 for t in texts)  # the direction FeatureFusion keeps
    assert fig.axes[0].get_title() == "real"
    assert [t.get_text() for t in fig.axes[1].texts] == ["resnet50"]  # column header
    assert fig.axes[1].get_title().startswith("p_fake ")
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 16
    fig.savefig(io.BytesIO(), format="png")
    with pytest.raises(ValueError, match="maps\\['resnet50'\\]"):
        explain_grid(images, {"resnet50": maps["resnet50"][:2]}, p_fake, [0, 1, 1])


def test_explain_grid_size_for_eight_images_and_nine_variants() -> None:
    images = np.zeros((8, 3, 48, 48), dtype=np.uint8)
    maps = {f"v{k}": np.zeros((8, 48, 48), dtype=np.float32) for k in range(9)}
    p_fake = {name: np.full(8, 0.5) for name in maps}
    fig = explain_grid(images, maps, p_fake, np.zeros(8, dtype=int))
    assert len(fig.axes) == 8 * 10
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 14


def test_a_flip_tta_model_is_explained_on_the_image_as_given(
    built: Callable[[str], FaceScanNet],
) -> None:
    from facescan.models import HorizontalFlipTTA

    model = built("aspp_crossscan_vit")
    x = _images(2)
    wrapped = HorizontalFlipTTA(model)
    np.testing.assert_allclose(
        class_activation_maps(wrapped, x, device=CPU),
        class_activation_maps(model, x, device=CPU),
        atol=1e-6,
    )
    weights = fusion_direction_weights(wrapped, x, device=CPU)
    assert weights is not None and weights.shape == (2, 4)  # one row per image, not two
    np.testing.assert_allclose(weights, fusion_direction_weights(model, x, device=CPU), rtol=1e-6)
