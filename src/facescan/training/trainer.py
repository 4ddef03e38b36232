"""The training loop one worker (rank) runs: the report's recipe, resume, early stopping, logs.

Recipe (conf/base/parameters_training.yml): cross-entropy with optional class weights, AdamW
(the ViTs optionally at their own rate), the report's per-epoch cosine with an optional per-step
linear warm-up (:mod:`facescan.training.schedule`), optional gradient clipping, early stopping on
validation accuracy, and the best epoch kept by validation accuracy (ties: lower validation loss),
or the last epoch (``training.keep: last``).

Reproducibility: the model is initialised from ``seed``; every epoch then re-seeds torch, NumPy,
``random``, the shuffling sampler and the loader's generator from ``(seed, epoch, rank)``. An
epoch's randomness (order, augmentation, dropout) therefore does not depend on what ran before it
in this process, so a run resumed after a kill replays exactly what the uninterrupted run would
have done, on any rank, without saving per-rank RNG states.

Distributed: every rank builds the same model from the same seed, DDP averages gradients,
metrics are all-reduced, the early-stop decision is rank 0's (broadcast), only rank 0 writes.
Before each evaluation rank 0's BatchNorm statistics are broadcast, so the evaluated model is
exactly the one rank 0 saves; at the end every rank's weights are hashed and compared.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from facescan import runtime
from facescan.checkpoint import CHECKPOINT_FORMAT
from facescan.data.cache import ImageCache
from facescan.data.loader import build_loader, default_num_workers
from facescan.data.transforms import Degradations
from facescan.models.tta import with_tta
from facescan.thresholds import choose_threshold
from facescan.training.config import TrainConfig
from facescan.training.distributed import (
    DistEnv,
    broadcast_flag,
    broadcast_object,
    dist_env,
    init_process_group,
    record_failure,
    under_torchrun,
)
from facescan.training.engine import NonFiniteLossError, evaluate, train_one_epoch
from facescan.training.schedule import optimizer_and_schedule, seek
from facescan.training.state import RunFiles

__all__ = ["TrainingDivergedError", "class_weight_tensor", "run_worker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to train one run (picklable: sent to spawned workers).

    Attributes:
        namespace: the Kedro namespace (names the side-file folders).
        variant: the variant key (for messages and the checkpoint).
        seed: the effective seed.
        model_options: resolved options for :func:`facescan.models.create_model`.
        pretrained: the ImageNet weights file the trunk starts from (``model.pretrained``), or None.
        degradations: the training images' blur / JPEG (``preprocess.augment``), or None.
        config: the validated training configuration.
        train_cache: training images (memmap handle, reopened by each worker).
        val_cache: validation images.
        input_size: the network input side.
        fingerprint: the run fingerprint (see :func:`run_fingerprint`).
        data_fingerprint: the caches' content hash (see :func:`data_fingerprint`).
        run_dir: this run's resume folder.
        provenance: :func:`facescan.provenance.collect` of the launching process.
        decision: ``"resume"`` or ``"fresh"`` as :meth:`RunFiles.decide` found it before the
            launch; None under torchrun, where rank 0 decides inside the job.
    """

    namespace: str
    variant: str
    seed: int
    model_options: dict[str, Any]
    pretrained: str | None
    config: TrainConfig
    train_cache: ImageCache
    val_cache: ImageCache
    input_size: int
    fingerprint: str
    data_fingerprint: str
    run_dir: str
    provenance: dict[str, Any]
    decision: str | None = None
    degradations: Degradations | None = None


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


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the variant, epoch and kept checkpoint."""


def class_weight_tensor(
    setting: str | Sequence[float] | None, labels: np.ndarray, num_classes: int
) -> torch.Tensor | None:
    """Cross-entropy class weights from ``training.class_weights``.

    Args:
        setting: None (all 1), ``"balanced"`` (``n / (classes * count_c)`` from the train
            labels, scikit-learn's formula) or one weight per class.
        labels: the training labels.
        num_classes: the model's number of classes.

    Returns:
        A float32 tensor of ``num_classes`` weights, or None for unweighted.

    Raises:
        ValueError: naming ``training.class_weights`` for a list of the wrong length, or
            ``balanced`` with a class absent from the training split.
    """
    if setting is None:
        return None
    if setting == "balanced":
        present = set(np.unique(labels).tolist())
        missing = [c for c in range(num_classes) if c not in present]
        if missing:
            raise ValueError(
                f"training.class_weights: 'balanced' needs every class in the training split; "
                f"class(es) {missing} have no image"
            )
        # Imported here: scikit-learn costs seconds to import in every spawned DDP worker.
        from sklearn.utils.class_weight import compute_class_weight

        weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
        return torch.tensor(weights, dtype=torch.float32)
    if len(setting) != num_classes:
        raise ValueError(
            f"training.class_weights: {len(setting)} weights given for {num_classes} classes"
        )
    return torch.tensor(list(setting), dtype=torch.float32)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 63-bit seed for one epoch of one rank."""
    words = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _cpu_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}


