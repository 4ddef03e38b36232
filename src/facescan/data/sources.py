"""Finding labelled image files: a class-per-folder tree or a label CSV.

A source lists :class:`Candidate` files, each with a label or the reason it cannot have one; nothing is
decoded here (see :mod:`facescan.data.validate`). Files are only listed and read, never changed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from facescan.data.imaging import SUPPORTED_EXTENSIONS

__all__ = [
    "Candidate",
    "Reason",
    "list_csv",
    "list_folder",
    "normalise_classes",
]


class Reason:
    """The rejection reasons written to ``rejected_images`` (one short, stable text each)."""

    NOT_AN_IMAGE = "not an image"
    ZERO_BYTES = "zero bytes"
    TRUNCATED = "truncated file"
    CORRUPT = "corrupt file"
    BOMB = "decompression bomb"
    UNSUPPORTED_MODE = "unsupported mode"
    UNREADABLE = "unreadable file"
    TOO_SMALL = "too small"
    MACOS_METADATA = "macOS metadata file"
    UNSUPPORTED_EXTENSION = "unsupported extension"
    UNKNOWN_LABEL = "unknown label"
    NO_CLASS_FOLDER = "not in a class folder"
    MISSING_FILE = "missing file"
    AMBIGUOUS_NAME = "ambiguous name"
    CONFLICTING_LABELS = "same content under two labels"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Candidate:
    """A file a source found.

    Attributes:
        path: absolute path (for a CSV row naming a missing file: where it was looked for).
        label: 0 real / 1 fake, or None when rejected.
        reason: None, or why the file is rejected before decoding (a :class:`Reason`).
    """

    path: Path
    label: int | None
    reason: str | None = None


def normalise_classes(
    classes: Mapping[Any, Any] | None, name: str = "data.source.classes"
) -> dict[str, int]:
    """Validate a class mapping (folder name or CSV label value -> 0 real / 1 fake).

    Keys are compared case-insensitively, as text (YAML may give ``0: 0`` as an integer key).

    Args:
        classes: the mapping.
        name: the parameter name used in error messages.

    Returns:
        The mapping with lower-cased string keys.

    Raises:
        ValueError: naming ``name`` when the mapping is empty, a value is not 0 or 1, two keys differ
            only by case but map to different labels, or one of the two labels has no key.
    """
    if not isinstance(classes, Mapping) or not classes:
        raise ValueError(
            f"{name} must map class names to 0 (real) or 1 (fake), e.g. {{real: 0, fake: 1}}; "
            f"got {classes!r}"
        )
    out: dict[str, int] = {}
    for key, value in classes.items():
        if isinstance(value, bool) or value not in (0, 1):
            raise ValueError(
                f"{name}: {key!r} maps to {value!r}; labels must be 0 (real) or 1 (fake)"
            )
        k = _label_text(key).lower()
        if out.get(k, value) != value:
            raise ValueError(
                f"{name}: {key!r} is given two different labels (names are case-insensitive)"
            )
        out[k] = int(value)
    missing = {0, 1} - set(out.values())
    if missing:
        raise ValueError(
            f"{name} gives no name for label {missing.pop()}; both 0 (real) and 1 (fake) are needed"
        )
    return out


def _label_text(value: Any) -> str:
    """A label or class name as text: strip spaces, and write 1.0 as 1 (spreadsheets do that)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return (
        str(int(number)) if math.isfinite(number) and number.is_integer() and "." in text else text
    )


def _walk_files(top: Path) -> Iterator[Path]:
    """Every file under ``top`` (symlinked folders followed once; hidden folders skipped)."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or the same folder linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            yield Path(dirpath) / f


def _screen(path: Path) -> str | None:
    """Why a file is not even a candidate image, from its name alone ("" = silently ignored)."""
    name = path.name
    if name.startswith("._"):  # AppleDouble metadata that macOS writes next to copied files
        return Reason.MACOS_METADATA
    if name.startswith("."):  # .DS_Store, .gitkeep, ...
        return ""
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        return Reason.UNSUPPORTED_EXTENSION
    return None


def list_folder(root: str | Path, classes: Mapping[str, int]) -> list[Candidate]:
    """List ``root/<class>/**/*``: one class folder per label name.

    Class folder names are matched to ``classes`` case-insensitively. Image files (by extension, any
    case) in an unknown class folder are rejected as ``unknown label``, images directly in ``root``
    as ``not in a class folder``; macOS ``._*`` files and files with other extensions inside class
    folders are rejected too. Hidden files and folders and non-image files directly in ``root``
    (a README, a manifest) are ignored.

    Args:
        root: the folder (``data.source.path``).
        classes: a mapping from :func:`normalise_classes`.

    Returns:
        The candidates, sorted by path.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"data.source.path: folder not found: {root}")
    out: list[Candidate] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") and not entry.name.startswith("._"):
            continue
        if entry.is_dir():
            label = classes.get(entry.name.lower())
            for path in _walk_files(entry):
                reason = _screen(path)
                if reason == "":
                    continue
                if reason is None and label is None:
                    reason = Reason.UNKNOWN_LABEL
                out.append(Candidate(path, None if reason else label, reason))
        elif entry.is_file():
            reason = _screen(entry)
            if reason is None:
                out.append(Candidate(entry, None, Reason.NO_CLASS_FOLDER))
            elif reason == Reason.MACOS_METADATA:
                out.append(Candidate(entry, None, reason))
    return sorted(out, key=lambda c: str(c.path))


