"""Stratified, seeded train/val/test split of the image manifest."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)

SPLITS: tuple[str, str, str] = ("train", "val", "test")
_REQUIRED = ("path", "label", "sha256")


def split_images(image_manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Split the manifest into train, val and test, stratified by label.

    First ``test_size`` of the images go to test (8:2 by default), then ``val_size`` of the rest
    to val (9:1). Rows are sorted by content hash before splitting, so the same manifest and seed
    give the same split whatever the order of the files. Rows sharing a content hash (ingestion
    collapses them, but a hand-made manifest may not) always land in the same split.

    Args:
        image_manifest: one row per image; needs ``path``, ``label`` (0 real / 1 fake) and
            ``sha256``; other columns are kept.
        params: ``split`` parameters: ``test_size``, ``val_size`` (fractions in (0, 1)), ``seed``.

    Returns:
        The manifest with a ``split`` column (train | val | test), ordered by split then path.

    Raises:
        ValueError: naming the column or parameter at fault: missing columns, no images,
            labels other than 0 and 1, empty hashes, one content hash under two labels, or a
            class too small for the requested fractions (or absent).
    """
    test_size = _fraction(params, "test_size")
    val_size = _fraction(params, "val_size")
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"split.seed must be an integer, got {seed!r}")
    manifest = _checked(image_manifest)

    # One row per content hash: the unit that is assigned to a split.
    groups = manifest.drop_duplicates("sha256").sort_values("sha256", kind="stable")
    if len(groups) < len(manifest):
        logger.warning(
            "%d manifest rows repeat the content of another; each copy goes to its original's split",
            len(manifest) - len(groups),
        )
    hashes = groups["sha256"].to_numpy()
    labels = groups["label"].to_numpy()
    counts = _class_counts(labels)
    if len(counts) < 2:
        raise ValueError(
            f"image_manifest has images of one class only {counts}: a real/fake classifier needs "
            "both labels 0 (real) and 1 (fake)"
        )
    every = np.arange(len(groups))
    trainval, test = _stratified(every, labels, test_size, seed, "split.test_size", counts)
    train, val = _stratified(trainval, labels, val_size, seed, "split.val_size", counts)

    assignment = {
        hashes[i]: name for name, part in zip(SPLITS, (train, val, test), strict=True) for i in part
    }
    out = manifest.assign(split=manifest["sha256"].map(assignment))
    out["split"] = pd.Categorical(out["split"], categories=list(SPLITS), ordered=True)
    out = out.sort_values(["split", "path"], kind="stable").reset_index(drop=True)
    out["split"] = out["split"].astype(str)
    leaked = out.groupby("sha256")["split"].nunique()
    if (leaked > 1).any():  # cannot happen by construction; a guard against future edits
        raise ValueError(f"content hashes in two splits: {list(leaked[leaked > 1].index[:5])}")

    table = pd.crosstab(out["split"], out["label"]).reindex(list(SPLITS))
    logger.info(
        "Split %d images (test_size=%s, val_size=%s, seed=%s), images per split and label:\n%s",
        len(out),
        test_size,
        val_size,
        seed,
        table.to_string(),
    )
    columns = ["path", "label", "split", "sha256"]
    return out[columns + [c for c in out.columns if c not in columns]]


def _fraction(params: dict[str, Any], key: str) -> float:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"split.{key} must be a fraction strictly between 0 and 1, got {value!r}")
    return float(value)


def _checked(manifest: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _REQUIRED if c not in manifest.columns]
    if missing:
        raise ValueError(
            f"image_manifest lacks column(s) {missing}; it has {list(manifest.columns)}"
        )
    if manifest.empty:
        raise ValueError("image_manifest has no images to split")
    if manifest["path"].duplicated().any():
        dup = manifest.loc[manifest["path"].duplicated(), "path"].iloc[0]
        raise ValueError(f"image_manifest lists {dup} more than once")
    labels = pd.to_numeric(manifest["label"], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        raise ValueError(
            f"image_manifest.label must be 0 (real) or 1 (fake), got "
            f"{manifest.loc[bad, 'label'].iloc[0]!r} for {manifest.loc[bad, 'path'].iloc[0]}"
        )
    hashes = manifest["sha256"]
    if hashes.isna().any() or (hashes.astype(str).str.len() == 0).any():
        missing = manifest.loc[hashes.isna() | (hashes.astype(str).str.len() == 0), "path"]
        raise ValueError(f"image_manifest.sha256 is empty for {missing.iloc[0]}; re-run ingestion")
    manifest = manifest.assign(label=labels.astype(np.int64), sha256=hashes.astype(str))
    conflicts = manifest.groupby("sha256")["label"].nunique()
    if (conflicts > 1).any():
        sha = conflicts[conflicts > 1].index[0]
        paths = manifest.loc[manifest["sha256"] == sha, "path"].tolist()
        raise ValueError(
            f"image_manifest has the same content under two labels: {paths}; "
            "ingestion rejects such files, re-run it"
        )
    return manifest


def _class_counts(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def _stratified(
    positions: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    seed: int,
    param: str,
    counts: dict[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``positions`` (indices into ``labels``) with a message naming the parameter.

    Returns:
        The kept and the held-out positions, each sorted.
    """
    try:
        keep, held = train_test_split(
            positions, test_size=fraction, stratify=labels[positions], random_state=seed
        )
    except ValueError as err:
        raise ValueError(
            f"{param}={fraction} cannot be stratified with images per class {counts}: {err}. "
            "Add images of the small class or change the fraction."
        ) from err
    # sklearn can succeed and still leave a class out of a small part; every split needs both.
    for part in (keep, held):
        absent = sorted(set(counts) - set(labels[part].tolist()))
        if absent:
            raise ValueError(
                f"{param}={fraction} leaves no image of class {absent} in one split "
                f"(images per class {counts}); add images of the small class or change the fraction"
            )
    return np.sort(keep), np.sort(held)
