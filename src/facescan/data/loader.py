"""torch datasets and loaders over an :class:`~facescan.data.cache.ImageCache`.

Batches come from memory-mapped uint8 arrays: no file is decoded during training. Randomness is
reproducible: shuffling draws from a seeded ``torch.Generator``; DataLoader workers get their torch
seed from that generator (``base_seed + worker_id``) and :func:`seed_worker` derives NumPy's and
Python's from it. With ``num_workers=0`` the augmentations draw from the process's global torch
RNG, which the training engine seeds. The training augmentation, degradations included
(:class:`~facescan.data.transforms.Degradations`), runs per image in ``__getitem__``: each image
gets its own draws, and workers share the work.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from facescan.data.cache import ImageCache
from facescan.data.transforms import Degradations, eval_transform, train_transform

__all__ = ["CacheDataset", "build_loader", "default_num_workers", "seed_worker", "usable_cores"]


class CacheDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images of a cache, transformed for training or evaluation.

    Args:
        cache: the split's cache.
        train: training augmentation (random) when True, deterministic resize + centre crop
            otherwise.
        input_size: side of the square network input (``preprocess.input_size``).
        degradations: blur / JPEG before the training augmentation (``preprocess.augment``);
            None = none. Training only.

    Raises:
        ValueError: naming ``preprocess.input_size`` when it is larger than the cached images
            (that would up-sample every image; re-run preprocess with a larger cache size), or
            when active degradations are given for evaluation.
    """

    def __init__(
        self,
        cache: ImageCache,
        train: bool,
        input_size: int,
        degradations: Degradations | None = None,
    ) -> None:
        if degradations is not None and not isinstance(degradations, Degradations):
            raise TypeError(
                f"degradations must be a Degradations or None, got {type(degradations).__name__} "
                "(build it with Degradations.from_params(preprocess.augment))"
            )
        if not train and degradations is not None and degradations.active:
            raise ValueError(
                "degradations (preprocess.augment) apply to training loaders only; evaluation "
                "is deterministic"
            )
        self.cache = cache
        self.train = train
        self.degradations = degradations if train else None
        self.transform = (
            train_transform(input_size, degradations) if train else eval_transform(input_size)
        )
        if input_size > cache.size:
            raise ValueError(
                f"preprocess.input_size ({input_size}) is larger than the cached images "
                f"({cache.size} px, preprocess.cache_size) at {cache.path}: re-run the preprocess "
                "pipeline with a larger preprocess.cache_size"
            )
        self.input_size = input_size

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Return ``(float32 (3, input_size, input_size), label)``; labels collate to int64."""
        image, label = self.cache[index]
        # Copy out of the read-only memmap (torch refuses non-writable arrays without a warning).
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        return self.transform(pixels), label


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _on_gpu(device_type: str | None) -> bool:
    """Whether the training runs on a GPU: ``device_type`` (``cpu``/``cuda``) when given, else
    whether torch sees one (what callers that do not name their device get)."""
    if device_type is None:
        return torch.cuda.is_available()
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"device_type must be 'cpu' or 'cuda', got {device_type!r}")
    return device_type == "cuda"


def default_num_workers(ranks: int = 1, device_type: str | None = None) -> int:
    """DataLoader workers per process, from the machine, leaving cores for compute.

    With a GPU the training process mostly waits on the device, so the other cores load (up to
    8 workers). On CPU the cores train the model and reading the cache is a few percent of a
    step, so at most 2 workers, and none on a 2-core machine (measured there: one worker halves
    the loader's throughput, benchmarks/data_pipeline.py).

    Args:
        ranks: training processes sharing the machine (DDP ranks).
        device_type: where the model runs, ``cpu`` or ``cuda`` (a CPU run on a GPU machine is
            a CPU run); None = ``cuda`` when torch sees a GPU.

    Returns:
        The number of workers for each rank: ``min(8, c - 1)`` on a GPU and
        ``min(2, (c - 1) // 2)`` on a CPU (never below 0), ``c`` = usable cores // ``ranks``.
    """
    per_rank = usable_cores() // max(1, ranks)
    if _on_gpu(device_type):
        return max(0, min(8, per_rank - 1))
    return max(0, min(2, (per_rank - 1) // 2))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed.

    torch seeds each worker with ``base_seed + worker_id`` (``base_seed`` drawn from the loader's
    generator); other libraries' RNGs would otherwise be copies of the parent's in every worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(
    cache: ImageCache,
    *,
    train: bool,
    input_size: int,
    batch_size: int,
    num_workers: int = 0,
    sampler: Sampler[int] | None = None,
    seed: int = 0,
    drop_last: bool | None = None,
    persistent_workers: bool | None = None,
    pin_memory: bool | None = None,
    degradations: Degradations | None = None,
) -> DataLoader:
    """A DataLoader of ``(images, labels)`` batches over a cache.

    Args:
        cache: the split's cache.
        train: training augmentation and shuffling (when no ``sampler``) if True.
        input_size: side of the square network input.
        batch_size: images per batch (per process under DDP).
        num_workers: loader processes (0: load in this process).
        sampler: e.g. a ``DistributedSampler``; it then decides the order (call its ``set_epoch``).
        seed: seeds the shuffling and the workers' RNGs.
        drop_last: drop the last incomplete batch; default ``train`` (a batch of one would break
            BatchNorm in training, and evaluation must see every image).
        persistent_workers: keep workers between epochs; default ``num_workers > 0``.
        pin_memory: batches in page-locked memory, for asynchronous copies to a GPU: pass
            ``device.type == "cuda"`` of the device the batches go to (pinning opens a CUDA
            context on the current GPU, which a CPU run on a GPU machine must not); default
            (None) = whether torch sees a GPU.
        degradations: blur / JPEG re-compression before the crop, per image, for training
            (``Degradations.from_params(preprocess.augment)``); None or all probabilities 0 =
            no degradation, with the same batches as without the argument.

    Returns:
        Batches of float32 ``(B, 3, input_size, input_size)`` and int64 ``(B,)``.

    Raises:
        ValueError: naming the argument when ``batch_size`` or ``num_workers`` is invalid, when
            ``drop_last`` would leave no batch at all, or when active ``degradations`` are given
            with ``train=False``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    drop_last = train if drop_last is None else drop_last
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    dataset = CacheDataset(cache, train=train, input_size=input_size, degradations=degradations)
    n = len(sampler) if sampler is not None else len(dataset)  # type: ignore[arg-type]
    if drop_last and n < batch_size:
        raise ValueError(
            f"batch_size ({batch_size}) is larger than the {n} images of {cache.path} this "
            "process sees: dropping the incomplete batch would leave none; lower the batch size"
        )
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else bool(pin_memory),
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker,
        persistent_workers=persistent_workers and num_workers > 0,
    )
