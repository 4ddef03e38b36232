"""Sources: class folders and label CSVs to labelled candidates, with reasons for what can't be used."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from facescan.data.sources import (
    Candidate,
    Reason,
    check_csv_layout,
    check_folder_layout,
    list_csv,
    list_folder,
    normalise_classes,
)
from facescan.data.validate import check_candidates, require_usable

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


# --- The errors a newcomer meets: one sentence naming the parameter, what was found and the fix.


def _layout_error(root: Path, classes: dict | None = None) -> str:
    mapping = normalise_classes(classes or CLASSES)
    with pytest.raises(ValueError) as err:
        check_folder_layout(root, mapping, list_folder(root, mapping))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_missing_or_wrong_path_names_the_parameter_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        list_folder(tmp_path / "nope", CLASSES)
    assert str(err.value) == (
        f"data.source.path: {tmp_path / 'nope'} does not exist; set data.source.path to the "
        "folder that holds one sub-folder per class, e.g. --params data.source.path=/data/faces"
    )
    with pytest.raises(FileNotFoundError, match=r"^data.source.path: .* is a file, not a folder;"):
        list_folder(_touch(tmp_path / "a.jpg"), CLASSES)
    with pytest.raises(FileNotFoundError, match=r"^data.source.labels_csv: .* does not exist;"):
        list_csv(tmp_path, tmp_path / "labels.csv", CLASSES)


def test_relative_paths_say_where_they_were_read_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="relative path is read from the folder kedro runs"):
        list_folder("data/01_raw/faces", CLASSES)


def test_a_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert _layout_error(tmp_path / "empty").startswith(
        f"data.source.path: no image file (bmp, jpeg, jpg, png, webp) in {tmp_path / 'empty'} "
        "(it holds no file at all); point data.source.path at the folder of your images"
    )
    _touch(tmp_path / "docs" / "real" / "notes.txt")
    assert "(found 1 other file, e.g. real/notes.txt)" in _layout_error(tmp_path / "docs")


def test_images_directly_under_the_path(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.png"):
        _touch(tmp_path / name)
    assert _layout_error(tmp_path) == (
        f"data.source.path: the 2 images in {tmp_path} are not in class sub-folders; move them "
        "into one sub-folder per class (real or 0 for label 0 and fake or 1 for label 1, e.g. "
        f"{tmp_path / 'real'}/ and {tmp_path / 'fake'}/), or list their labels in a CSV "
        "(data.source.type=csv with data.source.labels_csv)"
    )


def test_wrong_class_folder_names_suggest_a_mapping(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    _touch(root / "Real" / "a.jpg")  # matches `real`: names are not case-sensitive
    _touch(root / "AI" / "b.jpg")
    assert _layout_error(root) == (
        f"data.source.classes: no class folder in {root} is named for label 1 (fake): found "
        "AI/ (1 image, no label), Real/ (1 image, label 0), expected real or 0 for label 0 and "
        "fake or 1 for label 1 (names are not case-sensitive); rename the folders, or map them "
        "with data.source.classes = {Real: 0, AI: 1} (nested YAML in conf/local/parameters.yml; "
        "or --params data.source.classes.AI=1)"
    )
    other = tmp_path / "other"
    _touch(other / "real_images" / "a.jpg")
    _touch(other / "fake_images" / "b.jpg")
    message = _layout_error(other)
    assert message.startswith(f"data.source.classes: no class folder in {other} is named for ")
    assert "either label: found fake_images/ (1 image, no label), real_images/ (1 image" in message
    assert "{real_images: 0, fake_images: 1}" in message
    assert "--params data.source.classes.real_images=0,data.source.classes.fake_images=1" in message
    # The suggested mapping works.
    mapping = normalise_classes({**CLASSES, "real_images": 0, "fake_images": 1})
    check_folder_layout(other, mapping, list_folder(other, mapping))


def test_one_class_folder_only(tmp_path: Path) -> None:
    _touch(tmp_path / "real" / "a.jpg")
    message = _layout_error(tmp_path)
    assert message.startswith(f"data.source.classes: no class folder in {tmp_path} is named for ")
    assert message.endswith(
        "add a folder of images for label 1 (fake), or map a folder to it in data.source.classes "
        "(conf/local/parameters.yml)"
    )


def test_unknown_folders_next_to_both_classes_are_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("real/a.jpg", "fake/b.jpg", "extra/c.jpg"):
        _touch(tmp_path / name)
    mapping = normalise_classes(CLASSES)
    check_folder_layout(tmp_path, mapping, list_folder(tmp_path, mapping))
    assert "extra/" in caplog.text and "skipped" in caplog.text


def _csv_error(images: Path, csv: Path) -> str:
    mapping = normalise_classes(CLASSES)
    with pytest.raises(ValueError) as err:
        check_csv_layout(images, csv, mapping, list_csv(images, csv, mapping))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_csv_naming_no_existing_file(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _touch(images / "x.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("ImageName,Label\nnope1.jpg,0\nnope2.jpg,1\n")
    assert _csv_error(images, csv) == (
        f"data.source.path: none of the 2 files listed in {csv} is in {images} (e.g. nope1.jpg, "
        "nope2.jpg); set data.source.path to the folder that holds these images"
    )
    (images / "x.jpg").unlink()
    assert f", and {images} holds no image file at all;" in _csv_error(images, csv)
    csv.write_text("")
    assert _csv_error(images, csv).startswith(f"data.source.labels_csv: {csv} lists no image;")


def test_csv_with_unmapped_label_values(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _touch(images / "a.jpg")
    _touch(images / "b.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("ImageName,Label\na.jpg,human\nb.jpg,ai\n")
    message = _csv_error(images, csv)
    assert message.startswith(
        f"data.source.classes: no usable row of {csv} has a label for either label: its label "
        "values 'ai', 'human' are not in data.source.classes"
    )
    assert "Label" not in message  # the header row is not a value


def test_nothing_usable_after_decoding_is_one_sentence(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    _touch(root / "real" / "a.jpg", b"")
    _touch(root / "real" / "b.jpg", b"not a jpeg")
    Image.new("RGB", (8, 8)).save(_touch(root / "fake" / "c.png"))
    mapping = normalise_classes(CLASSES)
    manifest, rejected = check_candidates(list_folder(root, mapping), "folder", min_side=32)
    with pytest.raises(ValueError) as err:
        require_usable(manifest, rejected, f"folder {root}", min_side=32)
    message = str(err.value)
    assert message.startswith(
        f"data.source.path: no usable image in folder {root} (accepted real (0): 0, fake (1): 0; "
        "3 file(s) rejected: "
    )
    assert "zero bytes: 1" in message and "too small: 1" in message
    assert message.endswith(
        "replace or remove the rejected files, or add usable images of that class "
        "(data.min_side = 32 sets the smallest accepted side)"
    )
    assert "\n" not in message
