"""Image perturbations for the robustness stage (Pillow and torchvision, deterministic).

Each perturbation maps a cached uint8 ``(3, S, S)`` test image to another one of the same shape,
before the deterministic evaluation resize/crop, identically for real and fake images:

- ``jpeg``: re-encode as JPEG at ``quality`` with Pillow (libjpeg, 4:2:0 chroma subsampling as
  most web JPEGs), then decode;
- ``blur``: Gaussian blur of standard deviation ``sigma`` pixels, kernel ``2 * ceil(3 sigma) + 1``;
- ``resize``: down-sample by ``scale`` (antialiased bilinear) and back up to ``S`` (bilinear).

They model what happens to images on the web (recompression, soft focus, thumbnailing) and are the
classic ways detectors keyed to high-frequency generator traces fail.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

__all__ = [
    "DEFAULT_PERTURBATIONS",
    "Perturbation",
    "PerturbedImages",
    "parse_perturbations",
]

#: The issue's list, used when ``evaluation.robustness.perturbations`` is not given.
DEFAULT_PERTURBATIONS: dict[str, dict[str, Any]] = {
    "jpeg_q90": {"type": "jpeg", "quality": 90},
    "jpeg_q75": {"type": "jpeg", "quality": 75},
    "jpeg_q50": {"type": "jpeg", "quality": 50},
    "blur_sigma1": {"type": "blur", "sigma": 1.0},
    "blur_sigma2": {"type": "blur", "sigma": 2.0},
    "resize_0.5x": {"type": "resize", "scale": 0.5},
}

_KEYS = {"jpeg": "quality", "blur": "sigma", "resize": "scale"}


def _jpeg(img: torch.Tensor, quality: float) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return torch.from_numpy(np.asarray(decoded.convert("RGB")).transpose(2, 0, 1).copy())


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * math.ceil(3 * sigma) + 1  # covers +-3 sigma
    # Blur in float and round once, rather than rounding inside the kernel.
    out = F.gaussian_blur(img.float(), [k, k], [sigma, sigma])
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _resize(img: torch.Tensor, scale: float) -> torch.Tensor:
    h, w = img.shape[-2:]
    small = [max(1, round(h * scale)), max(1, round(w * scale))]
    down = F.resize(img, small, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.resize(down, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)


_APPLY: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "jpeg": _jpeg,
    "blur": _blur,
    "resize": _resize,
}


@dataclass(frozen=True)
class Perturbation:
    """A named image perturbation.

    Attributes:
        name: label used in tables and plots (e.g. ``jpeg_q75``).
        kind: ``jpeg``, ``blur`` or ``resize``.
        value: JPEG quality, blur sigma in pixels, or resize scale.
    """

    name: str
    kind: str
    value: float

    def __call__(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """Perturb one uint8 ``(3, H, W)`` image; returns a new uint8 ``(3, H, W)`` array."""
        t = torch.from_numpy(np.array(image, copy=True))  # the cache is a read-only memmap
        if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(
                f"perturbation {self.name!r} expects a uint8 (3, H, W) image, "
                f"got {t.dtype} {tuple(t.shape)}"
            )
        return _APPLY[self.kind](t, self.value).numpy()


def parse_perturbations(spec: Mapping[str, Any] | None) -> list[Perturbation]:
    """Validate ``evaluation.robustness.perturbations`` (name -> {type, quality|sigma|scale}).

    Args:
        spec: the mapping, or None for :data:`DEFAULT_PERTURBATIONS`.

    Returns:
        The perturbations in the configured order.

    Raises:
        ValueError: naming the offending ``evaluation.robustness.perturbations.<name>`` entry.
    """
    spec = DEFAULT_PERTURBATIONS if spec is None else spec
    out = []
    for name, entry in spec.items():
        where = f"evaluation.robustness.perturbations.{name}"
        if not isinstance(entry, Mapping) or entry.get("type") not in _KEYS:
            raise ValueError(f"{where}: needs type: one of {sorted(_KEYS)}, got {entry!r}")
        kind = entry["type"]
        key = _KEYS[kind]
        extra = set(entry) - {"type", key}
        if extra:
            raise ValueError(f"{where}: unknown key(s) {sorted(extra)}; a {kind} takes {key!r}")
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}.{key} must be a number, got {value!r}")
        if kind == "jpeg" and not (1 <= value <= 100 and float(value).is_integer()):
            raise ValueError(f"{where}.quality must be an integer in 1..100, got {value!r}")
        if kind == "blur" and not value > 0:
            raise ValueError(f"{where}.sigma must be > 0, got {value!r}")
        if kind == "resize" and not 0 < value < 1:
            raise ValueError(f"{where}.scale must be in (0, 1), got {value!r}")
        out.append(Perturbation(str(name), kind, float(value)))
    return out


class PerturbedImages:
    """A read-only view of an image cache whose images pass through a perturbation.

    Quacks like :class:`facescan.data.cache.ImageCache` where the loaders need it (``len``,
    ``[i] -> (uint8 (3, S, S), label)``, ``labels``, ``paths``, ``size``), so the evaluation
    loader, its workers and its deterministic transform are reused unchanged. Picklable when the
    wrapped cache is.
    """

    def __init__(self, cache: Any, perturbation: Perturbation) -> None:
        self.cache = cache
        self.perturbation = perturbation

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        image, label = self.cache[i]
        return self.perturbation(image), label

    def __getattr__(self, name: str) -> Any:
        # labels, paths, size, ... of the wrapped cache (not called for the attributes set above).
        if name in ("cache", "perturbation"):
            raise AttributeError(name)
        return getattr(self.cache, name)
