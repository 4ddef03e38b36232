"""The ingestion pipeline through Kedro's runner: every bad input rejected with its reason, every good
one accepted as RGB, duplicates handled, user files untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facescan.data.validate import MANIFEST_COLUMNS
from tests.conftest import run_kedro as _run_kedro

pytestmark = pytest.mark.slow


def run_kedro(project: Path, pipelines: list[str], params: dict[str, str] | None = None) -> None:
    """conftest's run_kedro with ``a.b.c`` keys nested, as ``kedro run --params a.b.c=v`` does."""
    nested: dict = {}
    for key, value in (params or {}).items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    _run_kedro(project, pipelines, params=nested)


def _noise(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """An image whose content is unique to ``seed`` (so nothing is a duplicate by accident)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _hashes(root: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(root).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_outputs(project: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifest = pd.read_parquet(project / "data" / "02_intermediate" / "image_manifest.parquet")
    rejected = pd.read_csv(project / "data" / "02_intermediate" / "rejected_images.csv")
    return manifest, rejected


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A class-per-folder tree with one file per good and bad case of the issue."""
    root = tmp_path / "images"
    real, fake = root / "real", root / "fake"
    _save(_noise(1), real / "rgb.jpg", quality=95)
    _save(_noise(2).convert("L"), real / "gray.png")
    _save(_noise(3).convert("P"), real / "palette.png")
    rgba = _noise(4).convert("RGBA")
    rgba.putalpha(128)
    _save(rgba, real / "rgba.png")
    _save(_noise(5).convert("CMYK"), real / "cmyk.jpg")
    wide = np.random.default_rng(6).integers(0, 65535, (48, 48), dtype=np.uint16)
    _save(Image.fromarray(wide), real / "wide16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    _save(_noise(7, (80, 48)), real / "rotated.jpg", exif=exif)
    _save(_noise(8), real / "UPPER.JPEG", format="JPEG")
    _save(_noise(9), real / "nested" / "deeper" / "inner.webp")
    dup = _save(_noise(10), real / "dup_a.png")
    (real / "dup_b.png").write_bytes(dup.read_bytes())  # same class: collapses to one row

    (real / "not_image.jpg").write_text("hello, I am text")
    (real / "zero.jpg").write_bytes(b"")
    whole = _save(_noise(11), real / "whole.jpg").read_bytes()
    (real / "whole.jpg").unlink()
    (real / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    _save(_noise(12, (200, 200)), real / "bomb.png")  # a bomb once MAX_IMAGE_PIXELS is lowered
    _save(_noise(13, (20, 40)), real / "tiny.png")  # below data.min_side = 32
    (real / "._rgb.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    _save(_noise(14), root / "unknown" / "u.jpg")
    shared = _save(_noise(15), real / "shared.png")
    (fake / "shared_copy.png").parent.mkdir(parents=True, exist_ok=True)
    (fake / "shared_copy.png").write_bytes(shared.read_bytes())  # two labels: both rejected

    _save(_noise(16), fake / "f1.png")
    _save(_noise(17), fake / "f2.jpg")
    return root


def test_folder_source_through_kedro(
    kedro_project: Path, image_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keeps the bomb tiny: 200x200 is more than twice the limit.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    before = _hashes(image_tree)
    run_kedro(
        kedro_project,
        ["ingestion"],
        params={"data.source.type": "folder", "data.source.path": str(image_tree)},
    )
    manifest, rejected = _read_outputs(kedro_project)
    assert _hashes(image_tree) == before  # user files unchanged (content and mtime)

    rel = lambda p: Path(p).relative_to(image_tree).as_posix()  # noqa: E731
    assert dict(zip(rejected["path"].map(rel), rejected["reason"], strict=True)) == {
        "real/not_image.jpg": "not an image",
        "real/zero.jpg": "zero bytes",
        "real/truncated.jpg": "truncated file",
        "real/bomb.png": "decompression bomb",
        "real/tiny.png": "too small",
        "real/._rgb.jpg": "macOS metadata file",
        "unknown/u.jpg": "unknown label",
        "real/shared.png": "same content under two labels",
        "fake/shared_copy.png": "same content under two labels",
        "real/dup_b.png": "duplicate",
    }

    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert manifest["path"].tolist() == sorted(manifest["path"])
    rows = manifest.assign(rel=manifest["path"].map(rel)).set_index("rel")
    assert sorted(rows.index) == sorted(
        [
            "real/rgb.jpg",
            "real/gray.png",
            "real/palette.png",
            "real/rgba.png",
            "real/cmyk.jpg",
            "real/wide16.png",
            "real/rotated.jpg",
            "real/UPPER.JPEG",
            "real/nested/deeper/inner.webp",
            "real/dup_a.png",
            "fake/f1.png",
            "fake/f2.jpg",
        ]
    )
    assert all(Path(p).is_absolute() for p in manifest["path"])
    assert rows.loc["real/rotated.jpg", ["width", "height"]].tolist() == [48, 80]  # EXIF applied
    assert rows.loc["real/rgb.jpg", ["width", "height"]].tolist() == [64, 64]
    assert rows.loc["real/cmyk.jpg", "mode"] == "CMYK"
    assert rows.loc["real/wide16.png", "mode"].startswith("I")
    assert rows.loc["real/palette.png", ["format", "mode"]].tolist() == ["PNG", "P"]
    assert rows.loc["real/UPPER.JPEG", "format"] == "JPEG"
    assert rows.loc["real/nested/deeper/inner.webp", "format"] == "WEBP"
    assert set(manifest["source_type"]) == {"folder"}
    assert manifest.groupby("label").size().to_dict() == {0: 10, 1: 2}
    assert manifest["sha256"].is_unique
    f1 = image_tree / "fake" / "f1.png"
    assert rows.loc["fake/f1.png", "sha256"] == hashlib.sha256(f1.read_bytes()).hexdigest()
    assert rows.loc["fake/f1.png", "bytes"] == f1.stat().st_size


def test_csv_source_through_kedro(kedro_project: Path, tmp_path: Path) -> None:
    images = tmp_path / "flat"
    for i in range(3):
        _save(_noise(20 + i), images / f"img{i}.jpg")
    _save(_noise(30), images / "IMG3.PNG")
    labels = tmp_path / "labels.csv"
    labels.write_text("ImageName,Label\nimg0,0\nimg1.jpg,1\nimg2,0\nimg3,1\nmissing,1\n")
    before = _hashes(images)
    run_kedro(
        kedro_project,
        ["ingestion"],
        params={
            "data.source.type": "csv",
            "data.source.path": str(images),
            "data.source.labels_csv": str(labels),
        },
    )
    manifest, rejected = _read_outputs(kedro_project)
    assert _hashes(images) == before
    assert [Path(p).name for p in manifest["path"]] == [
        "IMG3.PNG",
        "img0.jpg",
        "img1.jpg",
        "img2.jpg",
    ]
    assert manifest["label"].tolist() == [1, 0, 1, 0]
    assert set(manifest["source_type"]) == {"csv"}
    assert rejected.to_dict("records") == [
        {"path": str(images / "missing"), "reason": "missing file"}
    ]


def test_nothing_usable_stops_with_one_clear_message(kedro_project: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.jpg").write_bytes(b"")
    (root / "real" / "b.jpg").write_text("text")
    _save(_noise(1), root / "fake" / "c.png")
    with pytest.raises(ValueError) as err:
        run_kedro(
            kedro_project,
            ["ingestion"],
            params={"data.source.type": "folder", "data.source.path": str(root)},
        )
    message = str(err.value)
    assert message.startswith(
        f"data.source.path: class real (0) has no usable image in folder {root} "
    )
    assert "\n" not in message  # one sentence: the last line Kedro prints is all of it
    assert "real (0): 0, fake (1): 1" in message
    assert "zero bytes: 1" in message and "not an image: 1" in message


def test_bad_source_parameters_are_named(kedro_project: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.source.type"):
        run_kedro(kedro_project, ["ingestion"], params={"data.source.type": "s3"})
    with pytest.raises(ValueError, match="data.source.path must be set"):
        run_kedro(kedro_project, ["ingestion"], params={"data.source.type": "folder"})
    with pytest.raises(ValueError, match="preprocess.threads"):
        run_kedro(kedro_project, ["ingestion"], params={"preprocess.threads": 0})
    with pytest.raises(FileNotFoundError, match="data.source.path"):
        run_kedro(
            kedro_project,
            ["ingestion"],
            params={"data.source.type": "folder", "data.source.path": str(tmp_path / "nope")},
        )


def test_synthetic_source_through_kedro(kedro_project: Path) -> None:
    run_kedro(kedro_project, ["ingestion"])  # the test environment: 80 images at 40 px
    manifest, rejected = _read_outputs(kedro_project)
    assert rejected.empty and list(rejected.columns) == ["path", "reason"]
    assert manifest.groupby("label").size().to_dict() == {0: 40, 1: 40}
    assert set(manifest["source_type"]) == {"synthetic"}
    assert set(zip(manifest["width"], manifest["height"], strict=True)) == {(40, 40)}
    root = kedro_project / "data" / "01_raw" / "synthetic"
    assert all(Path(p).is_relative_to(root) for p in manifest["path"])


@pytest.mark.faces_a
def test_faces_a(kedro_project: Path, faces_a: Path) -> None:
    run_kedro(
        kedro_project,
        ["ingestion"],
        params={"data.source.type": "folder", "data.source.path": str(faces_a)},
    )
    manifest, rejected = _read_outputs(kedro_project)
    assert len(manifest) == 800 and rejected.empty
    assert manifest.groupby("label").size().to_dict() == {0: 600, 1: 200}
    assert set(manifest["format"]) == {"JPEG"}
