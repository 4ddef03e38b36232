"""Preprocessing geometry, the image cache on disk, and its Kedro dataset."""

from __future__ import annotations

import functools
import json
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T

from facescan.data.cache import ImageCache, ImageStream, write_cache
from facescan.data.imaging import open_rgb
from facescan.data.preprocess import (
    fit_to_cache,
    load_for_cache,
    ordered_thread_map,
    stream_images,
)
from tests.conftest import load_catalog

RED, BLUE = (220, 20, 30), (10, 40, 200)


def _halves(width: int, height: int, vertical: bool) -> Image.Image:
    """RED on the left (or top) half, BLUE on the other."""
    arr = np.empty((height, width, 3), np.uint8)
    arr[...] = BLUE
    if vertical:
        arr[:, : width // 2] = RED
    else:
        arr[: height // 2] = RED
    return Image.fromarray(arr)


def _arrays(n: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (3, size, size), dtype=np.uint8) for _ in range(n)]


def _stream(images: list[np.ndarray], size: int, fail_after: int | None = None) -> ImageStream:
    def produce() -> Iterator[np.ndarray]:
        for i, img in enumerate(images):
            if fail_after is not None and i == fail_after:
                raise ValueError("decode failed on purpose")
            yield img

    return ImageStream(
        size=size,
        labels=[i % 2 for i in range(len(images))],
        paths=[f"/img/{i:03d}.png" for i in range(len(images))],
        images=produce,
        meta={"split": "train"},
    )


# --- fit_to_cache / load_for_cache -------------------------------------------------------------


def test_fit_to_cache_centre_crops_a_wide_image() -> None:
    # 200x100, left half red: shorter side 100 -> 50 gives 100x50; the centre 50 columns are
    # x = 25..74 of the resized image, i.e. half red (left) and half blue (right).
    out = fit_to_cache(_halves(200, 100, vertical=True), cache_size=50, max_size=1024)
    assert out.shape == (3, 50, 50)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(
        out[:, :, :23], np.broadcast_to(np.array(RED)[:, None, None], (3, 50, 23))
    )
    np.testing.assert_array_equal(
        out[:, :, 27:], np.broadcast_to(np.array(BLUE)[:, None, None], (3, 50, 23))
    )


def test_fit_to_cache_centre_crops_a_tall_image() -> None:
    out = fit_to_cache(_halves(100, 200, vertical=False), cache_size=50, max_size=1024)
    assert out.shape == (3, 50, 50)
    assert (out[:, :23] == np.array(RED)[:, None, None]).all()
    assert (out[:, 27:] == np.array(BLUE)[:, None, None]).all()


def test_fit_to_cache_equals_torchvision_resize_with_max_size_then_center_crop() -> None:
    # 10:1 strip: shorter side to 50 would make the longer 500 > max_size 300, so torchvision's
    # rule shrinks it to 300x30 and the centre crop pads 10 black rows above and below.
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(30, 256, (100, 1000, 3), dtype=np.uint8))
    out = fit_to_cache(img, cache_size=50, max_size=300)
    reference = T.Compose([T.Resize(50, max_size=300), T.CenterCrop(50)])(img)
    np.testing.assert_array_equal(out, np.asarray(reference).transpose(2, 0, 1))
    assert (out[:, :10] == 0).all() and (out[:, 40:] == 0).all()
    assert (out[:, 10:40] > 0).any()


def test_fit_to_cache_leaves_an_image_of_cache_size_untouched() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    out = fit_to_cache(Image.fromarray(pixels), cache_size=40, max_size=1024)
    np.testing.assert_array_equal(out, pixels.transpose(2, 0, 1))


