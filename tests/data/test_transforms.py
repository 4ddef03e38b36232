"""Training-time degradations (blur, JPEG) before the report's augmentation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from facescan.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Degradations,
    GaussianBlur,
    separable_gaussian_blur,
    train_transform,
)

SIZE, INPUT = 40, 32

# v2.JPEG encodes and decodes through torchvision.io, deprecated in torchvision 0.29 (TorchCodec).
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)


def _image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=generator)


def _report_recipe(input_size: int) -> v2.Compose:
    """train_transform as it was before degradations existed (the report's augmentation)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(input_size, scale=(0.8, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )


def _outputs(transform: v2.Transform, seed: int, n: int = 6) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.stack([transform(_image(i)) for i in range(n)])


def test_degradations_are_off_by_default() -> None:
    off = Degradations()
    assert not off.active and off.to_params() is None
    assert off.transforms(INPUT) == []
    assert Degradations.from_params(None) == off
    assert Degradations.from_params({}) == off
    assert (
        Degradations.from_params({"blur": None, "jpeg": {"quality": [50, 60]}}).to_params() is None
    )


@pytest.mark.parametrize("degradations", [None, Degradations(), Degradations(jpeg_quality=(5, 9))])
def test_without_degradations_the_transform_and_its_draws_are_the_reports(
    degradations: Degradations | None,
) -> None:
    """p = 0 leaves the transforms out, so they draw nothing: runs reproduce bit for bit."""
    got = _outputs(train_transform(INPUT, degradations), seed=5)
    torch.testing.assert_close(got, _outputs(_report_recipe(INPUT), seed=5), rtol=0, atol=0)
    assert [type(t) for t in train_transform(INPUT, degradations).transforms] == [
        type(t) for t in _report_recipe(INPUT).transforms
    ]


def test_degradations_come_first_on_uint8_then_the_reports_recipe() -> None:
    both = Degradations(blur_p=0.5, blur_sigma=(0.5, 2.0), jpeg_p=0.25, jpeg_quality=(40, 90))
    steps = train_transform(INPUT, both).transforms
    assert [type(t) for t in steps[:2]] == [v2.RandomApply, v2.RandomApply]
    blur, jpeg = steps[0], steps[1]
    assert blur.p == 0.5 and isinstance(blur.transforms[0], GaussianBlur)
    assert isinstance(blur.transforms[0], v2.GaussianBlur)  # its draws, so its random stream
    assert blur.transforms[0].sigma == [0.5, 2.0] and blur.transforms[0].kernel_size == (13, 13)
    assert jpeg.p == 0.25 and isinstance(jpeg.transforms[0], v2.JPEG)
    assert list(jpeg.transforms[0].quality) == [40, 90]
    assert [type(t) for t in steps[2:]] == [type(t) for t in _report_recipe(INPUT).transforms]
    out = train_transform(INPUT, both)(_image())
    assert out.shape == (3, INPUT, INPUT) and out.dtype == torch.float32


def test_blur_and_jpeg_apply_torchvisions_kernels_on_uint8() -> None:
    image = _image()
    blur = v2.Compose(Degradations(blur_p=1.0, blur_sigma=(1.5, 1.5)).transforms(INPUT))
    blurred = blur(image)
    assert blurred.dtype == torch.uint8
    # torchvision's 2-D kernel of radius ceil(3 sigma), up to float rounding
    torchvision = F.gaussian_blur(image, [11, 11], [1.5, 1.5])
    torch.testing.assert_close(blurred, torchvision, rtol=0, atol=1)
    assert (blurred != torchvision).float().mean() < 0.01
    assert blurred.float().std() < image.float().std() / 2  # noise is smoothed away
    jpeg = v2.Compose(Degradations(jpeg_p=1.0, jpeg_quality=(10, 10)).transforms(INPUT))
    compressed = jpeg(image)
    assert compressed.dtype == torch.uint8 and compressed.shape == image.shape
    torch.testing.assert_close(compressed, F.jpeg(image, 10), rtol=0, atol=0)
    assert not torch.equal(compressed, image)


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.33, 0.5, 1.0, 2.2, 3.0, 30.0])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_the_separable_blur_is_torchvisions_blur(sigma: float, dtype: torch.dtype) -> None:
    image = torch.stack([_image(1), _image(2)])  # a batch (B, 3, H, W)
    if dtype == torch.float32:
        image = image / 255.0
    radius = min(math.ceil(3 * sigma), SIZE - 1)  # capped: the padding stays inside the image
    got = separable_gaussian_blur(image, sigma, max_radius=SIZE - 1)
    expected = F.gaussian_blur(image, [2 * radius + 1] * 2, [sigma, sigma])
    assert got.dtype == dtype and got.shape == image.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1 if dtype == torch.uint8 else 1e-5)


