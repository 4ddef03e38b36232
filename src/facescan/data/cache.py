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
maps the file itself and the OS shares the pages between them. The handle remembers which
``images.npy`` it was made from (device, inode, size, mtime): a worker that maps the folder after
a concurrent preprocess run replaced it would get the new pixels beside the old labels, so it
raises :class:`CacheReplacedError` instead (unless the new cache has the same content hash).

Concurrent writers of one cache leave each other's temporary folders alone: each holds an
``fcntl.flock`` on ``.<name>.writer-<token>.lock`` next to the cache while it writes, and the
clean-up of leftovers of killed writes skips folders whose writer still holds its lock. (Kedro
runs do not even get there: :mod:`facescan.locks` lets one data-writing run at a time in.)
"""

from __future__ import annotations

import fcntl
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

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheReplacedError",
    "ImageCache",
    "ImageStream",
    "write_cache",
]

logger = logging.getLogger(__name__)

#: Bumped when the folder layout changes; :meth:`ImageCache.open` refuses other versions.
CACHE_FORMAT_VERSION = 1

_IMAGES, _LABELS, _PATHS, _META = "images.npy", "labels.npy", "paths.json", "meta.json"

#: What identifies the ``images.npy`` a handle was made from: device, inode, size, mtime (ns).
FileIdentity = tuple[int, int, int, int]


class CacheReplacedError(RuntimeError):
    """The cache folder a handle was opened from was replaced or removed since."""


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
        self,
        path: Path,
        size: int,
        labels: np.ndarray,
        paths: list[str],
        meta: dict[str, Any],
        identity: FileIdentity | None = None,
    ) -> None:
        self.path = Path(path)
        self.size = size
        self.labels = labels
        self.paths = paths
        self.meta = meta
        self._identity = identity
        self._images: np.memmap | None = None

    @classmethod
    def open(cls, path: str | Path) -> ImageCache:
        """Open the cache written by :func:`write_cache` at ``path``.

        Every file is read from the same folder (through one directory descriptor), so a
        concurrent replacement of the folder cannot mix two caches in the handle.

        Raises:
            FileNotFoundError: naming the folder when there is no cache there.
            ValueError: naming the file when the folder is inconsistent or of another format.
        """
        path = Path(path)
        meta_file = path / _META
        missing = FileNotFoundError(
            f"no image cache at {path} ({_META} missing); run the preprocess pipeline"
        )
        try:
            folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        try:
            try:
                meta = json.loads(_read_at(folder, _META))
            except FileNotFoundError:
                raise missing from None
            if meta.get("format_version") != CACHE_FORMAT_VERSION:
                raise ValueError(
                    f"{meta_file}: cache format {meta.get('format_version')!r}, this facescan "
                    f"reads {CACHE_FORMAT_VERSION}; re-run the preprocess pipeline"
                )
            with os.fdopen(os.open(_LABELS, os.O_RDONLY, dir_fd=folder), "rb") as f:
                labels = np.load(f)
            paths = json.loads(_read_at(folder, _PATHS))
            count, size = int(meta["count"]), int(meta["size"])
            if len(labels) != count or len(paths) != count:
                raise ValueError(
                    f"{path}: meta.json says {count} images but there are {len(labels)} labels "
                    f"and {len(paths)} paths; re-run the preprocess pipeline"
                )
            images, identity = _map_images(os.open(_IMAGES, os.O_RDONLY, dir_fd=folder))
        finally:
            os.close(folder)
        cache = cls(path, size, labels.astype(np.int64, copy=False), paths, meta, identity)
        cache._images = images
        shape = tuple(images.shape)
        if shape != (count, 3, size, size) or images.dtype != np.uint8:
            raise ValueError(
                f"{path / _IMAGES}: {images.dtype} {shape}, expected uint8 "
                f"{(count, 3, size, size)}; re-run the preprocess pipeline"
            )
        return cache

    @property
    def images(self) -> np.memmap:
        """``uint8 (N, 3, S, S)`` read-only memmap, opened on first access in this process.

        Raises:
            CacheReplacedError: when the folder now holds another cache than the one this handle
                was made from (or none): its pixels would not match :attr:`labels`.
        """
        if self._images is None:
            self._images = self._reopen()
        return self._images

    def _reopen(self) -> np.memmap:
        """Map ``images.npy`` again, checking that it is the file this handle was made from."""
        try:
            folder = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fd = os.open(_IMAGES, os.O_RDONLY, dir_fd=folder)
                try:
                    if self._identity is not None and _identity(fd) != self._identity:
                        # Replaced; the same bytes again (caches are deterministic) mix nothing.
                        meta = json.loads(_read_at(folder, _META))
                        if meta.get("sha256") != self.meta.get("sha256"):
                            raise self._replaced()
                except BaseException:
                    os.close(fd)
                    raise
            finally:
                os.close(folder)
        except (FileNotFoundError, NotADirectoryError):
            raise self._replaced() from None
        images, self._identity = _map_images(fd)
        return images

    def _replaced(self) -> CacheReplacedError:
        return CacheReplacedError(
            f"The image cache {self.path} was replaced or removed after this handle was opened "
            f"(most likely by a concurrent preprocess run), so its pixels would no longer match "
            f"the labels this handle holds: let that run finish, then start this one again."
        )

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
        state["_images"] = None  # each process maps the file itself (and checks it)
        return state

    def __repr__(self) -> str:
        return f"ImageCache(path={str(self.path)!r}, n={len(self)}, size={self.size})"


def _read_at(folder: int, name: str) -> str:
    """The text of the file ``name`` in the folder open as descriptor ``folder``."""
    with os.fdopen(os.open(name, os.O_RDONLY, dir_fd=folder), "rb") as f:
        return f.read().decode()


def _identity(fd: int) -> FileIdentity:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _map_images(fd: int) -> tuple[np.memmap, FileIdentity]:
    """Memory-map the ``.npy`` open as ``fd`` read-only (the very file, not whatever its path
    names by then) and return it with the file's identity; closes ``fd``."""
    with os.fdopen(fd, "rb") as f:
        identity = _identity(f.fileno())
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"images.npy: .npy format {version} is not supported")
        images = np.memmap(
            f, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=f.tell()
        )
    return images, identity


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
    token, lock_fd = _lock_writer(target)
    try:
        _remove_leftovers(target)
        # Not tempfile.mkdtemp: its 0700 mode would survive the rename and hide the cache.
        tmp = target.parent / f".{target.name}.tmp-{token}"
        tmp.mkdir()
        try:
            start = time.perf_counter()
            digest = _write_folder(tmp, stream, desc or target.name)
            elapsed = time.perf_counter() - start
            _replace_dir(tmp, target, token)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        _unlock_writer(target, token, lock_fd)
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


