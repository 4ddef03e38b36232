"""The ``training`` pipeline: the same one-node sub-pipeline under each run's namespace.

Per namespace ``ns``: inputs the shared ``train_cache`` / ``val_cache`` and the global
``training``, ``model``, ``ablation`` and ``preprocess`` parameters; outputs ``{ns}.model`` (a
versioned :class:`~facescan.datasets.TorchCheckpointDataset`) and ``{ns}.history``.
``kedro run --pipelines training --namespaces <ns>`` trains one run.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from facescan.pipelines.binding import bind
from facescan.runs import VariantRun

from .nodes import train_model

SHARED_INPUTS = {"train_cache", "val_cache"}
PARAMETERS = {"params:training", "params:model", "params:ablation", "params:preprocess"}


def create_pipeline(runs: list[VariantRun]) -> Pipeline:
    """One ``train_model`` node per run, namespaced by ``run.namespace``.

    Args:
        runs: the runs of the active configuration (:func:`facescan.runs.expand_runs`).

    Returns:
        The training pipeline (empty when there are no runs).
    """
    pipelines = []
    for run in runs:
        base = Pipeline(
            [
                Node(
                    bind(train_model, namespace=run.namespace, variant=run.variant, seed=run.seed),
                    inputs=[
                        "train_cache",
                        "val_cache",
                        "params:training",
                        "params:model",
                        "params:ablation",
                        "params:preprocess",
                    ],
                    outputs=["model", "history"],
                    name="train_model",
                )
            ]
        )
        pipelines.append(
            Pipeline(base, namespace=run.namespace, inputs=SHARED_INPUTS, parameters=PARAMETERS)
        )
    return Pipeline(pipelines)
