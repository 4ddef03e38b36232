"""Training node: builds the run's objects from parameters and calls the engine (thin)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from facescan.checkpoint import HISTORY_COLUMNS
from facescan.data.cache import ImageCache
from facescan.data.transforms import Degradations
from facescan.models import resolve_options
from facescan.training import TrainConfig, fit
from facescan.training.config import ModelParams

logger = logging.getLogger(__name__)


def train_model(
    train_cache: ImageCache,
    val_cache: ImageCache,
    training: TrainConfig,
    model: ModelParams,
    ablation: dict[str, Any],
    preprocess: dict[str, Any],
    *,
    namespace: str,
    variant: str,
    seed: int | None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train one variant run (or reuse it when already trained) and return its best checkpoint.

    Args:
        train_cache: the training images.
        val_cache: the validation images (early stopping and the best epoch).
        training: ``params:training``, validated by Kedro against :class:`TrainConfig` before any
            node runs (a plain dict is validated here).
        model: ``params:model`` (:class:`ModelParams`): ``pretrained`` and options applied on top
            of every variant's (sizes).
        ablation: ``params:ablation``: its ``custom_variants`` define user variants.
        preprocess: ``params:preprocess``: ``input_size`` is the network input side.
        namespace: the run's Kedro namespace (bound when the pipeline is built).
        variant: the run's variant key (bound).
        seed: the run's seed from ``ablation.seeds``; None = ``training.seed`` (bound).

    Returns:
        The checkpoint dict (``{ns}.model``) and the per-epoch history table (``{ns}.history``).

    Raises:
        ValueError: naming the parameter when the configuration is unusable.
    """
    config = TrainConfig.parse(training)
    model = ModelParams.parse(model)
    options = resolve_options(
        variant, (ablation or {}).get("custom_variants") or {}, **model.overrides()
    )
    if "input_size" not in (preprocess or {}):
        raise ValueError("preprocess.input_size is not set (the side of the network input)")
    degradations = Degradations.from_params((preprocess or {}).get("augment"))
    checkpoint = fit(
        namespace=namespace,
        variant=variant,
        model_options=options,
        train_cache=train_cache,
        val_cache=val_cache,
        config=config,
        input_size=int(preprocess["input_size"]),
        seed=seed,
        pretrained=model.pretrained,
        degradations=degradations,
    )
    history = pd.DataFrame(checkpoint["history"], columns=list(HISTORY_COLUMNS))
    return checkpoint, history
