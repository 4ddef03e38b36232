"""Train one variant end to end: skip, resume or start; one worker in-process or N through torch
elastic; return the best checkpoint.

:func:`fit` is what the Kedro node and the standalone entry point call. It decides from the run's
fingerprint (resolved model options + the training options that change results + the data's
content hash) whether the run already finished (skip and return its best checkpoint), can resume
(continue after the last checkpointed epoch) or must start over, then runs
:func:`facescan.training.trainer.run_worker` in this process (one worker, or under torchrun) or in
``nproc_per_node`` processes started by torch's elastic launcher, and reads the best weights
back from rank 0's ``best.pt``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facescan import provenance, runtime
from facescan.checkpoint import data_fingerprint
from facescan.data.cache import ImageCache
from facescan.data.transforms import Degradations
from facescan.models.pretrained import pretrained_identity
from facescan.models.variants import effective_options
from facescan.training import distributed
from facescan.training.config import TrainConfig
from facescan.training.state import RunFiles
from facescan.training.trainer import RunSpec, check_batch_split, class_weight_tensor, run_worker

__all__ = ["code_fingerprint", "data_fingerprint", "fit", "run_fingerprint"]

logger = logging.getLogger(__name__)

# Bump when a change of the training code makes old runs not comparable (forces retraining).
_ENGINE_VERSION = 1

#: The code whose changes can change trained weights: any edit of it retrains (its hash is part
#: of the run fingerprint), so a fixed bug never leaves a run trained by the old code "finished".
_WEIGHT_CODE = (
    "models",
    "training",
    "runtime.py",
    "checkpoint.py",
    "data/loader.py",
    "data/transforms.py",
)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of the source of the model, the training engine and the training-time data path."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in _WEIGHT_CODE:
        path = root / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def run_fingerprint(
    model_options: Mapping[str, Any],
    config: TrainConfig,
    seed: int,
    input_size: int,
    data_hash: str,
    pretrained: str | None = None,
    world_size: int = 1,
    degradations: Degradations | None = None,
) -> str:
    """What decides a run's weights, hashed: equal fingerprints may resume or skip each other.

    Paths, loader worker and thread counts, ``compile`` and the checkpoint interval are left out
    (they change speed, not results). The number of DDP workers is in: BatchNorm statistics depend
    on it (each worker normalises its share of the batch unless SyncBatchNorm is on, and DDP keeps
    rank 0's running statistics), so a run resumes only on as many workers as it started with.
    Options that cannot change this variant (a ViT option without a ViT,
    ``transformer_lr_scale`` without one) are left out, and the source of the weight-deciding code
    (:func:`code_fingerprint`) is in.
    """
    # How the weights start hashes as when it was a model option (fingerprints stay the same).
    model = {**effective_options(model_options), "pretrained": pretrained}
    training = {**config.result_affecting(), "seed": seed}
    if model.get("vit") is None:
        training["transformer_lr_scale"] = None
    payload = {
        "engine": _ENGINE_VERSION,
        "code": code_fingerprint(),
        "model": model,
        "training": training,
        "input_size": input_size,
        "data": data_hash,
        # BatchNorm without SyncBatchNorm normalises over each worker's share of the batch, and
        # DDP keeps rank 0's running statistics: the weights depend on the number of workers.
        "world_size": world_size,
        **(
            {"augment": degradations.to_params()}
            if degradations is not None and degradations.active
            else {}
        ),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


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
    pretrained: str | None = None,
    degradations: Degradations | None = None,
) -> dict[str, Any] | None:
    """Train one run and return its best checkpoint (see :mod:`facescan.checkpoint`).

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
        pretrained: ImageNet resnet50 weights to start from (``model.pretrained``: a file, or
            ``imagenet``: torchvision's, downloaded once into torch.hub's cache); None = random.
        degradations: training-time blur / JPEG (``preprocess.augment``); None = none.

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
    torchrun = distributed.under_torchrun()
    # The device type only: a CUDA context here would hold GPU memory for the whole run.
    device = runtime.device_type(config.device)
    nproc = (
        distributed.dist_env().local_world_size
        if torchrun
        else runtime.resolve_nproc(config.distributed.nproc_per_node, device)
    )
    world_size = distributed.dist_env().world_size if torchrun else nproc
    # The weights' identity (file hash), not their path; resolves (downloads) imagenet once,
    # here, before any worker starts.
    identity = pretrained_identity(pretrained)
    fingerprint = run_fingerprint(
        options,
        config,
        seed,
        input_size,
        data_hash,
        identity,
        world_size=world_size,
        degradations=degradations,
    )
    temporary = config.resume_dir is None
    run_dir = Path(
        tempfile.mkdtemp(prefix=f"facescan-{namespace}-")
        if temporary
        else Path(config.resume_dir) / namespace
    )
    files = RunFiles(run_dir)
    try:
        # Under torchrun, rank 0 decides inside the job instead (nodes may not share disks).
        decision = None if torchrun else files.decide(fingerprint, config.force, namespace)
        if decision == "skip":
            return files.load_best()
        # Configuration errors surface here, before any worker is spawned.
        if not torchrun:
            check_batch_split(config.batch_size, nproc)
        class_weight_tensor(
            config.class_weights, train_cache.labels, int(options.get("num_classes", 2))
        )
        spec = RunSpec(
            namespace=namespace,
            variant=variant,
            seed=seed,
            model_options=options,
            pretrained=pretrained,
            degradations=degradations,
            config=config,
            train_cache=train_cache,
            val_cache=val_cache,
            input_size=int(input_size),
            fingerprint=fingerprint,
            data_fingerprint=data_hash,
            run_dir=str(run_dir),
            provenance=provenance.collect(),
            decision=decision,
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
