"""split -> preprocess through Kedro's runner, on files made here and on faces-a when present."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facescan.data.cache import ImageCache
from facescan.data.preprocess import load_for_cache
from facescan.pipelines.preprocess.nodes import cache_split
from tests.conftest import load_catalog, run_kedro

CACHE_SIZE = 40  # conf/test/parameters_preprocess.yml
SPLITS = ("train", "val", "test")


def _write_images(folder: Path, n_real: int, n_fake: int) -> list[tuple[Path, int]]:
    """Small files of the kinds ingestion accepts: JPEG, PNG, RGBA, grayscale, non-square."""
    rng = np.random.default_rng(0)
    files = []
    for label, n in ((0, n_real), (1, n_fake)):
        (folder / str(label)).mkdir(parents=True)
        for i in range(n):
            w, h = (64, 48) if i % 3 else (50, 90)
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            kind = i % 4
            if kind == 0:
                path, img = folder / str(label) / f"{i}.jpg", Image.fromarray(pixels)
            elif kind == 1:
                path, img = folder / str(label) / f"{i}.png", Image.fromarray(pixels)
            elif kind == 2:
                alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
                rgba = np.dstack([pixels, alpha])
                path, img = folder / str(label) / f"{i}.png", Image.fromarray(rgba, "RGBA")
            else:
                path, img = folder / str(label) / f"{i}.JPEG", Image.fromarray(pixels[..., 0], "L")
            img.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
            files.append((path, label))
    return files


def _manifest(files: list[tuple[Path, int]]) -> pd.DataFrame:
    rows = []
    for path, label in files:
        data = path.read_bytes()
        with Image.open(path) as img:
            rows.append(
                {
                    "path": path.resolve().as_posix(),
                    "label": label,
                    "source": "folder",
                    "width": img.width,
                    "height": img.height,
                    "format": img.format,
                    "mode": img.mode,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    return pd.DataFrame(rows)


def _run_split_and_preprocess(project: Path, manifest: pd.DataFrame) -> dict[str, ImageCache]:
    manifest.to_parquet(project / "data" / "02_intermediate" / "image_manifest.parquet")
    run_kedro(project, ["split", "preprocess"])
    catalog = load_catalog(project)
    return {split: catalog.load(f"{split}_cache") for split in SPLITS}


@pytest.mark.slow
def test_split_and_preprocess_through_kedro(kedro_project: Path, tmp_path: Path) -> None:
    files = _write_images(tmp_path / "images", n_real=30, n_fake=10)
    caches = _run_split_and_preprocess(kedro_project, _manifest(files))

    split = pd.read_parquet(kedro_project / "data" / "03_primary" / "split_manifest.parquet")
    assert split.groupby(["split", "label"]).size().to_dict() == {
        ("test", 0): 6,
        ("test", 1): 2,
        ("val", 0): 3,
        ("val", 1): 1,
        ("train", 0): 21,
        ("train", 1): 7,
    }
    for name, cache in caches.items():
        rows = split[split["split"] == name].sort_values("path")
        assert cache.path == kedro_project / "data" / "05_model_input" / name
        assert cache.images.shape == (len(rows), 3, CACHE_SIZE, CACHE_SIZE)
        assert cache.images.dtype == np.uint8
        assert cache.paths == rows["path"].tolist()
        assert cache.labels.tolist() == rows["label"].tolist()
        assert cache.meta["max_size"] == 1024 and cache.meta["split"] == name
        for i in (0, len(cache) - 1):  # the cached pixels are what load_for_cache gives
            np.testing.assert_array_equal(
                cache.images[i], load_for_cache(cache.paths[i], CACHE_SIZE, 1024)
            )


@pytest.mark.slow
def test_a_file_changed_since_ingestion_fails_the_run_and_keeps_the_old_cache(
    kedro_project: Path, tmp_path: Path
) -> None:
    files = _write_images(tmp_path / "images", n_real=15, n_fake=10)
    before = _run_split_and_preprocess(kedro_project, _manifest(files))["test"]
    victim = Path(before.paths[1])
    victim.write_bytes(b"\xff\xd8 overwritten by something else")
    with pytest.raises(Exception, match=rf"{victim.name}.*changed since ingestion") as info:
        run_kedro(kedro_project, ["preprocess"])
    assert "test_cache" in str(info.value)
    cache_dir = kedro_project / "data" / "05_model_input"
    assert not [p.name for p in cache_dir.iterdir() if p.name.startswith(".")]  # no half cache
    kept = ImageCache.open(cache_dir / "test")
    assert kept.sha256 == before.sha256


def test_cache_split_selects_and_sorts_one_split() -> None:
    manifest = pd.DataFrame(
        {
            "path": ["/b.png", "/a.png", "/c.png", "/d.png"],
            "label": [1, 0, 1, 0],
            "split": ["val", "val", "train", "val"],
        }
    )
    stream = cache_split(
        manifest, {"cache_size": 32, "max_size": 256, "threads": 2}, [0, 0, 0], "val"
    )
    assert stream.paths == ["/a.png", "/b.png", "/d.png"]
    assert stream.labels.tolist() == [0, 1, 0]
    assert len(stream) == 3 and stream.size == 32
    assert stream.meta == {"split": "val", "max_size": 256, "background": [0, 0, 0]}


@pytest.mark.parametrize(
    ("params", "background", "split", "message"),
    [
        ({"cache_size": 32, "max_size": 16}, [0, 0, 0], "val", "preprocess.max_size"),
        ({"cache_size": None, "max_size": 16}, [0, 0, 0], "val", "preprocess.cache_size"),
        ({"cache_size": 32, "max_size": 64, "threads": 0}, [0, 0, 0], "val", "preprocess.threads"),
        ({"cache_size": 32, "max_size": 64}, [0, 0], "val", "data.background"),
        ({"cache_size": 32, "max_size": 64}, [0, 0, 0], "test", "no 'test' images"),
    ],
)
def test_cache_split_names_bad_input(
    params: dict, background: list, split: str, message: str
) -> None:
    manifest = pd.DataFrame({"path": ["/a.png"], "label": [0], "split": ["val"]})
    with pytest.raises(ValueError, match=message):
        cache_split(manifest, params, background, split)


@pytest.mark.slow
@pytest.mark.faces_a
def test_faces_a_split_and_cache(kedro_project: Path, faces_a: Path) -> None:
    files = [(p, 0) for p in sorted((faces_a / "real").iterdir())]
    files += [(p, 1) for p in sorted((faces_a / "fake").iterdir())]
    assert len(files) == 800
    caches = _run_split_and_preprocess(kedro_project, _manifest(files))
    counts = {
        name: np.bincount(cache.labels, minlength=2).tolist() for name, cache in caches.items()
    }
    assert counts == {"train": [432, 144], "val": [48, 16], "test": [120, 40]}
    assert sum(len(c) for c in caches.values()) == 800
    assert len({p for c in caches.values() for p in c.paths}) == 800
