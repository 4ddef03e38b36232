"""Project pipelines, and the one way the project's configuration is loaded outside a session.

The variant namespaces depend on the active environment's ``ablation`` parameters, which
:class:`facescan.context.FacescanContext` hands over (:func:`use_ablation`) when Kedro builds the
context, before the pipelines are loaded. Without a context (a bare import), the ``ablation`` of
``./conf`` (base + local) is read with :func:`config_loader`, the project's settings.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
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
from facescan.runs import expand_runs

#: The config loader's settings (``settings.CONFIG_LOADER_ARGS``): an environment, or ``--params
#: a.b=c``, overrides one leaf and keeps its siblings.
CONFIG_LOADER_ARGS: dict[str, Any] = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
}

_ABLATION: dict[str, Any] | None = None


def config_loader(
    conf_source: str | Path = "conf",
    env: str | None = None,
    runtime_params: dict[str, Any] | None = None,
) -> OmegaConfigLoader:
    """The project's configuration as ``kedro run --env env --params ...`` loads it."""
    return OmegaConfigLoader(
        str(conf_source), env=env, runtime_params=runtime_params, **CONFIG_LOADER_ARGS
    )


def use_ablation(config: dict[str, Any] | None) -> bool:
    """Make ``config`` the ``ablation`` parameters the pipelines are built from (None: read
    ``./conf`` again); return True when that changed them."""
    global _ABLATION
    changed = config != _ABLATION
    _ABLATION = copy.deepcopy(config)
    return changed


def active_ablation() -> dict[str, Any]:
    """The ``ablation`` parameters the pipelines are built from."""
    if _ABLATION is not None:
        return _ABLATION
    conf = Path.cwd() / "conf"
    return (config_loader(conf)["parameters"].get("ablation") or {}) if conf.is_dir() else {}


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    runs = expand_runs(active_ablation())
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
