"""Where the models look: Grad-CAM class-activation maps with captum, and a figure of them.

Grad-CAM itself is captum's (:class:`captum.attr.LayerGradCam` of a class's log-odds, upsampled
with :meth:`captum.attr.LayerAttribution.interpolate`); this module only decides *which* layer each
variant is attributed at and how a transformer's tokens are laid out as the ``(B, C, h, w)`` grid
Grad-CAM needs (docs/model.md, "Where the models look"):

- CNN tails (``resnet50``, ``se_resnet50``, ``dilated``, ``aspp``, the mid-ViT variants ``vit``,
  ``dilated_vit``, ``vit_aspp``): the last spatial map, ``model.aspp``'s output with ASPP, else
  ``model.layer4``'s (after a mid ViT, layer4 is a CNN stage again);
- a tail ViT (``aspp_vit``): ``model.tail_vit``'s output tokens ``(B, N, D)``, read back onto the
  patch grid they were embedded from, ``(B, D, h, w)``;
- Cross Scan (``aspp_crossscan_vit``): the four directions' tokens ``(B, 4, N, D)``, each on its own
  direction's patch grid; captum computes one Grad-CAM per direction (gradients averaged over that
  direction's grid), each direction's map is taken back to the un-flipped, un-transposed feature map
  (inverting :func:`facescan.models.cross_scan`) and the four are summed before the ReLU. That sum
  is Grad-CAM on the merged grid whose channels are the 4 x D direction channels.

Tokens are routed through an ``nn.Identity`` (``_GridView.grid``) by a forward hook on the tail
ViT, so captum attributes an ordinary module whose output is a grid, and the model's output is
unchanged (the reshapes are exact inverses). Nothing here imports Kedro.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib.figure import Figure
from torch import Tensor, nn

from facescan.models import DIRECTIONS, FeatureFusion, single_view
from facescan.runtime import autocast

__all__ = [
    "DIRECTION_ARROWS",
    "CamLayer",
    "TokenGrid",
    "cam_layer",
    "choose_images",
    "class_activation_maps",
    "explain_grid",
    "fusion_direction_weights",
]

#: How each Cross Scan direction (:data:`facescan.models.DIRECTIONS`) reads the feature map:
#: row-major left to right; flipped over H and W, so right to left (from the bottom); transposed,
#: so column by column, top to bottom; transposed flip, so bottom to top (from the right).
DIRECTION_ARROWS: dict[str, str] = {
    "identity": "→",
    "flip_hw": "←",
    "transpose": "↓",
    "flip_hw_transpose": "↑",
}


@dataclass(frozen=True)
class TokenGrid:
    """How a tail ViT's tokens lie on its patch grid, and back onto the feature map it read.

    Attributes:
        patch_size: the tail ViT's patch side ``p`` (``model.options["tail_patch_size"]``).
        cross_scan: tokens are ``(B, 4, N, D)``, one sequence per Cross Scan direction.
    """

    patch_size: int
    cross_scan: bool = False

    def grid_size(self, feature_hw: tuple[int, int]) -> tuple[int, int]:
        """Token grid ``(h, w)`` of an ``H x W`` feature map (PatchEmbed pads to whole patches)."""
        p = self.patch_size
        return -(-feature_hw[0] // p), -(-feature_hw[1] // p)

    def __call__(self, tokens: Tensor, feature_hw: tuple[int, int]) -> Tensor | tuple[Tensor, ...]:
        """Tokens to grid(s): ``(B, N, D) -> (B, D, h, w)``; with Cross Scan ``(B, 4, N, D) ->``
        ``((B, 2D, h, w), (B, 2D, w, h))``: directions 0-1 (read from ``H x W`` maps) and 2-3
        (read from the transposed ``W x H`` maps), each on its own direction's grid, channels
        direction-major.
        """
        h, w = self.grid_size(feature_hw)
        if not self.cross_scan:
            return tokens.transpose(1, 2).unflatten(2, (h, w))
        rows = tokens[:, :2].transpose(2, 3).unflatten(3, (h, w)).flatten(1, 2)
        cols = tokens[:, 2:].transpose(2, 3).unflatten(3, (w, h)).flatten(1, 2)
        return rows, cols

    def tokens(self, grids: Tensor | tuple[Tensor, ...]) -> Tensor:
        """The exact inverse of :meth:`__call__`."""
        if not self.cross_scan:
            assert isinstance(grids, Tensor)
            return grids.flatten(2).transpose(1, 2)
        rows, cols = grids
        parts = [g.unflatten(1, (2, -1)).flatten(3).transpose(2, 3) for g in (rows, cols)]
        return torch.cat(parts, dim=1)

    def _to_feature_map(self, grid: Tensor, feature_hw: tuple[int, int]) -> Tensor:
        """``(B, k, h, w)`` per-token values to ``(B, k, H, W)``: each token covers its patch."""
        p = self.patch_size
        if p > 1:
            grid = grid.repeat_interleave(p, dim=-2).repeat_interleave(p, dim=-1)
        return grid[..., : feature_hw[0], : feature_hw[1]]

    def to_map(self, attributions: tuple[Tensor, ...], feature_hw: tuple[int, int]) -> Tensor:
        """Per-channel Grad-CAM terms on the grid(s) to one map ``(B, 1, H, W)`` on the feature map.

        Without Cross Scan: the sum over channels, each token spread over its ``p x p`` patch.
        With Cross Scan: per direction, the sum over its channels, spread over its patches in the
        direction's own map, then flipped/transposed back (the inverse of
        :func:`facescan.models.cross_scan`); the four direction maps are summed.
        """
        if not self.cross_scan:
            return self._to_feature_map(attributions[0].sum(1, keepdim=True), feature_hw)
        return self.direction_maps(attributions, feature_hw).sum(1, keepdim=True)

    def direction_maps(
        self, attributions: tuple[Tensor, ...], feature_hw: tuple[int, int]
    ) -> Tensor:
        """Cross Scan only: per-direction maps ``(B, 4, H, W)``, back in the feature map's frame."""
        height, width = feature_hw
        rows, cols = (a.unflatten(1, (2, -1)).sum(2) for a in attributions)  # (B, 2, ., .)
        rows = self._to_feature_map(rows, (height, width))
        cols = self._to_feature_map(cols, (width, height))
        # DIRECTIONS: identity, flip_hw, transpose, flip_hw_transpose; undo each.
        identity, flip_hw = rows[:, 0], rows[:, 1].flip(-2, -1)
        transpose = cols[:, 0].transpose(-2, -1)
        flip_hw_transpose = cols[:, 1].transpose(-2, -1).flip(-2, -1)
        return torch.stack([identity, flip_hw, transpose, flip_hw_transpose], dim=1)


