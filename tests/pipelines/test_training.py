"""The training pipeline: one namespace per run, and a real `kedro run --namespaces` of one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from facescan.checkpoint import CHECKPOINT_FORMAT
from facescan.pipelines.training import create_pipeline
from facescan.runs import VariantRun, expand_runs
from tests.conftest import load_catalog, run_kedro
from tests.training.conftest import make_cache


def test_one_namespaced_node_per_run_sharing_caches_and_parameters() -> None:
    runs = expand_runs({"variants": ["resnet50", "vit"], "seeds": [1, 2]})
    pipeline = create_pipeline(runs)
    nodes = {n.name: n for n in pipeline.nodes}
    assert set(nodes) == {f"{r.namespace}.train_model" for r in runs}
    node = nodes["vit_seed2.train_model"]
    assert node.namespace == "vit_seed2"
    assert node.inputs == [
        "train_cache",
        "val_cache",
        "params:training",
        "params:model",
        "params:ablation",
        "params:preprocess",
    ]
    assert node.outputs == ["vit_seed2.model", "vit_seed2.history"]
    assert node.func.keywords == {"namespace": "vit_seed2", "variant": "vit", "seed": 2}
    assert node.func.__name__ == "train_model"  # kedro-viz shows the real function
    assert create_pipeline([]).nodes == []
    assert (
        create_pipeline([VariantRun("a", "resnet50", None)]).nodes[0].func.keywords["seed"] is None
    )


@pytest.mark.slow
def test_kedro_run_trains_one_namespace_then_reuses_it(kedro_project: Path) -> None:
    inputs = kedro_project / "data" / "05_model_input"
    make_cache(inputs / "train", 16, seed=0)
    make_cache(inputs / "val", 8, seed=1)
    params = {"training.max_epochs": 1, "training.threads": 1}

    run_kedro(kedro_project, ["training"], params=params, namespaces=["resnet50"])

    catalog = load_catalog(kedro_project, params=params)
    ckpt = catalog.load("resnet50.model")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["variant"] == "resnet50"
    assert ckpt["seed"] == 0  # conf/test ablation.seeds
    assert (ckpt["input_size"], ckpt["cache_size"]) == (32, 40)
    history = pd.read_csv(kedro_project / "data/07_model_output/resnet50/history.csv")
    assert list(history.columns) == [
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "seconds",
        "images_per_s",
        "grad_norm_max",  # base's clip_grad_norm reaches the test env through the soft merge
    ]
    assert history["epoch"].tolist() == [1]
    assert history["grad_norm_max"].gt(0).all()
    assert not (kedro_project / "data/06_models/aspp_crossscan_vit").exists()  # not asked for
    assert (kedro_project / "data/06_models/_resume/resnet50/done.json").is_file()
    assert list((kedro_project / "data/08_reporting/tensorboard/resnet50").iterdir())

    # Same configuration and data: not retrained; the same checkpoint is saved as a new version.
    run_kedro(kedro_project, ["training"], params=params, namespaces=["resnet50"])
    versions = sorted((kedro_project / "data/06_models/resnet50/model.pt").iterdir())
    assert len(versions) == 2
    again = load_catalog(kedro_project, params=params).load("resnet50.model")
    assert again["history"] == ckpt["history"]  # wall times included: nothing ran again
    assert again["provenance"]["created_utc"] == ckpt["provenance"]["created_utc"]

    # --only-missing-outputs sees the versioned checkpoint and does not even run the node.
    run_kedro(
        kedro_project,
        ["training"],
        params=params,
        namespaces=["resnet50"],
        only_missing_outputs=True,
    )
    assert len(list((kedro_project / "data/06_models/resnet50/model.pt").iterdir())) == 2
