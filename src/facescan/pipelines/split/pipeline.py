"""The ``split`` pipeline: image_manifest -> split_manifest."""

from kedro.pipeline import Node, Pipeline

from .nodes import split_images


def create_pipeline(**kwargs) -> Pipeline:
    """Stratified, seeded train/val/test split of the ingested images."""
    return Pipeline(
        [
            Node(
                split_images,
                inputs=["image_manifest", "params:split"],
                outputs="split_manifest",
                name="split_images",
            )
        ]
    )
