"""Scoring images with a trained model: image caches (evaluation) and image files (prediction).

Both paths use the same deterministic pixels: files go through
:func:`facescan.data.preprocess.load_for_cache` (the one decode + resize + centre crop that built the
caches) and then :func:`facescan.data.transforms.eval_transform`, so a file scored by ``predict``
gets the score its cached copy gets in ``evaluation``. The forward pass is :func:`predict_logits`,
under the same autocast (:mod:`facescan.runtime`) as training's validation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from facescan.checkpoint import catalog_source, model_from_checkpoint
from facescan.data.imaging import SUPPORTED_EXTENSIONS, ImageDecodeError
from facescan.data.loader import build_loader, default_num_workers
from facescan.data.preprocess import load_for_cache
from facescan.data.transforms import eval_transform
from facescan.evaluation.metrics import classification_metrics, p_fake_from_logits, predict_labels
from facescan.evaluation.stats import bootstrap_ci
from facescan.runtime import autocast

logger = logging.getLogger(__name__)

__all__ = [
    "ImageFileDataset",
    "Scores",
    "list_image_files",
    "load_model",
    "checkpoint_threshold",
    "load_run_model",
    "predict_logits",
    "resolve_num_workers",
    "score_cache",
    "score_files",
    "summarise_scores",
]


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits of every image, in the loader's order (one process scores the whole set).

    Args:
        model: the classifier, on ``device``.
        loader: yields ``(images, labels)`` in a fixed order (no shuffling).
        device: where ``model`` lives.
        amp_dtype: autocast dtype, or None for float32.
        channels_last: move images in channels-last memory format.

    Returns:
        ``(logits float32 (N, C), labels int64 (N,))``.

    Raises:
        ValueError: when any image's logits are not finite (a diverged model), instead of
            scores that would read as "real".
    """
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    logits_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    for images, targets in loader:
        images = images.to(device, non_blocking=device.type == "cuda", memory_format=memory_format)
        with autocast(device, amp_dtype):
            logits = model(images)
        logits_parts.append(logits.float().cpu().numpy())
        label_parts.append(np.asarray(targets, dtype=np.int64))
    if not logits_parts:
        return np.zeros((0, 2), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    logits = np.concatenate(logits_parts).astype(np.float32, copy=False)
    bad = int((~np.isfinite(logits)).any(axis=1).sum())
    if bad:  # never a label: argmax of NaN is 0, "real"
        raise ValueError(
            f"the model gives non-finite scores (NaN or inf) for {bad} of {len(logits)} images, "
            "so its weights are not usable; retrain it (kedro run --pipelines training "
            "--namespaces <variant> --params training.force=true)"
        )
    return logits, np.concatenate(label_parts).astype(np.int64, copy=False)


@dataclass
class Scores:
    """Logits of a scored set.

    Attributes:
        logits: float32 (N, 2).
        labels: int64 (N,) (``-1`` for unlabelled files).
        seconds: wall time of the scoring pass (loading + forward).
    """

    logits: np.ndarray
    labels: np.ndarray
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Measured throughput of the pass (images per second, loading included)."""
        return len(self.labels) / self.seconds if self.seconds > 0 else float("nan")


def resolve_num_workers(value: int | str | None, name: str, device_type: str | None = None) -> int:
    """``auto``/None -> :func:`facescan.data.loader.default_num_workers` for the device that
    scores (``cpu``/``cuda``; None: whether a GPU is present); else a non-negative int.

    Raises:
        ValueError: naming the parameter ``name`` when the value is neither.
    """
    if value is None or value == "auto":
        return default_num_workers(1, device_type)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be 'auto' or a non-negative integer, got {value!r}")
    return value


def load_model(
    checkpoint: Mapping[str, Any],
    *,
    expected_variant: str | None,
    device: torch.device,
    channels_last: bool = False,
    source: str = "checkpoint",
) -> nn.Module:
    """Rebuild a checkpoint's model in eval mode on ``device`` (channels-last when asked).

    ``source`` names the checkpoint's file or dataset at the start of every message.

    Raises:
        ValueError: when the checkpoint is not facescan's or holds another variant.
    """
    model = model_from_checkpoint(checkpoint, expected_variant=expected_variant, source=source).to(
        device
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def load_run_model(
    checkpoint: Mapping[str, Any],
    variant: str,
    namespace: str | None,
    device: torch.device,
    channels_last: bool,
) -> nn.Module:
    """A run's model (:func:`load_model`); errors name ``{ns}.model`` and its file."""
    return load_model(
        checkpoint,
        expected_variant=variant,
        device=device,
        channels_last=channels_last,
        source=catalog_source(namespace or variant),
    )


def score_cache(
    model: nn.Module,
    cache: Any,
    *,
    input_size: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    num_workers: int = 0,
) -> Scores:
    """Logits of every image of a cache (or a :class:`~facescan.evaluation.robustness.PerturbedImages`).

    Args:
        model: the classifier, already on ``device``.
        cache: an :class:`facescan.data.cache.ImageCache` or a view with the same interface.
        input_size: network input side (the checkpoint's).
        batch_size: images per forward pass.
        device: where the model is.
        amp_dtype: autocast dtype or None.
        channels_last: channels-last inputs.
        num_workers: DataLoader workers.

    Returns:
        The logits in cache order, the labels, and the wall time of the pass.
    """
    loader = build_loader(
        cache,
        train=False,
        input_size=input_size,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",  # not on a GPU machine told to score on the CPU
    )
    start = time.perf_counter()
    logits, labels = predict_logits(
        model, loader, device=device, amp_dtype=amp_dtype, channels_last=channels_last
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if not np.array_equal(labels, np.asarray(cache.labels)):
        raise RuntimeError("the loader returned images out of order")  # would mis-pair scores
    return Scores(logits=logits, labels=labels, seconds=seconds)


def list_image_files(
    input_path: str | Path | None, *, name: str = "predict.input_path"
) -> list[str]:
    """The images to score: a folder (searched recursively) or a text file with one path a line.

    In a list file, blank lines and lines starting with ``#`` are skipped and relative paths are
    read against the list file's folder. Folders yield files with a supported extension
    (case-insensitive), skipping hidden files and macOS ``._*`` resource forks, sorted.

    Paths keep the names they are given: made absolute and normalised (``a/../b`` is ``b``) but
    symbolic links are not resolved, so a file ``1001.jpg`` linking to a content-addressed blob
    (git-annex, DVC) stays ``1001.jpg`` (its submission ID is ``1001``) and two names linking to one
    file stay two entries.

    Args:
        input_path: the folder or list file.
        name: the parameter to name in errors.

    Returns:
        Absolute posix paths, in a stable order, without duplicates.

    Raises:
        ValueError: when ``input_path`` is not set.
        FileNotFoundError: naming ``name`` when the path does not exist, or it lists nothing.
    """
    import os  # local: the module's imports are edited elsewhere

    def as_given(p: Path) -> str:
        return Path(os.path.abspath(p)).as_posix()

    if input_path is None or str(input_path).strip() == "":
        raise ValueError(
            f"{name} is not set: pass a folder of images or a text file listing them, e.g. "
            f"--params {name}=/data/new_faces"
        )
    root = Path(input_path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{name}: {root} does not exist (a folder or a list file)")
    if root.is_dir():
        files = sorted(
            as_given(p)
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in SUPPORTED_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        what = f"no image files ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) under {root}"
    else:
        files = []
        for line in root.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line).expanduser()
            files.append(as_given(p if p.is_absolute() else root.parent / p))
        files = list(dict.fromkeys(files))  # keep the listed order, drop repeats
        what = f"{root} lists no files"
    if not files:
        raise FileNotFoundError(f"{name}: {what}")
    return files


class ImageFileDataset(Dataset[tuple[torch.Tensor, int, str]]):
    """Image files decoded exactly as the caches were, then the evaluation transform.

    An unreadable or unusable file does not stop the run: its item carries a zero image and the
    reason, and the scorer leaves it out. Files are held to ingestion's rules: only JPEG, PNG,
    WebP and BMP content is decoded, and images more elongated than
    :data:`facescan.data.imaging.MAX_ASPECT_RATIO` are skipped (``extreme aspect ratio``).

    Args:
        paths: the files.
        cache_size: the cache side the model was trained with (``preprocess.cache_size``).
        max_size: the bound on the longer side (``preprocess.max_size``).
        input_size: network input side.
        background: RGB colour under transparent pixels (``data.background``).
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        cache_size: int,
        max_size: int,
        input_size: int,
        background: Sequence[int] = (255, 255, 255),
    ) -> None:
        self.paths = list(paths)
        self.cache_size = cache_size
        self.max_size = max_size
        self.input_size = input_size
        self.background = tuple(int(c) for c in background)
        self.transform = eval_transform(input_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        """Return ``(image (3, s, s) float32, index, reason)``; ``reason`` is "" when readable."""
        from facescan.data.imaging import MAX_ASPECT_RATIO  # local: module imports edited elsewhere

        path = self.paths[index]
        try:
            pixels = load_for_cache(
                path,
                self.cache_size,
                self.max_size,
                self.background,
                max_aspect_ratio=MAX_ASPECT_RATIO,
            )
            image = self.transform(torch.from_numpy(pixels))
        except ImageDecodeError as err:
            return self._blank(), index, err.reason
        except FileNotFoundError:
            return self._blank(), index, "missing file"
        except OSError as err:  # e.g. permission denied, I/O error on a network disk
            return self._blank(), index, f"unreadable file ({err.__class__.__name__})"
        except (ValueError, RuntimeError) as err:  # anything Pillow or torchvision may raise
            return self._blank(), index, f"unusable image ({err.__class__.__name__}: {err})"
        return image, index, ""

    def _blank(self) -> torch.Tensor:
        return torch.zeros(3, self.input_size, self.input_size)


def score_files(
    model: nn.Module,
    paths: Sequence[str],
    *,
    cache_size: int,
    max_size: int,
    input_size: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    num_workers: int = 0,
    background: Sequence[int] = (255, 255, 255),
    desc: str = "predict",
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Score image files in batches, skipping unreadable ones.

    Files are decoded in DataLoader workers (``num_workers``) while the model runs; a tqdm bar
    shows progress.

    Returns:
        ``(scored_paths, logits (M, 2), rejected)`` with ``rejected`` a list of ``(path, reason)``.
    """
    dataset = ImageFileDataset(
        paths,
        cache_size=cache_size,
        max_size=max_size,
        input_size=input_size,
        background=background,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    scored: list[str] = []
    rejected: list[tuple[str, str]] = []

    def readable() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, index, reasons in tqdm(loader, desc=desc, unit="batch"):
            ok = torch.tensor([r == "" for r in reasons], dtype=torch.bool)
            for i, r in zip(index.tolist(), reasons, strict=True):
                if r:
                    rejected.append((dataset.paths[i], r))
            if ok.any():
                scored.extend(dataset.paths[i] for i in index[ok].tolist())
                # predict_logits wants (images, labels); these files have no label (-1).
                yield images[ok], torch.full((int(ok.sum()),), -1, dtype=torch.int64)

    logits, _ = predict_logits(
        model, readable(), device=device, amp_dtype=amp_dtype, channels_last=channels_last
    )
    for path, reason in rejected:
        logger.warning("skipped %s: %s", path, reason)
    return scored, logits, rejected


def checkpoint_threshold(checkpoint: Mapping[str, Any], source: str) -> float:
    """The decision threshold training tuned on the validation images (``val_threshold``), or 0.5
    with a warning for a checkpoint written before it was stored."""
    value = checkpoint.get("val_threshold")
    if value is None:
        logger.warning(
            "%s holds no validation-tuned threshold (trained before it was stored): deciding at "
            "p_fake > 0.5; retrain it for a calibrated decision",
            source,
        )
        return 0.5
    return float(value)


def summarise_scores(
    scores: Scores,
    paths: list[str],
    bootstrap: Mapping[str, Any],
    val: Scores | None = None,
    val_threshold: float | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-image table and every metric (with bootstrap intervals) of one scored set.

    Args:
        scores: the set's logits and labels.
        paths: the image files, in score order.
        bootstrap: keyword arguments of :func:`facescan.evaluation.stats.bootstrap_ci`.
        val: validation scores, to tune a threshold (optional).
        val_threshold: the threshold to report accuracies at instead (the checkpoint's).

    Returns:
        ``(predictions, metrics)``: predictions with ``path``, ``label``, ``p_fake``, ``pred``
        (threshold 0.5), and the metrics of :func:`classification_metrics` plus the intervals.
    """
    p_fake = p_fake_from_logits(scores.logits)
    pred = predict_labels(p_fake)
    predictions = pd.DataFrame(
        {"path": paths, "label": scores.labels, "p_fake": p_fake, "pred": pred}
    )
    metrics = classification_metrics(
        scores.labels,
        scores.logits,
        val_labels=None if val is None else val.labels,
        val_logits=None if val is None else val.logits,
        val_threshold=val_threshold,
    )
    metrics.update(bootstrap_ci(scores.labels, p_fake, pred, **bootstrap))
    metrics["bootstrap"] = dict(bootstrap)
    return predictions, metrics
