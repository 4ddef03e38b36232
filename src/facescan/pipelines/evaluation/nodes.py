"""Evaluation nodes: score a run's checkpoint on the test (and validation) cache, and under
perturbations. Thin: they validate parameters, call :mod:`facescan.evaluation` and return data."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch

from facescan.checkpoint import catalog_source, check_trained_on, checkpoint_tta
from facescan.data.cache import ImageCache
from facescan.evaluation.config import EvaluationConfig
from facescan.evaluation.metrics import classification_metrics, json_ready
from facescan.evaluation.robustness import PerturbedImages
from facescan.evaluation.scoring import (
    load_run_model,
    resolve_num_workers,
    score_cache,
    summarise_scores,
)
from facescan.models import count_forward_flops, count_parameters, single_view
from facescan.runtime import inference_settings

logger = logging.getLogger(__name__)


#: Checkpoint entries copied into ``{ns}.metrics`` so that one file says what was evaluated.
CHECKPOINT_FACTS = (
    "namespace",
    "variant",
    "seed",
    "best_epoch",
    "best_val_acc",
    "best_val_loss",
    "train_seconds",
    "input_size",
    "cache_size",
    "data_fingerprint",
)


def _facts(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    facts = {k: checkpoint.get(k) for k in CHECKPOINT_FACTS}
    # How every score was computed (training.tta; older checkpoints: none).
    facts["tta"] = checkpoint_tta(checkpoint)
    facts["model_options"] = checkpoint.get("model_options")
    facts["training_config"] = checkpoint.get("config")
    facts["training_provenance"] = checkpoint.get("provenance")
    return facts


def _amp_name(dtype: torch.dtype | None) -> str:
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def _check_cache(cache: ImageCache, checkpoint: Mapping[str, Any], name: str) -> None:
    trained = checkpoint.get("cache_size")
    if trained is not None and int(trained) != int(cache.size):
        logger.warning(
            "%s holds %d px images but %s was trained from %d px images "
            "(preprocess.cache_size changed since training?): its scores may be off",
            name,
            cache.size,
            checkpoint.get("namespace"),
            trained,
        )


def evaluate_model(
    checkpoint: dict[str, Any],
    test_cache: ImageCache,
    val_cache: ImageCache,
    evaluation: EvaluationConfig,
    train_cache: ImageCache | None = None,
    *,
    variant: str,
    namespace: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score a trained run on the test split; tune a threshold on the validation split.

    Args:
        checkpoint: the run's ``{ns}.model``.
        test_cache: the test split's image cache.
        val_cache: the validation split's image cache.
        evaluation: ``evaluation`` parameters.
        train_cache: the training split's cache: with ``val_cache``, what the checkpoint must have
            been trained on (a model trained on another split is refused); None skips the check.
        variant: the run's variant key (a checkpoint of another variant is refused).
        namespace: the run's namespace, which names ``{ns}.model`` in messages; None = ``variant``.

    Returns:
        ``{ns}.test_predictions`` (``path``, ``label``, ``p_fake``, ``pred``) and ``{ns}.metrics``:
        the test metrics, intervals, tuned threshold, parameters, forward GFLOPs per image at the
        checkpoint's input size, measured images/s, and the checkpoint's training facts.
    """
    cfg = EvaluationConfig.from_params(evaluation)
    device, amp_dtype, channels_last = inference_settings(cfg.device, cfg.amp)
    model = load_run_model(checkpoint, variant, namespace, device, channels_last)  # checks it first
    if train_cache is not None:
        check_trained_on(checkpoint, train_cache, val_cache, catalog_source(namespace or variant))
    _check_cache(test_cache, checkpoint, "test_cache")
    input_size = int(checkpoint["input_size"])
    params = count_parameters(model)
    # One forward pass (tta: hflip scores with two; images_per_s is measured with them).
    flops = count_forward_flops(single_view(model), input_size)
    kwargs = {
        "input_size": input_size,
        "batch_size": cfg.batch_size,
        "device": device,
        "amp_dtype": amp_dtype,
        "channels_last": channels_last,
        "num_workers": resolve_num_workers(cfg.num_workers, "evaluation.num_workers", device.type),
    }
    val = score_cache(model, val_cache, **kwargs)  # first: it also warms up the timed test pass
    test = score_cache(model, test_cache, **kwargs)
    predictions, metrics = summarise_scores(
        test,
        list(test_cache.paths),
        cfg.bootstrap_kwargs(),
        val=val,
        val_threshold=checkpoint.get("val_threshold"),  # the one predict decides with
    )
    metrics.update(
        params=params,
        gflops=flops / 1e9,
        images_per_s=test.images_per_s,
        images_per_s_note=(
            f"test-set scoring incl. loading; batch {cfg.batch_size}, "
            f"{device.type}, amp {_amp_name(amp_dtype)}, channels_last "
            f"{channels_last}"
        ),
        test_cache_sha256=test_cache.meta.get("sha256"),
        evaluation={
            "device": str(device),
            "amp": _amp_name(amp_dtype),
            "channels_last": channels_last,
            "batch_size": cfg.batch_size,
        },
        **_facts(checkpoint),
    )
    logger.info(
        "%s: test acc %.4f (95%% CI %.4f-%.4f), loss %.4f, AUC %.4f, EER %.4f on %d images; "
        "%.2f GFLOPs/image, %.0f images/s",
        checkpoint.get("namespace", variant),
        metrics["acc"],
        metrics["acc_ci_low"],
        metrics["acc_ci_high"],
        metrics["loss"],
        metrics["auc"],
        metrics["eer"],
        metrics["n"],
        metrics["gflops"],
        metrics["images_per_s"],
    )
    return predictions, json_ready(metrics)