def _state_hash(net: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _setup_worker_logging(env: DistEnv) -> None:
    """Spawned workers inherit no logging configuration: rank 0 logs INFO to stderr, others warn."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    root.addHandler(handler)
    logging.getLogger("facescan").setLevel(logging.INFO if env.primary else logging.WARNING)


def run_worker(spec: RunSpec) -> None:
    """Train ``spec`` as this process's rank (the whole job when it is the only process).

    Called in-process for one worker, by the elastic launcher in each spawned worker, or by the
    standalone entry point under torchrun.

    Raises:
        ValueError: naming the parameter when the configuration cannot run here.
        TrainingDivergedError: when the loss becomes NaN or infinite.
    """
    env = dist_env()
    config = spec.config
    if under_torchrun():
        _setup_worker_logging(env)
    local_rank = env.local_rank if under_torchrun() else None
    device = runtime.select_device(config.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    cuda_math = runtime.configure_cuda_math(
        device, cudnn_benchmark=config.cudnn_benchmark, tf32=config.tf32
    )
    check_batch_split(config.batch_size, env.world_size)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(runtime.threads_per_rank(config.threads, env.local_world_size))
    distributed = env.world_size > 1
    if distributed:
        backend = runtime.resolve_backend(config.distributed.backend, device)
        init_process_group(backend, config.distributed.timeout_s, device)
    try:
        _Trainer(spec, env, device, cuda_math).run()
    except BaseException as exc:
        if distributed:
            record_failure(env.rank, exc)  # before the teardown below, which peers may outlive
        raise
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
        torch.set_num_threads(threads_before)


@dataclass
class _Progress:
    """What the loop knows after each epoch (saved in ``last.pt``, restored on resume)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = -math.inf
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    train_seconds: float = 0.0
    last_saved: int = 0  # epoch of last.pt (0: none)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Progress:
        return cls(
            list(state["history"]),
            state["best_epoch"],
            state["best_val_acc"],
            state["best_val_loss"],
            state["bad_epochs"],
            state["train_seconds"],
            state["epoch"],
        )

    def update(self, record: dict[str, float], keep: str = "best") -> bool:
        """Add an epoch; True when its weights are the ones to keep: ``keep="best"``, the new best
        (higher val acc; ties: lower val loss); ``keep="last"``, every epoch (the run keeps the end
        of its schedule; ``best_*`` then describe that epoch)."""
        self.history.append(record)
        self.train_seconds += record["seconds"]
        acc, loss = record["val_acc"], record["val_loss"]
        better = acc > self.best_val_acc or (acc == self.best_val_acc and loss < self.best_val_loss)
        if keep == "last" or better:
            self.best_epoch, self.best_val_acc, self.best_val_loss = record["epoch"], acc, loss
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False


@dataclass
class _Parts:
    """The built training objects of one rank."""

    net: nn.Module  # the bare model: its state_dict is what gets saved
    model: nn.Module  # what runs: net, compiled and/or DDP-wrapped
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    precision: runtime.Precision
    channels_last: bool


class _Trainer:
    """One rank's training run."""

    def __init__(
        self,
        spec: RunSpec,
        env: DistEnv,
        device: torch.device,
        cuda_math: dict[str, bool] | None = None,
    ) -> None:
        self.spec = spec
        self.cuda_math = cuda_math or {}
        self.sync_batchnorm = False
        self.cfg = spec.config
        self.env = env
        self.device = device
        self.files = RunFiles(spec.run_dir)
        self.name = (
            spec.variant if spec.namespace == spec.variant else f"{spec.variant} ({spec.namespace})"
        )

    def run(self) -> None:
        """Decide, build, train epoch by epoch, finish."""
        cfg, env = self.cfg, self.env
        decision = broadcast_object(self._decide() if env.primary else None)
        if decision["skip"]:
            return
        state: dict[str, Any] | None = decision["state"]
        sampler, train_loader, val_loader = self._loaders()
        parts = self._build(state, steps_per_epoch=len(train_loader))
        progress = _Progress.from_state(state) if state is not None else _Progress()
        resuming = state is not None
        # The weights and optimizer moments are in the built objects now: do not hold a second
        # copy (about 660 MB per rank for the full model) for the whole run.
        state = decision = None
        if resuming:  # the schedule at the first step of the epoch to run
            seek(parts.scheduler, len(progress.history) * len(train_loader))
        start_epoch = len(progress.history) + 1
        if env.primary:
            self._log_start(parts, resuming, start_epoch)
        # A run killed after its early stop was saved, but before it was marked done, stays
        # stopped.
        stopped_early = cfg.patience is not None and progress.bad_epochs >= cfg.patience
        last_epoch = start_epoch - 1 if stopped_early else cfg.max_epochs
        writer = self._tensorboard(start_epoch) if env.primary else None
        try:
            for epoch in range(start_epoch, last_epoch + 1):
                record, step_lrs = self._epoch(
                    parts, progress, sampler, train_loader, val_loader, epoch
                )
                if progress.update(record, cfg.keep) and env.primary:
                    self.files.save_best(self._checkpoint(parts.net, progress))
                stopped_early = broadcast_flag(
                    cfg.patience is not None and progress.bad_epochs >= cfg.patience,
                    self.device,
                )
                if env.primary:
                    self._log_epoch(writer, record, progress, step_lrs)
                    if epoch % cfg.checkpoint_every == 0 or stopped_early or epoch == last_epoch:
                        self._save_resume(parts, progress, epoch)
                if stopped_early:
                    if env.primary:
                        logger.info(
                            "Early stop of %s at epoch %d: validation accuracy did not improve "
                            "for %d epochs (training.patience); best %.4f at epoch %d",
                            self.name,
                            epoch,
                            progress.bad_epochs,
                            progress.best_val_acc,
                            progress.best_epoch,
                        )
                    break
            self._finish(parts, progress, stopped_early)
        finally:
            if writer is not None:
                writer.close()

    # -- steps -------------------------------------------------------------------------------
    def _decide(self) -> dict[str, Any]:
        """Rank 0: the launcher's decision (or its own under torchrun) and the state to resume."""
        spec, files = self.spec, self.files
        decision = spec.decision or files.decide(spec.fingerprint, self.cfg.force, self.name)
        if decision == "skip":
            return {"skip": True, "state": None}
        state = files.resume_state(spec.fingerprint) if decision == "resume" else None
        if state is None:
            files.clear()  # a stale best.pt must not survive into a fresh run
        return {"skip": False, "state": state}

    def _build(self, state: dict[str, Any] | None, steps_per_epoch: int) -> _Parts:
        from facescan.models import create_model

        spec, cfg, device = self.spec, self.cfg, self.device
        precision = runtime.resolve_precision(cfg.amp, device)
        channels_last = runtime.resolve_channels_last(cfg.channels_last, precision)
        _seed_everything(spec.seed)  # the same initial weights on every rank
        net = create_model(spec.model_options, pretrained=spec.pretrained)
        net.to(
            device=device,
            memory_format=torch.channels_last if channels_last else torch.preserve_format,
        )
        if state is not None:
            net.load_state_dict(state["model"])
        self.sync_batchnorm = runtime.use_sync_batchnorm(
            cfg.sync_batchnorm, device, self.env.world_size
        )
        if self.sync_batchnorm:  # BN over the global batch, whatever the number of GPUs
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = runtime.compile_model(net, cfg.compile)
        if self.env.world_size > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        num_classes = int(spec.model_options.get("num_classes", 2))
        weight = class_weight_tensor(cfg.class_weights, spec.train_cache.labels, num_classes)
        criterion = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device))
        optimizer, scheduler = optimizer_and_schedule(net, cfg, steps_per_epoch)
        scaler = torch.amp.GradScaler(device.type) if precision.use_scaler else None
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        return _Parts(net, model, criterion, optimizer, scheduler, scaler, precision, channels_last)

    def _loaders(self) -> tuple[DistributedSampler, Any, Any]:
        spec, env = self.spec, self.env
        per_rank = self.cfg.batch_size // env.world_size
        workers = (
            default_num_workers(env.local_world_size, self.device.type)
            if self.cfg.num_workers == "auto"
            else int(self.cfg.num_workers)
        )
        # Shuffles by (seed, epoch) on one rank as on many (set_epoch), so a resumed epoch sees
        # the same order.
        sampler = DistributedSampler(
            spec.train_cache,  # type: ignore[arg-type]  (only its length is used)
            num_replicas=env.world_size,
            rank=env.rank,
            shuffle=True,
            seed=spec.seed,
        )
        # Fresh workers each epoch, seeded from the epoch's generator: resumable exactly.
        common = {
            "input_size": spec.input_size,
            "batch_size": per_rank,
            "num_workers": workers,
            "seed": spec.seed,
            "persistent_workers": False,
            "pin_memory": self.device.type == "cuda",  # not on a GPU machine told to use the CPU
        }
        train_loader = build_loader(
            spec.train_cache,
            train=True,
            sampler=sampler,
            degradations=spec.degradations,
            **common,
        )
        # Validation shards without padding (a DistributedSampler would repeat images).
        val_shard = (
            list(range(env.rank, len(spec.val_cache), env.world_size))
            if env.world_size > 1
            else None
        )
        val_loader = build_loader(spec.val_cache, train=False, sampler=val_shard, **common)
        return sampler, train_loader, val_loader

    def _epoch(
        self,
        parts: _Parts,
        progress: _Progress,
        sampler: DistributedSampler,
        train_loader: Any,
        val_loader: Any,
        epoch: int,
    ) -> tuple[dict[str, float], list[float]]:
        """Train and validate one epoch (the schedule steps with every optimizer step).

        Returns:
            The history record, and the learning rate of every step (TensorBoard's ``lr/step``).
        """
        spec, env = self.spec, self.env
        start = time.perf_counter()
        seed = _epoch_seed(spec.seed, epoch, env.rank)
        _seed_everything(seed)
        train_loader.generator.manual_seed(seed)
        sampler.set_epoch(epoch)
        try:
            train = train_one_epoch(
                parts.model,
                parts.criterion,
                train_loader,
                parts.optimizer,
                device=self.device,
                amp_dtype=parts.precision.dtype,
                scaler=parts.scaler,
                channels_last=parts.channels_last,
                progress=f"{spec.namespace} {epoch}/{self.cfg.max_epochs}" if env.primary else None,
                scheduler=parts.scheduler,
                clip_grad_norm=self.cfg.clip_grad_norm,
            )
        except NonFiniteLossError as exc:
            raise self._diverged(
                progress, epoch, f", step {exc.step}: the loss is {exc.value}"
            ) from exc
        except torch.OutOfMemoryError as exc:
            raise self._out_of_memory(parts) from exc
        if self.cfg.compile and not progress.history and env.primary:
            logger.info(
                "torch.compile: the first step took %.1f s (compilation included)",
                train["first_step_seconds"],
            )
        if env.world_size > 1:
            for buffer in parts.net.buffers():  # evaluate (and save) rank 0's BN statistics
                dist.broadcast(buffer, src=0)
        try:
            val = evaluate(
                parts.model,
                parts.criterion,
                val_loader,
                device=self.device,
                amp_dtype=parts.precision.dtype,
                channels_last=parts.channels_last,
            )
        except torch.OutOfMemoryError as exc:
            raise self._out_of_memory(parts) from exc
        # Weights that give a non-finite validation loss are garbage whatever their accuracy:
        # stop in this epoch, before they can be kept as best or saved for resuming.
        if not math.isfinite(val["loss"]):
            raise self._diverged(progress, epoch, f": the validation loss is {val['loss']}")
        record = {
            "epoch": epoch,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "lr": train["lrs"][0] if train["lrs"] else math.nan,
            "seconds": time.perf_counter() - start,
            "images_per_s": train["images_per_s"],
        }
        if self.cfg.clip_grad_norm:
            record["grad_norm_max"] = train["grad_norm_max"]
        return record, train["lrs"]

    @torch.no_grad()
    def _val_threshold(self, parts: _Parts, state_dict: dict[str, torch.Tensor]) -> float:
        """The decision threshold on p_fake tuned on the validation images with the kept weights
        (``training.threshold``: maximum balanced accuracy, or a class-balanced logistic fit),
        scored as the checkpoint will score (``training.tta``): predict and evaluate_external
        decide with it."""
        parts.net.load_state_dict(state_dict)
        net = with_tta(parts.net, self.cfg.tta).eval()
        loader = build_loader(
            self.spec.val_cache,
            train=False,
            input_size=self.spec.input_size,
            batch_size=self.cfg.batch_size,
            num_workers=0,
            seed=self.spec.seed,
            pin_memory=False,
        )
        memory_format = torch.channels_last if parts.channels_last else torch.preserve_format
        p_fake, labels = [], []
        for images, targets in loader:
            images = images.to(self.device, memory_format=memory_format)
            with runtime.autocast(self.device, parts.precision.dtype):
                logits = net(images)
            p_fake.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
            labels.append(targets)
        threshold = choose_threshold(
            torch.cat(labels).numpy(), torch.cat(p_fake).numpy(), self.cfg.threshold
        )
        logger.info(
            "%s: decision threshold tuned on validation (%s): p_fake > %.4f",
            self.name,
            self.cfg.threshold,
            threshold,
        )
        return threshold

    def _out_of_memory(self, parts: _Parts) -> RuntimeError:
        """CUDA ran out of memory: one sentence naming the variant, the batch and the way out."""
        per_gpu = self.cfg.batch_size // self.env.world_size
        return RuntimeError(
            f"{self.device} ran out of memory training variant {self.spec.variant!r} at "
            f"{self.spec.input_size} px with {per_gpu} images per GPU (training.batch_size "
            f"{self.cfg.batch_size} over {self.env.world_size} worker(s), precision "
            f"{parts.precision.name}); lower training.batch_size, use more GPUs, or keep "
            "training.amp: auto (docs/scaling.md lists the memory each variant needs)"
        )

    def _diverged(self, progress: _Progress, epoch: int, what: str) -> TrainingDivergedError:
        """The divergence error: where it happened, what is kept, what to change."""
        kept = (
            f"the last good checkpoint (epoch {progress.last_saved}) is kept in {self.files.folder}"
            if progress.last_saved
            else "no epoch finished, so there is no checkpoint to keep"
        )
        return TrainingDivergedError(
            f"training of variant {self.spec.variant!r} (namespace {self.spec.namespace!r}) "
            f"diverged at epoch {epoch}{what}; {kept}. Lower training.lr or check the data "
            "(training.amp: off also helps but needs about twice the GPU memory: docs/scaling.md)."
        )

    def _save_resume(self, parts: _Parts, progress: _Progress, epoch: int) -> None:
        self.files.save_resume(
            {
                "fingerprint": self.spec.fingerprint,
                "epoch": epoch,
                "model": _cpu_state_dict(parts.net),
                "optimizer": parts.optimizer.state_dict(),
                "scheduler": parts.scheduler.state_dict(),
                "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
                "history": progress.history,
                "best_epoch": progress.best_epoch,
                "best_val_acc": progress.best_val_acc,
                "best_val_loss": progress.best_val_loss,
                "bad_epochs": progress.bad_epochs,
                "train_seconds": progress.train_seconds,
            }
        )
        progress.last_saved = epoch

    def _checkpoint(self, net: nn.Module, progress: _Progress) -> dict[str, Any]:
        """The checkpoint contract (see :mod:`facescan.checkpoint`)."""
        spec = self.spec
        return {
            "format": CHECKPOINT_FORMAT,
            "namespace": spec.namespace,
            "variant": spec.variant,
            "seed": spec.seed,
            "model_options": spec.model_options,
            "pretrained": spec.pretrained,
            "augment": spec.degradations.to_params() if spec.degradations is not None else None,
            # How every score of this model is computed (facescan.models.tta), the tuned
            # threshold's included.
            "tta": self.cfg.tta,
            "state_dict": _cpu_state_dict(net),
            "config": {**self.cfg.to_dict(), "seed": spec.seed},
            "history": list(progress.history),
            "best_epoch": progress.best_epoch,
            "best_val_acc": progress.best_val_acc,
            "best_val_loss": progress.best_val_loss,
            "train_seconds": progress.train_seconds,
            "input_size": spec.input_size,
            "cache_size": spec.train_cache.size,
            # How the training images were decoded into the cache: predict decodes new images the
            # same way, whatever the parameters say when it runs.
            "preprocess": {
                "max_size": spec.train_cache.meta.get("max_size"),
                "background": spec.train_cache.meta.get("background"),
            },
            "data_fingerprint": spec.data_fingerprint,
            "run_fingerprint": spec.fingerprint,
            "provenance": spec.provenance,
        }

    def _finish(self, parts: _Parts, progress: _Progress, stopped_early: bool) -> None:
        """Check the ranks agree, complete best.pt with the whole history, mark the run done."""
        env = self.env
        digests: list[Any] = [_state_hash(parts.net)]
        if env.world_size > 1:
            mine, digests = digests[0], [None] * env.world_size
            dist.all_gather_object(digests, mine)
            if len(set(digests)) != 1:
                raise RuntimeError(
                    f"DDP ranks of {self.name} ended with different weights ({digests}): "
                    "a synchronisation bug; the run is not marked done"
                )
        if not env.primary:
            return
        best = self.files.load_best()
        best.update(
            val_threshold=self._val_threshold(parts, best["state_dict"]),
            history=list(progress.history),
            train_seconds=progress.train_seconds,
            provenance={
                **self.spec.provenance,
                "runtime": {
                    "device": str(self.device),
                    "precision": parts.precision.name,
                    "channels_last": parts.channels_last,
                    "compile": self.cfg.compile,
                    # Whether graphs were really compiled (not an eager fallback).
                    "compiled": runtime.ran_compiled() if self.cfg.compile else False,
                    "sync_batchnorm": self.sync_batchnorm,
                    **self.cuda_math,
                    "world_size": env.world_size,
                    "stopped_early": stopped_early,
                    "epochs_run": len(progress.history),
                    "rank_state_sha256": digests,
                },
            },
        )
        self.files.save_best(best)
        self.files.mark_done(
            self.spec.fingerprint,
            {
                "namespace": self.spec.namespace,
                "best_epoch": progress.best_epoch,
                "best_val_acc": progress.best_val_acc,
                "best_val_loss": progress.best_val_loss,
                "epochs_run": len(progress.history),
            },
        )
        logger.info(
            "Finished %s: kept the %s epoch, val acc %.4f (loss %.4f) at epoch %d of %d, "
            "%.1f s of training",
            self.name,
            self.cfg.keep,
            progress.best_val_acc,
            progress.best_val_loss,
            progress.best_epoch,
            len(progress.history),
            progress.train_seconds,
        )

    # -- observability -----------------------------------------------------------------------
    def _log_start(self, parts: _Parts, resuming: bool, start_epoch: int) -> None:
        from facescan.models import count_parameters

        spec, cfg, env = self.spec, self.cfg, self.env
        if resuming:
            logger.info("Resuming %s from epoch %d (%s)", self.name, start_epoch, self.files.last)
        logger.info(
            "Training %s: seed %d, up to %d epochs (patience %s), %d worker(s) on %s, %s%s%s, "
            "batch %d (%d per worker), %d train / %d val images at %d px, %.2f M parameters, "
            "AdamW lr %g wd %g%s, cosine T_max %d%s%s",
            self.name,
            spec.seed,
            cfg.max_epochs,
            cfg.patience,
            env.world_size,
            self.device,
            parts.precision.name,
            ", channels_last" if parts.channels_last else "",
            ", compiled" if cfg.compile else "",
            cfg.batch_size,
            cfg.batch_size // env.world_size,
            len(spec.train_cache),
            len(spec.val_cache),
            spec.input_size,
            count_parameters(parts.net) / 1e6,
            cfg.lr,
            cfg.weight_decay,
            f" (ViT x{cfg.transformer_lr_scale:g})"
            if cfg.transformer_lr_scale != 1 and len(parts.optimizer.param_groups) > 1
            else "",
            cfg.t_max,
            f", warm-up {cfg.warmup_epochs:g} epoch(s)" if cfg.warmup_epochs else "",
            f", gradients clipped at {cfg.clip_grad_norm:g}" if cfg.clip_grad_norm else "",
        )

    def _tensorboard(self, start_epoch: int) -> Any:
        if self.cfg.tensorboard_dir is None:
            return None
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(self.cfg.tensorboard_dir) / self.spec.namespace
        if start_epoch == 1:  # a fresh run: curves of an earlier run would mix with its own
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        # On resume, purge_step drops what the killed run logged after its last checkpoint.
        return SummaryWriter(str(folder), purge_step=start_epoch if start_epoch > 1 else None)

    def _log_epoch(
        self,
        writer: Any,
        record: dict[str, float],
        progress: _Progress,
        step_lrs: Sequence[float] = (),
    ) -> None:
        epoch = int(record["epoch"])
        message = (
            "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.3g | "
            "%.1f s, %.0f img/s"
        )
        args = [
            self.name,
            epoch,
            self.cfg.max_epochs,
            record["train_loss"],
            record["train_acc"],
            record["val_loss"],
            record["val_acc"],
            record["lr"],
            record["seconds"],
            record["images_per_s"],
        ]
        if self.cfg.keep == "best":  # under keep: last every epoch is the kept one
            message += " | best %.4f at epoch %d"
            args += [progress.best_val_acc, progress.best_epoch]
        logger.info(message, *args)
        if writer is None:
            return
        for tag, key in (
            ("loss/train", "train_loss"),
            ("loss/val", "val_loss"),
            ("acc/train", "train_acc"),
            ("acc/val", "val_acc"),
            ("lr", "lr"),
            ("time/epoch_seconds", "seconds"),
            ("throughput/images_per_s", "images_per_s"),
        ):
            writer.add_scalar(tag, record[key], epoch)
        if math.isfinite(record.get("grad_norm_max", math.nan)):
            writer.add_scalar("grad_norm/max_before_clip", record["grad_norm_max"], epoch)
        for i, lr in enumerate(step_lrs):  # x axis: optimizer steps since the start of training
            writer.add_scalar("lr/step", lr, (epoch - 1) * len(step_lrs) + i)
        writer.flush()
