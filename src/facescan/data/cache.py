"""The on-disk image cache of one split: uint8 ``(N, 3, S, S)`` images, labels, paths.

A cache is a folder::

    images.npy    uint8 (N, 3, S, S), NumPy's .npy format, opened with ``mmap_mode="r"``
    labels.npy    int64 (N,)
    paths.json    the N source files, in row order
    meta.json     count, size, sha256 of the content, and how it was made

:func:`write_cache` streams an :class:`ImageStream` (the lazy output of a preprocess node) into a
temporary sibling folder and renames it into place only once everything is written, so an
interrupted run leaves either the previous cache or the new one, never half of one. Pixels are
written with plain sequential file writes into the ``.npy`` laid out by ``open_memmap``: unlike
stores through a writable memmap, those pages do not count against the process's resident memory,
so peak RSS stays flat however many images are cached.

:class:`ImageCache` is the small picklable handle that loading returns. It opens ``images.npy``
read-only on first access and drops the mapping when pickled, so every DataLoader or DDP worker
maps the file itself and the OS shares the pages between them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

__all__ = ["CACHE_FORMAT_VERSION", "ImageCache", "ImageStream", "write_cache"]

logger = logging.getLogger(__name__)

#: Bumped when the folder layout changes; :meth:`ImageCache.open` refuses other versions.
CACHE_FORMAT_VERSION = 1

_IMAGES, _LABELS, _PATHS, _META = "images.npy", "labels.npy", "paths.json", "meta.json"


class ImageStream:
    """A cache still to be written: labels and paths now, pixels on iteration.

    Preprocess nodes return this instead of arrays so that no split is ever held in memory:
    :func:`write_cache` pulls the images one at a time while it writes them.

    Args:
        size: side ``S`` of the square images.
        labels: one integer label per image.
        paths: one source file per image, in the order the images come.
        images: a zero-argument callable returning a fresh iterator of ``uint8 (3, S, S)`` arrays
            (a callable rather than an iterator, so the stream can be copied and re-read).
        meta: extra JSON-serialisable facts stored in ``meta.json`` (e.g. how images were resized).

    Raises:
        ValueError: when ``labels`` and ``paths`` differ in length or ``size`` is not positive.
    """

    def __init__(
        self,
        size: int,
        labels: Sequence[int] | np.ndarray,
        paths: Sequence[str],
        images: Callable[[], Iterator[np.ndarray]],
        meta: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"image size must be a positive integer, got {size!r}")
        self.size = int(size)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.paths = [str(p) for p in paths]
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{len(self.labels)} labels for {len(self.paths)} paths")
        self.images = images
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.images())

    def __repr__(self) -> str:
        return f"ImageStream(n={len(self)}, size={self.size})"


class ImageCache:
    """Read-only handle on a cache folder; cheap to pickle (the memmap is not pickled).

    Use :meth:`open` to create one.

    Attributes:
        path: the cache folder.
        size: side ``S`` of the square images.
        labels: ``int64 (N,)`` labels.
        paths: the N source files.
        meta: the parsed ``meta.json`` (``count``, ``size``, ``sha256`` of the content, ...).
    """

    def __init__(
        self, path: Path, size: int, labels: np.ndarray, paths: list[str], meta: dict[str, Any]
    ) -> None:
        self.path = Path(path)
        self.size = size
        self.labels = labels
        self.paths = paths
        self.meta = meta
        self._images: np.memmap | None = None

    @classmethod
    def open(cls, path: str | Path) -> ImageCache:
        """Open the cache written by :func:`write_cache` at ``path``.

        Raises:
            FileNotFoundError: naming the folder when there is no cache there.
            ValueError: naming the file when the folder is inconsistent or of another format.
        """
        path = Path(path)
        meta_file = path / _META
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"no image cache at {path} ({_META} missing); run the preprocess pipeline"
            )
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != CACHE_FORMAT_VERSION:
            raise ValueError(
                f"{meta_file}: cache format {meta.get('format_version')!r}, this facescan reads "
                f"{CACHE_FORMAT_VERSION}; re-run the preprocess pipeline"
            )
        labels = np.load(path / _LABELS)
        paths = json.loads((path / _PATHS).read_text())
        count, size = int(meta["count"]), int(meta["size"])
        if len(labels) != count or len(paths) != count:
            raise ValueError(
                f"{path}: meta.json says {count} images but there are {len(labels)} labels "
                f"and {len(paths)} paths; re-run the preprocess pipeline"
            )
        cache = cls(path, size, labels.astype(np.int64, copy=False), paths, meta)
        shape = tuple(cache.images.shape)
        if shape != (count, 3, size, size) or cache.images.dtype != np.uint8:
            raise ValueError(
                f"{path / _IMAGES}: {cache.images.dtype} {shape}, expected uint8 "
                f"{(count, 3, size, size)}; re-run the preprocess pipeline"
            )
        return cache

    @property
    def images(self) -> np.memmap:
        """``uint8 (N, 3, S, S)`` read-only memmap, opened on first access in this process."""
        if self._images is None:
            self._images = np.load(self.path / _IMAGES, mmap_mode="r")
        return self._images

    @property
    def sha256(self) -> str:
        """Hash of the cached content (pixels, labels, paths): equal hashes, equal data."""
        return str(self.meta["sha256"])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """Return ``(image, label)``: a read-only ``uint8 (3, S, S)`` view and an int."""
        return self.images[index], int(self.labels[index])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None  # each process maps the file itself
        return state

    def __repr__(self) -> str:
        return f"ImageCache(path={str(self.path)!r}, n={len(self)}, size={self.size})"


def write_cache(path: str | Path, stream: ImageStream, desc: str | None = None) -> ImageCache:
    """Write ``stream`` to the folder ``path`` atomically and return its handle.

    Images are hashed and written one at a time; memory does not grow with their number. The
    folder is assembled next to ``path`` and renamed into place at the end; a previous cache at
    ``path`` is replaced only then, and kept if anything fails before.

    Args:
        path: the cache folder (created with its parents; replaced when it exists).
        stream: what to write.
        desc: label of the progress bar (default: the folder name).

    Returns:
        The written cache.

    Raises:
        ValueError: when the stream is empty, yields an image of the wrong shape or dtype, or
            yields a different number of images than it has paths. Errors raised by the stream
            itself (e.g. a file that no longer decodes) propagate unchanged.
    """
    target = Path(path)
    if len(stream) == 0:
        raise ValueError(f"nothing to cache at {target}: the image stream is empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    # Not tempfile.mkdtemp: its 0700 mode would survive the rename and hide the cache from others.
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        start = time.perf_counter()
        digest = _write_folder(tmp, stream, desc or target.name)
        elapsed = time.perf_counter() - start
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "Cached %d images of %dx%d px in %s (%.1f s, %.0f images/s, sha256 %s)",
        len(stream),
        stream.size,
        stream.size,
        target,
        elapsed,
        len(stream) / max(elapsed, 1e-9),
        digest[:12],
    )
    return ImageCache.open(target)


def _write_folder(folder: Path, stream: ImageStream, desc: str) -> str:
    """Write the cache files into ``folder``; return the content hash."""
    n, s = len(stream), stream.size
    shape = (n, 3, s, s)
    # open_memmap lays out the .npy header and sizes the file; the pixels then go in with plain
    # writes (see the module docstring on why not through the memmap).
    header = np.lib.format.open_memmap(folder / _IMAGES, mode="w+", dtype=np.uint8, shape=shape)
    offset = header.offset
    del header
    digest = hashlib.sha256()
    count = 0
    with (
        open(folder / _IMAGES, "r+b") as f,
        tqdm(total=n, desc=desc, unit="img", disable=None, mininterval=1.0) as bar,
    ):
        f.seek(offset)
        for image in stream:
            if count == n:
                raise ValueError(f"the image stream yields more than its {n} paths")
            arr = np.asarray(image)
            if arr.dtype != np.uint8 or arr.shape != shape[1:]:
                raise ValueError(
                    f"{stream.paths[count]}: image is {arr.dtype} {arr.shape}, expected "
                    f"uint8 {shape[1:]}"
                )
            data = np.ascontiguousarray(arr).data
            f.write(data)
            digest.update(data)
            count += 1
            bar.update()
        if count != n:
            raise ValueError(f"the image stream yielded {count} images for {n} paths")
        f.flush()
        os.fsync(f.fileno())
    np.save(folder / _LABELS, stream.labels)
    paths_json = json.dumps(stream.paths)
    (folder / _PATHS).write_text(paths_json)
    digest.update(stream.labels.tobytes())
    digest.update(paths_json.encode())
    classes, counts = np.unique(stream.labels, return_counts=True)
    meta = {
        **stream.meta,
        "format_version": CACHE_FORMAT_VERSION,
        "count": n,
        "size": s,
        "dtype": "uint8",
        "shape": list(shape),
        "class_counts": {str(c): int(k) for c, k in zip(classes, counts, strict=True)},
        "sha256": digest.hexdigest(),
    }
    # meta.json last: its presence is what marks a folder as a complete cache.
    (folder / _META).write_text(json.dumps(meta, indent=2))
    return meta["sha256"]


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing a previous ``dst``.

    POSIX cannot rename a folder over a non-empty one, so the old folder is first renamed aside
    (both renames are atomic and within one directory) and deleted once the new one is in place.
    """
    if not dst.exists():
        os.rename(src, dst)
        return
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(target: Path) -> None:
    """Delete temporary folders a killed earlier save of ``target`` left behind."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            logger.warning("Removing %s, left by an interrupted cache write", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
