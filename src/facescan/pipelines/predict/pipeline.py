"""The ``predict`` pipeline: new images -> scores, per run (select one with ``--namespaces``).

Everything runs inside the run's namespace, so ``--namespaces <variant>`` keeps a complete
pipeline; it reads the latest ``{ns}.model`` from the catalog and never needs training to run.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from facescan.pipelines.binding import bind
from facescan.runs import VariantRun

from .nodes import make_submission, predict_images


def create_pipeline(runs: list[VariantRun]) -> Pipeline:
    """One predict sub-pipeline per run, namespaced by ``run.namespace``."""
    pipelines = []
    for run in runs:
        predict = bind(predict_images, variant=run.variant, namespace=run.namespace)
        base = Pipeline(
            [
                Node(
                    predict,
                    inputs=[
                        "model",
                        "params:predict",
                        "params:preprocess",
                        "params:data.background",
                    ],
                    outputs=["predictions", "predict_rejected", "explanations"],
                    name="predict_images",
                ),
                Node(
                    make_submission,
                    inputs="predictions",
                    outputs="submission",
                    name="make_submission",
                ),
            ]
        )
        pipelines.append(
            Pipeline(
                base,
                namespace=run.namespace,
                parameters={"params:predict", "params:preprocess", "params:data.background"},
            )
        )
    return Pipeline(pipelines)
