"""Nodes of the ``ingestion`` pipeline: from a source of images to a checked manifest."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from facescan.data.imaging import DEFAULT_MAX_FILE_BYTES, check_background
from facescan.data.sources import (
    Candidate,
    check_csv_layout,
    check_folder_layout,
    list_csv,
    list_folder,
    normalise_classes,
)
from facescan.data.synthetic import CLASS_DIRS, SyntheticSpec, generate_synthetic
from facescan.data.validate import (
    check_candidates,
    check_max_file_bytes,
    require_usable,
    summarise,
)

logger = logging.getLogger(__name__)

SOURCE_TYPES = ("folder", "csv", "synthetic")


def _int_param(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _path_param(section: dict[str, Any], key: str, kind: str) -> str:
    value = section.get(key)
    if not value:
        raise ValueError(
            f"data.source.{key} must be set for data.source.type={kind}; set it in "
            f"conf/local/parameters.yml or with --params data.source.{key}=/path/to/..."
        )
    return str(value)


def _list_source(
    data: dict[str, Any], preprocess: dict[str, Any]
) -> tuple[str, list[Candidate], dict[int, str]]:
    """Candidates of the configured source, a description of it, and display names per label."""
    source = data.get("source") or {}
    kind = source.get("type")
    if kind not in SOURCE_TYPES:
        raise ValueError(f"data.source.type must be one of {', '.join(SOURCE_TYPES)}; got {kind!r}")
    if kind == "synthetic":
        synth = data.get("synthetic") or {}
        size = synth.get("size")
        if size is None:
            size = preprocess.get("cache_size")
            if size is None:
                raise ValueError("data.synthetic.size is null and preprocess.cache_size is not set")
        spec = SyntheticSpec(
            n_images=synth.get("n_images", 600),
            seed=synth.get("seed", 0),
            size=size,
            difficulty=synth.get("difficulty", 0.5),
        )
        output_dir = synth.get("output_dir") or "data/01_raw/synthetic"
        root = generate_synthetic(output_dir, spec)
        classes = {name: label for label, name in CLASS_DIRS.items()}
        return f"synthetic folder {root}", list_folder(root, classes), dict(CLASS_DIRS)

    classes = normalise_classes(source.get("classes"))
    names: dict[int, str] = {}
    for name, label in classes.items():
        names.setdefault(label, name)
    path = _path_param(source, "path", kind)
    if kind == "folder":
        candidates = list_folder(path, classes)
        check_folder_layout(path, classes, candidates)  # before decoding anything
        return f"folder {path}", candidates, names
    labels_csv = _path_param(source, "labels_csv", kind)
    candidates = list_csv(path, labels_csv, classes)
    check_csv_layout(path, labels_csv, classes, candidates)
    return f"{labels_csv} (images in {path})", candidates, names


def ingest_images(
    data: dict[str, Any], preprocess: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find, decode and check every image of the configured source.

    Args:
        data: the ``data`` parameters (``source``, ``synthetic``, ``min_side``, ``background``,
            ``max_file_bytes``).
        preprocess: the ``preprocess`` parameters (``cache_size`` is the synthetic default size,
            ``threads`` the number of decoding threads: ``auto`` = one per core, at most 8).

    Returns:
        ``image_manifest`` (one row per accepted file) and ``rejected_images`` (path, reason).

    Raises:
        ValueError: a parameter is invalid (named in the message), or no image / no image of one
            class is usable (the message gives the source, the counts and the rejection reasons).
        FileNotFoundError: ``data.source.path`` or ``data.source.labels_csv`` does not exist.
    """
    min_side = _int_param(data.get("min_side", 32), "data.min_side", 1)
    threads = preprocess.get("threads", "auto")
    workers = None if threads in (None, "auto") else _int_param(threads, "preprocess.threads", 1)
    background = check_background(data.get("background", (255, 255, 255)), "data.background")
    max_file_bytes = check_max_file_bytes(data.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES))
    where, candidates, names = _list_source(data, preprocess)
    kind = data["source"]["type"]
    logger.info("Checking %d files from %s", len(candidates), where)
    manifest, rejected = check_candidates(
        candidates, kind, min_side, background, workers, max_file_bytes=max_file_bytes
    )

    per_label, per_reason = summarise(manifest, rejected)
    logger.info(
        "Accepted %d images: %s",
        len(manifest),
        ", ".join(f"{names.get(k, k)} ({k}) {n}" for k, n in per_label.items()),
    )
    if per_reason:
        logger.warning(
            "Rejected %d files (see rejected_images): %s",
            len(rejected),
            ", ".join(f"{reason} {n}" for reason, n in per_reason.items()),
        )
    param = {"csv": "data.source.labels_csv", "synthetic": "data.synthetic"}.get(
        kind, "data.source.path"
    )
    require_usable(manifest, rejected, where, names, param=param, min_side=min_side)
    return manifest, rejected
