"""Train one variant end to end: skip, resume or start; one worker in-process or N through torch
elastic; return the best checkpoint.

:func:`fit` is what the Kedro node and the standalone entry point call. It decides from the run's
fingerprint (resolved model options + the training options that change results + the data's
content hash) whether the run already finished (skip and return its best checkpoint), can resume
(continue after the last checkpointed epoch) or must start over, then runs
:func:`facescan.training.loop.run_worker` in this process (one worker, or under torchrun) or in
``nproc_per_node`` processes started by torch's elastic launcher, and reads the best weights
back from rank 0's ``best.pt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facescan import provenance
from facescan.data.cache import ImageCache
from facescan.training import distributed, runtime
from facescan.training.config import TrainConfig
from facescan.training.run_files import RunFiles

__all__ = ["RunSpec", "check_batch_split", "data_fingerprint", "fit", "run_fingerprint"]

logger = logging.getLogger(__name__)

# Bump when a change of the training code makes old runs not comparable (forces retraining).
_ENGINE_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to train one run (picklable: sent to spawned workers).

    Attributes:
        namespace: the Kedro namespace (names the side-file folders).
        variant: the variant key (for messages and the checkpoint).
        seed: the effective seed.
        model_options: resolved options for :func:`facescan.models.create_model`.
        config: the validated training configuration.
        train_cache: training images (memmap handle, reopened by each worker).
        val_cache: validation images.
        input_size: the network input side.
        fingerprint: the run fingerprint (see :func:`run_fingerprint`).
        data_fingerprint: the caches' content hash (see :func:`data_fingerprint`).
        run_dir: this run's resume folder.
        provenance: :func:`facescan.provenance.collect` of the launching process.
        finished_checked: the caller already found no finished run to reuse (single node);
            rank 0 then only looks for a resume state.
    """

    namespace: str
    variant: str
    seed: int
    model_options: dict[str, Any]
    config: TrainConfig
    train_cache: ImageCache
    val_cache: ImageCache
    input_size: int
    fingerprint: str
    data_fingerprint: str
    run_dir: str
    provenance: dict[str, Any]
    finished_checked: bool = False


def data_fingerprint(train_cache: ImageCache, val_cache: ImageCache) -> str:
    """Hash of the train and validation caches' content (pixels, labels and paths)."""
    digest = hashlib.sha256(f"train:{train_cache.sha256};val:{val_cache.sha256}".encode())
    return digest.hexdigest()


def run_fingerprint(
    model_options: Mapping[str, Any],
    config: TrainConfig,
    seed: int,
    input_size: int,
    data_hash: str,
) -> str:
    """What decides a run's weights, hashed: equal fingerprints may resume or skip each other.

    Paths, worker and thread counts, ``compile`` and the checkpoint interval are left out (they
    change speed, not results), and so is the number of DDP workers, so a run may resume on
    another number of GPUs (the global batch is the same). Options that cannot change this
    variant (a ViT option without a ViT, ``transformer_lr_scale`` without one) are left out too.
    """
    from facescan.models.variants import effective_options

    model = effective_options(model_options)
    training = {**config.result_affecting(), "seed": seed}
    if model.get("vit") is None:
        training["transformer_lr_scale"] = None
    payload = {
        "engine": _ENGINE_VERSION,
        "model": model,
        "training": training,
        "input_size": input_size,
        "data": data_hash,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_batch_split(batch_size: int, world_size: int) -> None:
    """The global batch must split evenly across the DDP workers.

    Raises:
        ValueError: naming ``training.batch_size`` otherwise.
    """
    if batch_size % world_size:
        raise ValueError(
            f"training.batch_size ({batch_size}) is the global batch and must split evenly "
            f"across the {world_size} DDP workers (training.distributed.nproc_per_node x nodes); "
            f"use a multiple of {world_size}"
        )


def fit(
    *,
    namespace: str,
    variant: str,
    model_options: Mapping[str, Any],
    train_cache: ImageCache,
    val_cache: ImageCache,
    config: TrainConfig,
    input_size: int,
    seed: int | None = None,
) -> dict[str, Any] | None:
    """Train one run and return its best checkpoint (see :mod:`facescan.training.checkpoint`).

    Args:
        namespace: the Kedro namespace (side files go to ``<resume_dir>/<namespace>`` and
            ``<tensorboard_dir>/<namespace>``).
        variant: the variant key.
        model_options: resolved model options (``facescan.models.resolve_options``).
        train_cache: training images.
        val_cache: validation images.
        config: the validated ``training`` parameters.
        input_size: the network input side (``preprocess.input_size``).
        seed: the run's seed; None = ``training.seed``.

    Returns:
        The best checkpoint dict; None on ranks other than 0 under a multi-node torchrun job.

    Raises:
        ValueError: naming the parameter for a bad configuration (batch not divisible by the
            workers, GPU options on a machine without one, ...).
        TrainingDivergedError: when the loss becomes NaN or infinite.
        WorkerFailedError: when a DDP worker fails (with its message).
    """
    seed = config.seed if seed is None else int(seed)
    options = dict(model_options)
    data_hash = data_fingerprint(train_cache, val_cache)
    fingerprint = run_fingerprint(options, config, seed, input_size, data_hash)
    temporary = config.resume_dir is None
    run_dir = Path(
        tempfile.mkdtemp(prefix=f"facescan-{namespace}-")
        if temporary
        else Path(config.resume_dir) / namespace
    )
    files = RunFiles(run_dir)
    torchrun = distributed.under_torchrun()
    try:
        # Under torchrun, rank 0 decides inside the job instead (nodes may not share disks).
        finished = None if torchrun or config.force else files.finished(fingerprint)
        if finished is not None:
            logger.info(
                "Skipping %s: already trained with the same configuration and data (best val "
                "acc %.4f at epoch %d; %s). Set training.force: true to retrain.",
                namespace,
                finished["best_val_acc"],
                finished["best_epoch"],
                files.best,
            )
            return finished
        # The device type only: a CUDA context here would hold GPU memory for the whole run.
        device = runtime.device_type(config.device)
        nproc = (
            distributed.dist_env().local_world_size
            if torchrun
            else runtime.resolve_nproc(config.distributed.nproc_per_node, device)
        )
        # Configuration errors surface here, before any worker is spawned.
        if not torchrun:
            check_batch_split(config.batch_size, nproc)
        from facescan.training.loop import class_weight_tensor, run_worker

        class_weight_tensor(
            config.class_weights, train_cache.labels, int(options.get("num_classes", 2))
        )
        spec = RunSpec(
            namespace=namespace,
            variant=variant,
            seed=seed,
            model_options=options,
            config=config,
            train_cache=train_cache,
            val_cache=val_cache,
            input_size=int(input_size),
            fingerprint=fingerprint,
            data_fingerprint=data_hash,
            run_dir=str(run_dir),
            provenance=provenance.collect(),
            finished_checked=not torchrun,
        )
        if torchrun or nproc == 1:
            run_worker(spec)
            if torchrun and not distributed.dist_env().primary:
                return None
        else:
            distributed.launch(
                run_worker, (spec,), nproc, timeout_s=config.distributed.timeout_s, name=namespace
            )
        # The weights come back through rank 0's file, as written (not through a pipe).
        return files.load_best()
    finally:
        if temporary:
            shutil.rmtree(run_dir, ignore_errors=True)
