"""The synthetic source: deterministic, regenerated only when asked, and without easy shortcuts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from facescan.data.synthetic import SyntheticSpec, generate_synthetic, synthesize


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_images_are_jpeg_at_the_requested_size() -> None:
    for label in (0, 1):
        img = Image.open(io.BytesIO(synthesize(0, label, 0, 40, 0.5)))
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (40, 40))
    assert Image.open(io.BytesIO(synthesize(0, 1, 0, 37, 0.5))).size == (37, 37)  # odd sizes too


def test_each_image_depends_only_on_its_own_arguments() -> None:
    a = [synthesize(3, label, k, 32, 0.4) for label in (0, 1) for k in range(3)]
    b = [synthesize(3, label, k, 32, 0.4) for label in (1, 0) for k in reversed(range(3))]
    assert a == [b[5], b[4], b[3], b[2], b[1], b[0]]  # same bytes in any order
    assert synthesize(4, 0, 0, 32, 0.4) != a[0]  # the seed matters
    assert synthesize(3, 0, 0, 32, 0.9) != a[0]  # so does the difficulty


def test_generate_writes_once_and_only_touches_its_own_files(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    out = generate_synthetic(
        root, SyntheticSpec(n_images=5, seed=1, size=24, difficulty=0.5), progress=False
    )
    assert out == root.resolve()
    first = _files(root)
    assert sorted(first) == [
        "fake/00000.jpg",
        "fake/00001.jpg",
        "real/00000.jpg",
        "real/00001.jpg",
        "real/00002.jpg",
    ]
    mtimes = {p: (root / p).stat().st_mtime_ns for p in first}
    user_file = root / "real" / "mine.jpg"
    user_file.write_bytes(b"user data")

    generate_synthetic(
        root, SyntheticSpec(n_images=5, seed=1, size=24, difficulty=0.5), progress=False
    )
    assert {p: (root / p).stat().st_mtime_ns for p in first} == mtimes  # up to date: not rewritten

    generate_synthetic(
        root, SyntheticSpec(n_images=3, seed=1, size=24, difficulty=0.5), progress=False
    )
    second = _files(root)
    assert sorted(second) == ["fake/00000.jpg", "real/00000.jpg", "real/00001.jpg", "real/mine.jpg"]
    # Image k is the same whatever the number of images, and the user's file is left alone.
    assert all(second[p] == first[p] for p in second if p != "real/mine.jpg")
    assert user_file.read_bytes() == b"user data"

    (root / "fake" / "00000.jpg").unlink()  # a missing file is regenerated
    generate_synthetic(
        root, SyntheticSpec(n_images=3, seed=1, size=24, difficulty=0.5), progress=False
    )
    assert _files(root) == second


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_images", 1), ("size", 8), ("difficulty", 1.5), ("seed", -1), ("n_images", 2.5)],
)
def test_spec_rejects_bad_values_naming_the_parameter(field: str, value: object) -> None:
    kwargs = {"n_images": 10, "seed": 0, "size": 32, "difficulty": 0.5} | {field: value}
    with pytest.raises(ValueError, match=f"data.synthetic.{field}"):
        SyntheticSpec(**kwargs)


def _auc(labels: list[int], score: list[float]) -> float:
    auc = roc_auc_score(labels, score)
    return max(auc, 1 - auc)


def _probe(difficulty: float, n: int = 100, size: int = 72) -> dict[str, float]:
    """Separability of the classes by one-number statistics (AUC, direction-free)."""
    labels, brightness, sizes, laplace = [], [], [], []
    for k in range(n):
        for label in (0, 1):
            data = synthesize(7, label, k, size, difficulty)
            pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32)
            labels.append(label)
            sizes.append(len(data))
            brightness.append(pixels.mean())
            laplace.append(float(np.mean(ndimage.laplace(pixels.mean(-1)) ** 2)))
    return {
        "brightness": _auc(labels, brightness),
        "file size": _auc(labels, sizes),
        "laplacian energy": _auc(labels, laplace),
    }


@pytest.mark.parametrize("difficulty", [0.0, 0.3, 1.0])
def test_brightness_never_gives_the_label_away(difficulty: float) -> None:
    assert _probe(difficulty)["brightness"] <= 0.6


def test_at_difficulty_1_file_size_does_not_give_the_label_away() -> None:
    """Fine-detail energy is matched at difficulty 1: JPEG size separates no better than chance."""
    assert _probe(1.0)["file size"] <= 0.6


def test_lower_difficulty_leaves_more_fine_detail_energy_on_the_fakes() -> None:
    """The excess that the difficulty removes is what makes easy settings easy."""
    easy, hard = _probe(0.0, n=60), _probe(1.0, n=60)
    assert easy["laplacian energy"] > hard["laplacian energy"]
    assert easy["laplacian energy"] >= 0.9