def _read_label_csv(labels_csv: Path) -> pd.DataFrame:
    """Read the two first columns of a label file as text, header or not."""
    try:
        table = pd.read_csv(
            labels_csv,
            header=None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=True,
            sep=",",
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame({"name": [], "label": []}, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"data.source.labels_csv: cannot parse {labels_csv}: {err}") from err
    if table.shape[1] < 2:
        raise ValueError(
            f"data.source.labels_csv: {labels_csv} needs two columns (image name, label), "
            f"found {table.shape[1]}"
        )
    table = table.iloc[:, :2]
    table.columns = ["name", "label"]
    return table


def _index_images(images_dir: Path) -> dict[str, list[Path]]:
    """Map lower-cased relative names, with and without extension, to the image files."""
    index: dict[str, list[Path]] = {}
    for path in _walk_files(images_dir):
        if _screen(path) is not None:
            continue
        rel = path.relative_to(images_dir).as_posix().lower()
        index.setdefault(rel, []).append(path)
        index.setdefault(rel[: -len(path.suffix)], []).append(path)
    return index


def list_csv(
    images_dir: str | Path, labels_csv: str | Path, classes: Mapping[str, int]
) -> list[Candidate]:
    """List the files named by a label CSV (the competition's ``ImageName,Label`` format).

    The first two columns are read by position (further columns are ignored); the first row is a
    header when its label is not a class name and its name is not an image. A name may omit the
    extension and may include sub-folders; it is matched case-insensitively against every supported
    extension in ``images_dir``. A row whose file does not exist is rejected as ``missing file``,
    one whose name matches several files as ``ambiguous name``, one whose label is not in
    ``classes`` as ``unknown label``. Images in the folder that the CSV does not name are ignored.

    Args:
        images_dir: the images folder (``data.source.path``).
        labels_csv: the label file (``data.source.labels_csv``).
        classes: a mapping from :func:`normalise_classes`.

    Returns:
        The candidates (one per distinct file and label), sorted by path.

    Raises:
        FileNotFoundError: the folder or the CSV does not exist.
        ValueError: the CSV cannot be parsed or has fewer than two columns.
    """
    images_dir = Path(os.path.abspath(images_dir))
    labels_csv = Path(os.path.abspath(labels_csv))
    if not images_dir.is_dir():
        raise FileNotFoundError(f"data.source.path: images folder not found: {images_dir}")
    if not labels_csv.is_file():
        raise FileNotFoundError(f"data.source.labels_csv: file not found: {labels_csv}")
    table = _read_label_csv(labels_csv)
    index = _index_images(images_dir)

    def lookup(name: str) -> list[Path]:
        key = name.strip().replace("\\", "/").lstrip("/").lower()
        return index.get(key, [])

    rows = list(table.itertuples(index=False))
    if rows:
        first = rows[0]
        if _label_text(first.label).lower() not in classes and not lookup(first.name):
            rows = rows[1:]  # a header row such as "ImageName,Label"

    found: dict[tuple[str, int | None, str | None], Candidate] = {}
    for row in rows:
        name = row.name.strip()
        if not name:
            continue
        matches = lookup(name)
        label = classes.get(_label_text(row.label).lower())
        if not matches:
            cand = Candidate(images_dir / name, None, Reason.MISSING_FILE)
        elif len(matches) > 1:
            cand = Candidate(images_dir / name, None, Reason.AMBIGUOUS_NAME)
        elif label is None:
            cand = Candidate(matches[0], None, Reason.UNKNOWN_LABEL)
        else:
            cand = Candidate(matches[0], label)
        found.setdefault((str(cand.path), cand.label, cand.reason), cand)
    return sorted(
        found.values(), key=lambda c: (str(c.path), c.label if c.label is not None else -1)
    )
