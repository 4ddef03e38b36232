"""The evaluation and evaluate_external pipelines through Kedro, on checkpoints made without
training (random weights: the numbers are checked for consistency, not for quality)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facescan.pipelines.evaluate_external.nodes import (
    ingest_external_images,
    resolve_external_data,
)
from tests.conftest import load_catalog, run_kedro
from tests.evaluation.helpers import fake_checkpoint

ONE_VARIANT = {"ablation": {"variants": ["resnet50"]}}
FP32 = {"evaluation": {"amp": "off"}}


def _params(*blocks: dict) -> dict:
    out: dict = {}
    for block in blocks:
        for key, value in block.items():
            out[key] = {**out.get(key, {}), **value}
    return out


@pytest.fixture
def evaluated(kedro_project: Path) -> Path:
    """data + evaluation of one resnet50 checkpoint in the test environment."""
    params = _params(ONE_VARIANT, FP32)
    load_catalog(kedro_project, params=params).save("resnet50.model", fake_checkpoint("resnet50"))
    run_kedro(kedro_project, ["data", "evaluation"], params=params)
    return kedro_project


def test_evaluation_writes_predictions_metrics_and_robustness(evaluated: Path) -> None:
    out = evaluated / "data" / "07_model_output" / "resnet50"
    split = pd.read_parquet(evaluated / "data" / "03_primary" / "split_manifest.parquet")
    test = split[split["split"] == "test"].sort_values("path")

    predictions = pd.read_csv(out / "test_predictions.csv")
    assert list(predictions.columns) == ["path", "label", "p_fake", "pred"]
    assert predictions["path"].tolist() == test["path"].tolist()
    assert predictions["label"].tolist() == test["label"].tolist()
    assert (predictions["pred"] == (predictions["p_fake"] > 0.5)).all()

    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON (no NaN tokens)
    n = len(test)
    assert metrics["n"] == n and metrics["n_real"] + metrics["n_fake"] == n
    assert metrics["acc"] == pytest.approx((predictions["pred"] == predictions["label"]).mean())
    assert np.sum(metrics["confusion_matrix"]) == n
    assert metrics["acc_ci_low"] <= metrics["acc"] <= metrics["acc_ci_high"]
    for key in (
        "loss",
        "auc",
        "ap",
        "eer",
        "acc_real",
        "acc_fake",
        "val_threshold",
        "acc_at_val_threshold",
        "images_per_s",
    ):
        assert isinstance(metrics[key], float), key
    assert metrics["params"] == 23_512_130  # torchvision's resnet50 with a 2-class head
    assert 0.1 < metrics["gflops"] < 0.3  # 4.1 GFLOPs x (32/224)^2, counted as 2 per MAC
    assert metrics["variant"] == "resnet50" and metrics["input_size"] == 32
    assert metrics["bootstrap"]["n_resamples"] == 200  # conf/test

    robustness = pd.read_csv(out / "robustness.csv")
    assert robustness["perturbation"].tolist() == [
        "clean",
        "jpeg_q90",
        "jpeg_q75",
        "jpeg_q50",
        "blur_sigma1",
        "blur_sigma2",
        "resize_0.5x",
    ]
    assert (robustness["n"] == n).all()
    assert robustness.loc[0, "acc"] == pytest.approx(metrics["acc"])


def test_robustness_can_be_switched_off(kedro_project: Path) -> None:
    params = _params(ONE_VARIANT, FP32, {"evaluation": {"robustness": {"enabled": False}}})
    load_catalog(kedro_project, params=params).save("resnet50.model", fake_checkpoint("resnet50"))
    run_kedro(
        kedro_project,
        ["data", "evaluation"],
        params=params,
        node_names=[
            "ingest_images",
            "split_images",
            "cache_test_images",
            "resnet50.evaluate_robustness",
        ],
    )
    table = pd.read_csv(kedro_project / "data" / "07_model_output" / "resnet50" / "robustness.csv")
    assert table.empty and list(table.columns) == ["perturbation", "acc", "auc", "loss", "n"]


def test_a_model_trained_on_other_data_is_refused(kedro_project: Path) -> None:
    """Issue 13 item 3: after the split changes, an old model's training images may be test images."""
    params = _params(ONE_VARIANT, FP32)
    stale = {**fake_checkpoint("resnet50"), "data_fingerprint": "0" * 64}
    load_catalog(kedro_project, params=params).save("resnet50.model", stale)
    with pytest.raises(
        ValueError,
        match=r"resnet50\.model .*: variant 'resnet50' was trained on other data than the current "
        r"train/val caches .* retrain it with kedro run --pipelines training --namespaces resnet50",
    ):
        run_kedro(kedro_project, ["data", "evaluation"], params=params)
    assert not (kedro_project / "data" / "07_model_output" / "resnet50" / "metrics.json").exists()


