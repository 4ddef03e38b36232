"""Where and how the model runs: device, mixed precision, memory format, threads, compilation.

Every choice has an ``auto`` that reads the machine, so the same configuration runs on a 2-core
laptop and on a GPU node, and an explicit value that is honoured or refused with a clear message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facescan.data.loader import usable_cores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """The resolved mixed-precision choice.

    Attributes:
        dtype: the autocast dtype (``torch.bfloat16``/``torch.float16``), or None for float32.
        use_scaler: whether a ``GradScaler`` is needed (fp16 only: bf16 has float32's range).
    """

    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def name(self) -> str:
        """``bf16``, ``fp16`` or ``fp32``."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so autocast pays off.

    Without them, CPU bf16 is emulated and slower than float32.
    """
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    with contextlib.suppress(Exception):
        if probe is not None and amx is not None:
            return bool(probe() or amx())
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text().split()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def gpu_count() -> int:
    """Number of CUDA GPUs visible to this process (honours ``CUDA_VISIBLE_DEVICES``)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


_NO_GPU = "no CUDA GPU is visible (torch.cuda.is_available() is False)"


def device_type(requested: str = "auto", name: str = "training.device") -> str:
    """``cpu`` or ``cuda`` for ``training.device``, without creating a CUDA context.

    Args:
        requested: ``auto`` | ``cpu`` | ``cuda``.
        name: the parameter named in messages (``predict.device`` for prediction, ...).

    Raises:
        ValueError: for an unknown value, or ``cuda`` on a machine where torch sees no GPU.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{name}: expected auto, cpu or cuda, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError(
            f"{name}: cuda was requested but {_NO_GPU}; set {name}: auto or cpu (on a GPU "
            "machine: install a CUDA build of torch and check CUDA_VISIBLE_DEVICES)"
        )
    return "cuda"


def select_device(
    requested: str = "auto", local_rank: int | None = None, name: str = "training.device"
) -> torch.device:
    """The device for this process.

    Local rank ``k`` takes GPU ``k`` of those visible. A launcher that gives every process its own
    GPU (SLURM, Kubernetes: ``CUDA_VISIBLE_DEVICES`` set to one GPU per process) leaves each
    worker one visible GPU whatever its local rank: that GPU, ``cuda:0``, is then its own.

    Args:
        requested: ``auto`` (the GPU when there is one), ``cpu`` or ``cuda``.
        local_rank: the worker's rank on its node, which picks its GPU; None = the current GPU.
        name: the parameter named in messages.

    Returns:
        ``cpu`` or ``cuda:<index>``.

    Raises:
        ValueError: for an unknown value, ``cuda`` on a machine where torch sees no GPU, or a
            worker without a GPU of its own (more local ranks than the GPUs it sees, when it
            sees several).
    """
    if device_type(requested, name) == "cpu":
        return torch.device("cpu")
    if local_rank is None:
        return torch.device("cuda", torch.cuda.current_device())
    visible = torch.cuda.device_count()
    if local_rank < visible:
        return torch.device("cuda", local_rank)
    if visible == 1:  # one GPU per process, bound by the launcher
        logger.info(
            "Local rank %d sees one GPU (CUDA_VISIBLE_DEVICES=%s): its own, cuda:0",
            local_rank,
            os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        )
        return torch.device("cuda", 0)
    raise ValueError(
        f"training.distributed.nproc_per_node: worker {local_rank} has no GPU of its own "
        f"(only {visible} CUDA GPU(s) are visible); start at most one "
        "worker per GPU (training.distributed.nproc_per_node: auto, or torchrun "
        "--nproc-per-node)"
    )


def configure_cuda_math(
    device: torch.device | str, *, cudnn_benchmark: bool, tf32: bool
) -> dict[str, bool]:
    """Process-wide CUDA math settings for training on ``device``; nothing on a CPU.

    Args:
        device: where the model runs (or its type, ``cpu``/``cuda``).
        cudnn_benchmark: let cuDNN time its convolution algorithms on the first batch of each
            input shape and keep the fastest (``torch.backends.cudnn.benchmark``): a gain for
            the fixed input size of training, a cost when shapes vary. It makes runs less
            reproducible in the last digits (the chosen algorithm may differ between runs).
        tf32: TensorFloat-32 for float32 matmuls and convolutions on Ampere and later GPUs
            (``torch.set_float32_matmul_precision("high")``, ``torch.backends.cudnn.allow_tf32``;
            no effect on older GPUs). It only changes what runs in float32: under bf16/fp16
            autocast the large matmuls and convolutions are half precision anyway. False gives
            IEEE float32 (``"highest"``), e.g. for ``amp: off`` comparisons with float32.

    Returns:
        The settings in effect, ``{"cudnn_benchmark": ..., "tf32": ...}`` on CUDA (for the
        provenance), ``{}`` on a CPU.
    """
    kind = device if isinstance(device, str) else device.type
    if kind != "cuda":
        return {}
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    # These two keep torch's legacy (allow_tf32) and new (fp32_precision) flags consistent:
    # setting the new API directly makes a later read of the legacy one raise in torch >= 2.9.
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    return {"cudnn_benchmark": bool(cudnn_benchmark), "tf32": bool(tf32)}


def _cpu_reason(device_name: str) -> str:
    """Why a CUDA-only option cannot run: no GPU at all, or the device parameter says cpu."""
    return _NO_GPU if not torch.cuda.is_available() else f"{device_name} is cpu"


def resolve_precision(amp: str, device: torch.device, name: str = "training.amp") -> Precision:
    """Resolve ``training.amp`` for a device.

    ``auto`` means bf16 where the hardware computes it (GPUs with bf16, CPUs with AVX512-BF16 or
    AMX), fp16 with a ``GradScaler`` on GPUs without bf16, and float32 elsewhere.

    Args:
        amp: ``auto`` | ``bf16`` | ``fp16`` | ``off``.
        device: where the model runs.
        name: the parameter named in messages (``predict.amp`` for prediction, ...).

    Returns:
        The autocast dtype and whether a ``GradScaler`` is needed.

    Raises:
        ValueError: for an unknown value, fp16 on a CPU, or bf16 on a GPU without it.
    """
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"{name}: expected auto, bf16, fp16 or off, got {amp!r}")
    if amp == "off":
        return Precision(None, False)
    if device.type == "cuda":
        # Native bf16 only (Ampere and later): torch would otherwise report the emulated,
        # slow bf16 of older GPUs (T4; V100 with a CUDA 12 build of torch) as supported, where
        # fp16 + GradScaler is the choice.
        with torch.cuda.device(device):
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if amp == "bf16" and not bf16:
            raise ValueError(
                f"{name}: bf16 was requested but {torch.cuda.get_device_name(device)} does not "
                f"compute bf16 natively; set {name}: auto or fp16 (with a GradScaler)"
            )
        if amp == "fp16" or (amp == "auto" and not bf16):
            return Precision(torch.float16, True)
        return Precision(torch.bfloat16, False)
    if amp == "fp16":
        device_name = name.rsplit(".", 1)[0] + ".device"
        raise ValueError(
            f"{name}: fp16 was requested, which needs a CUDA GPU, but "
            f"{_cpu_reason(device_name)}; set {name}: auto, bf16 or off"
        )
    if amp == "bf16":
        if not cpu_supports_bf16():
            logger.warning("%s: bf16 requested on a CPU without native bf16 (slow)", name)
        return Precision(torch.bfloat16, False)
    return Precision(torch.bfloat16, False) if cpu_supports_bf16() else Precision(None, False)


def resolve_channels_last(setting: bool | str, precision: Precision) -> bool:
    """``channels_last``: ``auto`` turns it on where autocast is on (where tensor cores/oneDNN gain)."""
    if setting == "auto":
        return precision.dtype is not None
    if not isinstance(setting, bool):
        raise ValueError(f'training.channels_last: expected "auto", true or false, got {setting!r}')
    return setting


def threads_per_rank(setting: int | str, ranks: int) -> int:
    """Intra-op threads for one worker: ``auto`` = cores // ranks, so ranks never oversubscribe."""
    if setting == "auto":
        return max(1, usable_cores() // max(1, ranks))
    return int(setting)


def resolve_nproc(setting: int | str, device: str) -> int:
    """Workers on this node for ``device`` (``cpu``/``cuda``): ``auto`` = one per GPU, one on CPU.

    Raises:
        ValueError: naming ``training.distributed.nproc_per_node`` when it asks for more workers
            than there are GPUs.
    """
    if setting == "auto":
        return max(1, gpu_count()) if device == "cuda" else 1
    if device == "cuda" and int(setting) > gpu_count():
        raise ValueError(
            f"training.distributed.nproc_per_node: {setting} workers were requested on "
            f"training.device cuda but only {gpu_count()} CUDA GPU(s) are visible; set "
            f"training.distributed.nproc_per_node: auto (one worker per GPU) or at most "
            f"{gpu_count()}"
        )
    return int(setting)


def resolve_backend(setting: str, device: torch.device | str) -> str:
    """The process-group backend: ``auto`` = nccl on GPU, gloo on CPU.

    Args:
        setting: ``auto`` | ``gloo`` | ``nccl``.
        device: the device (or its type, ``cpu``/``cuda``) the workers train on.

    Raises:
        ValueError: naming ``training.distributed.backend`` for nccl on a CPU.
    """
    kind = device if isinstance(device, str) else device.type
    if setting == "auto":
        return "nccl" if kind == "cuda" else "gloo"
    if setting == "nccl" and kind != "cuda":
        raise ValueError(
            "training.distributed.backend: nccl was requested, which needs CUDA GPUs, but "
            f"{_cpu_reason('training.device')}; set training.distributed.backend: auto or gloo"
        )
    return setting


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the device, or a no-op context for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """The report's AdamW, as one fused kernel over all parameters (CPU and CUDA).

    The same update as ``torch.optim.AdamW``'s default, which on a CPU loops over the parameters
    with several small operations each (161 tensors in ResNet-50): fused, the optimizer step
    takes half the time (benchmarks/README.md). ``params`` may be parameter groups
    (:func:`parameter_groups`).
    """
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def parameter_groups(
    net: nn.Module, lr: float, transformer_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the transformer parts at ``lr * transformer_lr_scale``.

    The transformer parts are what the model's ``transformer_parameters()`` returns (FaceScanNet:
    the mid and tail ViTs); a model without it, or a scale of 1, gives one group at ``lr`` (the
    report). Group 0 holds everything else, so ``param_groups[0]["lr"]`` is ``training.lr``'s.
    """
    special = list(getattr(net, "transformer_parameters", list)())
    if transformer_lr_scale == 1.0 or not special:
        return [{"params": list(net.parameters()), "lr": lr}]
    ids = {id(p) for p in special}
    rest = [p for p in net.parameters() if id(p) not in ids]
    return [
        {"params": rest, "lr": lr},
        {"params": special, "lr": lr * transformer_lr_scale},
    ]


#: ``torch.compile``'s backend (tests use ``"eager"``: the same capture, no C++ toolchain).
COMPILE_BACKEND = "inductor"


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``model`` in ``torch.compile`` when enabled, after resetting Dynamo.

    Dynamo keeps its graphs on the shared ``forward`` code object: compiling the variants one after
    another in one process hit the recompile limit at the 4th and ran the rest eager while logs
    said "compiled". Each run therefore starts from a clean Dynamo (:func:`ran_compiled` then tells
    whether this run's model really ran compiled). Compilation is lazy (it happens on the first
    forward); the engine logs how long the first step took so that its cost is visible.
    """
    if not enabled:
        return model
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    start = time.perf_counter()
    compiled = torch.compile(model, backend=COMPILE_BACKEND)
    logger.info(
        "torch.compile wrapped the model in %.1f s (graphs compile on the first step)",
        time.perf_counter() - start,
    )
    return compiled


def ran_compiled() -> bool:
    """Whether Dynamo compiled graphs since the last :func:`compile_model` (False: eager)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"] > 0 and counters["frames"]["ok"] > 0


def use_sync_batchnorm(setting: bool | str, device: torch.device, world_size: int) -> bool:
    """Whether to convert BatchNorm to ``SyncBatchNorm`` (``training.sync_batchnorm``).

    ``auto``: on CUDA with more than one worker, so that every BN layer normalises over the global
    batch (the report's 32), not over the images of one GPU (4 on 8 GPUs), and running statistics
    do not depend on the number of GPUs. Never on CPU/gloo, where SyncBatchNorm cannot run.

    Raises:
        ValueError: naming ``training.sync_batchnorm`` when ``true`` is asked on a CPU.
    """
    if setting == "auto":
        return device.type == "cuda" and world_size > 1
    if setting and device.type != "cuda":
        raise ValueError(
            "training.sync_batchnorm: true needs CUDA GPUs (SyncBatchNorm has no CPU/gloo "
            f"implementation), but training runs on {device}; set training.sync_batchnorm: auto"
        )
    return bool(setting) and world_size > 1


def inference_settings(
    device: str = "auto", amp: str = "auto", prefix: str = "evaluation"
) -> tuple[torch.device, torch.dtype | None, bool]:
    """Device, autocast dtype and memory format for scoring (evaluation, prediction).

    Args:
        device: ``auto`` | ``cpu`` | ``cuda``.
        amp: ``auto`` | ``bf16`` | ``fp16`` | ``off``.
        prefix: the parameters' section, named in messages (``evaluation`` or ``predict``).

    Returns:
        ``(device, amp_dtype or None, channels_last)``.

    Raises:
        ValueError: naming ``<prefix>.device`` or ``<prefix>.amp`` for a GPU option on a machine
            without a GPU.
    """
    dev = select_device(device, name=f"{prefix}.device")
    precision = resolve_precision(amp, dev, name=f"{prefix}.amp")
    return dev, precision.dtype, resolve_channels_last("auto", precision)
