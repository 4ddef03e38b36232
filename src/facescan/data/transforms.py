"""Tensor transforms from the uint8 cache to the network's input.

Both work on ``uint8`` tensors ``(3, S, S)`` (or batches ``(B, 3, S, S)``) with
``torchvision.transforms.v2``: degradations and geometry first, on uint8 (four times less memory
traffic than float; ``v2.JPEG`` takes only uint8 CPU tensors), then conversion to ``float32`` in
[0, 1] and ImageNet normalisation.

- training: optional degradations of real-world images (:class:`Degradations`: Gaussian blur and
  JPEG re-compression, each applied with its own probability, on the uint8 image at the cache's
  size), then the report's augmentation, ``RandomResizedCrop(scale=(0.8, 1.0))`` and a random
  horizontal flip;
- evaluation (validation, test, prediction): deterministic ``Resize`` + ``CenterCrop``, so a
  score never depends on a random draw (the authors' code cropped at random there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Degradations",
    "GaussianBlur",
    "eval_transform",
    "separable_gaussian_blur",
    "train_transform",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _check_input_size(input_size: int) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"preprocess.input_size must be a positive integer, got {input_size!r}")
    return input_size


def _to_normalised_float() -> list[v2.Transform]:
    return [
        v2.ToDtype(torch.float32, scale=True),  # uint8 0..255 -> float 0..1
        v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ]


#: Where :meth:`Degradations.from_params` reads its values, the prefix of every message.
_SECTION = "preprocess.augment"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _probability(value: Any, name: str) -> float:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{_SECTION}.{name}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def _pair(value: Any) -> tuple[Any, Any] | None:
    """``[min, max]`` (any 2-sequence) or one number (min = max); None when neither."""
    if _is_number(value):
        return value, value
    if isinstance(value, list | tuple) and len(value) == 2:
        return value[0], value[1]
    return None


def _sigma_range(value: Any, name: str) -> tuple[float, float]:
    pair = _pair(value)
    if pair is None or not all(_is_number(v) for v in pair) or not 0 < pair[0] <= pair[1]:
        raise ValueError(
            f"{_SECTION}.{name}: expected [min, max] standard deviations in pixels with "
            f"0 < min <= max, got {value!r}"
        )
    return float(pair[0]), float(pair[1])


def _quality_range(value: Any, name: str) -> tuple[int, int]:
    pair = _pair(value)
    if (
        pair is None
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        or not 1 <= pair[0] <= pair[1] <= 100
    ):
        raise ValueError(
            f"{_SECTION}.{name}: expected [min, max] JPEG qualities, integers with "
            f"1 <= min <= max <= 100, got {value!r}"
        )
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class Degradations:
    """Training-time degradations of real-world images, before the crop (``preprocess.augment``).

    Each is applied to a training image with its own probability, independently, on the uint8
    image at the cache's size: first a Gaussian blur (:class:`GaussianBlur`, ``v2.GaussianBlur``'s
    draws with a kernel sized to each sigma), then a JPEG re-compression (``v2.JPEG``, quality
    drawn uniformly among the integers of ``jpeg_quality``, both ends included). A probability of
    0 (the default) leaves the transform out of the pipeline altogether, so that the random
    stream, and the batches, are the ones without degradations.

    Attributes:
        blur_p: probability of blurring an image (``preprocess.augment.blur.p``).
        blur_sigma: ``(min, max)`` standard deviation in pixels of the cache's images
            (``preprocess.augment.blur.sigma``); 0 < min <= max.
        jpeg_p: probability of re-compressing an image (``preprocess.augment.jpeg.p``).
        jpeg_quality: ``(min, max)`` JPEG quality, integers, 1 <= min <= max <= 100
            (``preprocess.augment.jpeg.quality``).

    Raises:
        ValueError: naming ``preprocess.augment.<blur|jpeg>.<key>`` for a bad value.
    """

    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 3.0)
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 100)

    def __post_init__(self) -> None:
        # Normalised (floats, tuples), so equal settings compare and hash equal.
        object.__setattr__(self, "blur_p", _probability(self.blur_p, "blur.p"))
        object.__setattr__(self, "blur_sigma", _sigma_range(self.blur_sigma, "blur.sigma"))
        object.__setattr__(self, "jpeg_p", _probability(self.jpeg_p, "jpeg.p"))
        object.__setattr__(self, "jpeg_quality", _quality_range(self.jpeg_quality, "jpeg.quality"))

    @classmethod
    def from_params(cls, augment: Mapping[str, Any] | None) -> Degradations:
        """From the ``preprocess.augment`` section.

        Args:
            augment: ``{blur: {p, sigma: [min, max]}, jpeg: {p, quality: [min, max]}}``; a missing
                section, key or a None section takes the default (off).

        Raises:
            ValueError: naming ``preprocess.augment[.<section>].<key>`` for an unknown key or a
                bad value.
        """
        if augment is None:
            return cls()
        fields = {
            "blur": {"p": "blur_p", "sigma": "blur_sigma"},
            "jpeg": {"p": "jpeg_p", "quality": "jpeg_quality"},
        }
        if not isinstance(augment, Mapping):
            raise ValueError(f"{_SECTION}: expected a mapping with keys {list(fields)}")
        kwargs: dict[str, Any] = {}
        for section, values in augment.items():
            if section not in fields:
                raise ValueError(
                    f"{_SECTION}.{section}: unknown key; valid keys are {list(fields)}"
                )
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ValueError(
                    f"{_SECTION}.{section}: expected a mapping with keys {list(fields[section])}"
                )
            for key, value in values.items():
                if key not in fields[section]:
                    raise ValueError(
                        f"{_SECTION}.{section}.{key}: unknown key; valid keys are "
                        f"{list(fields[section])}"
                    )
                kwargs[fields[section][key]] = value
        return cls(**kwargs)

    @property
    def active(self) -> bool:
        """Whether any degradation can happen (a probability above 0)."""
        return self.blur_p > 0 or self.jpeg_p > 0

    def to_params(self) -> dict[str, Any] | None:
        """The degradations in effect, as ``preprocess.augment`` would give them, for run
        fingerprints and provenance: only the sections with ``p > 0``; None when none is."""
        out: dict[str, Any] = {}
        if self.blur_p > 0:
            out["blur"] = {"p": self.blur_p, "sigma": list(self.blur_sigma)}
        if self.jpeg_p > 0:
            out["jpeg"] = {"p": self.jpeg_p, "quality": list(self.jpeg_quality)}
        return out or None

    def transforms(self, input_size: int) -> list[v2.Transform]:
        """The ``v2`` transforms, for uint8 CPU tensors ``(..., 3, H, W)`` with H, W >=
        ``input_size``; none when :attr:`active` is False."""
        out: list[v2.Transform] = []
        if self.blur_p > 0:
            blur = GaussianBlur(self.blur_sigma, max_radius=input_size - 1)
            out.append(v2.RandomApply([blur], p=self.blur_p))
        if self.jpeg_p > 0:
            out.append(v2.RandomApply([v2.JPEG(quality=self.jpeg_quality)], p=self.jpeg_p))
        return out


class GaussianBlur(v2.GaussianBlur):
    """``v2.GaussianBlur`` (same draws: sigma uniform in ``sigma``) with a kernel sized to each
    sigma and applied as two 1-D passes.

    ``v2.GaussianBlur`` convolves every image with one ``k x k`` kernel sized for the largest
    sigma (``k`` = 19 for sigma up to 3): at 256 px that is 5.7 ms per image on this project's
    2-core CPU, against 1.2 ms for two 1-D passes of a kernel sized to the image's own sigma.
    Here the radius is ``ceil(3 sigma)`` (at most ``max_radius``: reflection padding must stay
    inside the image) and uint8 images are rounded back to uint8 as torchvision does: the result
    is torchvision's ``gaussian_blur(image, [2r + 1] * 2, [sigma] * 2)`` up to float rounding (at
    most 1 level of 255, on a fraction of a percent of the pixels).

    Args:
        sigma: ``(min, max)`` standard deviation in pixels.
        max_radius: largest kernel radius; images must be larger than it on both sides.
    """

    def __init__(self, sigma: tuple[float, float], max_radius: int) -> None:
        radius = max(0, min(math.ceil(3 * sigma[1]), max_radius))
        super().__init__(2 * radius + 1, sigma=sigma)
        self.max_radius = max_radius

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor):  # PIL images: torchvision's kernel
            return super().transform(inpt, params)
        out = separable_gaussian_blur(
            inpt.as_subclass(torch.Tensor), params["sigma"][0], self.max_radius
        )
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def separable_gaussian_blur(image: torch.Tensor, sigma: float, max_radius: int) -> torch.Tensor:
    """Gaussian blur of ``(..., C, H, W)`` images (uint8 or float), reflection-padded, radius
    ``min(ceil(3 sigma), max_radius)``; see :class:`GaussianBlur`."""
    radius = max(0, min(math.ceil(3 * sigma), max_radius))
    if radius == 0 or image.numel() == 0:
        return image.clone()
    shape, fp = image.shape, image.is_floating_point()
    x = image.reshape((-1, *shape[-3:])).to(torch.float32)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    weights = torch.softmax(-((offsets / sigma) ** 2) / 2, dim=0)
    channels = shape[-3]
    across = weights.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    down = weights.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = nnf.conv2d(nnf.pad(x, (radius, radius, 0, 0), mode="reflect"), across, groups=channels)
    x = nnf.conv2d(nnf.pad(x, (0, 0, radius, radius), mode="reflect"), down, groups=channels)
    x = x.reshape(shape)
    return x.to(image.dtype) if fp else x.round_().clamp_(0, 255).to(image.dtype)


def train_transform(input_size: int, degradations: Degradations | None = None) -> v2.Compose:
    """The report's training augmentation, after optional degradations.

    Args:
        input_size: side of the square network input (``preprocess.input_size``).
        degradations: blur / JPEG applied before the crop (``preprocess.augment``); None or
            all probabilities 0 = the report's augmentation alone, the same transforms and
            random draws as without the argument.

    Returns:
        uint8 ``(3, S, S)`` tensor -> normalised float32 ``(3, input_size, input_size)``. Called
        on one image, every random choice is the image's own; called on a batch, the batch shares
        one draw (one crop, one sigma, one quality), which is why the loader applies it per image.
    """
    size = _check_input_size(input_size)
    extra = degradations.transforms(size) if degradations is not None else []
    return v2.Compose(
        [
            *extra,
            v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            *_to_normalised_float(),
        ]
    )


def eval_transform(input_size: int) -> v2.Compose:
    """Deterministic transform for validation, test and prediction.

    Args:
        input_size: side of the square network input (``preprocess.input_size``).

    Returns:
        uint8 ``(3, H, W)`` tensor -> normalised float32 ``(3, input_size, input_size)``
        (shorter side resized to ``input_size``, then a centre crop).
    """
    size = _check_input_size(input_size)
    return v2.Compose(
        [v2.Resize(size, antialias=True), v2.CenterCrop(size), *_to_normalised_float()]
    )
