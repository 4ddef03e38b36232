"""The checkpoint contract, atomic writes, and loading a trained model back.

A facescan checkpoint is a plain dict (everything in it loads with ``torch.load(weights_only=True)``):

=====================  =====================================================================
``format``             ``"facescan.checkpoint/1"``
``namespace``          the Kedro namespace of the run (``variant`` or ``variant_seedN``)
``variant``            the variant key
``seed``               the training seed
``model_options``      the resolved options :func:`facescan.models.create_model` accepts
``pretrained``         the ImageNet weights file training started from (``model.pretrained``)
``state_dict``         the kept epoch's weights (CPU tensors): the best one, or the last one
                       under ``training.keep: last``
``config``             the resolved training configuration
``history``            one dict per epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr,
                       seconds, images_per_s
``best_epoch``         1-based epoch of ``state_dict``; ``best_val_acc``, ``best_val_loss``
                       its validation metrics
``train_seconds``      wall time of all epochs (resumed runs included)
``input_size``         the network input side; ``cache_size`` the cached image side
``val_threshold``      the decision threshold on p_fake tuned on the validation images with the
                       kept weights by ``config["threshold"]`` (``training.threshold``; absent
                       in older configs: balanced_accuracy); predict and evaluate_external
                       decide with it
``tta``                how every score is computed (``training.tta``): ``none``, or ``hflip``
                       (the image and its mirror image; the threshold was tuned that way);
                       absent in older checkpoints, read as ``none``
``preprocess``         how the training images were decoded: ``max_size``, ``background``
                       (predict reuses them)
``data_fingerprint``   hash of the train and val caches' content
``run_fingerprint``    hash of everything that decides the weights (see ``training.fit``)
``provenance``         :func:`facescan.provenance.collect` of the training machine, plus
                       ``runtime``: device, precision, world size, epochs run, early stop, and
                       the sha256 of every rank's final weights
=====================  =====================================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "HISTORY_COLUMNS",
    "atomic_torch_save",
    "catalog_source",
    "check_checkpoint",
    "check_trained_on",
    "checkpoint_tta",
    "data_fingerprint",
    "fsync_dir",
    "load_torch",
    "model_from_checkpoint",
    "sweep_stale_tmp",
]

CHECKPOINT_FORMAT = "facescan.checkpoint/1"

#: The keys of each ``history`` entry, in table order (the ``{ns}.history`` columns).
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "seconds",
    "images_per_s",
    "grad_norm_max",
)

#: Options added after checkpoints existed, with the value that rebuilds those older checkpoints'
#: models (their defaults today differ: docs/model.md, "Training the transformer variants").
LEGACY_OPTIONS = {"vit_init": "torch", "head_norm": False, "zero_init_head": False}

_REQUIRED = ("variant", "model_options", "state_dict", "input_size", "cache_size")

#: The image sides a checkpoint may ask scoring for (``input_size``, ``cache_size``), in pixels.
SIDE_RANGE = (32, 8192)


def _umask() -> int:
    """The process umask (Python 3.11 has no getter that leaves it untouched)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Temporary files older than this are removed whoever wrote them (a writer on another host).
STALE_TMP_SECONDS = 24 * 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_tmp(path: Path) -> list[Path]:
    """Remove the temporary files of earlier saves of ``path`` whose writer is dead.

    A temp file is ``.<name>.<host>.<pid>.<random>.tmp``: one of this host whose process no longer
    exists, or any older than :data:`STALE_TMP_SECONDS` (a writer on another node of a shared file
    system), is what a killed save left behind. Returns the files removed.
    """
    host, removed = socket.gethostname(), []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2 : -len(".tmp")].rsplit(".", 3)
        try:
            old = time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS
            dead = len(parts) == 3 and parts[0] == host and not _alive(int(parts[1]))
        except (OSError, ValueError):
            continue
        if old or dead:
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``.

    Writes a temporary file in the same folder (named after this host and process, so that temp
    files of killed saves are recognised and swept, :func:`sweep_stale_tmp`), fsyncs it, gives it
    the mode a plain ``open`` would (0666 minus the umask: other users of a shared file system can
    read checkpoints when the umask lets them), renames it over ``path`` (atomic on POSIX and
    Windows), then fsyncs the folder so that the rename survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(path)
    prefix = f".{path.name}.{socket.gethostname()}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a folder, so that the renames in it survive a power cut (where the OS allows it)."""
    with contextlib.suppress(OSError):  # not every platform can open a folder
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def data_fingerprint(train_cache: Any, val_cache: Any) -> str:
    """Hash of the train and validation caches' content (pixels, labels and paths): a checkpoint's
    ``data_fingerprint``, which evaluation compares with the current caches."""
    digest = hashlib.sha256(f"train:{train_cache.sha256};val:{val_cache.sha256}".encode())
    return digest.hexdigest()