def test_a_checkpoint_of_another_variant_is_refused(kedro_project: Path) -> None:
    params = _params(ONE_VARIANT, FP32)
    load_catalog(kedro_project, params=params).save(
        "resnet50.model", fake_checkpoint("se_resnet50", namespace="resnet50")
    )
    with pytest.raises(ValueError, match="another variant.*se_resnet50.*resnet50"):
        run_kedro(kedro_project, ["data", "evaluation"], params=params)


def test_evaluate_external_on_a_second_synthetic_set(kedro_project: Path) -> None:
    params = _params(ONE_VARIANT, FP32)
    load_catalog(kedro_project, params=params).save("resnet50.model", fake_checkpoint("resnet50"))
    run_kedro(kedro_project, ["evaluate_external"], params=params)

    raw = kedro_project / "data" / "01_raw"
    external = sorted(p.name for p in (raw / "synthetic_external").rglob("*.jpg"))
    assert len(external) == 24  # conf/test external.synthetic.n_images
    assert not (raw / "synthetic").exists()  # the training set was never generated

    out = kedro_project / "data" / "07_model_output" / "resnet50"
    metrics = json.loads((out / "external_metrics.json").read_text())
    assert metrics["n"] == 24 and metrics["n_real"] == metrics["n_fake"] == 12
    assert metrics["external_source"]["synthetic"]["seed"] == 1
    assert metrics["acc_ci_low"] <= metrics["acc"] <= metrics["acc_ci_high"]
    assert metrics["auc_ci_low"] <= metrics["auc"] <= metrics["auc_ci_high"]
    # Issue 12: the keys of metrics.json at the run's tuned threshold (0.5 for this old-style
    # checkpoint, with a warning), and results per image source.
    assert {"acc_real_at_val_threshold", "acc_fake_at_val_threshold"} <= set(metrics)
    assert {(r["source"], r["class"]) for r in metrics["per_source"]} == {
        ("real", "real"),
        ("fake", "fake"),
    }
    predictions = pd.read_csv(out / "external_predictions.csv")
    assert len(predictions) == 24 and predictions["path"].str.contains("synthetic_external").all()

    # --namespaces keeps only the run's nodes; the external data is still built from the
    # configuration of this run (issue 13 item 10), here another external set.
    other = _params(params, {"external": {"synthetic": {"seed": 7}}})
    run_kedro(kedro_project, ["evaluate_external"], params=other, namespaces=["resnet50"])
    metrics = json.loads((out / "external_metrics.json").read_text())
    assert metrics["external_source"]["synthetic"]["seed"] == 7


def test_evaluate_external_for_one_namespace_on_a_fresh_project(kedro_project: Path) -> None:
    """Issue 13 item 10: no external cache on disk yet, one chosen variant."""
    params = _params(ONE_VARIANT, FP32)
    load_catalog(kedro_project, params=params).save("resnet50.model", fake_checkpoint("resnet50"))
    run_kedro(kedro_project, ["evaluate_external"], params=params, namespaces=["resnet50"])
    out = kedro_project / "data" / "07_model_output" / "resnet50"
    assert json.loads((out / "external_metrics.json").read_text())["n"] == 24


def test_external_configuration_errors_name_the_external_parameters() -> None:
    data = {
        "source": {"type": "synthetic", "classes": {"real": 0, "fake": 1}},
        "synthetic": {"seed": 0},
    }
    with pytest.raises(ValueError, match="external.source must be a mapping"):
        resolve_external_data(data, {"source": None})
    with pytest.raises(ValueError, match="external.source: unknown key"):
        resolve_external_data(data, {"source": {"type": "folder", "root": "/x"}})
    resolved = resolve_external_data(data, {"source": {"type": "folder", "path": "/no/such"}})
    assert resolved["source"]["classes"] == {"real": 0, "fake": 1}  # kept from data.source
    with pytest.raises(FileNotFoundError, match="external.source.path"):
        ingest_external_images(resolved, {"cache_size": 40})


def test_external_class_folder_errors_name_the_external_parameters(tmp_path: Path) -> None:
    for name in ("Real/a.png", "AI/b.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")  # never decoded: the layout is checked first
    data = {"source": {"type": "synthetic", "classes": {"real": 0, "fake": 1}}}
    resolved = resolve_external_data(data, {"source": {"type": "folder", "path": str(tmp_path)}})
    with pytest.raises(ValueError) as err:
        ingest_external_images(resolved, {"cache_size": 40})
    message = str(err.value)
    assert message.startswith(f"external.source.classes: no class folder in {tmp_path} is named")
    assert message.endswith("--params external.source.classes.AI=1)")
