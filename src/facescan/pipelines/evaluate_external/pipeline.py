"""The ``evaluate_external`` pipeline: ingest ``external.source`` -> cache -> score each run.

Shared (un-namespaced) nodes build ``external_cache`` with the same ingestion and preprocessing
as the training data; one namespaced node per run scores it. ``--namespaces`` keeps only the chosen
runs' scoring nodes; :class:`~facescan.pipelines.evaluate_external.hooks.ExternalDataHook` then runs
the shared data nodes first, so the cache always follows the current ``external`` configuration.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from facescan.pipelines.binding import bind
from facescan.pipelines.preprocess.nodes import cache_split
from facescan.runs import VariantRun

from .nodes import (
    evaluate_external,
    ingest_external_images,
    resolve_external_data,
    stamp_external_source,
    tag_external_split,
)


def create_pipeline(runs: list[VariantRun]) -> Pipeline:
    """The external data nodes plus one scoring node per run."""
    cache_external = bind(cache_split, split="external")
    data = Pipeline(
        [
            Node(
                resolve_external_data,
                inputs=["params:data", "params:external"],
                outputs="external_data",
                name="resolve_external_data",
            ),
            Node(
                ingest_external_images,
                inputs=["external_data", "params:preprocess"],
                outputs=["external_manifest", "external_rejected_images"],
                name="ingest_external_images",
            ),
            Node(
                tag_external_split,
                inputs="external_manifest",
                outputs="external_split_manifest",
                name="tag_external_split",
            ),
            Node(
                cache_external,
                inputs=["external_split_manifest", "params:preprocess", "params:data.background"],
                outputs="external_cache",
                name="cache_external_images",
            ),
            Node(
                stamp_external_source,
                inputs=["external_cache", "external_data"],
                outputs="external_source",
                name="stamp_external_source",
            ),
        ]
    )
    scoring = []
    for run in runs:
        score = bind(evaluate_external, variant=run.variant, namespace=run.namespace)
        base = Pipeline(
            [
                Node(
                    score,
                    inputs=[
                        "model",
                        "external_cache",
                        "external_source",
                        "params:data",
                        "params:external",
                        "params:evaluation",
                        "external_manifest",
                    ],
                    outputs=["external_predictions", "external_metrics"],
                    name="evaluate_external",
                ),
            ]
        )
        scoring.append(
            Pipeline(
                base,
                namespace=run.namespace,
                inputs={"external_cache", "external_source", "external_manifest"},
                parameters={"params:data", "params:external", "params:evaluation"},
            )
        )
    return data + Pipeline(scoring)