class CamLayer(NamedTuple):
    """Where Grad-CAM looks in a model: ``layer``'s output, as a grid through ``to_grid``.

    Attributes:
        layer: the model's module whose output is attributed.
        to_grid: None when that output is already a ``(B, C, h, w)`` map; a :class:`TokenGrid`
            for a tail ViT's tokens.
    """

    layer: nn.Module
    to_grid: TokenGrid | None


def cam_layer(model: nn.Module) -> CamLayer:
    """The layer Grad-CAM attributes for ``model``, decided from ``model.options``.

    - ``vit: tail``: ``model.tail_vit`` (tokens; with ``cross_scan`` the four directions);
    - else with ``aspp``: ``model.aspp`` (the last map, after a mid ViT too);
    - else ``model.layer4`` (a mid ViT sits before layer4, so layer4 is still the last map).

    Raises:
        ValueError: for a model without FaceScanNet's ``options`` and modules.
    """
    options = getattr(model, "options", None)
    if not isinstance(options, Mapping) or not all(
        hasattr(model, name) for name in ("layer4", "aspp", "tail_vit")
    ):
        raise ValueError(
            f"class-activation maps need a FaceScanNet (facescan.models.create_model), "
            f"got {type(model).__name__}"
        )
    if options.get("vit") == "tail":
        patch = int(options["tail_patch_size"])
        embed = getattr(model.tail_vit, "patch_embed", None)
        if embed is not None and embed.patch_size != patch:
            raise ValueError(
                f"model.options says tail_patch_size {patch} but the tail ViT embeds "
                f"{embed.patch_size} x {embed.patch_size} patches"
            )
        return CamLayer(model.tail_vit, TokenGrid(patch, bool(options.get("cross_scan"))))
    if options.get("aspp"):
        return CamLayer(model.aspp, None)
    return CamLayer(model.layer4, None)


