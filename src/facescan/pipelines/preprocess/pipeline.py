"""The ``preprocess`` pipeline: split_manifest -> train_cache, val_cache, test_cache."""

from kedro.pipeline import Node, Pipeline

from facescan.pipelines.binding import bind
from facescan.pipelines.split.nodes import SPLITS

from .nodes import cache_split


def create_pipeline(**kwargs) -> Pipeline:
    """One node per split, each decoding its images once into a memory-mapped uint8 cache."""
    nodes = []
    for split in SPLITS:
        nodes.append(
            Node(
                bind(cache_split, split=split, name=f"cache_{split}"),
                inputs=["split_manifest", "params:preprocess", "params:data.background"],
                outputs=f"{split}_cache",
                name=f"cache_{split}_images",
            )
        )
    return Pipeline(nodes)
