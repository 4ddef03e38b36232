"""Run locks: ``fcntl.flock`` files under ``data/.locks`` so that two runs never write the same data.

A run that writes data every run shares (ingestion, split, preprocess, the caches, reporting: any
node outside a namespace) holds ``project.lock`` exclusively. Runs whose nodes are all namespaced
(training, evaluation, predict of some variants) hold ``project.lock`` shared plus
``ns-<namespace>.lock`` exclusively for each of their namespaces, so that runs of different variants
go side by side (docs/scaling.md, "Variants in parallel, one per GPU") while a data run, or a second
run of the same variant, waits. Locks are taken without waiting (``LOCK_NB``): a run that cannot get
one stops at once with :class:`LockBusyError`, whose one-sentence message names the lock file, the
holders' pids and commands (each holder writes a line into the lock file once it has the lock) and
the way out.

``flock`` locks belong to an open file description: two ``open()`` calls conflict even within one
process, and the kernel drops a lock when its holder dies, so a stale lock file never blocks
anything (its holder lines are ignored once their process is gone). The file descriptors are not
inherited by exec'd processes (torchrun / spawned DDP workers), and a forked child (a DataLoader
worker) closes its copies without unlocking: only the process that took a lock releases it.

Pure Python, no Kedro: :class:`facescan.hooks.RunLockHook` decides from the pipeline's nodes which
locks a run needs (:func:`plan_locks`) and holds them from ``before_pipeline_run`` to the end of the
run (:class:`RunLocks`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_DIR",
    "PROJECT_LOCK",
    "FileLock",
    "Holder",
    "LockBusyError",
    "LockPlan",
    "RunLocks",
    "current_command",
    "namespace_lock",
    "plan_locks",
    "read_holders",
]

#: Folder of the lock files, relative to the project root.
LOCK_DIR = Path("data") / ".locks"
#: The project lock: exclusive for runs writing shared data, shared for namespaced runs.
PROJECT_LOCK = "project.lock"

_COMMAND_CHARS = 300


def namespace_lock(namespace: str) -> str:
    """File name of the lock of one namespace (characters outside ``[A-Za-z0-9_.-]`` replaced)."""
    return "ns-" + re.sub(r"[^A-Za-z0-9_.-]", "_", namespace) + ".lock"


def current_command() -> str:
    """This process's command line, as its holder lines show it (``kedro run --pipelines ...``)."""
    argv = list(sys.argv) or [sys.executable]
    argv[0] = Path(argv[0]).name or argv[0]
    command = shlex.join(argv)
    return command if len(command) <= _COMMAND_CHARS else command[: _COMMAND_CHARS - 3] + "..."


