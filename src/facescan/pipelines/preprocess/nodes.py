"""Per-split image caches: each node returns a lazy stream that the catalog writes to disk."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from facescan.data.cache import ImageStream
from facescan.data.imaging import check_background
from facescan.data.preprocess import check_cache_params, stream_images

logger = logging.getLogger(__name__)


def cache_split(
    split_manifest: pd.DataFrame,
    params: dict[str, Any],
    background: Sequence[int],
    split: str,
) -> ImageStream:
    """Describe the cache of one split; the images are decoded while the catalog saves it.

    Args:
        split_manifest: output of the split pipeline (``path``, ``label``, ``split``).
        params: ``preprocess`` parameters: ``cache_size``, ``max_size``, ``threads``
            (decoding threads, ``auto`` or an integer).
        background: ``data.background``, the colour under transparent pixels (as in ingestion).
        split: ``train``, ``val`` or ``test``.

    Returns:
        An :class:`~facescan.data.cache.ImageStream` of the split's images sorted by path;
        ``ImageCacheDataset.save`` decodes and writes them one at a time.

    Raises:
        ValueError: naming the parameter or column at fault, or when the split has no images.
    """
    cache_size, max_size = params.get("cache_size"), params.get("max_size")
    check_cache_params(cache_size, max_size)
    colour = check_background(background, "data.background")
    threads = _threads(params.get("threads", "auto"))
    missing = [c for c in ("path", "label", "split") if c not in split_manifest.columns]
    if missing:
        raise ValueError(f"split_manifest lacks column(s) {missing}; re-run the split pipeline")
    rows = split_manifest[split_manifest["split"] == split].sort_values("path", kind="stable")
    if rows.empty:
        raise ValueError(f"split_manifest has no '{split}' images; re-run the split pipeline")
    paths = rows["path"].astype(str).tolist()
    counts = rows["label"].value_counts().sort_index().to_dict()
    logger.info(
        "Caching %d %s images (per label %s) at %d px", len(paths), split, counts, cache_size
    )
    return ImageStream(
        size=cache_size,
        labels=rows["label"].to_numpy(),
        paths=paths,
        images=functools.partial(stream_images, paths, cache_size, max_size, colour, threads),
        meta={"split": split, "max_size": max_size, "background": list(colour)},
    )


def _threads(value: Any) -> int | None:
    if value in (None, "auto"):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"preprocess.threads must be 'auto' or a positive integer, got {value!r}")
    return value
