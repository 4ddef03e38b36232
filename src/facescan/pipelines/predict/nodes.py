"""Prediction nodes: score new image files with a run's latest checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facescan.checkpoint import catalog_source
from facescan.data.imaging import check_background
from facescan.evaluation.config import PredictConfig
from facescan.evaluation.explain import explain_files
from facescan.evaluation.metrics import p_fake_from_logits, predict_labels
from facescan.evaluation.scoring import (
    checkpoint_threshold,
    list_image_files,
    load_run_model,
    resolve_num_workers,
    score_files,
)
from facescan.runtime import inference_settings

logger = logging.getLogger(__name__)


def _decoding(
    checkpoint: Mapping[str, Any], preprocess: Mapping[str, Any], background: Any, run: str
) -> tuple[int, tuple[int, int, int]]:
    """``max_size`` and ``background`` as the run's training images were decoded (the checkpoint
    records them; older checkpoints: the current parameters), warning when today's differ."""
    current = {
        "max_size": int(preprocess["max_size"]),
        "background": list(check_background(background, "data.background")),
    }
    trained = {k: v for k, v in (checkpoint.get("preprocess") or {}).items() if v is not None}
    for key, value in trained.items():
        if key in current and list(np.atleast_1d(value)) != list(np.atleast_1d(current[key])):
            name = "preprocess.max_size" if key == "max_size" else "data.background"
            logger.warning(
                "%s is %s but %s was trained on images decoded with %s; predict uses the "
                "training value, so the scores match what the model learned from",
                name,
                current[key],
                run,
                value,
            )
    chosen = {**current, **trained}
    colour = check_background(chosen["background"], "data.background")
    return int(chosen["max_size"]), colour


def predict_images(
    checkpoint: dict[str, Any],
    predict: PredictConfig,
    preprocess: dict[str, Any],
    background: Sequence[int],
    *,
    variant: str,
    namespace: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Score every image under ``predict.input_path`` with a trained run.

    Images are decoded, resized and centre-cropped exactly as the training caches were (at the
    checkpoint's cache and input sizes), in batches with a progress bar. Unreadable files are
    skipped and listed with the reason.

    Args:
        checkpoint: the run's ``{ns}.model`` (the latest version by default).
        predict: ``predict`` parameters.
        preprocess: ``preprocess`` parameters (``max_size``).
        background: ``data.background``, the colour under transparent pixels.
        variant: the run's variant key (a checkpoint of another variant is refused).
        namespace: the run's namespace, which names ``{ns}.model`` in messages; None = ``variant``.

    Returns:
        ``{ns}.predictions`` (``path``, ``p_fake``, ``label``: 1 fake when
        ``p_fake`` above the threshold, else 0 real: ``predict.threshold``, by default ``val``, the
        one training tuned on the validation images and stored in the checkpoint) sorted by path, and ``{ns}.predict_rejected``
        (``path``, ``reason``), and ``{ns}.explanations``: with ``predict.explain``, one
        class-activation map PNG per image (the first ``predict.explain_max`` by path) keyed by
        the file's stem; empty otherwise.

    Raises:
        ValueError: naming ``predict.input_path`` when it is not set, ``predict.device`` or
            ``predict.amp`` for a GPU option without a GPU, or ``{ns}.model`` when it is not a
            facescan checkpoint of ``variant``.
        FileNotFoundError: naming ``predict.input_path`` when it does not exist or holds no image.
    """
    cfg = PredictConfig.from_params(predict)
    threshold = (
        checkpoint_threshold(checkpoint, catalog_source(namespace or variant))
        if cfg.threshold == "val"
        else float(cfg.threshold)
    )
    max_size, background = _decoding(checkpoint, preprocess, background, namespace or variant)
    paths = list_image_files(cfg.input_path, name="predict.input_path")
    device, amp_dtype, channels_last = inference_settings(cfg.device, cfg.amp, prefix="predict")
    model = load_run_model(checkpoint, variant, namespace, device, channels_last)
    logger.info(
        "scoring %d files from %s with %s on %s",
        len(paths),
        cfg.input_path,
        checkpoint.get("namespace", variant),
        device,
    )
    scored, logits, rejected = score_files(
        model,
        paths,
        cache_size=int(checkpoint["cache_size"]),
        max_size=max_size,
        input_size=int(checkpoint["input_size"]),
        batch_size=cfg.batch_size,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        num_workers=resolve_num_workers(cfg.num_workers, "predict.num_workers", device.type),
        background=background,
        desc=f"predict {checkpoint.get('namespace', variant)}",
    )
    p_fake = p_fake_from_logits(logits) if len(scored) else []
    predictions = pd.DataFrame(
        {
            "path": scored,
            "p_fake": p_fake,
            "label": predict_labels(p_fake, threshold) if len(scored) else [],
        }
    ).astype({"path": str, "p_fake": float, "label": int})
    rejected_df = pd.DataFrame(rejected, columns=["path", "reason"])
    logger.info(
        "%d scored (%d called fake at p_fake > %g), %d skipped",
        len(predictions),
        int(predictions["label"].sum()),
        threshold,
        len(rejected_df),
    )
    explanations = {}
    if cfg.explain and len(scored):
        first = predictions.sort_values("path", ignore_index=True).head(cfg.explain_max)
        explanations = explain_files(
            model,
            first["path"].tolist(),
            first["p_fake"].tolist(),
            cache_size=int(checkpoint["cache_size"]),
            max_size=max_size,
            input_size=int(checkpoint["input_size"]),
            background=background,
            device=device,
            amp_dtype=amp_dtype,
            name=checkpoint.get("namespace", variant),
        )
        logger.info("wrote %d class-activation maps (predict.explain)", len(explanations))
    return predictions.sort_values("path", ignore_index=True), rejected_df, explanations


def make_submission(predictions: pd.DataFrame) -> pd.DataFrame:
    """The competition's submission: ``ImageID`` (file name without extension), ``Label`` (0/1).

    Sorted by ID: numerically when every ID is an integer (``2`` before ``10``), else as text.
    The catalog writes it without a header, like the competition's file.

    Args:
        predictions: ``{ns}.predictions``.

    Returns:
        ``{ns}.submission``.
    """
    ids = predictions["path"].map(lambda p: Path(p).stem)
    submission = pd.DataFrame({"ImageID": ids, "Label": predictions["label"].astype(int)})
    duplicated = submission["ImageID"][submission["ImageID"].duplicated(keep=False)]
    if len(duplicated):
        logger.warning(
            "%d files share an ImageID with another file (e.g. %s): the submission lists each; "
            "file names must be unique for a valid submission",
            len(duplicated),
            sorted(set(duplicated))[:5],
        )
    numeric = pd.to_numeric(submission["ImageID"], errors="coerce")
    if numeric.notna().all() and len(submission):
        order = numeric.argsort(kind="stable")
        return submission.iloc[order].reset_index(drop=True)
    return submission.sort_values("ImageID", kind="stable", ignore_index=True)
