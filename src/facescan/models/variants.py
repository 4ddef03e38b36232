"""The ablation variants, defined once as option dicts, and the option resolver.

A variant is a partial dict over :data:`DEFAULT_OPTIONS`. Users add variants in configuration
(``ablation.custom_variants``) as option dicts, optionally starting from another variant with
``base: <key>``; :func:`resolve_options` turns any of these into the full, validated dict that
:class:`~facescan.models.classifier.FaceScanNet` is built from.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator


def _check(test: Callable[[Any], bool], expected: str) -> Any:
    def check(value: Any) -> Any:
        if not test(value):
            raise ValueError(f"must be {expected}")
        return list(value) if isinstance(value, tuple) else value

    return BeforeValidator(check)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_Bool = Annotated[bool, _check(lambda v: isinstance(v, bool), "true or false")]
_Int = Annotated[int, _check(_is_int, "a positive integer")]
_Float = Annotated[float, _check(lambda v: _is_number(v) and v > 0, "a positive number")]
_Dropout = Annotated[float, _check(lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")]
_Ints = Annotated[
    list[_Int],
    _check(
        lambda v: isinstance(v, list | tuple) and len(v) > 0,
        "a non-empty list of positive integers",
    ),
]


class ModelOptions(BaseModel):
    """Every architecture option of :class:`~facescan.models.classifier.FaceScanNet`: its default
    (sizes from the authors' code), its meaning (error messages, docs/model.md's table) and its
    checks, in one place. How the weights start (``model.pretrained``) is not an option of the
    architecture: :func:`~facescan.models.create_model` takes it apart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    se: _Bool = Field(
        False,
        description="squeeze-and-excitation in every bottleneck (torchvision.ops.SqueezeExcitation)",
    )
    se_reduction: _Int = Field(16, description="SE ratio of the bottlenecks and of FeatureFusion")
    dilated: _Bool = Field(
        False, description="layer3 and layer4 dilated instead of strided (output stride 8, not 32)"
    )
    dilation_rates: _Ints = Field(
        [2, 4], description="dilation of layer3 and layer4 when dilated (torchvision's [2, 4])"
    )
    aspp: _Bool = Field(False, description="ASPP after layer4")
    aspp_rates: _Ints = Field([3, 5, 7], description="dilation rates of ASPP's 3x3 branches")
    aspp_channels: _Int = Field(256, description="ASPP output channels")
    vit: Annotated[
        str | None, _check(lambda v: v in (None, "mid", "tail"), "null, 'mid' or 'tail'")
    ] = Field(
        None,
        description="ViT placement: null, mid (between layer3 and layer4) or tail (after "
        "layer4/ASPP)",
    )
    cross_scan: _Bool = Field(
        False, description="tail ViT reads the 4 Cross Scan directions; FeatureFusion merges them"
    )
    vit_dim: _Int = Field(512, description="token width (a multiple of 4 and of vit_heads)")
    vit_depth: _Int = Field(4, description="transformer blocks")
    vit_heads: _Int = Field(8, description="attention heads")
    vit_mlp_ratio: _Float = Field(4.0, description="MLP hidden width / vit_dim")
    vit_dropout: _Dropout = Field(
        0.1, description="transformer dropout (block outputs, MLP), in [0, 1)"
    )
    vit_attention_dropout: _Dropout = Field(
        0.0, description="dropout on the attention weights, in [0, 1) (> 0 is slow on CPUs)"
    )
    mid_patch_size: _Int = Field(1, description="patch side of the mid ViT's embedding convolution")
    tail_patch_size: _Int = Field(
        2, description="patch side of the tail ViT's embedding convolution"
    )
    num_classes: _Int = Field(2, description="outputs (2: real 0 / fake 1)")
    zero_init_residual: _Bool = Field(
        True,
        description="each bottleneck's last BN starts at 0, so every residual block starts as the "
        "identity (torchvision's zero_init_residual; Goyal et al. 2017)",
    )
    vit_init: Annotated[str, _check(lambda v: v in ("timm", "torch"), "'timm' or 'torch'")] = Field(
        "timm",
        description="transformer initialisation: timm (ViT/DeiT/timm: normal std 0.02 truncated "
        "at 2 std for every linear map and the attention projections, zero biases, LayerNorm "
        "1/0) or torch (PyTorch's layer defaults, as the authors' code)",
    )
    head_norm: _Bool = Field(
        True,
        description="LayerNorm on the pooled features before the classifier when the tail is a "
        "ViT (timm's fc_norm): FeatureFusion's sum of four directions reaches the classifier at "
        "unit scale; no effect on CNN tails",
    )
    zero_init_head: _Bool = Field(
        True,
        description="the classifier starts at zero weights and bias (every image p_fake 0.5, "
        "loss ln 2), as timm's ViT head; false = PyTorch's Linear default",
    )

    @model_validator(mode="after")
    def _across_options(self) -> ModelOptions:
        if self.cross_scan and self.vit != "tail":
            raise ValueError(
                "cross_scan: true needs vit: tail (Cross Scan feeds the tail ViT), "
                f"got vit: {self.vit!r}"
            )
        dim, heads = self.vit_dim, self.vit_heads
        if dim % 4 or dim % heads:
            raise ValueError(
                f"vit_dim must be a multiple of 4 (sin-cos positions) and of vit_heads ({heads}), "
                f"got {dim}"
            )
        if round(dim * self.vit_mlp_ratio) < 1:
            raise ValueError("vit_dim * vit_mlp_ratio must be at least 1")
        if self.se_reduction > 256:  # layer1's 256 channels are the fewest an SE block sees
            raise ValueError(f"se_reduction must be at most 256, got {self.se_reduction}")
        if self.cross_scan and self.se_reduction > 4 * dim:
            raise ValueError(
                f"se_reduction ({self.se_reduction}) must not exceed FeatureFusion's 4 * vit_dim "
                f"({4 * dim})"
            )
        if len(self.dilation_rates) != 2:
            raise ValueError(
                f"dilation_rates must list 2 rates (layer3, layer4), got {self.dilation_rates!r}"
            )
        return self


#: Every option with its default, and what each means (views of :class:`ModelOptions`).
DEFAULT_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {name: field.default for name, field in ModelOptions.model_fields.items()}
)
OPTION_HELP: Mapping[str, str] = MappingProxyType(
    {name: str(field.description) for name, field in ModelOptions.model_fields.items()}
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
    Kedro ``model:`` parameter block with ``vit_dim: null`` can be passed as ``**overrides``
    (to switch a resolved option back to null, put it in the option dict instead).

    Args:
        name_or_options: a variant key (built-in or from ``custom_variants``) or an option dict,
            which may name a starting variant with ``base``.
        custom_variants: user variants, ``{key: option dict}`` (``ablation.custom_variants``).
        **overrides: options applied on top (e.g. ``vit_dim=32`` in tests).

    Returns:
        A new dict with every key of :data:`DEFAULT_OPTIONS`; lists, not tuples, so it is
        JSON-serialisable.

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
    try:
        return ModelOptions.model_validate(options).model_dump()
    except ValidationError as exc:
        sentences = []
        for err in exc.errors(include_url=False):
            text = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
            if not err["loc"]:  # a check across options
                sentences.append(f"{where}: {text}")
                continue
            key, *index = err["loc"]
            name = f"{key}[{index[0]}]" if index else str(key)
            sentences.append(f"{where}: {name} {text}, got {err['input']!r}")
        raise ValueError("; ".join(sentences)) from None
