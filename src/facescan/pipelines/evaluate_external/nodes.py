"""External evaluation: another dataset (``external.source``), scored by the trained runs.

The data part (ingest -> cache) is shared by all runs and mirrors the main data pipeline; the
scoring part runs under each run's namespace. ``--namespaces`` keeps only the scoring, which then
reads ``external_cache`` from disk: :func:`evaluate_external` refuses a cache built from another
``external`` configuration instead of silently scoring stale data.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pandas as pd

from facescan.checkpoint import catalog_source, checkpoint_tta
from facescan.data.cache import ImageCache
from facescan.evaluation.config import EvaluationConfig
from facescan.evaluation.metrics import json_ready
from facescan.evaluation.scoring import (
    checkpoint_threshold,
    load_model,
    resolve_num_workers,
    score_cache,
    summarise_scores,
)
from facescan.evaluation.tables import RunResult, per_source_table
from facescan.pipelines.ingestion.nodes import ingest_images
from facescan.runtime import inference_settings

logger = logging.getLogger(__name__)

_SOURCE_KEYS = {"type", "path", "labels_csv", "classes"}


def resolve_external_data(data: dict[str, Any], external: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` block the ingestion node reads, with ``external.source`` as its source.

    ``external.synthetic`` overrides ``data.synthetic`` key by key (its own seed, difficulty and
    output folder), so the external synthetic set differs from the training one.

    Args:
        data: ``data`` parameters.
        external: ``external`` parameters (``source``, ``synthetic``).

    Returns:
        A copy of ``data`` with ``source`` and ``synthetic`` replaced.

    Raises:
        ValueError: naming ``external.source`` when it is missing or has unknown keys.
    """
    source = (external or {}).get("source")
    if not isinstance(source, dict) or "type" not in source:
        raise ValueError(
            "external.source must be a mapping with at least `type` (folder | csv | synthetic), "
            f"got {source!r}"
        )
    unknown = sorted(set(source) - _SOURCE_KEYS)
    if unknown:
        raise ValueError(
            f"external.source: unknown key(s) {unknown}; valid: {sorted(_SOURCE_KEYS)}"
        )
    resolved = copy.deepcopy(dict(data))
    resolved["source"] = {**resolved.get("source", {}), **copy.deepcopy(source)}
    resolved["synthetic"] = {
        **resolved.get("synthetic", {}),
        **copy.deepcopy((external or {}).get("synthetic") or {}),
    }
    if _describe(resolved) == _describe(data):
        logger.warning(
            "external.source describes the same images as data.source: the 'external' metrics "
            "would measure nothing new (set external.source.path, or another external.synthetic "
            "seed)"
        )
    return resolved


def _describe(data: dict[str, Any]) -> dict[str, Any]:
    source = dict(data.get("source") or {})
    if source.get("type") == "synthetic":
        source["synthetic"] = dict(data.get("synthetic") or {})
    return json_ready(source)


