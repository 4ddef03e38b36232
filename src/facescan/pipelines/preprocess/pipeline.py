"""The ``preprocess`` pipeline: split_manifest -> train_cache, val_cache, test_cache."""

from functools import partial

from kedro.pipeline import Node, Pipeline

from facescan.pipelines.split.nodes import SPLITS

from .nodes import cache_split


def create_pipeline(**kwargs) -> Pipeline:
    """One node per split, each decoding its images once into a memory-mapped uint8 cache."""
    nodes = []
    for split in SPLITS:
        func = partial(cache_split, split=split)
        # Kedro and kedro-viz name nodes and show code by these attributes.
        func.__name__ = f"cache_{split}"
        func.__module__ = cache_split.__module__
        func.__doc__ = cache_split.__doc__
        nodes.append(
            Node(
                func,
                inputs=["split_manifest", "params:preprocess", "params:data.background"],
                outputs=f"{split}_cache",
                name=f"cache_{split}_images",
            )
        )
    return Pipeline(nodes)