@pytest.mark.parametrize(
    ("cache_size", "max_size", "message"),
    [
        (0, 1024, "preprocess.cache_size"),
        (64, 64, "preprocess.max_size"),
        (64, "big", "preprocess.max_size"),
    ],
)
def test_fit_to_cache_rejects_bad_sizes(cache_size: int, max_size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_to_cache(Image.new("RGB", (80, 80)), cache_size, max_size)


def test_load_for_cache_decodes_a_large_jpeg_at_reduced_scale(tmp_path: Path) -> None:
    # A smooth 800x600 photo-like gradient: the draft decode (1/8 scale here) plus one resize
    # must match a full decode plus the same resize to within JPEG noise.
    y, x = np.mgrid[0:600, 0:800]
    pixels = np.stack([x * 255 // 800, y * 255 // 600, (x + y) * 255 // 1400], -1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    with Image.open(path) as probe:
        probe.draft("RGB", (64, 64))
        assert probe.size == (100, 75)  # Pillow can decode this file at 1/8 scale
    out = load_for_cache(path, cache_size=64, max_size=1024)
    full = fit_to_cache(open_rgb(path), cache_size=64, max_size=1024)
    assert out.shape == (3, 64, 64)
    assert np.abs(out.astype(int) - full.astype(int)).mean() < 2.0


def test_load_for_cache_composites_transparency_on_the_background(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (60, 60), (0, 0, 0, 0)).save(path)
    out = load_for_cache(path, cache_size=30, max_size=100, background=(0, 128, 255))
    assert (out == np.array([0, 128, 255])[:, None, None]).all()


def test_stream_images_names_a_file_that_changed_since_ingestion(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.new("RGB", (50, 50), RED).save(good)
    bad.write_bytes(b"not an image any more")
    with pytest.raises(ValueError, match=r"bad\.jpg.*changed since ingestion"):
        list(stream_images([str(good), str(bad)], 32, 1024, threads=2))
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        list(stream_images([str(tmp_path / "gone.png")], 32, 1024, threads=1))


def test_stream_images_keeps_input_order(tmp_path: Path) -> None:
    paths = []
    for i in range(12):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (40 + i, 40), (i * 20, 0, 0)).save(p)
        paths.append(str(p))
    reds = [int(a[0, 0, 0]) for a in stream_images(paths, 32, 1024, threads=3)]
    assert reds == [i * 20 for i in range(12)]


def test_ordered_thread_map_bounds_the_work_done_ahead() -> None:
    pulled = 0
    lock = threading.Lock()

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(100):
            with lock:
                pulled += 1
            yield i

    results = ordered_thread_map(lambda i: i * i, items(), threads=2, window=4)
    for consumed, value in enumerate(results, start=1):
        assert value == (consumed - 1) ** 2
        assert pulled <= consumed + 4  # never more than `window` items beyond what was consumed
    assert pulled == 100


# --- the cache folder ----------------------------------------------------------------------------


def test_write_cache_round_trip(tmp_path: Path) -> None:
    images = _arrays(5, 16)
    cache = write_cache(tmp_path / "train", _stream(images, 16))
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "images.npy",
        "labels.npy",
        "meta.json",
        "paths.json",
    ]
    assert isinstance(cache.images, np.memmap)
    assert cache.images.dtype == np.uint8 and cache.images.shape == (5, 3, 16, 16)
    assert not cache.images.flags.writeable
    np.testing.assert_array_equal(cache.images, np.stack(images))
    assert cache.labels.dtype == np.int64 and cache.labels.tolist() == [0, 1, 0, 1, 0]
    assert cache.paths == [f"/img/{i:03d}.png" for i in range(5)]
    image, label = cache[3]
    np.testing.assert_array_equal(image, images[3])
    assert label == 1 and len(cache) == 5 and cache.size == 16
    meta = json.loads((tmp_path / "train" / "meta.json").read_text())
    assert meta["count"] == 5 and meta["size"] == 16 and meta["split"] == "train"
    assert meta["class_counts"] == {"0": 3, "1": 2}
    assert len(meta["sha256"]) == 64 and cache.sha256 == meta["sha256"]


def test_cache_hash_changes_with_content(tmp_path: Path) -> None:
    images = _arrays(4, 8)
    a = write_cache(tmp_path / "a", _stream(images, 8))
    b = write_cache(tmp_path / "b", _stream(images, 8))
    images[2] = images[2].copy()
    images[2][0, 0, 0] ^= 1
    c = write_cache(tmp_path / "c", _stream(images, 8))
    assert a.sha256 == b.sha256 != c.sha256


def test_failed_write_leaves_no_cache_and_no_half_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on purpose"):
        write_cache(tmp_path / "train", _stream(_arrays(6, 8), 8, fail_after=3))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_cache(tmp_path: Path) -> None:
    old = _arrays(3, 8)
    write_cache(tmp_path / "train", _stream(old, 8))
    with pytest.raises(ValueError, match="on purpose"):
        write_cache(tmp_path / "train", _stream(_arrays(6, 8)[::-1], 8, fail_after=5))
    assert [p.name for p in tmp_path.iterdir()] == ["train"]
    kept = ImageCache.open(tmp_path / "train")
    np.testing.assert_array_equal(kept.images, np.stack(old))


def test_successful_write_replaces_the_previous_cache(tmp_path: Path) -> None:
    write_cache(tmp_path / "train", _stream(_arrays(3, 8), 8))
    new = _arrays(5, 12)
    cache = write_cache(tmp_path / "train", _stream(new, 12))
    assert [p.name for p in tmp_path.iterdir()] == ["train"]
    assert cache.images.shape == (5, 3, 12, 12)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([np.zeros((3, 8, 8), np.float32)] * 2, r"/img/000\.png: image is float32"),
        ([np.zeros((3, 9, 9), np.uint8)] * 2, r"expected uint8 \(3, 8, 8\)"),
        ([np.zeros((3, 8, 8), np.uint8)], "yielded 1 images for 2 paths"),
        ([np.zeros((3, 8, 8), np.uint8)] * 3, "more than its 2 paths"),
    ],
)
def test_write_cache_rejects_a_bad_stream(
    tmp_path: Path, images: list[np.ndarray], message: str
) -> None:
    stream = ImageStream(8, [0, 1], ["/img/000.png", "/img/001.png"], lambda: iter(images))
    with pytest.raises(ValueError, match=message):
        write_cache(tmp_path / "c", stream)
    assert list(tmp_path.iterdir()) == []


