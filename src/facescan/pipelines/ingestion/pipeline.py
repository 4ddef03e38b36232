"""The ``ingestion`` pipeline: images of the configured source -> ``image_manifest`` + ``rejected_images``."""

from kedro.pipeline import Pipeline, node

from .nodes import ingest_images


def create_pipeline(**kwargs) -> Pipeline:
    """One node: list, decode and check every image (see ``conf/base/parameters_ingestion.yml``)."""
    return Pipeline(
        [
            node(
                ingest_images,
                inputs=["params:data", "params:preprocess"],
                outputs=["image_manifest", "rejected_images"],
                name="ingest_images",
            )
        ]
    )
