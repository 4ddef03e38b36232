"""Kedro dataset of one split's image cache (see :mod:`facescan.data.cache`)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset

from facescan.data.cache import ImageCache, ImageStream, write_cache

__all__ = ["ImageCacheDataset"]


class ImageCacheDataset(AbstractDataset[ImageStream, ImageCache]):
    """A folder of memory-mappable uint8 images, with labels and source paths.

    ``save`` takes the lazy :class:`~facescan.data.cache.ImageStream` a preprocess node returns and
    streams it to disk atomically (memory does not grow with the number of images); ``load``
    returns an :class:`~facescan.data.cache.ImageCache`, a small picklable handle whose images are
    memory-mapped on first access in each process.

    The folder must be on a local file system (memory mapping needs one). A handle mapped again in
    another process (a DataLoader or DDP worker) checks that the folder still holds the cache it
    was loaded from, and raises :class:`~facescan.data.cache.CacheReplacedError` if a concurrent
    preprocess run replaced it.

    Example catalog entry::

        "{split}_cache":
          type: facescan.datasets.ImageCacheDataset
          path: data/05_model_input/{split}

    Args:
        path: the cache folder.
        built_by: the command that writes this cache, named when it is missing.
        metadata: free-form metadata, ignored by the dataset (kedro-viz shows it).
    """

    def __init__(
        self,
        path: str,
        built_by: str = "kedro run --pipelines data",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = PurePosixPath(path)
        self._built_by = built_by
        self.metadata = metadata

    def load(self) -> ImageCache:
        try:
            return ImageCache.open(Path(self._path))
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"no image cache at {self._path} yet; build it with {self._built_by}"
            ) from exc

    def save(self, data: ImageStream) -> None:
        if not isinstance(data, ImageStream):
            raise TypeError(
                f"ImageCacheDataset saves an ImageStream (what preprocess nodes return), "
                f"got {type(data).__name__}"
            )
        write_cache(Path(self._path), data)

    def _exists(self) -> bool:
        return (Path(self._path) / "meta.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
