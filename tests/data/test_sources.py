"""Sources: class folders and label CSVs to labelled candidates, with reasons for what can't be used."""

from __future__ import annotations

from pathlib import Path

import pytest

from facescan.data.sources import Candidate, Reason, list_csv, list_folder, normalise_classes

CLASSES = {"real": 0, "fake": 1, "0": 0, "1": 1}


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _by_name(cands: list[Candidate]) -> dict[str, tuple[int | None, str | None]]:
    return {c.path.name: (c.label, c.reason) for c in cands}


def test_normalise_classes() -> None:
    assert normalise_classes({"Real": 0, "FAKE": 1, 0: 0}) == {"real": 0, "fake": 1, "0": 0}
    with pytest.raises(ValueError, match="data.source.classes"):
        normalise_classes({})
    with pytest.raises(ValueError, match="labels must be 0"):
        normalise_classes({"real": 0, "fake": 2})
    with pytest.raises(ValueError, match="two different labels"):
        normalise_classes({"real": 0, "REAL": 1})
    with pytest.raises(ValueError, match="no name for label 1"):
        normalise_classes({"real": 0})


def test_folder_lists_classes_case_insensitively_and_recursively(tmp_path: Path) -> None:
    _touch(tmp_path / "Real" / "a.JPG")
    _touch(tmp_path / "fake" / "deep" / "er" / "b.png")
    _touch(tmp_path / "fake" / "._b.png")
    _touch(tmp_path / "fake" / ".DS_Store")
    _touch(tmp_path / "fake" / "notes.txt")
    _touch(tmp_path / "other" / "c.webp")
    _touch(tmp_path / "stray.bmp")
    _touch(tmp_path / "README.md")
    _touch(tmp_path / ".hidden" / "d.jpg")
    got = list_folder(tmp_path, normalise_classes(CLASSES))
    assert _by_name(got) == {
        "a.JPG": (0, None),
        "b.png": (1, None),
        "._b.png": (None, Reason.MACOS_METADATA),
        "notes.txt": (None, Reason.UNSUPPORTED_EXTENSION),
        "c.webp": (None, Reason.UNKNOWN_LABEL),
        "stray.bmp": (None, Reason.NO_CLASS_FOLDER),
    }
    assert all(c.path.is_absolute() for c in got)
    assert [str(c.path) for c in got] == sorted(str(c.path) for c in got)


def test_folder_missing_names_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.source.path"):
        list_folder(tmp_path / "nope", CLASSES)


def test_csv_with_header_names_with_and_without_extension(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _touch(images / "a.jpg")
    _touch(images / "B.PNG")
    _touch(images / "sub" / "c.webp")
    _touch(images / "twin.jpg")
    _touch(images / "twin.png")
    _touch(images / "unlisted.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "ImageName,Label,Extra\n"
        "a,0,x\n"
        "b.png,1,x\n"
        "sub/c,1.0,x\n"
        "gone,0,x\n"
        "twin,1,x\n"
        "a.jpg,0,x\n"  # listed twice: one candidate
        "b,maybe,x\n"
    )
    got = list_csv(images, csv, normalise_classes(CLASSES))
    assert {(c.path.name, c.label, c.reason) for c in got} == set(
        [
            ("a.jpg", 0, None),
            ("B.PNG", 1, None),
            ("B.PNG", None, Reason.UNKNOWN_LABEL),
            ("c.webp", 1, None),
            ("gone", None, Reason.MISSING_FILE),
            ("twin", None, Reason.AMBIGUOUS_NAME),
        ]
    )


def test_csv_without_header_and_first_row_kept(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _touch(images / "x.jpg")
    _touch(images / "y.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("x.jpg,1\ny,real\n")
    assert _by_name(list_csv(images, csv, normalise_classes(CLASSES))) == {
        "x.jpg": (1, None),
        "y.jpg": (0, None),
    }


def test_csv_errors_name_the_parameter(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    one_col = tmp_path / "one.csv"
    one_col.write_text("a.jpg\nb.jpg\n")
    with pytest.raises(FileNotFoundError, match="data.source.labels_csv"):
        list_csv(tmp_path / "images", tmp_path / "none.csv", CLASSES)
    with pytest.raises(FileNotFoundError, match="data.source.path"):
        list_csv(tmp_path / "nope", one_col, CLASSES)
    with pytest.raises(ValueError, match="two columns"):
        list_csv(tmp_path / "images", one_col, CLASSES)
