"""Kedro dataset of a facescan checkpoint dict (see :mod:`facescan.checkpoint`)."""

from __future__ import annotations

import io
from copy import deepcopy
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import torch
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from facescan.checkpoint import atomic_torch_save

__all__ = ["TorchCheckpointDataset"]


class TorchCheckpointDataset(AbstractVersionedDataset[dict[str, Any], dict[str, Any]]):
    """A ``torch.save`` file, written atomically and read with ``weights_only=True``.

    Saving writes a temporary file next to the target, fsyncs it and renames it into place, so an
    interrupted save never leaves a truncated checkpoint (on object stores, where a file appears
    only once fully uploaded, the upload is already atomic). Loading refuses anything but tensors
    and plain Python data, so a checkpoint file cannot run code.

    Example catalog entry::

        "{variant}.model":
          type: facescan.datasets.TorchCheckpointDataset
          filepath: data/06_models/{variant}/model.pt
          versioned: true

    Args:
        filepath: where the file goes, optionally with an fsspec protocol (``s3://...``).
        version: set by Kedro when the catalog entry says ``versioned: true``.
        credentials: passed to the fsspec filesystem.
        fs_args: passed to the fsspec filesystem.
        metadata: free-form metadata, ignored by the dataset (kedro-viz shows it).
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        fs_args = deepcopy(fs_args) or {}
        if protocol == "file":
            fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(deepcopy(credentials) or {}), **fs_args)
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> dict[str, Any]:
        """Load the checkpoint dict on the CPU (``weights_only=True``)."""
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        try:
            with self._fs.open(load_path, mode="rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:
            detail = (str(exc).splitlines() or ["no detail"])[0]
            raise DatasetError(
                f"{load_path}: not a loadable facescan checkpoint ({type(exc).__name__}: "
                f"{detail}); it is corrupt, truncated, not written by torch.save, or holds objects "
                "other than tensors and plain data (refused by weights_only=True); train one with "
                "kedro run --pipelines training"
            ) from exc

    def save(self, data: dict[str, Any]) -> None:
        """Save ``data`` atomically."""
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        if self._protocol == "file":
            atomic_torch_save(data, Path(save_path))
        else:
            buffer = io.BytesIO()
            torch.save(data, buffer)
            with self._fs.open(save_path, mode="wb") as f:
                f.write(buffer.getvalue())
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(load_path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))
