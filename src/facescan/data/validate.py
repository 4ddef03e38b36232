"""Checking candidate files: decode each one, reject what cannot be used, collapse exact duplicates.

Produces the two ingestion tables:

* the manifest: ``path`` (absolute POSIX), ``label`` (0 real / 1 fake), ``source`` (per image:
  the sub-folder under its class folder or the CSV's third column, else ``real``/``fake``),
  ``source_type`` (folder / csv / synthetic), ``width`` and
  ``height`` (after EXIF orientation), ``format``, ``mode`` (the file's own Pillow mode), ``bytes``,
  ``sha256``; one row per accepted file, sorted by path;
* the rejections: ``path``, ``reason`` (a :class:`facescan.data.sources.Reason`), sorted by path.

Each file is hashed in chunks and decoded from its handle (never read whole into memory); a file
above ``data.max_file_bytes`` is rejected from its size before any byte is read, and an image whose
longer side exceeds :data:`facescan.data.imaging.MAX_ASPECT_RATIO` times its shorter side is
rejected as ``extreme aspect ratio``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from facescan.data.imaging import (
    DEFAULT_MAX_FILE_BYTES,
    MAX_ASPECT_RATIO,
    ImageDecodeError,
    ImageInfo,
    inspect_image,
)
from facescan.data.sources import Candidate, Reason

__all__ = [
    "MANIFEST_COLUMNS",
    "REJECTED_COLUMNS",
    "check_candidates",
    "check_max_file_bytes",
    "require_usable",
    "summarise",
]

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "path",
    "label",
    "source",
    "source_type",
    "width",
    "height",
    "format",
    "mode",
    "bytes",
    "sha256",
)
REJECTED_COLUMNS = ("path", "reason")

# Threads pay off only when there is enough decoding to overlap (Pillow releases the GIL while
# decoding and hashlib while hashing); below this, starting them costs more than it saves.
_PARALLEL_MIN_FILES = 64
_PROGRESS_MIN_FILES = 500


def _inspect(
    path: Path,
    background: tuple[int, int, int],
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> ImageInfo | str:
    """ImageInfo of a file, or the reason it is rejected."""
    try:
        info, _ = inspect_image(
            path, background, max_file_bytes=max_file_bytes, max_aspect_ratio=MAX_ASPECT_RATIO
        )
    except ImageDecodeError as err:
        logger.debug("Rejected %s", err)
        if err.reason == Reason.TOO_LARGE:  # the size and the parameter that sets the cap
            return f"{err.reason} ({err.detail})"
        return err.reason
    except FileNotFoundError:  # removed while we were reading the folder
        return Reason.MISSING_FILE
    except OSError:
        return Reason.UNREADABLE
    return info


def _inspect_all(
    paths: Sequence[Path],
    background: tuple[int, int, int],
    workers: int,
    progress: bool,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> list[ImageInfo | str]:
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(paths),
        desc="checking images",
        unit="img",
        leave=False,
        disable=not progress or len(paths) < _PROGRESS_MIN_FILES,
    )
    with bar, warnings.catch_warnings():
        # Set once here for every worker thread (the filter list is process-wide), rather than
        # per file, which would race between threads.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if workers <= 1 or len(paths) < _PARALLEL_MIN_FILES:
            results = []
            for p in paths:
                results.append(_inspect(p, background, max_file_bytes))
                bar.update()
            return results
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = []
            jobs = pool.map(  # keeps the order
                _inspect, paths, [background] * len(paths), [max_file_bytes] * len(paths)
            )
            for r in jobs:
                results.append(r)
                bar.update()
            return results


def default_workers() -> int:
    """Decoding threads: one per available core, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def check_max_file_bytes(value: Any) -> int | None:
    """Validate ``data.max_file_bytes``: a positive number of bytes, or None for no cap.

    Raises:
        ValueError: naming ``data.max_file_bytes`` and the values it takes.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(
            f"data.max_file_bytes must be a positive integer (bytes) or null for no cap, got "
            f"{value!r}; e.g. --params data.max_file_bytes=50000000"
        )
    return value


def check_candidates(
    candidates: Iterable[Candidate],
    source: str,
    min_side: int,
    background: tuple[int, int, int] = (255, 255, 255),
    workers: int | None = None,
    progress: bool = True,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decode every candidate and build the manifest and the rejections.

    A file is rejected when it is larger than ``max_file_bytes`` (before it is read), when it cannot
    be decoded or is not a JPEG, PNG, WebP or BMP (reason from :class:`ImageDecodeError`), when its
    sides are more unequal than :data:`~facescan.data.imaging.MAX_ASPECT_RATIO` allows, when its
    shorter side is below ``min_side``, or when its exact content (SHA-256) appears under both
    labels (every copy is rejected: such a file would leak between splits or teach both answers).
    Copies of one content under one label collapse to the first path; the others are rejected as
    ``duplicate``. Each distinct file is checked once, even when it is listed twice.

    Args:
        candidates: files from a source; those with a ``reason`` are rejected as is.
        source: the ``source`` column value (``folder``, ``csv`` or ``synthetic``).
        min_side: smallest accepted shorter side, in pixels.
        background: RGB colour under transparent pixels (decoding check only).
        workers: decoding threads; None = :func:`default_workers`.
        progress: show a progress bar on large inputs.
        max_file_bytes: largest accepted file in bytes (``data.max_file_bytes``); None = no cap.

    Returns:
        ``(manifest, rejected)`` DataFrames (see the module docstring).

    Raises:
        ValueError: naming ``data.max_file_bytes`` when it is neither a positive integer nor None.
    """
    max_file_bytes = check_max_file_bytes(max_file_bytes)
    candidates = list(candidates)
    rejected: list[tuple[str, str]] = [
        (c.path.as_posix(), c.reason) for c in candidates if c.reason is not None
    ]
    labelled = [c for c in candidates if c.reason is None]
    unique_paths = sorted({c.path for c in labelled}, key=str)
    results = _inspect_all(
        unique_paths,
        background,
        default_workers() if workers is None else workers,
        progress,
        max_file_bytes,
    )
    by_path = dict(zip(unique_paths, results, strict=True))

    accepted: list[tuple[Candidate, ImageInfo]] = []
    for cand in labelled:
        info = by_path[cand.path]
        if isinstance(info, str):
            rejected.append((cand.path.as_posix(), info))
        elif min(info.width, info.height) < min_side:
            rejected.append((cand.path.as_posix(), Reason.TOO_SMALL))
        else:
            accepted.append((cand, info))

    by_hash: dict[str, list[tuple[Candidate, ImageInfo]]] = {}
    for cand, info in sorted(accepted, key=lambda a: (str(a[0].path), a[0].label)):
        by_hash.setdefault(info.sha256, []).append((cand, info))
    rows = []
    for copies in by_hash.values():
        if len({c.label for c, _ in copies}) > 1:
            rejected.extend((c.path.as_posix(), Reason.CONFLICTING_LABELS) for c, _ in copies)
            continue
        (keep, info), *others = copies
        rejected.extend(
            (c.path.as_posix(), Reason.DUPLICATE) for c, _ in others if c.path != keep.path
        )
        rows.append(
            {
                "path": keep.path.as_posix(),
                "label": keep.label,
                # Per image (camera, generator): its sub-folder or CSV column, else its class.
                "source": keep.source or ("real" if keep.label == 0 else "fake"),
                "source_type": source,
                "width": info.width,
                "height": info.height,
                "format": info.format,
                "mode": info.mode,
                "bytes": info.bytes,
                "sha256": info.sha256,
            }
        )

    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    manifest = manifest.astype(
        {"label": "int64", "width": "int64", "height": "int64", "bytes": "int64"}
    )
    manifest = manifest.sort_values("path", kind="stable").reset_index(drop=True)
    rejected_df = (
        pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS))
        .drop_duplicates()
        .sort_values(["path", "reason"], kind="stable")
        .reset_index(drop=True)
    )
    return manifest, rejected_df


