"""Optional ImageNet initialisation from a local torchvision ResNet-50 state dict."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Tensors every variant shares with torchvision's resnet50 (stem and layer1-3 never change shape;
# layer4 and fc may, with a mid ViT or another num_classes). A file lacking them is not a resnet50.
_REQUIRED = re.compile(r"^(conv1|bn1|layer[123])\.")


@dataclass(frozen=True)
class PretrainedReport:
    """What :func:`load_resnet50_weights` did.

    Attributes:
        path: the file read.
        loaded: model keys initialised from the file.
        shape_mismatch: keys in both, with different shapes (left at random init).
        unused: keys of the file the model does not have.
        not_initialised: model keys left at random init (new modules, shape mismatches).
    """

    path: Path
    loaded: tuple[str, ...]
    shape_mismatch: tuple[str, ...]
    unused: tuple[str, ...]
    not_initialised: tuple[str, ...]


def load_resnet50_weights(model: nn.Module, path: str | os.PathLike[str]) -> PretrainedReport:
    """Copy the matching tensors of a torchvision ResNet-50 state dict into ``model``.

    Matching means same key and same shape; everything else (SE, ASPP, ViT, a resized layer4 or
    ``fc``) keeps its random initialisation and is logged. The file is read with
    ``torch.load(weights_only=True)``; nothing is downloaded.

    Args:
        model: a :class:`~facescan.models.classifier.FaceScanNet` (names follow torchvision's).
        path: the state dict file, e.g. saved by ``torch.save(resnet50(weights=...).state_dict())``.

    Returns:
        A :class:`PretrainedReport`.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if it cannot be read as a tensor state dict, or is not a ResNet-50's.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"model.pretrained: {file} does not exist (expected a torchvision resnet50 state dict, "
            "e.g. torch.save(torchvision.models.resnet50(weights='IMAGENET1K_V2').state_dict(), path))"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a state dict file"
        raise ValueError(
            f"model.pretrained: cannot read {file} as a torch state dict "
            f"(torch.load weights_only=True): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"model.pretrained: {file} holds a {type(state).__name__}, not a state dict "
            "(a mapping of parameter names to tensors)"
        )

    own = model.state_dict()
    required = [k for k in own if _REQUIRED.match(k) and not re.search(r"\.se\.", k)]
    bad = [k for k in required if k not in state or state[k].shape != own[k].shape]
    if bad:
        raise ValueError(
            f"model.pretrained: {file} is not a torchvision resnet50 state dict: "
            f"{len(bad)} backbone tensors missing or of another shape, e.g. {', '.join(bad[:3])}"
        )
    loaded = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    report = PretrainedReport(
        path=file,
        loaded=tuple(sorted(loaded)),
        shape_mismatch=tuple(sorted(k for k in state if k in own and k not in loaded)),
        unused=tuple(sorted(k for k in state if k not in own)),
        not_initialised=tuple(sorted(k for k in own if k not in loaded)),
    )
    model.load_state_dict(loaded, strict=False)
    logger.info(
        "Loaded %d of %d tensors from %s; left at random init: %s; not used from the file: %s",
        len(report.loaded),
        len(own),
        file,
        _summarise(report.not_initialised) or "nothing",
        _summarise(report.shape_mismatch + report.unused) or "nothing",
    )
    logger.debug("Not initialised from %s: %s", file, ", ".join(report.not_initialised))
    return report


def _summarise(keys: Iterable[str]) -> str:
    """Module patterns of tensor keys: ``layer1.0.se.fc1.weight`` -> ``layer*.*.se``."""
    patterns: dict[str, None] = {}
    for key in keys:
        module = key.rsplit(".", 1)[0]
        patterns[re.sub(r"(?<=layer)\d|(?<=\.)\d+(?=\.|$)", "*", module)] = None
    return ", ".join(patterns)