def _writer_lock(target: Path, token: str) -> Path:
    return target.parent / f".{target.name}.writer-{token}.lock"


def _lock_writer(target: Path) -> tuple[str, int]:
    """Pick this write's token and hold ``.<name>.writer-<token>.lock`` (an ``flock``)."""
    for _ in range(10):
        token = uuid.uuid4().hex[:8]
        path = _writer_lock(target, token)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a fresh token: nobody else locks it
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return token, fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed as stale between its creation and the lock: pick another
    raise RuntimeError(f"could not lock a writer of {target}")


def _unlock_writer(target: Path, token: str, fd: int) -> None:
    try:
        _writer_lock(target, token).unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the flock


def _remove_if_gone(target: Path, token: str, leftover: Path | None) -> bool:
    """Delete ``leftover`` and the lock file of the write ``token`` of ``target``, unless that
    write still runs (holds its lock, in this process or another); return whether it was gone.

    The lock file is unlinked while its lock is held here, so a writer that created it but had not
    locked it yet notices (its file is gone) and picks another token.
    """
    lock = _writer_lock(target, token)
    try:
        fd: int | None = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None  # killed before it wrote its lock, or written by an older facescan
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        if leftover is not None:
            logger.warning("Removing %s, left by an interrupted cache write", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        if fd is not None:
            lock.unlink(missing_ok=True)
        return True
    finally:
        if fd is not None:
            os.close(fd)


def _replace_dir(src: Path, dst: Path, token: str) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing a previous ``dst``.

    POSIX cannot rename a folder over a non-empty one, so the old folder is first renamed aside
    (both renames are atomic and within one directory) and deleted once the new one is in place.
    """
    if not dst.exists():
        os.rename(src, dst)
        return
    old = dst.parent / f".{dst.name}.old-{token}"
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(target: Path) -> None:
    """Delete temporary folders (and lock files) that killed earlier writes of ``target`` left
    behind; those of writes still running, in this process or another, are left alone."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            token = leftover.name.rsplit("-", 1)[-1]
            if not _remove_if_gone(target, token, leftover):
                logger.debug("Leaving %s: another write of %s is running", leftover, target)
    prefix = f".{target.name}.writer-"
    for lock in target.parent.glob(f"{prefix}*.lock"):
        _remove_if_gone(target, lock.name[len(prefix) : -len(".lock")], None)
