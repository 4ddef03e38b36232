"""Turn one image file into the cached uint8 ``(3, S, S)`` array: decode once, resample once, crop.

The report bounds the longer side of every image (``preprocess.max_size``, aspect ratio kept) and
the network then sees a square crop. Doing the bound and the cache size as two resizes would
resample twice; :func:`fit_to_cache` computes the single equivalent resize with torchvision's
``Resize(S, max_size=...)`` rule (shorter side to ``S`` unless that makes the longer side exceed
``max_size``) and centre-crops ``S x S`` (torchvision's ``CenterCrop``, which pads with black only
for aspect ratios beyond ``max_size / S``). Where that rule would give a side of 0 pixels (a strip
thinner than 1 to ``max_size``, which ingestion rejects anyway, see
:data:`facescan.data.imaging.MAX_ASPECT_RATIO`), the side is kept at 1 pixel instead of failing.
Training, evaluation and prediction all go through :func:`load_for_cache`, so the pixels a model
sees never depend on which pipeline read the file.

:func:`stream_images` decodes a list of files in a bounded thread pool (Pillow releases the GIL
while decoding and resampling) and yields arrays in input order; at most ``2 * threads`` decoded
images are alive at any time, whatever the number of files.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from facescan.data.imaging import ImageDecodeError, check_background, open_rgb
from facescan.data.loader import usable_cores

__all__ = [
    "RESAMPLE",
    "check_cache_params",
    "default_threads",
    "fit_to_cache",
    "load_for_cache",
    "ordered_thread_map",
    "stream_images",
]


#: Interpolation of the one resize. torchvision's ``Resize`` default (antialiased on PIL images),
#: so the cache holds what the report's torchvision ``Resize(S, max_size=...)`` would produce.
RESAMPLE = InterpolationMode.BILINEAR

_T = TypeVar("_T")
_R = TypeVar("_R")


def check_cache_params(cache_size: int, max_size: int) -> None:
    """Validate the cache geometry.

    Args:
        cache_size: side ``S`` of the stored square images (``preprocess.cache_size``).
        max_size: bound on the longer side after resizing (``preprocess.max_size``).

    Raises:
        ValueError: naming the parameter when a value is not a positive integer, or when
            ``max_size`` is not larger than ``cache_size`` (the bound would then crop every
            non-square image to a padded strip).
    """
    for name, value in (("preprocess.cache_size", cache_size), ("preprocess.max_size", max_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if max_size <= cache_size:
        raise ValueError(
            f"preprocess.max_size ({max_size}) must be larger than preprocess.cache_size "
            f"({cache_size}): it bounds the longer side, the cache size sets the shorter one"
        )


def fit_to_cache(img: Image.Image, cache_size: int, max_size: int) -> np.ndarray:
    """Resize once (shorter side to ``cache_size``, longer side at most ``max_size``), centre-crop.

    Args:
        img: an RGB image (e.g. from :func:`facescan.data.imaging.open_rgb`).
        cache_size: side ``S`` of the output square.
        max_size: bound on the longer side of the resized image.

    Returns:
        A C-contiguous ``uint8`` array of shape ``(3, S, S)``. An image already ``S x S`` is
        returned pixel for pixel (no resampling).

    Raises:
        ValueError: on invalid sizes, or when ``img`` is not an RGB image.
    """
    check_cache_params(cache_size, max_size)
    if img.mode != "RGB":
        raise ValueError(f"fit_to_cache expects an RGB image, got mode {img.mode!r}")
    size = _degenerate_resize(img.width, img.height, cache_size, max_size)
    if size is None:
        resized = F.resize(img, [cache_size], interpolation=RESAMPLE, max_size=max_size)
    else:
        resized = F.resize(img, size, interpolation=RESAMPLE)
    square = F.center_crop(resized, [cache_size, cache_size])
    # (S, S, 3) -> (3, S, S), the layout torch reads without a copy.
    return np.ascontiguousarray(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1))


def _degenerate_resize(width: int, height: int, cache_size: int, max_size: int) -> list[int] | None:
    """``[h, w]`` with the shorter side at 1 px where ``Resize(S, max_size)`` gives 0; else None.

    The rule is torchvision's: shorter side to ``S``, longer side in proportion, and when that
    exceeds ``max_size``, longer side ``max_size`` and shorter side ``int(max_size * S / longer)``.
    """
    short, long = min(width, height), max(width, height)
    new_long = int(cache_size * long / short)
    if new_long <= max_size or int(max_size * cache_size / new_long) >= 1:
        return None
    return [max_size, 1] if width <= height else [1, max_size]


def load_for_cache(
    path: str | Path,
    cache_size: int,
    max_size: int,
    background: Sequence[int] = (255, 255, 255),
    max_aspect_ratio: float | None = None,
) -> np.ndarray:
    """Decode an image file (JPEG at reduced scale where possible) and fit it to the cache.

    JPEGs are decoded with Pillow's draft mode at the largest DCT scale (1/2, 1/4, 1/8) whose
    shorter side still covers ``cache_size``, so a large photo is never fully decoded only to be
    shrunk; the one resize then does the rest.

    Args:
        path: the image file (only read).
        cache_size: side ``S`` of the output square.
        max_size: bound on the longer side of the resized image.
        background: RGB colour under transparent pixels.
        max_aspect_ratio: refuse images more elongated than this (``extreme aspect ratio``), as
            ingestion does; ``predict`` passes :data:`facescan.data.imaging.MAX_ASPECT_RATIO`.
            None (preprocessing files that ingestion already checked) accepts any shape.

    Returns:
        ``uint8`` array ``(3, S, S)``.

    Raises:
        FileNotFoundError: the file is missing.
        facescan.data.imaging.ImageDecodeError: the file cannot be decoded (its message names it).
    """
    img = open_rgb(
        path,
        background=tuple(background),
        draft_size=cache_size,
        max_aspect_ratio=max_aspect_ratio,
    )
    return fit_to_cache(img, cache_size, max_size)


def ordered_thread_map(
    fn: Callable[[_T], _R], items: Iterable[_T], threads: int, window: int | None = None
) -> Iterator[_R]:
    """``map(fn, items)`` on a thread pool, results in input order, at most ``window`` in flight.

    ``ThreadPoolExecutor.map`` submits every item up front (memory grows with the input); this
    keeps a sliding window of futures instead, so a slow consumer bounds the work done ahead.

    Args:
        fn: the function, called from worker threads.
        items: the inputs, consumed lazily.
        threads: number of worker threads (>= 1); 1 still decodes ahead of the consumer.
        window: futures alive at once (default ``2 * threads``).

    Yields:
        ``fn(item)`` for each item, in order. The first exception raised by ``fn`` propagates
        (the pending futures are cancelled).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    window = window or 2 * threads
    pending: collections.deque[Future[_R]] = collections.deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="facescan-decode") as pool:
        try:
            for item in source:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def default_threads() -> int:
    """Decoding threads for this machine: one per usable core, at most 8."""
    return max(1, min(8, usable_cores()))