def ingest_external_images(
    external_data: dict[str, Any], preprocess: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ingestion node on the external source; its errors name ``external.*`` parameters.

    Returns:
        ``external_manifest`` and ``external_rejected_images``, as ``image_manifest`` and
        ``rejected_images`` for the training data.
    """
    try:
        return ingest_images(external_data, preprocess)
    except (ValueError, FileNotFoundError) as err:
        if type(err) not in (ValueError, FileNotFoundError):
            raise
        message = str(err).replace("data.source", "external.source")
        raise type(err)(message.replace("data.synthetic", "external.synthetic")) from err


def tag_external_split(external_manifest: pd.DataFrame) -> pd.DataFrame:
    """The external manifest as a one-split manifest (``split = "external"``) for caching."""
    if external_manifest.empty:
        raise ValueError("external.source yielded no usable image (see external_rejected_images)")
    return external_manifest.assign(split="external")


def stamp_external_source(
    external_cache: ImageCache, external_data: dict[str, Any]
) -> dict[str, Any]:
    """Record what ``external_cache`` was built from; written only once the cache exists."""
    return {
        "source": _describe(external_data),
        "cache_sha256": external_cache.sha256,
        "count": len(external_cache),
    }


def evaluate_external(
    checkpoint: dict[str, Any],
    external_cache: ImageCache,
    external_source: dict[str, Any],
    data: dict[str, Any],
    external: dict[str, Any],
    evaluation: EvaluationConfig,
    external_manifest: pd.DataFrame | None = None,
    *,
    variant: str,
    namespace: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score a run on the external set: the same metrics and intervals as on the test split, at
    0.5 and at the threshold training tuned (``*_at_val_threshold``), and per image source.

    Args:
        checkpoint: the run's ``{ns}.model`` (latest version unless ``--load-versions``).
        external_cache: the external images' cache.
        external_source: what that cache was built from (:func:`stamp_external_source`).
        data: ``data`` parameters.
        external: ``external`` parameters, to check the cache is current.
        evaluation: ``evaluation`` parameters (batch size, device, bootstrap).
        external_manifest: the external images' manifest (its ``source`` column: camera or
            generator per image) for ``per_source``; None leaves it out.
        variant: the run's variant key.
        namespace: the run's namespace, which names ``{ns}.model`` in messages; None = ``variant``.

    Returns:
        ``{ns}.external_predictions`` and ``{ns}.external_metrics``.

    Raises:
        ValueError: when ``external_cache`` was built from another ``external`` configuration.
    """
    current = _describe(resolve_external_data(data, external))
    if external_source.get("source") != current or (
        external_source.get("cache_sha256") != external_cache.sha256
    ):
        raise ValueError(
            f"external_cache was built from external.source {external_source.get('source')!r}, "
            f"but the configuration now says {current!r}: rebuild it with "
            "`kedro run --pipelines evaluate_external` (without --namespaces)"
        )
    cfg = EvaluationConfig.from_params(evaluation)
    device, amp_dtype, channels_last = inference_settings(cfg.device, cfg.amp)
    model = load_model(
        checkpoint,
        expected_variant=variant,
        device=device,
        channels_last=channels_last,
        source=catalog_source(namespace or variant),
    )
    scores = score_cache(
        model,
        external_cache,
        input_size=int(checkpoint["input_size"]),
        batch_size=cfg.batch_size,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        num_workers=resolve_num_workers(cfg.num_workers, "evaluation.num_workers", device.type),
    )
    threshold = checkpoint_threshold(checkpoint, catalog_source(namespace or variant))
    predictions, metrics = summarise_scores(
        scores, list(external_cache.paths), cfg.bootstrap_kwargs(), val_threshold=threshold
    )
    metrics.update(
        namespace=checkpoint.get("namespace"),
        variant=checkpoint.get("variant"),
        seed=checkpoint.get("seed"),
        tta=checkpoint_tta(checkpoint),
        external_source=external_source.get("source"),
        external_cache_sha256=external_cache.sha256,
        images_per_s=scores.images_per_s,
        data_fingerprint=checkpoint.get("data_fingerprint"),
    )
    if external_manifest is not None and "source" in external_manifest:
        sources = dict(
            zip(external_manifest["path"].astype(str), external_manifest["source"], strict=True)
        )
        run = RunResult(namespace or variant, variant, checkpoint.get("seed"), metrics, predictions)
        boot = cfg.bootstrap
        metrics["per_source"] = per_source_table(
            [run],
            sources,
            n_resamples=boot.n_resamples,
            confidence=boot.confidence,
            seed=boot.seed,
        ).to_dict("records")
    logger.info(
        "%s on the external set: acc %.4f (95%% CI %.4f-%.4f), AUC %.4f, EER %.4f, %d images",
        checkpoint.get("namespace", variant),
        metrics["acc"],
        metrics["acc_ci_low"],
        metrics["acc_ci_high"],
        metrics["auc"],
        metrics["eer"],
        metrics["n"],
    )
    return predictions, json_ready(metrics)