ROBUSTNESS_COLUMNS = ["perturbation", "acc", "auc", "loss", "n"]


def evaluate_robustness(
    checkpoint: dict[str, Any],
    test_cache: ImageCache,
    evaluation: EvaluationConfig,
    *,
    variant: str,
    namespace: str | None = None,
) -> pd.DataFrame:
    """Accuracy, AUC and loss on the test images under each configured perturbation.

    Args:
        checkpoint: the run's ``{ns}.model``.
        test_cache: the test split's image cache.
        evaluation: ``evaluation`` parameters (``robustness.enabled``, ``robustness.perturbations``).
        variant: the run's variant key.
        namespace: the run's namespace, which names ``{ns}.model`` in messages; None = ``variant``.

    Returns:
        ``{ns}.robustness``: one row per perturbation, ``clean`` first (``perturbation``, ``acc``,
        ``auc``, ``loss``, ``n``); no rows when ``evaluation.robustness.enabled`` is false.
    """
    cfg = EvaluationConfig.from_params(evaluation)
    if not cfg.robustness.enabled:
        logger.info("robustness stage disabled (evaluation.robustness.enabled: false)")
        return pd.DataFrame(columns=ROBUSTNESS_COLUMNS)
    device, amp_dtype, channels_last = inference_settings(cfg.device, cfg.amp)
    model = load_run_model(checkpoint, variant, namespace, device, channels_last)
    kwargs = {
        "input_size": int(checkpoint["input_size"]),
        "batch_size": cfg.batch_size,
        "device": device,
        "amp_dtype": amp_dtype,
        "channels_last": channels_last,
        "num_workers": resolve_num_workers(cfg.num_workers, "evaluation.num_workers", device.type),
    }
    rows = []
    for name, images in [("clean", test_cache)] + [
        (p.name, PerturbedImages(test_cache, p)) for p in cfg.perturbations
    ]:
        scores = score_cache(model, images, **kwargs)
        m = classification_metrics(scores.labels, scores.logits)
        rows.append(
            {"perturbation": name, "acc": m["acc"], "auc": m["auc"], "loss": m["loss"], "n": m["n"]}
        )
    table = pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)
    logger.info(
        "%s robustness (acc): %s",
        checkpoint.get("namespace", variant),
        ", ".join(f"{r.perturbation} {r.acc:.3f}" for r in table.itertuples()),
    )
    return table
