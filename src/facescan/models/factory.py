"""``create_model``: from a variant key or option dict to a ready FaceScanNet."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from facescan.models.classifier import FaceScanNet
from facescan.models.pretrained import load_resnet50_weights
from facescan.models.variants import ModelOptions, resolve_options


def create_model(
    name_or_options: str | Mapping[str, Any],
    *,
    custom_variants: Mapping[str, Mapping[str, Any]] | None = None,
    pretrained: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> FaceScanNet:
    """Build a variant, optionally with its trunk initialised from ImageNet weights.

    Args:
        name_or_options: a variant key (:func:`~facescan.models.list_variants` or
            ``custom_variants``) or an option dict (optionally with ``base: <key>``).
        custom_variants: user variants (``ablation.custom_variants``).
        pretrained: what the trunk starts from (``model.pretrained``): a torchvision resnet50
            state dict file, or ``imagenet`` for torchvision's ``ResNet50_Weights.IMAGENET1K_V2``
            (torch.hub's cached copy, downloaded once when missing:
            :func:`~facescan.models.pretrained.resolve_pretrained`); None = random
            initialisation. Only tensors with the trunk's names and shapes are copied; ``fc``
            and the variant's own modules keep their initialisation. How the weights start, not
            an architecture option: it is kept, as given, in ``model.pretrained``, not in
            ``model.options``.
        **overrides: options on top; None values are ignored (see
            :func:`~facescan.models.resolve_options`).

    Returns:
        The model, with the resolved option dict in ``model.options`` and ``pretrained`` in
        ``model.pretrained``.

    Raises:
        ValueError: for unknown variants or bad options, or an unusable ``pretrained`` file.
        FileNotFoundError: if ``pretrained`` names a missing file, or ``imagenet`` is not cached
            and cannot be downloaded (the message says which file to place where).
    """
    options = resolve_options(name_or_options, custom_variants, **overrides)
    model = FaceScanNet(ModelOptions(**options))
    model.pretrained = None if pretrained is None else os.fspath(pretrained)
    if model.pretrained is not None:
        load_resnet50_weights(model, model.pretrained)
    return model
