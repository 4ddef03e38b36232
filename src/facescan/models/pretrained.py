"""Optional ImageNet initialisation of the trunk from a torchvision ResNet-50 state dict.

``model.pretrained`` is a file (a state dict saved with ``torch.save``) or the name ``imagenet``:
torchvision's ``ResNet50_Weights.IMAGENET1K_V2``, read from torch's hub cache
(``torch.hub.get_dir()/checkpoints``, under ``TORCH_HOME``) and downloaded there once when missing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet50_Weights

__all__ = [
    "PRETRAINED_NAMES",
    "PretrainedReport",
    "file_sha256",
    "load_resnet50_weights",
    "pretrained_cache_file",
    "pretrained_identity",
    "resolve_pretrained",
]

logger = logging.getLogger(__name__)

#: ``model.pretrained`` values that name torchvision weights instead of a file (case-insensitive).
PRETRAINED_NAMES: dict[str, ResNet50_Weights] = {"imagenet": ResNet50_Weights.IMAGENET1K_V2}

# torchvision names its files <name>-<first hex digits of the sha256>.pth (torch.hub's HASH_REGEX).
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")

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


def _weights(value: str | os.PathLike[str]) -> ResNet50_Weights | None:
    """The torchvision weights ``value`` names, or None when it is a path."""
    if isinstance(value, str):
        return PRETRAINED_NAMES.get(value.strip().lower())
    return None


def pretrained_cache_file(weights: ResNet50_Weights = ResNet50_Weights.IMAGENET1K_V2) -> Path:
    """Where torch.hub keeps ``weights``: ``torch.hub.get_dir()/checkpoints/<the URL's file
    name>`` (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``)."""
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()).expanduser() / "checkpoints" / filename


def _weights_name(weights: ResNet50_Weights) -> str:
    return f"{type(weights).__name__}.{weights.name}"


def resolve_pretrained(value: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """The state dict file ``model.pretrained`` stands for.

    Args:
        value: a path to a torchvision resnet50 state dict, or ``imagenet``
            (:data:`PRETRAINED_NAMES`; a file called so is reached as ``./imagenet``).
        progress: show a progress bar on stderr while downloading.

    Returns:
        The file: ``value`` itself (``~`` expanded), or for ``imagenet`` torch.hub's cached copy
        (:func:`pretrained_cache_file`), downloaded there first when missing, checked against the
        sha256 prefix in torchvision's file name and moved into place only when complete.

    Raises:
        FileNotFoundError: if the path is not a file, or ``imagenet`` is not cached and cannot be
            downloaded (offline): the message names the URL and where to place the file.
        ValueError: if the downloaded file does not match its published hash.
    """
    weights = _weights(value)
    if weights is None:
        file = Path(value).expanduser()
        if not file.is_file():
            raise FileNotFoundError(
                f"model.pretrained: {file} does not exist (expected a torchvision resnet50 state "
                "dict, e.g. torch.save(torchvision.models.resnet50(weights='IMAGENET1K_V2')"
                ".state_dict(), path), or 'imagenet' for torchvision's weights)"
            )
        return file
    file = pretrained_cache_file(weights)
    if file.is_file():
        return file
    match = _HASH_IN_NAME.search(file.name)
    logger.info("Downloading %s (%s) to %s", _weights_name(weights), weights.url, file)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary file next to it and renamed when complete and hash-checked.
        torch.hub.download_url_to_file(
            weights.url, str(file), match.group(1) if match else None, progress=progress
        )
    except OSError as exc:  # URLError, HTTPError, timeouts, a read-only cache folder
        raise FileNotFoundError(
            f"model.pretrained: {value}: {_weights_name(weights)} is not in torch's cache and "
            f"could not be downloaded ({type(exc).__name__}: {exc}); on a machine with internet "
            f"download {weights.url} and place it at {file} (torch.hub.get_dir()/checkpoints, "
            "which TORCH_HOME moves), or set model.pretrained to the file's path"
        ) from exc
    except RuntimeError as exc:  # torch.hub: "invalid hash value"
        raise ValueError(
            f"model.pretrained: {value}: the download of {weights.url} does not match the "
            f"sha256 prefix in its name ({exc}); nothing was kept, try again"
        ) from exc
    return file


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's sha256 (cached per path, size and modification time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, hex."""
    stat = os.stat(path)
    return _sha256(os.fspath(path), stat.st_size, stat.st_mtime_ns)


def pretrained_identity(value: str | os.PathLike[str] | None) -> str | None:
    """What the trunk starts from, for run fingerprints and provenance: equal identities mean
    equal initial weights, whatever the path.

    Args:
        value: ``model.pretrained`` (a path, ``imagenet`` or None).

    Returns:
        None for None; ``sha256:<hex>`` of the file for a path; for ``imagenet``,
        ``ResNet50_Weights.IMAGENET1K_V2 sha256:<hex>`` of the cached file (downloaded first if
        missing, see :func:`resolve_pretrained`). A cached file whose hash does not start with
        the prefix in torchvision's file name is logged as a warning (not the published
        weights; delete it to download them again), and its own hash goes into the identity.

    Raises:
        As :func:`resolve_pretrained`.
    """
    if value is None:
        return None
    file = resolve_pretrained(value)
    digest = file_sha256(file)
    weights = _weights(value)
    if weights is None:
        return f"sha256:{digest}"
    match = _HASH_IN_NAME.search(file.name)
    if match and not digest.startswith(match.group(1)):
        logger.warning(
            "model.pretrained: %s: %s's sha256 starts with %s, not %s as torchvision's file name "
            "says: it is not the published %s (delete it to download them again)",
            value,
            file,
            digest[: len(match.group(1))],
            match.group(1),
            _weights_name(weights),
        )
    return f"{_weights_name(weights)} sha256:{digest}"


def load_resnet50_weights(model: nn.Module, path: str | os.PathLike[str]) -> PretrainedReport:
    """Copy the matching tensors of a torchvision ResNet-50 state dict into ``model``.

    Matching means same key and same shape; everything else (SE, ASPP, ViT, FeatureFusion, a
    resized layer4 or ``fc``) keeps its own initialisation and is logged. The file is read with
    ``torch.load(weights_only=True)``.

    Args:
        model: a :class:`~facescan.models.classifier.FaceScanNet` (names follow torchvision's).
        path: the state dict file, e.g. saved by ``torch.save(resnet50(weights=...).state_dict())``,
            or ``imagenet`` (torchvision's ``IMAGENET1K_V2``, downloaded once if not cached: see
            :func:`resolve_pretrained`).

    Returns:
        A :class:`PretrainedReport`.

    Raises:
        FileNotFoundError: if ``path`` is not a file, or ``imagenet`` is neither cached nor
            downloadable.
        ValueError: if it cannot be read as a tensor state dict, or is not a ResNet-50's.
    """
    file = resolve_pretrained(path)
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
