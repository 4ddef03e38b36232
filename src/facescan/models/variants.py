"""The ablation variants, defined once as option dicts, and the option resolver.

A variant is a partial dict over :data:`DEFAULT_OPTIONS`. Users add variants in configuration
(``ablation.custom_variants``) as option dicts, optionally starting from another variant with
``base: <key>``; :func:`resolve_options` turns any of these into the full, validated dict that
:class:`~facescan.models.classifier.FaceScanNet` is built from.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

#: Every option, with its default (sizes from the authors' code).
DEFAULT_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "se": False,
        "se_reduction": 16,
        "dilated": False,
        "dilation_rates": [2, 4],
        "aspp": False,
        "aspp_rates": [3, 5, 7],
        "aspp_channels": 256,
        "vit": None,
        "cross_scan": False,
        "vit_dim": 512,
        "vit_depth": 4,
        "vit_heads": 8,
        "vit_mlp_ratio": 4.0,
        "vit_dropout": 0.1,
        "vit_attention_dropout": 0.0,
        "mid_patch_size": 1,
        "tail_patch_size": 2,
        "num_classes": 2,
        "zero_init_residual": True,
        "vit_init": "timm",
        "head_norm": True,
        "zero_init_head": True,
        "pretrained": None,
    }
)

#: What each option means (used in error messages and docs/model.md).
OPTION_HELP: Mapping[str, str] = MappingProxyType(
    {
        "se": "squeeze-and-excitation in every bottleneck (torchvision.ops.SqueezeExcitation)",
        "se_reduction": "SE ratio of the bottlenecks and of FeatureFusion",
        "dilated": "layer3 and layer4 dilated instead of strided (output stride 8, not 32)",
        "dilation_rates": "dilation of layer3 and layer4 when dilated (torchvision's [2, 4])",
        "aspp": "ASPP after layer4",
        "aspp_rates": "dilation rates of ASPP's 3x3 branches",
        "aspp_channels": "ASPP output channels",
        "vit": "ViT placement: null, mid (between layer3 and layer4) or tail (after layer4/ASPP)",
        "cross_scan": "tail ViT reads the 4 Cross Scan directions; FeatureFusion merges them",
        "vit_dim": "token width (a multiple of 4 and of vit_heads)",
        "vit_depth": "transformer blocks",
        "vit_heads": "attention heads",
        "vit_mlp_ratio": "MLP hidden width / vit_dim",
        "vit_dropout": "transformer dropout (block outputs, MLP), in [0, 1)",
        "vit_attention_dropout": "dropout on the attention weights, in [0, 1) (> 0 is slow on CPUs)",
        "mid_patch_size": "patch side of the mid ViT's embedding convolution",
        "tail_patch_size": "patch side of the tail ViT's embedding convolution",
        "num_classes": "outputs (2: real 0 / fake 1)",
        "zero_init_residual": "each bottleneck's last BN starts at 0, so every residual block "
        "starts as the identity (torchvision's zero_init_residual; Goyal et al. 2017)",
        "vit_init": "transformer initialisation: timm (ViT/DeiT/timm: normal std 0.02 truncated at 2 std "
        "for every linear map and the attention projections, zero biases, LayerNorm 1/0) or "
        "torch (PyTorch's layer defaults, as the authors' code)",
        "head_norm": "LayerNorm on the pooled features before the classifier when the tail is a "
        "ViT (timm's fc_norm): FeatureFusion's sum of four directions reaches the classifier at "
        "unit scale; no effect on CNN tails",
        "zero_init_head": "the classifier starts at zero weights and bias (every image p_fake 0.5, "
        "loss ln 2), as timm's ViT head; false = PyTorch's Linear default",
        "pretrained": "path to a torchvision resnet50 state dict (ImageNet init); null = random",
    }
)

_SE: dict[str, Any] = {"se": True}
_DIL: dict[str, Any] = {"se": True, "dilated": True}

#: The report's 8 variants and the ``se_resnet50`` control, in the report's order.
VARIANTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "resnet50": {},
        "dilated": {**_DIL},
        "vit": {**_SE, "vit": "mid"},
        "aspp": {**_DIL, "aspp": True},
        "dilated_vit": {**_DIL, "vit": "mid"},
        "aspp_vit": {**_DIL, "aspp": True, "vit": "tail"},
        "vit_aspp": {**_DIL, "aspp": True, "vit": "mid"},
        "aspp_crossscan_vit": {**_DIL, "aspp": True, "vit": "tail", "cross_scan": True},
        "se_resnet50": {**_SE},
    }
)

#: The report's table row of each variant (the control is not in the report).
VARIANT_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "resnet50": "ResNet50 (baseline)",
        "dilated": "ResNet50 + dilated convolution",
        "vit": "ResNet50 + ViT",
        "aspp": "ResNet50 + ASPP",
        "dilated_vit": "ResNet50 + dilated convolution + ViT",
        "aspp_vit": "ResNet50 + ASPP + ViT (ASPP before ViT)",
        "vit_aspp": "ResNet50 + ViT + ASPP (ASPP after ViT)",
        "aspp_crossscan_vit": "ResNet50 + ASPPCrossScanViT",
        "se_resnet50": "control, not in the report: SE without dilation",
    }
)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def list_variants() -> list[str]:
    """The built-in variant keys: the report's 8 in its order, then the ``se_resnet50`` control."""
    return list(VARIANTS)


