"""A built-in, deterministic source of synthetic "real" and "fake" images for the demo and the tests.

The images are **synthetic drawings of face-like shapes, not photographs of people**. Both classes are
drawn from one scene distribution (head shape, skin tone, hair, eyes, mouth, lighting, background,
pose and scale); they differ only in how the pixels were made, the cue published detectors of
generated images rely on:

* ``real`` (label 0) goes through a simulated camera: the scene is rendered at full resolution,
  blurred by a lens, sampled through a Bayer colour filter array, given signal-dependent sensor noise,
  demosaiced bilinearly and saved as JPEG at a random quality.
* ``fake`` (label 1) goes through a simulated generator: the scene is rendered at half resolution
  with generator noise, then up-sampled the way generators do: the phase gains of an earlier x2 stage
  (period 4 in the output) and a last x2 stage by zero insertion and a transposed-convolution-like
  kernel whose four output phases have unequal gains (period 2). That leaves the periodic
  (checkerboard) traces and spectral peaks described by Odena et al. (2016), Zhang et al. (2019),
  Durall et al. (2020) and Frank et al. (2020). Then the same JPEG distribution.

``difficulty`` in [0, 1] moves the fakes' fine detail from trace to plain noise, takes away the
fakes' excess of fine-detail energy (the spectral discrepancy of Durall et al. 2020; at difficulty 1
both classes have one level of fine detail and JPEG file sizes don't give the label away), blurs the
camera's lens a little more, and adds shared noise and stronger JPEG to both classes. Every image has its own random
stream derived from ``(seed, label, index)``, so an image is the same whatever the number of images,
the order or the number of workers that make it. Images are generated at the size they will be cached
at: the traces repeat every two to four pixels and a later downscale would erase them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "CLASS_DIRS",
    "GENERATOR_VERSION",
    "SyntheticSpec",
    "generate_synthetic",
    "render_fake",
    "render_real",
    "synthesize",
]

logger = logging.getLogger(__name__)

#: Sub-folder of each label in the generated tree (the folder source's class names).
CLASS_DIRS: dict[int, str] = {0: "real", 1: "fake"}
#: Bumped whenever the generator's output changes, so stale folders are regenerated.
GENERATOR_VERSION = 3
_STAMP = ".facescan_synthetic.json"
# The only names this generator writes (see _expected_files: f"{class}/{k:05d}.jpg"), so the only
# names in a stamp it will ever remove: a class folder, then five digits or more without padding.
_OWN_NAME = re.compile(
    "(?:"
    + "|".join(re.escape(d) for d in CLASS_DIRS.values())
    + r")/(?:[0-9]{5}|[1-9][0-9]{5,})\.jpg"
)
# Calibration. Ranges are (low, high) of a uniform draw per image. Measured effects: docs/data.md.
_LENS = (0.4, 0.8)  # real: lens blur sigma in pixels ...
_LENS_D = 0.5  # ... plus this times the difficulty
_SHOT = (0.005, 0.015)  # real: sensor shot-noise variance per unit signal
_READ = (0.012, 0.028)  # real: sensor read-noise std
_GEN_NOISE = (0.006, 0.014)  # fake: noise std injected at half resolution
_FAKE_DETAIL = (0.033, 0.066)  # fake: std of the fine detail (periodic trace + full-res noise)
_TRACE_SHARE = 0.9  # fake: share of that detail's variance that is trace, at difficulty 0 (0 at 1)
_EARLY_SHARE = 0.5  # fake: share of the trace's variance from the earlier up-sampling stage
_DETAIL_BY_SHARE = ((0.0, 0.45, 0.9), (0.94, 1.0, 1.34))  # fake: detail factor by trace share
_EXCESS = 0.5  # fake: fine-detail energy excess (std factor 1 + this * (1 - difficulty))
_POST_NOISE = (0.004, 0.03)  # both: the shared noise std is drawn in [0, a + b * difficulty]

# Skin tones from light to dark (sRGB, 0..1); a tone is a random point on this polyline.
_SKIN = np.array(
    [
        [0.98, 0.84, 0.74],
        [0.90, 0.70, 0.56],
        [0.76, 0.53, 0.38],
        [0.55, 0.36, 0.24],
        [0.34, 0.22, 0.15],
    ],
    dtype=np.float32,
)
_HAIR = np.array(
    [
        [0.08, 0.06, 0.05],
        [0.22, 0.14, 0.09],
        [0.42, 0.28, 0.16],
        [0.78, 0.64, 0.40],
        [0.55, 0.25, 0.12],
        [0.62, 0.62, 0.62],
    ],
    dtype=np.float32,
)
_IRIS = np.array(
    [[0.30, 0.18, 0.10], [0.20, 0.35, 0.55], [0.30, 0.42, 0.28], [0.12, 0.09, 0.07]],
    dtype=np.float32,
)
# Bilinear interpolation kernels for x2 up-sampling after zero insertion: all four output phases have
# gain 1, so any imbalance added to them is the generator's periodic trace.
_BILINEAR3 = np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5]).astype(np.float32)
_BILINEAR4 = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]).astype(np.float32)


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything the generated images depend on.

    Attributes:
        n_images: total number of images; ``ceil(n/2)`` real and ``floor(n/2)`` fake.
        seed: the random seed.
        size: square side in pixels.
        difficulty: 0 (easy) .. 1 (hard).
    """

    n_images: int
    seed: int
    size: int
    difficulty: float

    def __post_init__(self) -> None:
        for name in ("n_images", "seed", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"data.synthetic.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))  # plain ints: the spec is written as JSON
        if self.n_images < 2:
            raise ValueError(
                f"data.synthetic.n_images must be at least 2 (one image per class), got {self.n_images}"
            )
        if self.seed < 0:
            raise ValueError(f"data.synthetic.seed must be >= 0, got {self.seed}")
        if self.size < 16:
            raise ValueError(f"data.synthetic.size must be at least 16 pixels, got {self.size}")
        d = self.difficulty
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d <= 1.0:
            raise ValueError(f"data.synthetic.difficulty must be a number in [0, 1], got {d!r}")
        object.__setattr__(self, "difficulty", float(d))

    @property
    def counts(self) -> dict[int, int]:
        """Number of images per label."""
        return {0: (self.n_images + 1) // 2, 1: self.n_images // 2}


# --------------------------------------------------------------------------------------- scene


@dataclass
class _Scene:
    """Resolution-independent scene parameters; coordinates span [-1, 1] across the image."""

    bg0: np.ndarray
    bg1: np.ndarray
    bg_angle: float
    blobs: np.ndarray  # (k, 6): x, y, radius, r, g, b
    center: tuple[float, float]
    axes: tuple[float, float]
    roll: float
    yaw: float
    skin: np.ndarray
    hair: np.ndarray
    hair_scale: float
    hairline: float
    hair_freq: float
    hair_phase: float
    cloth: np.ndarray
    iris: np.ndarray
    lip: np.ndarray
    eye_dx: float
    eye_y: float
    mouth_y: float
    mouth_w: float
    light: tuple[float, float]
    ambient: float
    exposure: float
    tint: np.ndarray
    mottle: np.ndarray  # (3, 4): fx, fy, phase, amplitude


def _sample_scene(rng: np.random.Generator) -> _Scene:
    """Draw one scene. The distribution is the same for both labels."""

    def colour(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, 3).astype(np.float32)

    t = rng.uniform(0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    skin = _SKIN[i] + (t - i) * (_SKIN[i + 1] - _SKIN[i]) + rng.normal(0, 0.02, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
    s = rng.uniform(0.42, 0.62)
    n_blobs = 3
    blobs = np.column_stack(
        [
            rng.uniform(-1, 1, n_blobs),
            rng.uniform(-1, 1, n_blobs),
            rng.uniform(0.2, 0.7, n_blobs),
            rng.uniform(0.1, 0.9, (n_blobs, 3)),
        ]
    ).astype(np.float32)
    mottle = np.column_stack(
        [
            rng.uniform(-5, 5, 3),
            rng.uniform(-5, 5, 3),
            rng.uniform(0, 2 * np.pi, 3),
            rng.uniform(0.01, 0.035, 3),
        ]
    ).astype(np.float32)
    return _Scene(
        bg0=colour(0.05, 0.95),
        bg1=colour(0.05, 0.95),
        bg_angle=float(rng.uniform(0, 2 * np.pi)),
        blobs=blobs,
        center=(float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.08, 0.12))),
        axes=(float(s * rng.uniform(0.72, 0.84)), float(s)),
        roll=float(rng.uniform(-0.3, 0.3)),
        yaw=float(rng.uniform(-0.3, 0.3)),
        skin=np.clip(skin, 0.05, 1.0).astype(np.float32),
        hair=np.clip(hair, 0.02, 1.0).astype(np.float32),
        hair_scale=float(rng.uniform(1.06, 1.2)),
        hairline=float(rng.uniform(-0.75, -0.4)),
        hair_freq=float(rng.uniform(6, 12)),
        hair_phase=float(rng.uniform(0, 2 * np.pi)),
        cloth=colour(0.05, 0.9),
        iris=(_IRIS[rng.integers(len(_IRIS))] * rng.uniform(0.8, 1.2)).astype(np.float32),
        lip=np.clip(skin * np.array([0.95, 0.62, 0.62]) + rng.normal(0, 0.03, 3), 0, 1).astype(
            np.float32
        ),
        eye_dx=float(rng.uniform(0.34, 0.44)),
        eye_y=float(rng.uniform(-0.18, -0.04)),
        mouth_y=float(rng.uniform(0.42, 0.56)),
        mouth_w=float(rng.uniform(0.2, 0.32)),
        light=(float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.7, 0.3))),
        ambient=float(rng.uniform(0.45, 0.75)),
        exposure=float(rng.uniform(0.75, 1.12)),
        tint=rng.uniform(0.92, 1.08, 3).astype(np.float32),
        mottle=mottle,
    )