def stream_images(
    paths: Sequence[str],
    cache_size: int,
    max_size: int,
    background: Sequence[int] = (255, 255, 255),
    threads: int | None = None,
) -> Iterator[np.ndarray]:
    """Decode and fit many files, in order, with bounded memory.

    Args:
        paths: image files.
        cache_size: side ``S`` of the output squares.
        max_size: bound on the longer side of the resized images.
        background: RGB colour under transparent pixels.
        threads: decoding threads (default: :func:`default_threads`).

    Yields:
        ``uint8`` arrays ``(3, S, S)``, one per path, in the order of ``paths``.

    Raises:
        FileNotFoundError: naming a file that disappeared since ingestion.
        ValueError: naming a file that no longer decodes (changed since ingestion), or any other
            failure while reading or fitting one file.
    """
    check_cache_params(cache_size, max_size)
    colour = check_background(background, "data.background")
    load = functools.partial(
        _load_checked, cache_size=cache_size, max_size=max_size, background=colour
    )
    yield from ordered_thread_map(load, paths, threads or default_threads())


def _load_checked(
    path: str, cache_size: int, max_size: int, background: tuple[int, int, int]
) -> np.ndarray:
    try:
        return load_for_cache(path, cache_size, max_size, background)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{path}: listed in split_manifest but missing now; re-run ingestion"
        ) from err
    except ImageDecodeError as err:
        raise ValueError(
            f"{path}: cannot be decoded any more ({err.reason}); it changed since ingestion "
            "checked it, re-run ingestion"
        ) from err
    except MemoryError:
        raise
    except Exception as err:  # an I/O error, or anything Pillow or torchvision raises
        raise ValueError(
            f"{path}: cannot be cached ({type(err).__name__}: {err}); replace or remove the "
            "file in the source and re-run ingestion"
        ) from err