def summarise(
    manifest: pd.DataFrame, rejected: pd.DataFrame
) -> tuple[dict[int, int], dict[str, int]]:
    """Accepted files per label (0 and 1 always present) and rejected files per reason.

    A reason written with details in parentheses (``too large (... bytes ...)``) counts under its
    text before them.
    """
    per_label = {0: 0, 1: 0} | {int(k): int(v) for k, v in manifest["label"].value_counts().items()}
    per_reason = dict(Counter(str(r).split(" (", 1)[0] for r in rejected["reason"]).most_common())
    return per_label, per_reason


def require_usable(
    manifest: pd.DataFrame,
    rejected: pd.DataFrame,
    where: str,
    class_names: Mapping[int, str] | None = None,
    examples: int = 3,
    param: str = "data.source.path",
    min_side: int | None = None,
) -> None:
    """Stop with one clear sentence when no image is usable or a label has none.

    Args:
        manifest: the accepted files.
        rejected: the rejections.
        where: what was read, for the message (e.g. ``"folder /data/faces"``).
        class_names: names of the labels for the message.
        examples: how many rejected paths to show in all.
        param: the parameter the message starts with.
        min_side: ``data.min_side``, named in the fix when files were too small.

    Raises:
        ValueError: one line starting with ``param``: which class has no usable image, the counts
            per label, the rejection reasons (with a few example paths of the class missing) and
            the fix.
    """
    per_label, per_reason = summarise(manifest, rejected)
    names = {0: "real", 1: "fake"} | dict(class_names or {})
    empty = [label for label in (0, 1) if per_label[label] == 0]
    if not empty:
        return
    counts = ", ".join(f"{names[k]} ({k}): {per_label[k]}" for k in (0, 1))
    problem = (
        "no usable image"
        if len(empty) == 2
        else f"class {names[empty[0]]} ({empty[0]}) has no usable image"
    )
    if not per_reason:
        raise ValueError(
            f"{param}: {problem} in {where} (accepted {counts}) and no file was rejected; "
            "check that the path and the class names point at your images"
        )
    # Examples from the class that is missing where the path tells it (its folder), else any.
    shown = rejected["path"].tolist()
    if len(empty) == 1:
        hint = f"/{names[empty[0]]}/".lower()
        own = [p for p in shown if hint in p.lower()]
        shown = own or shown
    reasons = ", ".join(f"{reason}: {n}" for reason, n in per_reason.items())
    fix = "replace or remove the rejected files, or add usable images of that class"
    if Reason.TOO_SMALL in per_reason:
        fix += f" (data.min_side{f' = {min_side}' if min_side is not None else ''} sets the "
        fix += "smallest accepted side)"
    if Reason.TOO_LARGE in per_reason:
        fix += " (data.max_file_bytes sets the largest accepted file; null = no cap)"
    raise ValueError(
        f"{param}: {problem} in {where} (accepted {counts}; "
        f"{len(rejected)} file(s) rejected: {reasons}; e.g. {', '.join(shown[:examples])}); {fix}"
    )