def _render(scene: _Scene, size: int) -> np.ndarray:
    """Rasterise a scene to a float32 (size, size, 3) image in 0..1 with anti-aliased edges."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    x, y = np.meshgrid(coords, coords)  # (S, S) each; y grows downwards
    px = size / 2.0  # pixels per coordinate unit: soft edges are ~1 pixel wide at any resolution

    def ellipse(
        cx: float, cy: float, ax: float, ay: float, u: np.ndarray, v: np.ndarray
    ) -> np.ndarray:
        r = np.sqrt(((u - cx) / ax) ** 2 + ((v - cy) / ay) ** 2)
        return np.clip((1.0 - r) * (min(ax, ay) * px) + 0.5, 0.0, 1.0)[..., None]

    def over(img: np.ndarray, mask: np.ndarray, col: np.ndarray | float) -> np.ndarray:
        return img + mask * (col - img)

    # Background: a linear gradient plus a few soft colour blobs.
    g = (np.cos(scene.bg_angle) * x + np.sin(scene.bg_angle) * y) * 0.5 + 0.5
    img = scene.bg0 + g[..., None] * (scene.bg1 - scene.bg0)
    for bx, by, br, *bc in scene.blobs:
        w = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (br * br))[..., None] * 0.5
        img = over(img, w, np.asarray(bc, dtype=np.float32))

    # Head frame: rolled, shifted; u, v are head-local coordinates.
    cx, cy = scene.center
    ax, ay = scene.axes
    c, s = np.cos(scene.roll), np.sin(scene.roll)
    u = c * (x - cx) + s * (y - cy)
    v = -s * (x - cx) + c * (y - cy)

    # Shoulders and neck (clothing), behind the head.
    img = over(img, ellipse(0.0, ay * 2.15, ax * 2.6, ay * 0.9, u, v), scene.cloth)
    img = over(img, ellipse(0.0, ay * 1.0, ax * 0.42, ay * 0.6, u, v), scene.skin * 0.8)

    # Hair volume behind the head, with strands.
    hs = scene.hair_scale
    hair_mask = ellipse(0.0, -ay * 0.08, ax * hs, ay * hs, u, v)
    strands = 1.0 + 0.12 * np.sin(scene.hair_freq * np.pi * (u + 0.3 * v) + scene.hair_phase)
    img = over(img, hair_mask, scene.hair * strands[..., None])

    # Face with Lambertian shading of an ellipsoid lit from `light`; yaw moves the features.
    face = ellipse(0.0, 0.0, ax, ay, u, v)
    nu = np.clip(u / ax, -1, 1)
    nv = np.clip(v / ay, -1, 1)
    nz = np.sqrt(np.clip(1.0 - nu * nu - nv * nv, 0.0, 1.0))
    lx, ly = scene.light
    lz = np.sqrt(max(1.0 - lx * lx - ly * ly, 0.05))
    shade = scene.ambient + (1 - scene.ambient) * np.clip(nu * lx + nv * ly + nz * lz, 0, 1)
    mott = 1.0 + sum(a * np.sin(np.pi * (fx * x + fy * y) + ph) for fx, fy, ph, a in scene.mottle)
    img = over(img, face, scene.skin * (shade * mott)[..., None])

    # Hair fringe over the forehead, above a hairline.
    fringe = face * np.clip((scene.hairline * ay - v) * px * 0.6 + 0.5, 0.0, 1.0)[..., None]
    img = over(img, fringe, scene.hair * strands[..., None])

    fx = scene.yaw * ax * 0.5  # features shift sideways when the head turns
    ey = scene.eye_y * ay
    for side in (-1.0, 1.0):
        ex = fx + side * scene.eye_dx * ax
        img = over(img, ellipse(ex, ey - 0.2 * ay, 0.16 * ax, 0.035 * ay, u, v) * 0.85, scene.hair)
        img = over(img, ellipse(ex, ey, 0.14 * ax, 0.065 * ay, u, v), np.float32(0.92))
        img = over(img, ellipse(ex + 0.02 * scene.yaw, ey, 0.06 * ax, 0.06 * ay, u, v), scene.iris)
        img = over(
            img, ellipse(ex + 0.02 * scene.yaw, ey, 0.025 * ax, 0.025 * ay, u, v), np.float32(0.03)
        )
    nose = ellipse(fx * 1.2 + 0.05 * ax, 0.22 * ay, 0.07 * ax, 0.2 * ay, u, v) * 0.35
    img = over(img, nose, scene.skin * 0.6)
    img = over(img, ellipse(fx, scene.mouth_y * ay, scene.mouth_w * ax, 0.06 * ay, u, v), scene.lip)

    return np.clip(img * (scene.exposure * scene.tint), 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------- imaging pipelines


def _rng(seed: int, label: int, index: int, stream: int) -> np.random.Generator:
    # One independent stream per image (and per purpose: the scene uses stream 0, so the scene of
    # image k does not depend on how its label's pipeline consumes random numbers).
    return np.random.default_rng(np.random.SeedSequence([seed, label, index, stream]))


def _bilinear_demosaic(mosaic: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing of a (S, S) Bayer mosaic with (3, S, S) channel masks."""
    k_g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32) / 4.0
    k_rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4.0
    out = np.empty((*mosaic.shape, 3), dtype=np.float32)
    for ch in range(3):
        k = k_g if ch == 1 else k_rb
        out[..., ch] = ndimage.convolve(mosaic * masks[ch], k, mode="mirror")
    return out


