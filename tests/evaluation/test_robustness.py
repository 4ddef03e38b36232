"""Perturbations: shapes, determinism, what each one does, and their configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from facescan.evaluation.config import EvaluationConfig
from facescan.evaluation.robustness import (
    DEFAULT_PERTURBATIONS,
    PerturbedImages,
    parse_perturbations,
)


def smooth_image(size: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, (x + y) / 2]) * 200 + 20
    return img.astype(np.uint8)


def checkerboard(size: int = 32) -> np.ndarray:
    board = (np.indices((size, size)).sum(axis=0) % 2) * 255
    return np.repeat(board[None], 3, axis=0).astype(np.uint8)


def test_every_default_perturbation_keeps_shape_and_dtype_and_is_deterministic() -> None:
    img = smooth_image()
    perturbations = parse_perturbations(None)
    assert [p.name for p in perturbations] == list(DEFAULT_PERTURBATIONS)
    for p in perturbations:
        out = p(img)
        assert out.shape == img.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, p(img))


def test_constant_image_survives_blur_and_resize() -> None:
    flat = np.full((3, 24, 24), 120, dtype=np.uint8)
    for p in parse_perturbations(None):
        if p.kind in ("blur", "resize"):
            np.testing.assert_array_equal(p(flat), flat)


def test_blur_and_resize_erase_the_finest_pattern_and_jpeg_quality_orders_the_damage() -> None:
    board = checkerboard()
    by_name = {p.name: p for p in parse_perturbations(None)}
    # A one-pixel checkerboard is the highest frequency there is: blur and a 0.5x resize flatten it.
    for name in ("blur_sigma1", "blur_sigma2", "resize_0.5x"):
        assert by_name[name](board).std() < 0.1 * board.std()
    img = smooth_image(64) + checkerboard(64) // 8
    error = {q: np.abs(by_name[f"jpeg_q{q}"](img).astype(int) - img).mean() for q in (90, 75, 50)}
    assert 0 < error[90] < error[75] < error[50]


def test_perturbed_view_keeps_labels_and_paths() -> None:
    class TinyCache:
        labels = np.array([0, 1])
        paths = ["a.jpg", "b.jpg"]
        size = 32

        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            return smooth_image(), int(self.labels[i])

    view = PerturbedImages(TinyCache(), parse_perturbations({"b": {"type": "blur", "sigma": 2}})[0])
    image, label = view[1]
    assert label == 1 and image.shape == (3, 32, 32)
    assert len(view) == 2 and view.paths == ["a.jpg", "b.jpg"] and view.size == 32


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"x": {"type": "sharpen"}}, "perturbations.x: needs type"),
        ({"x": {"type": "jpeg", "quality": 101}}, "perturbations.x.quality"),
        ({"x": {"type": "blur", "sigma": 0}}, "perturbations.x.sigma"),
        ({"x": {"type": "resize", "scale": 2}}, "perturbations.x.scale"),
        ({"x": {"type": "blur", "sigma": 1, "radius": 2}}, "unknown key"),
    ],
)
def test_bad_perturbations_name_the_entry(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_perturbations(spec)


def test_evaluation_config_names_bad_keys() -> None:
    assert EvaluationConfig.from_params({}).n_resamples == 1000
    with pytest.raises(ValueError, match="evaluation.batchsize: unknown option"):
        EvaluationConfig.from_params({"batchsize": 3})
    with pytest.raises(ValueError, match="evaluation.bootstrap.n_resamples"):
        EvaluationConfig.from_params({"bootstrap": {"n_resamples": -1}})
    with pytest.raises(ValueError, match="evaluation.robustness.enabled"):
        EvaluationConfig.from_params({"robustness": {"enabled": "yes"}})