def test_each_degradation_applies_with_its_probability() -> None:
    image = _image()
    half = v2.Compose(Degradations(jpeg_p=0.5, jpeg_quality=(10, 10)).transforms(INPUT))
    torch.manual_seed(0)
    changed = [not torch.equal(half(image), image) for _ in range(200)]
    assert 70 < sum(changed) < 130


def test_a_large_sigma_keeps_the_kernel_inside_small_images() -> None:
    """Reflection padding must stay below the image's side (at least input_size)."""
    small = 8
    transform = train_transform(small, Degradations(blur_p=1.0, blur_sigma=(40.0, 50.0)))
    assert transform.transforms[0].transforms[0].kernel_size == (15, 15)
    out = transform(torch.randint(0, 256, (3, small, small), dtype=torch.uint8))
    assert out.shape == (3, small, small) and torch.isfinite(out).all()


def test_augment_parameters_are_read_and_normalised() -> None:
    augment = {"blur": {"p": 0.3, "sigma": [0.5, 2]}, "jpeg": {"p": 1, "quality": [30, 95]}}
    got = Degradations.from_params(augment)
    assert got == Degradations(blur_p=0.3, blur_sigma=(0.5, 2.0), jpeg_p=1.0, jpeg_quality=(30, 95))
    assert got.active and hash(got) == hash(Degradations(0.3, (0.5, 2.0), 1.0, (30, 95)))
    assert got.to_params() == {
        "blur": {"p": 0.3, "sigma": [0.5, 2.0]},
        "jpeg": {"p": 1.0, "quality": [30, 95]},
    }
    assert Degradations.from_params({"blur": {"p": 0.5, "sigma": 1.0}}).blur_sigma == (1.0, 1.0)
    assert Degradations.from_params({"jpeg": {"p": 0.5}}).to_params() == {
        "jpeg": {"p": 0.5, "quality": [30, 100]}
    }


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ({"blur": {"p": 1.5}}, r"preprocess.augment.blur.p: expected a probability in \[0, 1\]"),
        ({"blur": {"p": True}}, "preprocess.augment.blur.p: expected a probability"),
        ({"jpeg": {"p": -0.1}}, "preprocess.augment.jpeg.p: expected a probability"),
        ({"jpeg": {"p": float("nan")}}, "preprocess.augment.jpeg.p: expected a probability"),
        ({"blur": {"sigma": [0, 1]}}, r"preprocess.augment.blur.sigma: .*0 < min <= max"),
        ({"blur": {"sigma": [2, 1]}}, "preprocess.augment.blur.sigma"),
        ({"blur": {"sigma": [1, 2, 3]}}, "preprocess.augment.blur.sigma"),
        ({"blur": {"sigma": "big"}}, "preprocess.augment.blur.sigma"),
        ({"jpeg": {"quality": [0, 50]}}, r"preprocess.augment.jpeg.quality: .*1 <= min"),
        ({"jpeg": {"quality": [60, 50]}}, "preprocess.augment.jpeg.quality"),
        ({"jpeg": {"quality": [50, 101]}}, "preprocess.augment.jpeg.quality"),
        ({"jpeg": {"quality": [50.5, 60]}}, "preprocess.augment.jpeg.quality"),
        ({"blur": {"sigm": [1, 2]}}, r"preprocess.augment.blur.sigm: unknown key; .*'sigma'"),
        ({"jepg": {"p": 0.5}}, r"preprocess.augment.jepg: unknown key; valid keys are"),
        ({"blur": 0.5}, "preprocess.augment.blur: expected a mapping"),
        ([0.5], "preprocess.augment: expected a mapping"),
    ],
)
def test_bad_augment_parameters_name_the_key(augment: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Degradations.from_params(augment)


def test_the_dataclass_checks_its_fields_too() -> None:
    with pytest.raises(ValueError, match="preprocess.augment.jpeg.quality"):
        Degradations(jpeg_quality=(50, 20))
    with pytest.raises(ValueError, match="preprocess.augment.blur.p"):
        Degradations(blur_p=2)