def check_trained_on(
    checkpoint: Mapping[str, Any], train_cache: Any, val_cache: Any, source: str
) -> None:
    """Refuse a checkpoint trained on other data than the current train and validation caches.

    After ``split.seed``, the images or the preprocessing change, an old model's training images
    may be among today's test images: its scores would be optimistic. Checkpoints that record no
    fingerprint are let through.

    Raises:
        ValueError: one sentence naming ``source``, the variant and the command that retrains it.
    """
    recorded = checkpoint.get("data_fingerprint")
    if recorded is None:
        return
    current = data_fingerprint(train_cache, val_cache)
    if recorded != current:
        ns = checkpoint.get("namespace") or checkpoint.get("variant")
        raise ValueError(
            f"{source}: variant {checkpoint.get('variant')!r} was trained on other data than the "
            f"current train/val caches (data fingerprint {str(recorded)[:12]}, now {current[:12]}: "
            "the images, split.seed or preprocessing changed since), so its test images may have "
            f"been training images; retrain it with kedro run --pipelines training --namespaces "
            f"{ns} (the changed data retrains it; training.force: true is not needed)"
        )


def load_torch(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain data only."""
    return torch.load(path, map_location="cpu", weights_only=True)


_TRAIN_FIX = "train one with kedro run --pipelines training, which writes facescan checkpoints"


def catalog_source(namespace: str) -> str:
    """How messages name the checkpoint a run's pipelines load: ``{ns}.model`` and its file.

    The path is the project catalog's (``"{variant}.model"`` in conf/base/catalog_training.yml).
    """
    return f"{namespace}.model (data/06_models/{namespace}/model.pt, latest version)"


def _looks_like_state_dict(obj: Mapping[str, Any]) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def checkpoint_tta(ckpt: Mapping[str, Any]) -> str:
    """How the checkpoint's model scores an image (``training.tta``); ``none`` for a checkpoint
    written before the key existed."""
    return ckpt.get("tta") or "none"


def check_checkpoint(ckpt: Any, source: str = "checkpoint") -> Mapping[str, Any]:
    """Check that ``ckpt`` is a facescan checkpoint dict.

    Args:
        ckpt: what was loaded.
        source: the file or dataset it came from, which starts the message.

    Raises:
        ValueError: one sentence starting with ``source``: what it is instead, and the fix.
    """
    if not isinstance(ckpt, Mapping):
        raise ValueError(
            f"{source}: not a facescan checkpoint: expected a dict with format "
            f"{CHECKPOINT_FORMAT!r}, got a {type(ckpt).__name__}; {_TRAIN_FIX}"
        )
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        if _looks_like_state_dict(ckpt):
            first = next(iter(ckpt))
            raise ValueError(
                f"{source}: not a facescan checkpoint but a bare state dict ({len(ckpt)} "
                f"tensors, e.g. {first!r}) without the variant and options that rebuild the "
                f"model; {_TRAIN_FIX} (ImageNet resnet50 weights to start training from go in "
                "model.pretrained instead)"
            )
        raise ValueError(
            f"{source}: not a facescan checkpoint: its format is {ckpt.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}; {_TRAIN_FIX}"
        )
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(
            f"{source}: an incomplete facescan checkpoint (no {', '.join(missing)}); {_TRAIN_FIX}"
        )
    low, high = SIDE_RANGE
    for key in ("input_size", "cache_size"):
        side = ckpt[key]
        if isinstance(side, bool) or not isinstance(side, int) or not low <= side <= high:
            raise ValueError(
                f"{source}: its {key} is {side!r}, not an image side in {low}..{high} px, so the "
                f"file was edited or damaged; {_TRAIN_FIX}"
            )
    if not isinstance(ckpt["model_options"], Mapping):
        raise ValueError(f"{source}: its model_options are not a dict; {_TRAIN_FIX}")
    from facescan.models.tta import TTA_CHOICES

    if checkpoint_tta(ckpt) not in TTA_CHOICES:
        raise ValueError(
            f"{source}: its tta is {ckpt['tta']!r}, not one of {', '.join(TTA_CHOICES)}, so the "
            f"file was edited or damaged; {_TRAIN_FIX}"
        )
    return ckpt


_STRUCTURE = ("se", "dilated", "aspp", "vit", "cross_scan")


def _options_variant(options: Mapping[str, Any]) -> str:
    """The built-in variant whose structure the options describe (sizes aside), for messages."""
    from facescan.models import VARIANTS, resolve_options

    for key in VARIANTS:
        reference = resolve_options(key)
        if all(options.get(k) == reference[k] for k in _STRUCTURE):
            return key
    return "custom: " + ", ".join(f"{k}={options.get(k)}" for k in _STRUCTURE)


def _mismatch(model: nn.Module, state_dict: Any, strict: bool = True) -> str:
    """What differs between a model's parameters and a state dict, in a few words ("" when
    nothing does and ``strict`` is false)."""
    if not isinstance(state_dict, Mapping):
        return f"state_dict is a {type(state_dict).__name__}, not a dict of tensors"
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        k
        for k in own
        if k in state_dict and tuple(own[k].shape) != tuple(getattr(state_dict[k], "shape", ()))
    ]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("resized", shapes)):
        if keys:
            parts.append(f"{len(keys)} {what} (e.g. {keys[0]!r})")
    return ", ".join(parts) or ("the tensors do not load" if strict else "")


def model_from_checkpoint(
    ckpt: Mapping[str, Any], expected_variant: str | None = None, source: str = "checkpoint"
) -> nn.Module:
    """Rebuild the trained model of a checkpoint, in eval mode, on the CPU.

    Args:
        ckpt: a checkpoint dict (as loaded by ``TorchCheckpointDataset``).
        expected_variant: the variant the caller means to load (e.g. its namespace's); a
            checkpoint of another variant is refused.
        source: the file or dataset the checkpoint came from, which starts every message
            (e.g. ``"resnet50.model (data/06_models/resnet50/model.pt, latest version)"``).

    Returns:
        The model with the checkpoint's weights, in eval mode; wrapped in
        :class:`facescan.models.HorizontalFlipTTA` when the checkpoint's ``tta`` is ``hflip``
        (:func:`facescan.models.single_view` unwraps it).

    Raises:
        ValueError: one sentence starting with ``source`` when ``ckpt`` is not a facescan
            checkpoint, belongs to another variant than ``expected_variant`` (both named, with the
            fix), or its weights do not fit its model options.
    """
    from facescan.models import create_model, with_tta

    check_checkpoint(ckpt, source)
    variant = ckpt["variant"]
    if expected_variant is not None and expected_variant != variant:
        raise ValueError(
            f"{source}: a checkpoint from another variant: it holds {variant!r}, expected "
            f"{expected_variant!r}; to score with it, save it as the {variant} run's checkpoint "
            f"and run with --namespaces {variant}, and to score with {expected_variant}, train it "
            f"(kedro run --pipelines training --namespaces {expected_variant})"
        )
    # A checkpoint saved before an option existed was built without it: rebuild it that way.
    options = {**LEGACY_OPTIONS, **dict(ckpt["model_options"])}
    # Checkpoints written before `pretrained` left the architecture options held it there; the
    # trained weights replace any initialisation, so the ImageNet file is never read again.
    options.pop("pretrained", None)
    # Built on the meta device first (no memory): a checkpoint whose options ask for another (or
    # a huge) model than its weights hold is refused before anything is allocated, so the real
    # model costs what the loaded weights already do.
    with torch.device("meta"):
        shape_only = create_model(options)
    problem = _mismatch(shape_only, ckpt["state_dict"], strict=False)
    model = None
    if not problem:
        model = create_model(options)
        try:
            model.load_state_dict(ckpt["state_dict"], strict=True)
        except (RuntimeError, TypeError, AttributeError):
            problem = _mismatch(model, ckpt["state_dict"])
    if problem or model is None:
        raise ValueError(
            f"{source}: a checkpoint from another variant: its weights (variant {variant!r}) "
            f"do not fit the model its options build ({_options_variant(options)!r}: "
            f"{problem}), so the file was edited or mixed from two "
            f"runs; retrain {variant} (kedro run --pipelines training --namespaces {variant} "
            "--params training.force=true)"
        )
    # Scores as training tuned its threshold: with the mirror image too under tta: hflip.
    return with_tta(model, checkpoint_tta(ckpt)).eval()
