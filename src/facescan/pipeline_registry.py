"""Project pipelines.

The variant namespaces depend on the active environment's ``ablation`` parameters, which
:class:`facescan.hooks.AblationRegistryHook` hands over before the pipelines are loaded. When no
session ran the hook (a bare import), the base configuration under ``./conf`` is read instead.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kedro.pipeline import Pipeline

from facescan.pipelines import (
    evaluate_external,
    evaluation,
    ingestion,
    predict,
    preprocess,
    reporting,
    split,
    training,
)
from facescan.pipelines.runs import expand_runs

_ABLATION_CONFIG: dict[str, Any] | None = None


def set_ablation_config(config: dict[str, Any]) -> bool:
    """Store the active ``ablation`` parameters; return True when they changed."""
    global _ABLATION_CONFIG
    changed = config != _ABLATION_CONFIG
    _ABLATION_CONFIG = copy.deepcopy(config)
    return changed


def _ablation_config() -> dict[str, Any]:
    if _ABLATION_CONFIG is not None:
        return _ABLATION_CONFIG
    conf = Path.cwd() / "conf"
    if conf.is_dir():
        from kedro.config import OmegaConfigLoader

        loader = OmegaConfigLoader(
            str(conf),
            base_env="base",
            default_run_env="local",
            merge_strategy={"parameters": "soft"},
        )
        return loader["parameters"].get("ablation") or {}
    return {}


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    runs = expand_runs(_ablation_config())
    data = ingestion.create_pipeline() + split.create_pipeline() + preprocess.create_pipeline()
    train = training.create_pipeline(runs)
    evaluate = evaluation.create_pipeline(runs)
    report = reporting.create_pipeline(runs)
    ablation = data + train + evaluate + report
    return {
        "__default__": ablation,
        "ablation": ablation,
        "data": data,
        "ingestion": ingestion.create_pipeline(),
        "split": split.create_pipeline(),
        "preprocess": preprocess.create_pipeline(),
        "training": train,
        "evaluation": evaluate,
        "reporting": report,
        "predict": predict.create_pipeline(runs),
        "evaluate_external": evaluate_external.create_pipeline(runs),
    }
