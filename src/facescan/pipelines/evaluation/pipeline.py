"""The ``evaluation`` pipeline: the same two nodes under each run's namespace.

Inputs per namespace ``ns``: ``{ns}.model`` (the latest version unless ``--load-versions`` says
otherwise) and the shared ``test_cache`` / ``val_cache``; outputs ``{ns}.test_predictions``,
``{ns}.metrics`` and ``{ns}.robustness``.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from facescan.pipelines.binding import bind
from facescan.runs import VariantRun

from .nodes import evaluate_model, evaluate_robustness


def create_pipeline(runs: list[VariantRun]) -> Pipeline:
    """One evaluation sub-pipeline per run, namespaced by ``run.namespace``."""
    pipelines = []
    for run in runs:
        base = Pipeline(
            [
                Node(
                    bind(evaluate_model, variant=run.variant, namespace=run.namespace),
                    inputs=["model", "test_cache", "val_cache", "params:evaluation", "train_cache"],
                    outputs=["test_predictions", "metrics"],
                    name="evaluate_model",
                ),
                Node(
                    bind(evaluate_robustness, variant=run.variant, namespace=run.namespace),
                    inputs=["model", "test_cache", "params:evaluation"],
                    outputs="robustness",
                    name="evaluate_robustness",
                ),
            ]
        )
        pipelines.append(
            Pipeline(
                base,
                namespace=run.namespace,
                inputs={"train_cache", "test_cache", "val_cache"},
                parameters={"params:evaluation"},
            )
        )
    return Pipeline(pipelines)
