"""The hooks: the registry follows --env and --params; stage timings are recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from facescan.hooks import StageTimingHook, _stage_of
from tests.conftest import load_catalog, run_kedro


def _training_namespaces(project: Path, env: str, params: dict | None = None) -> set[str]:
    from kedro.framework.project import pipelines

    load_catalog(project, env=env, params=params)  # creates the context: fires the hook
    return {n.namespace for n in pipelines["training"].nodes}


def test_registry_sees_the_environment_and_runtime_params(kedro_project: Path) -> None:
    base = _training_namespaces(kedro_project, env="base")
    assert "aspp_crossscan_vit" in base and "se_resnet50" in base and len(base) == 9

    assert _training_namespaces(kedro_project, env="test") == {"resnet50", "aspp_crossscan_vit"}

    one = _training_namespaces(kedro_project, env="test", params={"ablation.variants": ["vit"]})
    assert one == {"vit"}

    seeds = _training_namespaces(
        kedro_project, env="test", params={"ablation.seeds": [1, 2], "ablation.variants": ["vit"]}
    )
    assert seeds == {"vit_seed1", "vit_seed2"}


def test_local_environment_overrides_one_leaf(kedro_project: Path) -> None:
    (kedro_project / "conf" / "local" / "parameters.yml").write_text("training:\n  lr: 0.5\n")
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project) as session:
        training = session.load_context().config_loader["parameters"]["training"]
    assert training["lr"] == 0.5
    assert training["batch_size"] == 16  # sibling leaves of conf/base kept: soft merge


class _Node:
    def __init__(self, name: str, func, inputs=(), outputs=()) -> None:
        self.name, self.func, self.inputs, self.outputs = name, func, list(inputs), list(outputs)


class _Catalog(dict):
    def save(self, name: str, data) -> None:
        self[name] = data


def test_stage_timing_hook_hands_timings_to_the_report_node() -> None:
    """Lazy outputs (the image caches) do their work while being saved: that time counts too."""
    import time

    from facescan.pipelines.preprocess.nodes import cache_split  # stage "preprocess"

    cache = _Node("cache", cache_split, outputs=["train_cache"])
    report = _Node("report", print, inputs=["stage_timings"])
    pipeline = type("P", (), {"nodes": [cache, report]})()
    hook = StageTimingHook()
    catalog = _Catalog(stage_timings=None)
    hook.before_pipeline_run(run_params={}, pipeline=pipeline, catalog=catalog)
    assert catalog["stage_timings"] == {}  # exists before the report loads it
    assert hook.before_node_run(cache) is None
    hook.after_node_run(cache)
    hook.before_dataset_saved("train_cache")
    time.sleep(0.05)
    hook.after_dataset_saved("train_cache")
    handed = hook.before_node_run(report)
    assert handed is not None and handed["stage_timings"]["preprocess"] >= 0.05
    hook.after_node_run(report)
    hook.after_pipeline_run(catalog)
    assert set(catalog["stage_timings"]) == {"preprocess", "other"}


@pytest.mark.parametrize(
    ("module", "stage"), [("facescan.pipelines.training.nodes", "training"), ("os", "other")]
)
def test_stage_of(module: str, stage: str) -> None:
    def f() -> None: ...

    f.__module__ = module
    assert _stage_of(_Node("n", f)) == stage


def test_gpu_option_on_a_cpu_machine_fails_before_the_first_node(kedro_project: Path) -> None:
    """Kedro validates ``params:training`` against TrainConfig (the machine check included)."""
    import torch
    from kedro.validation.exceptions import ParameterValidationError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(
        ParameterValidationError,
        match=r"Parameter 'training': .*: training\.device: cuda was requested but no CUDA GPU",
    ):
        run_kedro(kedro_project, ["ablation"], params={"training.device": "cuda"})
    # Nothing ran: ingestion would have written the manifest first.
    assert not any((kedro_project / "data" / "02_intermediate").iterdir())


def test_a_run_that_writes_the_report_ends_with_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from kedro.io import DataCatalog
    from kedro_datasets.text import TextDataset

    report_file = tmp_path / "reporting" / "ablation_report.html"
    catalog = DataCatalog(datasets={"ablation_report": TextDataset(filepath=str(report_file))})
    node = _Node("render", print, outputs=["ablation_report"])
    hook = StageTimingHook()
    hook.before_pipeline_run(
        run_params={}, pipeline=type("P", (), {"nodes": [node]})(), catalog=catalog
    )
    with caplog.at_level(logging.INFO, logger="facescan.hooks"):
        hook.after_pipeline_run(catalog)
    assert caplog.records[-1].getMessage() == f"The ablation report: {report_file.resolve()}"
