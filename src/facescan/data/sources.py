"""Finding labelled image files: a class-per-folder tree or a label CSV.

A source lists :class:`Candidate` files, each with a label or the reason it cannot have one; nothing is
decoded here (see :mod:`facescan.data.validate`). Files are only listed and read, never changed.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from facescan.data.imaging import SUPPORTED_EXTENSIONS

__all__ = [
    "Candidate",
    "Reason",
    "check_csv_layout",
    "check_folder_layout",
    "list_csv",
    "list_folder",
    "normalise_classes",
]

logger = logging.getLogger(__name__)

#: The image extensions, for messages.
_EXTENSIONS = ", ".join(sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS))


class Reason:
    """The rejection reasons written to ``rejected_images`` (one short, stable text each).

    ``too large`` is written with the file's size and the cap in parentheses, e.g.
    ``too large (61000000 bytes > data.max_file_bytes = 50000000)``; counts per reason group on the
    text before the parentheses.
    """

    NOT_AN_IMAGE = "not an image"
    ZERO_BYTES = "zero bytes"
    TRUNCATED = "truncated file"
    CORRUPT = "corrupt file"
    BOMB = "decompression bomb"
    UNSUPPORTED_MODE = "unsupported mode"
    UNSUPPORTED_FORMAT = "unsupported format"
    EXTREME_ASPECT_RATIO = "extreme aspect ratio"
    TOO_LARGE = "too large"
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
        source: where the image comes from within its class (a camera, a generator): the
            sub-folder under the class folder, or a CSV's third column; None: the class itself.
    """

    path: Path
    label: int | None
    reason: str | None = None
    source: str | None = None


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


def _relative_note(given: str | Path) -> str:
    """`` (relative paths are read from <cwd>)`` for a relative path, else ``""``."""
    if Path(given).is_absolute():
        return ""
    return f" (a relative path is read from the folder kedro runs in, {Path.cwd()})"


def _existing_folder(given: str | Path, param: str, holds: str) -> Path:
    """``given`` as an absolute folder path, or a one-sentence error naming ``param``.

    Raises:
        FileNotFoundError: ``given`` does not exist or is a file.
    """
    folder = Path(os.path.abspath(given))
    if folder.is_dir():
        return folder
    what = "is a file, not a folder" if folder.exists() else "does not exist"
    raise FileNotFoundError(
        f"{param}: {folder} {what}{_relative_note(given)}; set {param} to the folder that holds "
        f"{holds}, e.g. --params {param}=/data/faces"
    )


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
        FileNotFoundError: ``root`` is not a folder (naming ``data.source.path``).
    """
    root = _existing_folder(root, "data.source.path", "one sub-folder per class")
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
                parts = path.relative_to(entry).parts
                source = parts[0] if len(parts) > 1 else None
                out.append(Candidate(path, None if reason else label, reason, source))
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
            f"data.source.labels_csv: {labels_csv} has {table.shape[1]} column but needs two "
            "columns (image name, label); write one row per image, e.g. img001.jpg,1"
        )
    if table.shape[1] >= 3:  # an optional third column: the image's source (camera, generator)
        table = table.iloc[:, :3]
        table.columns = ["name", "label", "source"]
        return table
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


def _lookup(index: dict[str, list[Path]]) -> Callable[[str], list[Path]]:
    """A CSV name -> the image files it may mean (see :func:`_index_images`)."""

    def lookup(name: str) -> list[Path]:
        key = name.strip().replace("\\", "/").lstrip("/").lower()
        return index.get(key, [])

    return lookup


def _data_rows(
    table: pd.DataFrame, classes: Mapping[str, int], lookup: Callable[[str], list[Path]]
) -> list[Any]:
    """The rows of a label table, without a header row such as ``ImageName,Label``."""
    rows = list(table.itertuples(index=False))
    if rows:
        first = rows[0]
        if _label_text(first.label).lower() not in classes and not lookup(first.name):
            rows = rows[1:]
    return rows


def list_csv(
    images_dir: str | Path, labels_csv: str | Path, classes: Mapping[str, int]
) -> list[Candidate]:
    """List the files named by a label CSV (the competition's ``ImageName,Label`` format).

    The first two columns are read by position, a third one, when present, is each image's source
    (a camera, a generator: per-source results in the report); the first row is a
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
    images_dir = _existing_folder(images_dir, "data.source.path", "the images the CSV names")
    given = labels_csv
    labels_csv = Path(os.path.abspath(labels_csv))
    if not labels_csv.is_file():
        what = "is a folder, not a file" if labels_csv.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"data.source.labels_csv: {labels_csv} {what}{_relative_note(given)}; set "
            "data.source.labels_csv to your label file (ImageName,Label rows), e.g. "
            "--params data.source.labels_csv=/data/train.csv"
        )
    lookup = _lookup(_index_images(images_dir))
    rows = _data_rows(_read_label_csv(labels_csv), classes, lookup)
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
            source = str(getattr(row, "source", "") or "").strip() or None
            cand = Candidate(matches[0], label, source=source)
        found.setdefault((str(cand.path), cand.label, cand.reason), cand)
    return sorted(
        found.values(), key=lambda c: (str(c.path), c.label if c.label is not None else -1)
    )