def resolve_options(
    name_or_options: str | Mapping[str, Any],
    custom_variants: Mapping[str, Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The full, validated option dict of a variant.

    Precedence, lowest first: :data:`DEFAULT_OPTIONS`, the ``base`` variant (recursively), the
    variant's own options, then ``overrides``. Overrides whose value is None are ignored, so a
    Kedro ``model:`` parameter block with ``pretrained: null`` can be passed as ``**overrides``
    (to switch a resolved option back to null, put it in the option dict instead).

    Args:
        name_or_options: a variant key (built-in or from ``custom_variants``) or an option dict,
            which may name a starting variant with ``base``.
        custom_variants: user variants, ``{key: option dict}`` (``ablation.custom_variants``).
        **overrides: options applied on top (e.g. ``vit_dim=32`` in tests).

    Returns:
        A new dict with every key of :data:`DEFAULT_OPTIONS`; lists, not tuples, and ``pretrained``
        as a string, so it is JSON-serialisable.

    Raises:
        ValueError: for an unknown variant (listing the valid ones), an unknown option key (listing
            the valid keys), an ill-typed value, or incompatible options.
    """
    custom = _check_custom_variants(custom_variants)
    options = _merge(name_or_options, custom, seen=())
    options.update({k: v for k, v in overrides.items() if v is not None})
    return _validate(options, _describe(name_or_options))


#: Options that cannot change a model built without the part they configure.
_PART_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "vit": (
            "vit_dim",
            "vit_depth",
            "vit_heads",
            "vit_mlp_ratio",
            "vit_dropout",
            "vit_attention_dropout",
            "mid_patch_size",
            "tail_patch_size",
            "vit_init",
            "head_norm",
        ),
        "aspp": ("aspp_rates", "aspp_channels"),
        "dilated": ("dilation_rates",),
    }
)


def effective_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Resolved options with those that cannot change this variant's model set to None.

    E.g. ``vit_init`` or ``vit_dim`` for a variant without a ViT, ``head_norm`` without a tail
    ViT, ``aspp_rates`` without ASPP. What decides whether a run must be retrained (the training
    fingerprint) uses this, so changing a ViT option does not retrain the CNN-only variants.
    """
    out = dict(options)
    for part, keys in _PART_OPTIONS.items():
        if not out.get(part):
            out.update(dict.fromkeys(keys))
    if out.get("vit") == "mid":
        out.update(tail_patch_size=None, head_norm=None)
    elif out.get("vit") == "tail":
        out["mid_patch_size"] = None
    if not out.get("se") and not out.get("cross_scan"):
        out["se_reduction"] = None
    return out


def _describe(name_or_options: str | Mapping[str, Any]) -> str:
    return f"variant {name_or_options!r}" if isinstance(name_or_options, str) else "model options"


def _check_custom_variants(
    custom_variants: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Mapping[str, Any]]:
    if custom_variants is None:
        return {}
    if not isinstance(custom_variants, Mapping):
        raise ValueError(
            f"custom_variants must be a mapping of variant key to option dict, "
            f"got {type(custom_variants).__name__}"
        )
    for key, opts in custom_variants.items():
        if not isinstance(key, str) or not _NAME.match(key):
            raise ValueError(
                f"custom_variants: {key!r} is not a valid variant key (letters, digits, underscore)"
            )
        if key in VARIANTS:
            raise ValueError(
                f"custom_variants: {key!r} is a built-in variant; choose another name "
                f"(built-in: {', '.join(VARIANTS)})"
            )
        if not isinstance(opts, Mapping):
            raise ValueError(
                f"custom_variants.{key} must be an option dict, got {type(opts).__name__}"
            )
    return dict(custom_variants)


def _merge(
    name_or_options: str | Mapping[str, Any],
    custom: Mapping[str, Mapping[str, Any]],
    seen: tuple[str, ...],
) -> dict[str, Any]:
    """Defaults <- base chain <- own options (unvalidated)."""
    if isinstance(name_or_options, str):
        name = name_or_options
        if name in seen:
            raise ValueError(f"variant {name!r}: 'base' chain loops: {' -> '.join((*seen, name))}")
        if name in VARIANTS:
            return {**copy.deepcopy(dict(DEFAULT_OPTIONS)), **copy.deepcopy(dict(VARIANTS[name]))}
        if name in custom:
            return _merge(custom[name], custom, (*seen, name))
        valid = [*VARIANTS, *custom]
        raise ValueError(f"unknown variant {name!r}; valid variants: {', '.join(valid)}")
    if not isinstance(name_or_options, Mapping):
        raise ValueError(
            "a model is named by a variant key or an option dict, "
            f"got {type(name_or_options).__name__}"
        )
    own = copy.deepcopy(dict(name_or_options))
    base = own.pop("base", None)
    if base is None:
        start = copy.deepcopy(dict(DEFAULT_OPTIONS))
    elif isinstance(base, str):
        start = _merge(base, custom, seen)
    else:
        raise ValueError(f"'base' must be a variant key, got {base!r}")
    return {**start, **own}


def _validate(options: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(
            f"{where}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(DEFAULT_OPTIONS)} (and 'base' in an option dict)"
        )
    resolved = {key: _CHECKS[key](key, options[key], where) for key in DEFAULT_OPTIONS}

    if resolved["cross_scan"] and resolved["vit"] != "tail":
        raise ValueError(
            f"{where}: cross_scan: true needs vit: tail (Cross Scan feeds the tail ViT), "
            f"got vit: {resolved['vit']!r}"
        )
    dim, heads = resolved["vit_dim"], resolved["vit_heads"]
    if dim % 4 or dim % heads:
        raise ValueError(
            f"{where}: vit_dim must be a multiple of 4 (sin-cos positions) and of vit_heads "
            f"({heads}), got {dim}"
        )
    if round(dim * resolved["vit_mlp_ratio"]) < 1:
        raise ValueError(f"{where}: vit_dim * vit_mlp_ratio must be at least 1")
    reduction = resolved["se_reduction"]
    if reduction > 256:  # layer1's 256 channels are the fewest an SE block sees
        raise ValueError(f"{where}: se_reduction must be at most 256, got {reduction}")
    if resolved["cross_scan"] and reduction > 4 * dim:
        raise ValueError(
            f"{where}: se_reduction ({reduction}) must not exceed FeatureFusion's 4 * vit_dim "
            f"({4 * dim})"
        )
    if len(resolved["dilation_rates"]) != 2:
        raise ValueError(
            f"{where}: dilation_rates must list 2 rates (layer3, layer4), "
            f"got {resolved['dilation_rates']!r}"
        )
    return resolved


def _bool(key: str, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _positive_int(key: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _positive_float(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)


def _dropout(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{where}: {key} must be a number in [0, 1), got {value!r}")
    return float(value)


def _int_list(key: str, value: Any, where: str) -> list[int]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(
            f"{where}: {key} must be a non-empty list of positive integers, got {value!r}"
        )
    return [_positive_int(f"{key}[{i}]", v, where) for i, v in enumerate(value)]


def _vit(key: str, value: Any, where: str) -> str | None:
    if value not in (None, "mid", "tail"):
        raise ValueError(f"{where}: {key} must be null, 'mid' or 'tail', got {value!r}")
    return value


def _vit_init(key: str, value: Any, where: str) -> str:
    if value not in ("timm", "torch"):
        raise ValueError(f"{where}: {key} must be 'timm' or 'torch', got {value!r}")
    return value


def _path(key: str, value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError(f"{where}: {key} must be a file path or null, got {value!r}")
    return os.fspath(value)


_CHECKS: dict[str, Callable[[str, Any, str], Any]] = {
    "se": _bool,
    "se_reduction": _positive_int,
    "dilated": _bool,
    "dilation_rates": _int_list,
    "aspp": _bool,
    "aspp_rates": _int_list,
    "aspp_channels": _positive_int,
    "vit": _vit,
    "cross_scan": _bool,
    "vit_dim": _positive_int,
    "vit_depth": _positive_int,
    "vit_heads": _positive_int,
    "vit_mlp_ratio": _positive_float,
    "vit_dropout": _dropout,
    "vit_attention_dropout": _dropout,
    "mid_patch_size": _positive_int,
    "tail_patch_size": _positive_int,
    "num_classes": _positive_int,
    "zero_init_residual": _bool,
    "vit_init": _vit_init,
    "head_norm": _bool,
    "zero_init_head": _bool,
    "pretrained": _path,
}