def _bayer_masks(size: int, pattern: int) -> np.ndarray:
    """(3, S, S) masks of one of the four 2x2 Bayer layouts (RGGB, BGGR, GRBG, GBRG)."""
    yy, xx = np.mgrid[0:size, 0:size]
    phase = (yy % 2) * 2 + (xx % 2)  # 0 1 / 2 3 within each 2x2 cell
    layout = [(0, 1, 1, 2), (2, 1, 1, 0), (1, 0, 2, 1), (1, 2, 0, 1)][pattern]
    colour_at = np.asarray(layout)[phase]
    return np.stack([(colour_at == ch) for ch in range(3)]).astype(np.float32)


def _post(img: np.ndarray, rng: np.random.Generator, difficulty: float) -> np.ndarray:
    """Processing shared by both labels: mild noise (more when harder), 8-bit quantisation."""
    sigma = rng.uniform(0.0, _POST_NOISE[0] + _POST_NOISE[1] * difficulty)
    img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, rng: np.random.Generator, difficulty: float) -> bytes:
    """Encode as JPEG at a random quality; the range drops as the difficulty rises."""
    lo = round(92 - 22 * difficulty)
    hi = round(98 - 8 * difficulty)
    quality = int(rng.integers(lo, hi + 1))
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _upsample(low: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """x2 up-sampling by zero insertion and a kernel: (s, s, 3) -> (2s, 2s, 3)."""
    up = np.zeros((2 * low.shape[0], 2 * low.shape[1], 3), dtype=np.float32)
    up[::2, ::2] = low
    for ch in range(3):
        up[..., ch] = ndimage.convolve(up[..., ch], kernel, mode="mirror")
    return up


def render_real(seed: int, index: int, size: int, difficulty: float) -> np.ndarray:
    """The ``index``-th real image before JPEG: a scene through a simulated camera.

    Args:
        seed: the data set's seed.
        index: the image's number within its label.
        size: square side in pixels.
        difficulty: 0 (easy) .. 1 (hard).

    Returns:
        uint8 array (size, size, 3).
    """
    scene = _sample_scene(_rng(seed, 0, index, 0))
    rng = _rng(seed, 0, index, 1)
    img = _render(scene, size)
    # Lens: a little optical blur before the colour filter array.
    sigma = rng.uniform(*_LENS) + _LENS_D * difficulty
    img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="mirror")
    masks = _bayer_masks(size, int(rng.integers(4)))
    mosaic = (img.transpose(2, 0, 1) * masks).sum(axis=0)
    # Sensor noise: shot noise (variance proportional to the signal) plus read noise, on the raw
    # mosaic so that demosaicing correlates it as in a real camera.
    shot = rng.uniform(*_SHOT)
    read = rng.uniform(*_READ)
    mosaic = mosaic + rng.normal(0.0, 1.0, mosaic.shape).astype(np.float32) * np.sqrt(
        shot * mosaic + read * read
    )
    rgb = _bilinear_demosaic(mosaic, masks)
    return _post(rgb, rng, difficulty)