def test_image_stream_checks_labels_against_paths() -> None:
    with pytest.raises(ValueError, match="3 labels for 2 paths"):
        ImageStream(8, [0, 1, 1], ["a", "b"], lambda: iter([]))


def test_open_names_a_missing_cache(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no image cache at .*nowhere.*preprocess"):
        ImageCache.open(tmp_path / "nowhere")


def test_handle_pickles_without_the_mapping_and_reopens(tmp_path: Path) -> None:
    images = _arrays(4, 8)
    cache = write_cache(tmp_path / "c", _stream(images, 8))
    _ = cache.images  # mapped in this process
    payload = pickle.dumps(cache)
    assert len(payload) < 2_000  # the pixels are not in it
    clone = pickle.loads(payload)
    assert clone._images is None
    np.testing.assert_array_equal(clone[2][0], images[2])
    assert clone.paths == cache.paths and clone.labels.tolist() == cache.labels.tolist()


# --- through the catalog -------------------------------------------------------------------------


def test_catalog_dataset_round_trip(kedro_project: Path, tmp_path: Path) -> None:
    from kedro.io import DatasetError

    catalog = load_catalog(kedro_project)
    with pytest.raises(DatasetError, match="no image cache at .* build it with kedro run --pipel"):
        catalog.load("val_cache")
    assert not catalog.exists("val_cache")
    # Issue 13 item 10: the external cache names the pipeline that builds it (not preprocess).
    with pytest.raises(
        DatasetError, match=r"external yet; build it with kedro run --pipelines evaluate_external"
    ):
        catalog.load("external_cache")
    paths = []
    for i, colour in enumerate([RED, BLUE, RED]):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (64, 48), colour).save(p)
        paths.append(str(p))
    stream = ImageStream(
        size=40,
        labels=[0, 1, 0],
        paths=paths,
        images=functools.partial(stream_images, paths, 40, 1024, (255, 255, 255), 2),
    )
    catalog.save("val_cache", stream)
    assert catalog.exists("val_cache")
    assert (kedro_project / "data" / "05_model_input" / "val" / "images.npy").is_file()
    cache = catalog.load("val_cache")
    assert isinstance(cache, ImageCache)
    assert cache.images.shape == (3, 3, 40, 40) and cache.labels.tolist() == [0, 1, 0]
    assert cache.paths == paths
    assert (cache.images[1] == np.array(BLUE)[:, None, None]).all()