class _GridView(nn.Module):
    """``model`` with ``layer``'s tokens passed through ``self.grid`` laid out as grid(s).

    A forward hook on ``layer`` reshapes its output with ``to_grid``, runs it through the
    ``nn.Identity`` ``self.grid`` (what captum attributes) and returns the tokens again, so the
    model computes exactly what it computes alone. It also records the size of the feature map
    the layer read (``feature_hw``).
    """

    def __init__(self, model: nn.Module, layer: nn.Module, to_grid: TokenGrid) -> None:
        super().__init__()
        self.model = model
        self.grid = nn.Identity()
        self._layer = [layer]  # in a list: not registered twice as a submodule
        self._to_grid = to_grid
        self.feature_hw: tuple[int, int] | None = None

    def _route(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        self.feature_hw = (int(inputs[0].shape[-2]), int(inputs[0].shape[-1]))
        return self._to_grid.tokens(self.grid(self._to_grid(output, self.feature_hw)))

    def forward(self, x: Tensor) -> Tensor:
        handle = self._layer[0].register_forward_hook(self._route)
        try:
            return self.model(x)
        finally:
            handle.remove()


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients (only the layer's gradient is needed), then restore."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _targets(target: int | Sequence[int] | np.ndarray, n: int) -> list[int] | int:
    if isinstance(target, int | np.integer):
        return int(target)
    values = [int(t) for t in np.asarray(target).reshape(-1)]
    if len(values) != n:
        raise ValueError(f"target: expected one class per image ({n}), got {len(values)}")
    return values


def _log_odds(logits: Tensor) -> Tensor:
    """Per class ``k``: ``logit_k - logsumexp(logit_j, j != k)`` = ``log(p_k / (1 - p_k))``."""
    c = logits.shape[1]
    if c < 2:
        return logits
    others = torch.eye(c, dtype=torch.bool, device=logits.device)
    return logits - logits.unsqueeze(1).masked_fill(others, -torch.inf).logsumexp(2)


def class_activation_maps(
    model: nn.Module,
    images: Tensor | np.ndarray,
    target: int | Sequence[int] | np.ndarray = 1,
    *,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 16,
    score: Literal["log_odds", "logit"] = "log_odds",
) -> np.ndarray:
    """Grad-CAM of ``target`` for every image, at the image's size.

    Computed by captum's :class:`~captum.attr.LayerGradCam` at :func:`cam_layer`'s layer for the
    class's log-odds (``score``): ReLU of the gradient-weighted channel sum, upsampled to
    ``H x W`` with :meth:`~captum.attr.LayerAttribution.interpolate` (bilinear), divided by its
    maximum per image (a map without positive evidence stays all zero). Batches run under the same autocast
    as evaluation (:func:`facescan.runtime.autocast`); the weights stay float32 and receive no
    gradients (the model's ``requires_grad`` flags and train/eval mode are restored afterwards).

    Args:
        model: a FaceScanNet on ``device`` (under :class:`~facescan.models.HorizontalFlipTTA`,
            the map is of the image as given, not of its mirror image).
        images: ``(N, 3, H, W)`` float images as the model reads them (ImageNet-normalised,
            :func:`facescan.data.transforms.eval_transform`); H, W >= 32, not necessarily square.
        target: the class explained (1 = fake, the default), or one class per image.
        device: where ``model`` lives.
        amp_dtype: autocast dtype (``facescan.runtime.inference_settings``), None for float32.
        batch_size: images per forward/backward pass.
        score: what is explained: ``log_odds``, the class's logit minus the log-sum-exp of the
            others (two classes: ``logit_fake - logit_real``, what ``p_fake`` is a function of),
            or ``logit``, the class's logit alone (Grad-CAM's paper; evidence that raises both
            logits alike counts too).

    Returns:
        float32 ``(N, H, W)`` in [0, 1].

    Raises:
        ValueError: for images that are not float ``(N, 3, H, W)``, a bad ``target``, ``score``
            or ``batch_size``, a model that is not a FaceScanNet, or non-finite attributions.
    """
    x_all = torch.as_tensor(images)
    if x_all.ndim != 4 or x_all.shape[1] != 3 or not x_all.is_floating_point():
        raise ValueError(
            "images: expected float (N, 3, H, W) images as the model reads them "
            f"(ImageNet-normalised), got {x_all.dtype} {tuple(x_all.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if score not in ("log_odds", "logit"):
        raise ValueError(f"score: expected log_odds or logit, got {score!r}")
    device = torch.device(device)
    n, _, height, width = x_all.shape
    targets = _targets(target, n)
    # The map is of the image as given: not of a flip-TTA model's mirror-image pass too.
    model = single_view(model)
    layer, to_grid = cam_layer(model)
    view = None if to_grid is None else _GridView(model, layer, to_grid)
    net = model if view is None else view

    def scores(x: Tensor) -> Tensor:
        logits = net(x).float()
        return _log_odds(logits) if score == "log_odds" else logits

    gradcam = LayerGradCam(scores, layer if view is None else view.grid)
    out = np.zeros((n, height, width), dtype=np.float32)
    with _frozen_eval(model), torch.enable_grad():
        for start in range(0, n, batch_size):
            x = x_all[start : start + batch_size].to(device, dtype=torch.float32)
            t = targets if isinstance(targets, int) else targets[start : start + len(x)]
            with autocast(device, amp_dtype):
                # Per-channel terms (mean gradient x activation); summed here in float32.
                attr = gradcam.attribute(x, target=t, attr_dim_summation=False)
            parts = tuple(
                a.detach().float() for a in (attr if isinstance(attr, tuple) else (attr,))
            )
            if view is None or to_grid is None:
                cam = parts[0].sum(1, keepdim=True)
            else:
                assert view.feature_hw is not None
                cam = to_grid.to_map(parts, view.feature_hw)
            cam = LayerAttribution.interpolate(cam.relu(), (height, width), "bilinear")[:, 0]
            if not torch.isfinite(cam).all():
                raise ValueError(
                    "Grad-CAM gave non-finite values (NaN or inf): the model's weights or "
                    "gradients are not usable at this precision; try amp_dtype=None"
                )
            peak = cam.flatten(1).amax(1).clamp_min(torch.finfo(torch.float32).tiny)
            cam = (cam / peak[:, None, None]).clamp_(0.0, 1.0)
            out[start : start + len(x)] = cam.cpu().numpy()
    return out


def _fusion_module(model: nn.Module) -> FeatureFusion | None:
    found = [m for m in model.modules() if isinstance(m, FeatureFusion)]
    return found[0] if found else None


@torch.no_grad()
def fusion_direction_weights(
    model: nn.Module,
    images: Tensor | np.ndarray,
    *,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 64,
) -> np.ndarray | None:
    """The weight FeatureFusion gives each Cross Scan direction, per image.

    FeatureFusion's SE gate gives every channel of every direction a weight in (0, 1) ``(B, 4,
    C)``; its per-direction weight is the mean over that direction's channels (what it compares:
    the direction with the largest mean is then added unweighted, the other three times their
    gates). Read by a forward hook on the gate (``FeatureFusion.se``) in eval mode, under the
    given autocast, and averaged in float32, as ``FeatureFusion.choose`` does: the starred (largest)
    direction is the one the model kept.

    Args:
        model: a FaceScanNet on ``device``.
        images: ``(N, 3, H, W)`` float images as the model reads them.
        device: where ``model`` lives.
        amp_dtype: autocast dtype, None for float32.
        batch_size: images per forward pass.

    Returns:
        float32 ``(N, 4)`` in :data:`facescan.models.DIRECTIONS` order, or None for a model
        without Cross Scan fusion.
    """
    model = single_view(model)  # the image as given, not a flip-TTA model's mirror image too
    fusion = _fusion_module(model)
    if fusion is None:
        return None
    device = torch.device(device)
    x_all = torch.as_tensor(images)
    parts: list[np.ndarray] = []

    def grab(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        gates = output.float().view(output.shape[0], fusion.directions, -1)
        parts.append(gates.mean(2).cpu().numpy())

    was_training = model.training
    model.eval()
    handle = fusion.se.register_forward_hook(grab)
    try:
        for start in range(0, len(x_all), batch_size):
            with autocast(device, amp_dtype):
                model(x_all[start : start + batch_size].to(device, dtype=torch.float32))
    finally:
        handle.remove()
        model.train(was_training)
    if not parts:
        return np.zeros((0, fusion.directions), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def choose_images(
    labels: Sequence[int] | np.ndarray,
    p_fake_baseline: Sequence[float] | np.ndarray,
    n_images: int,
    seed: int = 0,
) -> list[int]:
    """Indices of the images to explain: balanced, the baseline's worst mistakes first.

    Half the images are real (the extra one of an odd count too), half fake (one class short of
    images: the other fills in). Within each class up to half its places go to the baseline's
    mistakes, most confident first (real images by highest ``p_fake``, fake ones by lowest;
    a mistake is ``p_fake >= 0.5`` for a real image, ``< 0.5`` for a fake one); the rest are drawn
    from the class's other images with ``numpy.random.default_rng(seed)``. The list holds the
    mistakes of both classes first, ordered by how wrong the baseline is (``|label - p_fake|``,
    ties by index), then the drawn real images, then the drawn fake ones. The same inputs and
    seed always give the same list.

    Args:
        labels: true classes, 0 real / 1 fake.
        p_fake_baseline: the baseline's ``p_fake`` for the same images.
        n_images: how many to choose (at most the number of images).
        seed: the draw's seed.
    """
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    p = np.asarray(p_fake_baseline, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and p_fake_baseline ({p.size}) differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: expected 0 (real) or 1 (fake)")
    if not np.isfinite(p).all():
        raise ValueError("p_fake_baseline: expected finite probabilities")
    n = max(0, min(int(n_images), y.size))
    pools = [np.flatnonzero(y == c) for c in (0, 1)]
    n_fake = min(n // 2, pools[1].size)
    n_real = min(n - n_fake, pools[0].size)
    n_fake = min(n - n_real, pools[1].size)
    rng = np.random.default_rng(seed)
    mistakes: list[int] = []
    drawn: list[int] = []
    for cls, k in ((0, n_real), (1, n_fake)):
        pool = pools[cls]
        error = np.abs(cls - p[pool])
        wrong = pool[error > 0.5] if cls == 1 else pool[error >= 0.5]
        order = np.lexsort((wrong, -np.abs(cls - p[wrong])))  # most confident first, then index
        picked = [int(i) for i in wrong[order][: math.ceil(k / 2)]]
        rest = np.setdiff1d(pool, picked)
        drawn += [int(i) for i in rng.permutation(rest)[: k - len(picked)]]
        mistakes += picked
    mistakes.sort(key=lambda i: (-abs(y[i] - p[i]), i))
    return mistakes + drawn


def _direction_text(weights: np.ndarray) -> str:
    best = int(np.argmax(weights))
    return " ".join(
        f"{DIRECTION_ARROWS[name]}{w:.2f}{'*' if d == best else ''}"
        for d, (name, w) in enumerate(zip(DIRECTIONS, weights, strict=True))
    )


def explain_grid(
    images_uint8: np.ndarray,
    maps: Mapping[str, np.ndarray],
    p_fake: Mapping[str, np.ndarray],
    labels: Sequence[int] | np.ndarray,
    direction_weights: Mapping[str, np.ndarray | None] | None = None,
    *,
    class_names: Sequence[str] = ("real", "fake"),
    target: int = 1,
    cmap: str = "jet",
) -> Figure:
    """One row per image, the image then each variant's map over it (built without pyplot).

    Args:
        images_uint8: ``(N, 3, H, W)`` uint8 images as shown (the cache's pixels).
        maps: variant -> ``(N, H, W)`` maps in [0, 1] (:func:`class_activation_maps`).
        p_fake: variant -> ``(N,)`` that variant's ``p_fake`` (in each cell's title; red when
            its decision at 0.5 is wrong).
        labels: ``(N,)`` true classes (first column's title).
        direction_weights: variant -> ``(N, 4)`` (:func:`fusion_direction_weights`), written
            under that variant's cells; the direction FeatureFusion keeps unweighted is starred.
        class_names: names of class 0 and 1.
        target: the class the maps explain (named in the figure's note).
        cmap: the heat map's colour map (drawn at alpha 0.5, 0-1).

    Returns:
        A Figure with ``N x (1 + len(maps))`` axes, 1.5 x 1.65 inches per cell.
    """
    imgs = np.asarray(images_uint8)
    if imgs.ndim != 4 or imgs.shape[1] != 3:
        raise ValueError(f"images_uint8: expected (N, 3, H, W), got {imgs.shape}")
    n, _, height, width = imgs.shape
    y = np.asarray(labels).reshape(-1)
    if y.size != n:
        raise ValueError(f"labels: expected {n} values, got {y.size}")
    for name, m in maps.items():
        if np.shape(m) != (n, height, width):
            raise ValueError(f"maps[{name!r}]: expected {(n, height, width)}, got {np.shape(m)}")
        if np.shape(p_fake.get(name, ())) != (n,):
            raise ValueError(f"p_fake[{name!r}]: expected {n} values")
    weights = {k: np.asarray(v) for k, v in (direction_weights or {}).items() if v is not None}
    cols = 1 + len(maps)
    fig = Figure(figsize=(1.5 * cols, 1.65 * n + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    for i in range(n):
        img = imgs[i].transpose(1, 2, 0)
        truth = class_names[int(y[i])]
        ax = axes[i, 0]
        ax.imshow(img)
        ax.set_title(truth, fontsize=8)
        if i == 0:
            ax.annotate(
                "image", (0.5, 1.0), xycoords="axes fraction", xytext=(0, 12),
                textcoords="offset points", ha="center", va="bottom", fontsize=7.5,
            )  # fmt: skip
        ax.set_axis_off()
        for j, (name, m) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            ax.imshow(img)
            ax.imshow(m[i], cmap=cmap, alpha=0.5, vmin=0.0, vmax=1.0)
            prob = float(p_fake[name][i])
            wrong = (prob >= 0.5) != bool(y[i])
            ax.set_title(f"p_fake {prob:.2f}", fontsize=7, color="tab:red" if wrong else "black")
            if i == 0:  # column header above the first title
                ax.annotate(
                    name, (0.5, 1.0), xycoords="axes fraction", xytext=(0, 12),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7.5,
                )  # fmt: skip
            if name in weights:
                ax.text(
                    0.5, -0.02, _direction_text(weights[name][i]), transform=ax.transAxes,
                    ha="center", va="top", fontsize=6,
                )  # fmt: skip
            ax.set_axis_off()
    note = f"Grad-CAM of class {class_names[target]!r} (0-1 per image); red: wrong at p_fake 0.5"
    if weights:
        legend = ", ".join(f"{DIRECTION_ARROWS[d]} {d}" for d in DIRECTIONS)
        note += f"; FeatureFusion gate per direction ({legend}; * kept unweighted)"
    fig.suptitle(note, fontsize=7)
    return fig


def explain_runs(
    models: Mapping[str, tuple[nn.Module, int]],
    cache: Any,
    indices: Sequence[int],
    p_fake: Mapping[str, np.ndarray],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> Figure:
    """The report's "where the models look" grid: ``indices`` of ``cache`` x every variant.

    Args:
        models: variant -> (trained model on ``device``, its input side).
        cache: the test images (an :class:`~facescan.data.cache.ImageCache`: uint8 ``(3, S, S)``
            per index, with ``labels``).
        indices: the images to show (:func:`choose_images`).
        p_fake: variant -> ``p_fake`` of every cached image (its test predictions, cache order).
        device: where the models live.
        amp_dtype: the scoring autocast (maps are computed in batches under it).

    Returns:
        :func:`explain_grid`'s figure, the images as each model saw them (resize + centre crop to
        the input side, as evaluation does).
    """
    from torchvision.transforms import v2

    from facescan.data.transforms import eval_transform

    idx = [int(i) for i in indices]
    raw = torch.from_numpy(np.stack([np.asarray(cache[i][0]) for i in idx]))
    labels = np.asarray(cache.labels)[idx]
    maps, weights, shown = {}, {}, None
    for variant, (model, size) in models.items():
        x = torch.stack([eval_transform(size)(img) for img in raw])
        maps[variant] = class_activation_maps(model, x, device=device, amp_dtype=amp_dtype)
        weights[variant] = fusion_direction_weights(model, x, device=device, amp_dtype=amp_dtype)
        if shown is None:
            crop = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])
            shown = torch.stack([crop(img) for img in raw]).numpy()
    chosen = {v: np.asarray(p)[idx] for v, p in p_fake.items()}
    return explain_grid(shown, maps, chosen, labels, weights)


def explain_files(
    model: nn.Module,
    paths: Sequence[str],
    p_fake: Sequence[float],
    *,
    cache_size: int,
    max_size: int,
    input_size: int,
    background: Sequence[int],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    name: str = "model",
) -> dict[str, Figure]:
    """One heat-map figure per image file (``predict.explain``), keyed by the file's stem.

    The files are decoded exactly as ``predict`` scored them (:func:`facescan.data.preprocess.
    load_for_cache`, then the evaluation resize and centre crop), so the map is of what the model
    saw; each figure shows the image and the map over it, titled with its ``p_fake``.
    """
    from pathlib import Path

    from torchvision.transforms import v2

    from facescan.data.preprocess import load_for_cache
    from facescan.data.transforms import eval_transform

    raw = torch.stack(
        [torch.from_numpy(load_for_cache(p, cache_size, max_size, background)) for p in paths]
    )
    x = torch.stack([eval_transform(input_size)(img) for img in raw])
    maps = class_activation_maps(model, x, device=device, amp_dtype=amp_dtype)
    crop = v2.Compose([v2.Resize(input_size, antialias=True), v2.CenterCrop(input_size)])
    shown = torch.stack([crop(img) for img in raw]).numpy()
    figures = {}
    for i, path in enumerate(paths):
        fig = Figure(figsize=(4.0, 2.2), layout="constrained")
        left, right = fig.subplots(1, 2)
        image = shown[i].transpose(1, 2, 0)
        left.imshow(image)
        right.imshow(image)
        right.imshow(maps[i], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        left.set_title(Path(path).name, fontsize=7)
        right.set_title(f"{name}: p_fake {float(p_fake[i]):.3f}", fontsize=7)
        for ax in (left, right):
            ax.set_axis_off()
        figures[Path(path).stem] = fig
    return figures