def render_fake(seed: int, index: int, size: int, difficulty: float) -> np.ndarray:
    """The ``index``-th fake image before JPEG: a scene through a simulated generator.

    The scene is rendered at half resolution with generator noise and up-sampled x2 by zero
    insertion and a bilinear kernel. The trace is what a generator's up-sampling adds on top: the
    phase gains of an earlier x2 stage (period 4) and a zero-sum perturbation of the last kernel
    (period 2, the checkerboard of transposed convolutions), both proportional to the signal.
    ``difficulty`` replaces trace by noise of the same energy and removes the detail's excess.

    Args:
        seed: the data set's seed.
        index: the image's number within its label.
        size: square side in pixels.
        difficulty: 0 (easy) .. 1 (hard).

    Returns:
        uint8 array (size, size, 3).
    """
    scene = _sample_scene(_rng(seed, 1, index, 0))
    rng = _rng(seed, 1, index, 1)
    low_size = (size + 1) // 2
    low = _render(scene, low_size)
    # Generator noise at low resolution, where the up-sampling imprints its period on it (the
    # per-layer noise inputs of StyleGAN-like generators).
    low = low + rng.normal(0.0, rng.uniform(*_GEN_NOISE), low.shape).astype(np.float32)

    base = _BILINEAR4 if rng.random() < 0.5 else _BILINEAR3
    # The generator's earlier x2 stage (half -> this resolution) leaves its own phase-gain pattern
    # on the half-resolution image: period 2 here, period 4 in the output.
    gains = rng.normal(0.0, 1.0, (2, 2)).astype(np.float32)
    gains -= gains.mean()
    early = low * np.tile(gains, (low_size // 2 + 1, low_size // 2 + 1))[:low_size, :low_size, None]
    # The last x2 stage: zero insertion, then the interpolation kernel plus a zero-sum perturbation.
    # The mean brightness is kept, but the four output phases get unequal gains: a checkerboard
    # proportional to the local signal.
    perturb = rng.normal(0.0, 1.0, base.shape).astype(np.float32)
    perturb -= perturb.mean()
    smooth = _upsample(low, base)[:size, :size]
    late = _upsample(low, perturb)[:size, :size]
    early = _upsample(early, base)[:size, :size]
    trace = np.sqrt(_EARLY_SHARE) * early / max(float(early.std()), 1e-8) + np.sqrt(
        1.0 - _EARLY_SHARE
    ) * late / max(float(late.std()), 1e-8)
    # Fine detail (trace + full-resolution noise) has one total level whatever the difficulty, so
    # the JPEG size says nothing about the label; the difficulty only moves it from trace to noise.
    share = _TRACE_SHARE * (1.0 - difficulty)
    # A periodic pattern costs JPEG fewer bytes than noise of the same energy: mostly-trace images
    # get a little more detail so that their files are as large.
    detail = rng.uniform(*_FAKE_DETAIL) * float(np.interp(share, *_DETAIL_BY_SHARE))
    # Generators also leave more fine-detail energy than a camera (Durall et al. 2020); the
    # difficulty takes that excess away, and at 1 the two levels match.
    detail *= 1.0 + _EXCESS * (1.0 - difficulty)
    trace *= detail * np.sqrt(share) / max(float(trace.std()), 1e-8)
    noise = rng.normal(0.0, detail * np.sqrt(1.0 - share), smooth.shape).astype(np.float32)
    out = smooth + trace + noise
    return _post(out, rng, difficulty)


def synthesize(seed: int, label: int, index: int, size: int, difficulty: float) -> bytes:
    """JPEG bytes of one synthetic image; a pure function of its arguments.

    Args:
        seed: the data set's seed.
        label: 0 real, 1 fake.
        index: the image's number within its label.
        size: square side in pixels.
        difficulty: 0 (easy) .. 1 (hard).

    Returns:
        The encoded JPEG file.
    """
    if label not in CLASS_DIRS:
        raise ValueError(f"label must be 0 (real) or 1 (fake), got {label!r}")
    render = render_real if label == 0 else render_fake
    pixels = render(seed, index, size, difficulty)
    return _jpeg(pixels, _rng(seed, label, index, 2), difficulty)


# ----------------------------------------------------------------------------------- on disk


def _expected_files(spec: SyntheticSpec) -> list[str]:
    return [
        f"{CLASS_DIRS[label]}/{k:05d}.jpg" for label, n in spec.counts.items() for k in range(n)
    ]


def _own_name(name: object) -> bool:
    """True for a name :func:`_expected_files` can produce (``real|fake/NNNNN.jpg``)."""
    return isinstance(name, str) and _OWN_NAME.fullmatch(name) is not None


def _inside(root: Path, name: str) -> Path | None:
    """``root / name`` when its folder resolves to that class folder of ``root``, else None."""
    path = root / name
    try:
        folder = path.parent.resolve()
    except (OSError, RuntimeError):  # a link loop
        return None
    return path if folder == root / path.parent.name else None


def _read_stamp(path: Path) -> dict:
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _write_stamp(path: Path, content: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=1))
    os.replace(tmp, path)


def generate_synthetic(output_dir: str | Path, spec: SyntheticSpec, progress: bool = True) -> Path:
    """Write the synthetic data set as ``output_dir/<real|fake>/NNNNN.jpg``, unless already there.

    A small JSON stamp in ``output_dir`` records the parameters and the files this function wrote.
    When it matches ``spec`` and every file exists, nothing is written. Otherwise the files are
    (re)written and the ones a previous run wrote that the new ``spec`` does not need are removed;
    nothing else in ``output_dir`` is ever touched.

    Args:
        output_dir: the folder (``data.synthetic.output_dir``).
        spec: the parameters.
        progress: show a progress bar.

    Returns:
        ``output_dir`` as an absolute path.
    """
    root = Path(output_dir).resolve()
    stamp_path = root / _STAMP
    wanted = {"generator_version": GENERATOR_VERSION, **asdict(spec)}
    names = _expected_files(spec)
    stamp = _read_stamp(stamp_path)
    if (
        stamp.get("complete")
        and stamp.get("spec") == wanted
        and all((root / name).is_file() for name in names)
    ):
        logger.info("Synthetic data set up to date in %s (%d images)", root, len(names))
        return root

    files = stamp.get("files", [])
    # A stamp is only a hint: keep the names this generator could have written, nothing else.
    previous = [n for n in (files if isinstance(files, list) else []) if _own_name(n)]
    root.mkdir(parents=True, exist_ok=True)
    for sub in CLASS_DIRS.values():
        (root / sub).mkdir(exist_ok=True)
    # Claim every file we may leave behind before writing any, so an interrupted run is redone
    # and its leftovers are still known to be ours.
    owned = sorted(set(previous) | set(names))
    _write_stamp(stamp_path, {"complete": False, "spec": wanted, "files": owned})

    from tqdm.auto import tqdm

    jobs = [(label, k) for label, n in spec.counts.items() for k in range(n)]
    for label, k in tqdm(jobs, desc="synthetic images", disable=not progress, leave=False):
        data = synthesize(spec.seed, label, k, spec.size, spec.difficulty)
        target = root / CLASS_DIRS[label] / f"{k:05d}.jpg"
        tmp = target.with_name(f".{target.name}.tmp")  # hidden: ignored by the folder source
        tmp.write_bytes(data)
        os.replace(tmp, target)
    keep = set(names)
    for name in previous:
        if name in keep:
            continue
        path = _inside(root, name)
        if path is None:
            logger.warning(
                "Left %s in place: its folder now leads out of %s; delete it yourself if it is a "
                "stale synthetic image",
                name,
                root,
            )
            continue
        path.unlink(missing_ok=True)  # unlink removes a link itself, never what it points to
    _write_stamp(stamp_path, {"complete": True, "spec": wanted, "files": names})
    logger.info(
        "Generated %d synthetic images (%d real, %d fake, %d px, difficulty %.2f) in %s",
        len(names),
        spec.counts[0],
        spec.counts[1],
        spec.size,
        spec.difficulty,
        root,
    )
    return root