def _names_for(classes: Mapping[str, int], label: int) -> list[str]:
    return [name for name, value in classes.items() if value == label]


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _which(labels: list[int]) -> str:
    """``label 1 (fake)``, or ``either label`` for both."""
    return (
        "either label" if len(labels) == 2 else f"label {labels[0]} ({('real', 'fake')[labels[0]]})"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# Words that hint at a class in a folder name, to suggest a mapping (never applied silently).
_FAKE_HINTS = ("fake", "ai", "gen", "synth", "gan", "diffusion", "sd", "midjourney", "deepfake")
_REAL_HINTS = ("real", "human", "camera", "photo", "authentic", "genuine", "original", "true")


def _guess_label(name: str) -> int | None:
    words = set(re.split(r"[^a-z0-9]+", name.lower())) | {name.lower()}
    fake = any(w.startswith(h) for w in words for h in _FAKE_HINTS)
    real = any(w.startswith(h) for w in words for h in _REAL_HINTS)
    return 1 if fake and not real else 0 if real and not fake else None


def _suggest_mapping(found: Mapping[str, int | None], missing: list[int]) -> dict[str, int]:
    """A ``data.source.classes`` suggestion for the folders found: known ones keep their label;
    unknown ones get the missing labels (from words in their names, else in order)."""
    suggestion = {name: label for name, label in found.items() if label is not None}
    unknown = [name for name, label in found.items() if label is None]
    free = list(missing)
    for name in unknown:  # names that say what they are first
        guess = _guess_label(name)
        if guess in free:
            suggestion[name] = guess
            free.remove(guess)
    for name in unknown:
        if name not in suggestion and free:
            suggestion[name] = free.pop(0)
    return suggestion


def _yaml_map(mapping: Mapping[str, int]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"


def _params_hint(mapping: Mapping[str, int], classes: Mapping[str, int]) -> str:
    """``--params data.source.classes.<name>=<label>,...`` for the names not mapped yet."""
    new = {k: v for k, v in mapping.items() if classes.get(k.lower()) != v}
    if not new or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", k) for k in new):
        return ""
    pairs = ",".join(f"data.source.classes.{k}={v}" for k, v in new.items())
    return f"; or --params {pairs}"


def check_folder_layout(
    root: str | Path, classes: Mapping[str, int], candidates: list[Candidate]
) -> None:
    """Stop, before any image is decoded, when a class-per-folder tree cannot give both classes.

    Each case gets one sentence naming the parameter, what was found and the fix: the folder
    holds no image file at all; its images are not in class sub-folders; or no class folder is
    named for label 0 or 1 (the folders found, the names expected, and a ``data.source.classes``
    mapping to use them; names are never matched by guesswork). Class folders that map to no label
    while both labels have images are only logged (their images are rejected as ``unknown label``).

    Args:
        root: the folder (``data.source.path``).
        classes: a mapping from :func:`normalise_classes`.
        candidates: :func:`list_folder`'s result for ``root``.

    Raises:
        ValueError: naming ``data.source.path`` or ``data.source.classes``.
    """
    root = Path(os.path.abspath(root))
    images = [c for c in candidates if c.reason in (None, Reason.UNKNOWN_LABEL)]
    loose = [c for c in candidates if c.reason == Reason.NO_CLASS_FOLDER]
    folders: dict[str, list[Candidate]] = {}
    for cand in images:
        folders.setdefault(cand.path.relative_to(root).parts[0], []).append(cand)
    found = {name: classes.get(name.lower()) for name in sorted(folders, key=str.lower)}
    labelled = {label for label in found.values() if label is not None}
    unknown = [name for name, label in found.items() if label is None]
    if labelled == {0, 1}:
        if unknown:
            logger.warning(
                "data.source.classes maps no label to the folder(s) %s in %s: their %d images are "
                "skipped (add them to data.source.classes to use them)",
                ", ".join(f"{n}/" for n in unknown),
                root,
                sum(len(folders[n]) for n in unknown),
            )
        return
    expected = " and ".join(
        f"{_either(_names_for(classes, label))} for label {label}" for label in (0, 1)
    )
    if not images and not loose:
        others = [c for c in candidates if c.reason is not None]
        what = (
            "it holds no file at all"
            if not others and not any(root.iterdir())
            else f"found {_plural(len(others), 'other file')}, e.g. "
            f"{others[0].path.relative_to(root).as_posix()}"
            if others
            else "found only hidden files or empty folders"
        )
        raise ValueError(
            f"data.source.path: no image file ({_EXTENSIONS}) in {root} ({what}); point "
            f"data.source.path at the folder of your images, which needs one sub-folder per class "
            f"({expected})"
        )
    if not folders:
        raise ValueError(
            f"data.source.path: the {_plural(len(loose), 'image')} in {root} are not in class "
            f"sub-folders; move them into one sub-folder per class ({expected}, e.g. "
            f"{root / _names_for(classes, 0)[0]}/ and {root / _names_for(classes, 1)[0]}/), or "
            "list their labels in a CSV (data.source.type=csv with data.source.labels_csv)"
        )
    missing = [label for label in (0, 1) if label not in labelled]
    described = ", ".join(
        f"{name}/ ({_plural(len(folders[name]), 'image')}, "
        + ("no label" if found[name] is None else f"label {found[name]}")
        + ")"
        for name in found
    )
    suggestion = _suggest_mapping(found, missing)
    if set(suggestion.values()) == {0, 1}:
        suggestion = dict(sorted(suggestion.items(), key=lambda item: item[1]))
        fix = (
            f"rename the folders, or map them with data.source.classes = "
            f"{_yaml_map(suggestion)} (nested YAML in conf/local/parameters.yml"
            f"{_params_hint(suggestion, classes)})"
        )
    else:
        fix = (
            f"add a folder of images for {_which(missing)}, or map a folder to it in "
            "data.source.classes (conf/local/parameters.yml)"
        )
    which = _which(missing)
    raise ValueError(
        f"data.source.classes: no class folder in {root} is named for {which}: found "
        f"{described}, expected {expected}{' (names are not case-sensitive)' if unknown else ''}; "
        f"{fix}"
    )


def check_csv_layout(
    images_dir: str | Path,
    labels_csv: str | Path,
    classes: Mapping[str, int],
    candidates: list[Candidate],
) -> None:
    """Stop, before any image is decoded, when a label CSV cannot give both classes.

    One sentence names the parameter, what was found and the fix: the CSV lists no row; none of
    its files is in the images folder; or no row has a label that ``data.source.classes`` maps to
    label 0 or 1 (the label values found are named).

    Args:
        images_dir: the images folder (``data.source.path``).
        labels_csv: the label file (``data.source.labels_csv``).
        classes: a mapping from :func:`normalise_classes`.
        candidates: :func:`list_csv`'s result.

    Raises:
        ValueError: naming ``data.source.labels_csv``, ``data.source.path`` or
            ``data.source.classes``.
    """
    images_dir = Path(os.path.abspath(images_dir))
    labels_csv = Path(os.path.abspath(labels_csv))
    labelled = {c.label for c in candidates if c.reason is None}
    if labelled == {0, 1}:
        return
    if not candidates:
        raise ValueError(
            f"data.source.labels_csv: {labels_csv} lists no image; it needs one row per image "
            "(ImageName,Label, header optional)"
        )
    missing_files = [c for c in candidates if c.reason == Reason.MISSING_FILE]
    if len(missing_files) == len(candidates):
        examples = ", ".join(c.path.relative_to(images_dir).as_posix() for c in missing_files[:2])
        has_images = any(_screen(p) is None for p in _walk_files(images_dir))
        note = "" if has_images else f", and {images_dir} holds no image file at all"
        raise ValueError(
            f"data.source.path: none of the {_plural(len(candidates), 'file')} listed in "
            f"{labels_csv} is in {images_dir} (e.g. {examples}){note}; set "
            "data.source.path to the folder that holds these images"
        )
    rows = _data_rows(_read_label_csv(labels_csv), classes, _lookup(_index_images(images_dir)))
    values = sorted(
        {_label_text(r.label) for r in rows if _label_text(r.label).lower() not in classes}
    )
    missing = [label for label in (0, 1) if label not in labelled]
    which = _which(missing)
    expected = " and ".join(
        f"{_either(_names_for(classes, label))} for label {label}" for label in (0, 1)
    )
    if values:
        shown = ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise ValueError(
            f"data.source.classes: no usable row of {labels_csv} has a label for {which}: its "
            f"label values {shown} are not in data.source.classes (expected {expected}); map "
            "them in data.source.classes (conf/local/parameters.yml), e.g. "
            f"{{{values[0]}: {missing[0]}}}, or fix the CSV's second column"
        )
    reasons = Counter(c.reason for c in candidates if c.reason is not None)
    shown = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())
    raise ValueError(
        f"data.source.labels_csv: no usable row of {labels_csv} for {which} ({shown}); check the "
        f"file names against {images_dir} and the labels against data.source.classes ({expected})"
    )
