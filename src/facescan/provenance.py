"""Where a result came from: code version, packages, machine. Stored in every checkpoint.

:func:`collect` is cheap (no CUDA context, a 2-second cap on git) and never raises: a field it
cannot read is ``"unknown"``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["collect"]

_PACKAGES = (
    "facescan",
    "torch",
    "torchvision",
    "kedro",
    "kedro-datasets",
    "numpy",
    "pillow",
    "scikit-learn",
    "pandas",
)
_UNKNOWN = "unknown"


def _safe(fn: Callable[[], Any], default: Any = _UNKNOWN) -> Any:
    try:
        value = fn()
    except Exception:  # provenance must never stop a run
        return default
    return default if value is None or value == "" else value


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        timeout=2,
        check=True,
    )
    return out.stdout.strip()


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _gpus() -> list[str]:
    import torch

    if torch.cuda.is_initialized():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    # Asking torch would create a CUDA context in this process (memory on GPU 0 for the whole
    # run, before DDP workers start); nvidia-smi answers without one.
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=2,
        check=True,
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _versions() -> dict[str, str]:
    return {name: _safe(lambda name=name: metadata.version(name)) for name in _PACKAGES}


def collect(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe the code and machine producing a result.

    Args:
        extra: more facts to record (merged last, so they win).

    Returns:
        A JSON-able dict of strings, ints, bools and lists: ``git_commit``, ``git_dirty``,
        ``packages``, ``python``, ``platform``, ``cpu``, ``cpu_cores``, ``gpus``, ``cuda``,
        ``hostname`` and ``created_utc``.
    """
    import torch

    info: dict[str, Any] = {
        "git_commit": _safe(lambda: _git("rev-parse", "HEAD")),
        "git_dirty": _safe(lambda: bool(_git("status", "--porcelain", "--untracked-files=no"))),
        "packages": _safe(_versions, {}),
        "python": platform.python_version(),
        "platform": _safe(platform.platform),
        "cpu": _safe(_cpu_model),
        "cpu_cores": _safe(os.cpu_count, 0),
        "gpus": _safe(_gpus, []),
        "cuda": _safe(lambda: torch.version.cuda),
        "hostname": _safe(platform.node),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    info.update(extra or {})
    return info
