"""benchmarks/recipe_selection.py: nested hold-out inside train + val, never the test split."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from facescan.training import TrainConfig

from .conftest import load_benchmark, make_cache


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("recipe_selection")


def test_recipes_parse_and_bad_ones_are_named(bench) -> None:
    assert bench.recipe("faces") == ("faces", {})
    assert bench.recipe('short={"training": {"max_epochs": 2}}') == (
        "short",
        {"training": {"max_epochs": 2}},
    )
    with pytest.raises(argparse.ArgumentTypeError, match="--recipe 'x=\\{\"lr\": 1\\}'"):
        bench.recipe('x={"lr": 1}')


def test_inner_splits_are_disjoint_stratified_and_cover_the_pool(bench) -> None:
    labels = np.array([0] * 60 + [1] * 20)
    splits = bench.inner_splits(labels, 3, test_size=0.2, val_size=0.1, seed=100)
    assert len(splits) == 3
    for train, val, test in splits:
        assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(80))
        assert (len(train), len(val), len(test)) == (57, 7, 16)
        assert labels[test].sum() == 4  # a quarter fake, as the pool
    assert not np.array_equal(splits[0][2], splits[1][2])  # each split its own test set


def test_a_recipe_trains_on_every_inner_split_and_scores_its_test(
    bench, tiny_model, tmp_path
) -> None:
    caches = [make_cache(tmp_path / "train", 40, seed=0), make_cache(tmp_path / "val", 16, seed=1)]
    pool = bench.Pool(caches, tmp_path / "pool")
    assert len(pool.labels) == 56 and pool.images.shape == (56, 3, 40, 40)
    splits = bench.inner_splits(pool.labels, 2, test_size=0.25, val_size=0.2, seed=0)
    # As the Kedro context gives them: typed sections are pydantic models.
    params = {
        "training": TrainConfig.from_params(
            {"max_epochs": 3, "t_max": 3, "batch_size": 8, "lr": 1e-2, "patience": 2}
        ),
        "preprocess": {"input_size": 32, "augment": None},
        "model": {"pretrained": None},
    }
    overrides = {"training": {"keep": "last", "patience": None, "amp": "off", "threads": 1}}
    result = bench.run_recipe("last", overrides, params, pool, splits, "resnet50")
    assert result["recipe"] == "last" and len(result["runs"]) == 2
    for run in result["runs"]:
        assert 0.0 <= run["auc"] <= 1.0
        assert run["kept_epoch"] == 3  # keep: last, whatever validation said
        assert 0.0 <= run["fake_acc_at_val_threshold"] <= 1.0
    assert result["auc_mean"] == pytest.approx(
        np.mean([r["auc"] for r in result["runs"]]), abs=1e-4
    )
    # The tiny net separates the brighter class: a recipe that learns scores well above chance.
    assert result["auc_mean"] > 0.8