@dataclass(frozen=True)
class LockPlan:
    """Which locks a run needs.

    Attributes:
        exclusive: the project lock alone (the run writes shared data).
        namespaces: otherwise, the namespaces to lock (the project lock is then taken shared).
    """

    exclusive: bool
    namespaces: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether the run needs no lock (it has no nodes)."""
        return not self.exclusive and not self.namespaces

    def describe(self) -> str:
        """What the run does, for messages."""
        if self.exclusive:
            return "it writes data shared by every run, so it needs the project to itself"
        names = ", ".join(self.namespaces)
        return f"it writes namespace{'s' if len(self.namespaces) > 1 else ''} {names}"


def plan_locks(namespaces: Iterable[str | None]) -> LockPlan:
    """The locks of a run whose nodes have these namespaces (one entry per node).

    A node outside any namespace writes shared data: the run then takes the project lock
    exclusively, which also covers its namespaced nodes. Otherwise it locks each top-level
    namespace (``a`` for ``a.b``) exclusively under a shared project lock.
    """
    tops: set[str] = set()
    for namespace in namespaces:
        if not namespace:
            return LockPlan(exclusive=True)
        tops.add(namespace.split(".", 1)[0])
    return LockPlan(exclusive=False, namespaces=tuple(sorted(tops)))


@dataclass(frozen=True)
class Holder:
    """A process holding (or having held) a lock, as its line in the lock file says."""

    pid: int
    command: str
    mode: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})"


class LockBusyError(RuntimeError):
    """A lock is held by another run.

    Attributes:
        path: the lock file.
        holders: the live holders its file names (may be empty if they have not written yet).
    """

    def __init__(self, message: str, path: Path, holders: list[Holder]) -> None:
        super().__init__(message)
        self.path = path
        self.holders = holders


# Lock files this process holds (path -> number of holders in this process), to tell its own
# stale holder lines from live ones, and the held locks a forked child must close.
_HELD_PATHS: dict[str, int] = {}
_HELD_LOCKS: weakref.WeakSet[FileLock] = weakref.WeakSet()
_REGISTRY_LOCK = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def read_holders(path: str | Path) -> list[Holder]:
    """The live holders of the lock file ``path`` (lines of processes that are gone are skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    with _REGISTRY_LOCK:
        mine = _HELD_PATHS.get(str(path), 0) > 0
    holders: dict[int, Holder] = {}
    for line in text.splitlines():
        try:
            entry: dict[str, Any] = json.loads(line)
            pid = int(entry["pid"])
        except (ValueError, KeyError, TypeError):
            continue  # a line being written, or not ours
        if (pid == os.getpid() and not mine) or not _pid_alive(pid):
            continue
        holders[pid] = Holder(
            pid=pid,
            command=str(entry.get("command", "?")),
            mode=str(entry.get("mode", "?")),
            since=str(entry.get("since", "?")),
        )
    return list(holders.values())


class FileLock:
    """One ``flock`` lock file, taken without waiting.

    Args:
        path: the lock file (created with its folder).
        shared: a shared lock (any number of shared holders, no exclusive one) instead of an
            exclusive one.
        purpose: what the run does, for the message of :class:`LockBusyError`.
    """

    def __init__(self, path: str | Path, *, shared: bool = False, purpose: str = "") -> None:
        self.path = Path(path)
        self.shared = shared
        self.purpose = purpose
        self._fd: int | None = None
        self._pid: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock through this object."""
        return self._fd is not None and self._pid == os.getpid()

    def acquire(self) -> None:
        """Take the lock and write this process's holder line into the file.

        Raises:
            LockBusyError: when another holder prevents it (the message names them).
            RuntimeError: when this object already holds it.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this lock object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: shared holders add their lines side by side; O_CLOEXEC (Python's default):
        # exec'd children (torchrun, spawned DDP workers) never inherit the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise self._busy() from None
        self._fd, self._pid = fd, os.getpid()
        with _REGISTRY_LOCK:
            _HELD_PATHS[str(self.path)] = _HELD_PATHS.get(str(self.path), 0) + 1
            _HELD_LOCKS.add(self)
        if not self.shared:
            os.ftruncate(fd, 0)  # earlier holders are gone
        line = {
            "pid": os.getpid(),
            "command": current_command(),
            "mode": "shared" if self.shared else "exclusive",
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.write(fd, (json.dumps(line) + "\n").encode())

    def release(self) -> None:
        """Release the lock (nothing when not held). In a forked child: close the copy, keep the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with _REGISTRY_LOCK:
            _HELD_LOCKS.discard(self)
            if self._pid == os.getpid():
                count = _HELD_PATHS.get(str(self.path), 1) - 1
                if count > 0:
                    _HELD_PATHS[str(self.path)] = count
                else:
                    _HELD_PATHS.pop(str(self.path), None)
        try:
            if self._pid == os.getpid():
                # The last holder empties the file. Converting a shared lock is not atomic: when
                # another holder remains, the attempt fails and leaves this one unlocked anyway.
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    pass
                else:
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _busy(self) -> LockBusyError:
        holders = read_holders(self.path)
        if holders:
            who = " and ".join(h.describe() for h in holders)
            stop = "kill " + " ".join(str(h.pid) for h in holders)
        else:
            who = "another process (which has not written its pid yet)"
            stop = "stop it"
        why = f" ({self.purpose})" if self.purpose else ""
        message = (
            f"Cannot start this run{why}: {self.path} is held by {who}; wait for that run to "
            f"finish or stop it ({stop}), then start this one again."
        )
        return LockBusyError(message, self.path, holders)

    def __repr__(self) -> str:
        mode = "shared" if self.shared else "exclusive"
        return f"FileLock({str(self.path)!r}, {mode}, held={self.held})"


def _close_in_child() -> None:
    """After a fork: close the child's copies of the held locks without unlocking them."""
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()  # another thread may have held it at the fork
    for lock in list(_HELD_LOCKS):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _HELD_LOCKS.clear()
    _HELD_PATHS.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLocks:
    """The locks of one run, under ``<root>/data/.locks``: taken all or none.

    Args:
        root: the project root.
        plan: which locks (:func:`plan_locks`).
    """

    def __init__(self, root: str | Path, plan: LockPlan) -> None:
        self.root = Path(root)
        self.plan = plan
        folder = self.root / LOCK_DIR
        purpose = plan.describe()
        self.locks: list[FileLock] = []
        if not plan.empty:
            self.locks.append(
                FileLock(folder / PROJECT_LOCK, shared=not plan.exclusive, purpose=purpose)
            )
        if not plan.exclusive:
            self.locks += [
                FileLock(folder / namespace_lock(ns), purpose=purpose) for ns in plan.namespaces
            ]

    @property
    def held(self) -> bool:
        return bool(self.locks) and all(lock.held for lock in self.locks)

    def acquire(self) -> RunLocks:
        """Take every lock (project lock first), or none: raises :class:`LockBusyError`."""
        taken: list[FileLock] = []
        try:
            for lock in self.locks:
                lock.acquire()
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        return self

    def release(self) -> None:
        """Release every lock (namespaces first); safe to call twice."""
        for lock in reversed(self.locks):
            lock.release()

    def __enter__(self) -> RunLocks:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLocks({str(self.root)!r}, {self.plan})"
