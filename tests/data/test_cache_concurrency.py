"""The image cache when another writer replaces it: handles notice, writers leave each other alone."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facescan.data.cache import CacheReplacedError, ImageCache, ImageStream, write_cache


def _arrays(n: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (3, size, size), dtype=np.uint8) for _ in range(n)]


def _stream(images: list[np.ndarray], labels: list[int] | None = None) -> ImageStream:
    return ImageStream(
        size=images[0].shape[-1],
        labels=labels if labels is not None else [i % 2 for i in range(len(images))],
        paths=[f"/img/{i:03d}.png" for i in range(len(images))],
        images=lambda: iter(images),
    )


def test_a_handle_reopened_after_the_cache_was_replaced_refuses_to_mix(tmp_path: Path) -> None:
    """A DataLoader / DDP worker maps the pixels itself: they must be those of its labels."""
    folder = tmp_path / "train"
    write_cache(folder, _stream(_arrays(4, 8, seed=0)))
    handle = ImageCache.open(folder)
    payload = pickle.dumps(handle)  # what a worker receives: labels and paths, not the pixels

    write_cache(folder, _stream(_arrays(4, 8, seed=1), labels=[1, 1, 0, 0]))  # a re-run

    worker = pickle.loads(payload)
    with pytest.raises(CacheReplacedError) as err:
        worker[0]
    message = str(err.value)
    assert str(folder) in message and "concurrent preprocess" in message
    assert "\n" not in message and message.endswith(".")
    assert isinstance(err.value, RuntimeError)


def test_a_handle_mapped_before_the_replacement_keeps_its_own_pixels(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    old = _arrays(3, 8, seed=0)
    handle = write_cache(folder, _stream(old))
    _ = handle.images  # mapped: the old file stays readable through the mapping
    write_cache(folder, _stream(_arrays(3, 8, seed=1)))
    np.testing.assert_array_equal(handle[1][0], old[1])


def test_a_rewrite_with_the_same_content_is_not_an_error(tmp_path: Path) -> None:
    """Caches are deterministic: a re-run that wrote the same bytes mixes nothing."""
    folder = tmp_path / "train"
    images = _arrays(3, 8, seed=0)
    payload = pickle.dumps(write_cache(folder, _stream(images)))
    write_cache(folder, _stream(images))
    np.testing.assert_array_equal(pickle.loads(payload)[2][0], images[2])


def test_a_removed_cache_is_named(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "train"
    payload = pickle.dumps(write_cache(folder, _stream(_arrays(2, 8, seed=0))))
    shutil.rmtree(folder)
    with pytest.raises(CacheReplacedError, match="train"):
        _ = pickle.loads(payload).images


def test_writers_do_not_delete_each_others_temporary_folders(tmp_path: Path) -> None:
    """A second writer of the same cache removes only leftovers of writers that are gone."""
    folder = tmp_path / "train"
    first_images, second_images = _arrays(4, 8, seed=0), _arrays(4, 8, seed=1)
    halfway, resume = threading.Event(), threading.Event()

    def slow() -> Iterator[np.ndarray]:
        for i, image in enumerate(first_images):
            if i == 2:
                halfway.set()
                assert resume.wait(30)
            yield image

    errors: list[BaseException] = []

    def first_writer() -> None:
        try:
            write_cache(
                folder,
                ImageStream(8, [0, 1, 0, 1], [f"/a/{i}" for i in range(4)], slow),
            )
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=first_writer)
    thread.start()
    try:
        assert halfway.wait(30)
        (tmp_path / ".train.tmp-0dead000").mkdir()  # left by a writer that was killed
        write_cache(folder, _stream(second_images))
        assert not (tmp_path / ".train.tmp-0dead000").exists()
    finally:
        resume.set()
        thread.join(30)
    assert errors == []
    final = ImageCache.open(folder)  # the last writer's cache, complete
    np.testing.assert_array_equal(final.images, np.stack(first_images))
    assert [p.name for p in tmp_path.iterdir()] == ["train"]
