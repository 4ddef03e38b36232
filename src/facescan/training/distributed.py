"""Process-group plumbing: who am I, start workers on this node, share small decisions.

Workers on one node are started by torch.distributed's elastic launcher (the engine behind
``torchrun``) with a c10d rendezvous on a free localhost port and no restarts: a worker that fails
makes the launcher stop the others and raise, and :func:`launch` turns that into one error carrying
the failing worker's own message. Under ``torchrun`` (several nodes) the processes already exist;
:func:`under_torchrun` tells the two cases apart.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "WorkerFailedError",
    "broadcast_flag",
    "broadcast_object",
    "dist_env",
    "init_process_group",
    "launch",
    "record_failure",
    "under_torchrun",
]

# Where workers started by :func:`launch` record their exception the moment it is raised.
_FAILURE_DIR_ENV = "FACESCAN_DDP_FAILURE_DIR"
# A worker that only lost its peers fails with one of these; the cause is elsewhere.
_PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "remote process exited",
    "Broken pipe",
    "NCCL communicator was aborted",
)

logger = logging.getLogger(__name__)


class WorkerFailedError(RuntimeError):
    """A DDP worker failed; the message is the failing worker's own."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job (from torchrun's environment variables).

    Attributes:
        rank: global rank.
        world_size: number of processes in the job.
        local_rank: rank on this node (picks the GPU).
        local_world_size: processes on this node (shares the cores).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def primary(self) -> bool:
        """True on global rank 0, the only rank that logs to TensorBoard and writes files."""
        return self.rank == 0


def under_torchrun() -> bool:
    """Whether this process was started by torchrun or the elastic launcher."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


def dist_env() -> DistEnv:
    """This process's ranks; one process of one when not launched by torchrun."""
    if not under_torchrun():
        return DistEnv()
    env = os.environ
    return DistEnv(
        rank=int(env["RANK"]),
        world_size=int(env.get("WORLD_SIZE", 1)),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", 1)),
    )


def init_process_group(backend: str, timeout_s: float, device: torch.device) -> None:
    """Join the job's process group (``env://``), with a timeout on every collective.

    The timeout is what turns a rank stuck waiting for a dead or diverged peer into an error.
    """
    kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
    if device.type == "cuda":
        kwargs["device_id"] = device  # binds NCCL to this GPU up front
    dist.init_process_group(**kwargs)


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (identity without a process group)."""
    if not _initialised():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_flag(flag: bool, device: torch.device, src: int = 0) -> bool:
    """Rank ``src``'s boolean on every rank (e.g. the early-stop decision)."""
    if not _initialised():
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(value, src=src)
    return bool(value.item())


def free_port() -> int:
    """A TCP port free on localhost now (for the rendezvous store)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    fn: Callable[..., Any], args: tuple[Any, ...], nproc: int, *, timeout_s: float, name: str
) -> dict[int, Any]:
    """Run ``fn(*args)`` in ``nproc`` worker processes on this node and wait for all of them.

    Args:
        fn: a module-level function (workers are spawned and import it).
        args: picklable arguments.
        nproc: number of workers.
        timeout_s: rendezvous timeout (collectives use the process-group timeout).
        name: label of the job in the launcher's logs.

    Returns:
        Every worker's return value by global rank.

    Raises:
        WorkerFailedError: with the failing worker's message when any worker fails.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"facescan-{name}-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}",
        rdzv_configs={"timeout": int(max(timeout_s, 30))},
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    failure_dir = tempfile.mkdtemp(prefix="facescan-ddp-")
    previous = os.environ.get(_FAILURE_DIR_ENV)
    os.environ[_FAILURE_DIR_ENV] = failure_dir  # spawned workers inherit it
    try:
        return elastic_launch(config, fn)(*args)
    except ChildFailedError as exc:
        recorded = _recorded_failure(failure_dir)
        if recorded is None:
            rank, failure = _root_failure(exc)
            recorded = (rank, _failure_text(failure))
        rank, text = recorded
        raise WorkerFailedError(
            f"DDP worker rank {rank} of {nproc} failed ({name}): {text}"
        ) from None
    finally:
        if previous is None:
            os.environ.pop(_FAILURE_DIR_ENV, None)
        else:
            os.environ[_FAILURE_DIR_ENV] = previous
        shutil.rmtree(failure_dir, ignore_errors=True)


def record_failure(rank: int, exc: BaseException) -> None:
    """Called by a worker as soon as it raises, before tearing down its process group.

    The launcher stops the other workers as soon as one exits, so the worker that caused a
    failure may be killed while unwinding, before torch's own error file exists, while its peers
    report only a lost connection. This record lets :func:`launch` name the real cause.
    """
    folder = os.environ.get(_FAILURE_DIR_ENV)
    if not folder or not os.path.isdir(folder):
        return
    record = {"rank": rank, "time": time.time(), "message": f"{type(exc).__name__}: {exc}"}
    with contextlib.suppress(OSError), open(os.path.join(folder, f"rank{rank}.json"), "w") as fh:
        json.dump(record, fh)


def _recorded_failure(folder: str) -> tuple[int, str] | None:
    """The earliest recorded failure that is not merely a lost peer (else the earliest one)."""
    records = []
    for name in os.listdir(folder):
        with contextlib.suppress(OSError, ValueError), open(os.path.join(folder, name)) as fh:
            records.append(json.load(fh))
    if not records:
        return None
    causes = [r for r in records if not any(m in r["message"] for m in _PEER_LOST)] or records
    first = min(causes, key=lambda r: (r["time"], r["rank"]))
    return int(first["rank"]), str(first["message"])


def _root_failure(exc: Any) -> tuple[int, Any]:
    """The failure that caused the others: a worker that raised (it left an error message),
    before ones that were only terminated by the launcher afterwards."""
    failures = exc.failures
    raised = {r: f for r, f in failures.items() if f.exitcode > 0 and os.path.isfile(f.error_file)}
    pool = raised or failures
    rank = min(pool, key=lambda r: (pool[r].timestamp, r))
    return rank, pool[rank]


def _failure_text(failure: Any) -> str:
    """The worker's exception as ``Type: message`` (the error file nests it with a traceback)."""
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", message)
    return str(message)
