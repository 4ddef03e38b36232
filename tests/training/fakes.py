"""Stand-ins that spawned DDP workers import (so they live in a module, not a test)."""

from __future__ import annotations

import os

import numpy as np

from facescan.data.cache import ImageCache


class CrashingCache(ImageCache):
    """An image cache whose reads fail in the worker of global rank 1 (a simulated crash)."""

    MESSAGE = "simulated crash of the worker of rank 1"

    @classmethod
    def wrap(cls, cache: ImageCache) -> CrashingCache:
        return cls(cache.path, cache.size, cache.labels, cache.paths, cache.meta)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if os.environ.get("RANK") == "1":
            raise RuntimeError(self.MESSAGE)
        return super().__getitem__(index)
