"""Run locks: two runs at once in one project never write the same data.

``flock`` locks belong to an open file description, so two ``open()`` calls conflict even within
one process: most tests hold both sides here; a few use a subprocess for a real other pid.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kedro.framework.hooks import hook_impl

from facescan.locks import (
    LOCK_DIR,
    PROJECT_LOCK,
    FileLock,
    LockBusyError,
    LockPlan,
    RunLocks,
    current_command,
    namespace_lock,
    plan_locks,
    read_holders,
)
from tests.conftest import run_kedro

DATA_RUN = LockPlan(exclusive=True)

HOLDER = """\
import sys
from facescan.locks import LockPlan, RunLocks

root, kind, namespaces = sys.argv[1], sys.argv[2], tuple(sys.argv[3:])
RunLocks(root, LockPlan(exclusive=kind == "data", namespaces=namespaces)).acquire()
print("ready", flush=True)
sys.stdin.readline()
"""


@contextmanager
def holding(root: Path, kind: str, *namespaces: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the locks of a ``data`` run, or of an ``ns`` run of ``namespaces``."""
    script = root.parent / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), kind, *namespaces],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _project_lock(root: Path) -> Path:
    return root / LOCK_DIR / PROJECT_LOCK


def _free(path: Path, shared: bool = False) -> bool:
    """Whether a new holder gets ``path`` now (released at once)."""
    lock = FileLock(path, shared=shared)
    try:
        lock.acquire()
    except LockBusyError:
        return False
    lock.release()
    return True


# --- which locks a run needs ---------------------------------------------------------------------


def test_plan_locks() -> None:
    assert plan_locks([None, "resnet50"]) == LockPlan(exclusive=True)  # shared data: alone
    assert plan_locks(["vit", "resnet50.sub", "resnet50"]) == LockPlan(
        exclusive=False, namespaces=("resnet50", "vit")
    )
    assert plan_locks([]).empty
    assert namespace_lock("vit_seed1") == "ns-vit_seed1.lock"
    assert namespace_lock("a/b c") == "ns-a_b_c.lock"


# --- exclusive and shared ------------------------------------------------------------------------


def test_two_opens_in_one_process_conflict_and_the_message_names_the_holder(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / ".locks" / "project.lock"
    first = FileLock(path)
    first.acquire()
    second = FileLock(path, purpose="it writes data shared by every run")
    with pytest.raises(LockBusyError) as err:
        second.acquire()
    message = str(err.value)
    assert message == (
        f"Cannot start this run (it writes data shared by every run): {path} is held by pid "
        f"{os.getpid()} ({err.value.holders[0].command}); wait for that run to finish or stop it "
        f"(kill {os.getpid()}), then start this one again."
    )
    assert err.value.holders[0].command == current_command()
    assert not second.held
    first.release()
    second.acquire()  # free again
    assert second.held
    second.release()
    second.release()  # twice is harmless


def test_namespace_runs_go_side_by_side_and_data_runs_wait(tmp_path: Path) -> None:
    vit = RunLocks(tmp_path, LockPlan(exclusive=False, namespaces=("vit",))).acquire()
    resnet = RunLocks(tmp_path, LockPlan(exclusive=False, namespaces=("resnet50",))).acquire()
    assert vit.held and resnet.held  # variants in parallel, one per GPU

    with pytest.raises(LockBusyError, match=r"ns-vit\.lock is held by pid"):
        RunLocks(tmp_path, LockPlan(exclusive=False, namespaces=("aspp", "vit"))).acquire()
    assert _free(tmp_path / LOCK_DIR / "ns-aspp.lock")  # all or nothing: aspp was given back

    with pytest.raises(LockBusyError, match=r"project\.lock is held by pid") as err:
        RunLocks(tmp_path, DATA_RUN).acquire()
    assert len(err.value.holders) == 1  # both holders are this process: one pid

    vit.release()
    with pytest.raises(LockBusyError):
        RunLocks(tmp_path, DATA_RUN).acquire()  # resnet50 still trains
    resnet.release()
    with RunLocks(tmp_path, DATA_RUN) as data:
        assert data.held
        with pytest.raises(LockBusyError, match=r"project\.lock"):
            RunLocks(tmp_path, LockPlan(exclusive=False, namespaces=("vit",))).acquire()
        assert _free(tmp_path / LOCK_DIR / "ns-vit.lock")  # not kept after the refusal
    assert _free(_project_lock(tmp_path))
    assert _project_lock(tmp_path).read_text() == ""  # the last holder empties the file


def test_another_process_is_named_by_pid_and_command(tmp_path: Path) -> None:
    root = tmp_path / "project"
    with holding(root, "ns", "resnet50") as proc:
        with pytest.raises(LockBusyError) as err:
            RunLocks(root, DATA_RUN).acquire()
        message = str(err.value)
        assert f"{_project_lock(root)} is held by pid {proc.pid} (holder.py {root} ns" in message
        assert f"wait for that run to finish or stop it (kill {proc.pid})" in message
        assert "\n" not in message and message.endswith("then start this one again.")
        assert [h.pid for h in err.value.holders] == [proc.pid]
        assert err.value.path == _project_lock(root)

        # Another variant trains beside it; the same one does not.
        with RunLocks(root, LockPlan(exclusive=False, namespaces=("vit",))):
            pass
        with pytest.raises(LockBusyError, match=rf"ns-resnet50\.lock is held by pid {proc.pid}"):
            RunLocks(root, LockPlan(exclusive=False, namespaces=("resnet50",))).acquire()


def test_a_killed_holder_never_blocks(tmp_path: Path) -> None:
    root = tmp_path / "project"
    with holding(root, "data") as proc:
        assert not _free(_project_lock(root))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert read_holders(_project_lock(root)) == []  # its line is left, but it is gone
        with RunLocks(root, DATA_RUN) as locks:
            assert locks.held


def _release_in_child(lock: FileLock) -> None:
    lock.release()  # a forked child: closes its copy, does not unlock the parent's lock


def test_children_neither_release_nor_keep_the_lock(tmp_path: Path) -> None:
    path = _project_lock(tmp_path)
    lock = FileLock(path)
    lock.acquire()
    # A forked child (a DataLoader worker) that releases does not free the parent's lock.
    child = multiprocessing.get_context("fork").Process(target=_release_in_child, args=(lock,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert lock.held and not _free(path)
    # An exec'd child (torchrun, a spawned DDP worker) does not inherit it: once the parent
    # releases, the lock is free although the child still runs.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.release()
        assert _free(path)
    finally:
        sleeper.kill()
        sleeper.wait()


# --- the Kedro hook ------------------------------------------------------------------------------


class _Node:
    def __init__(self, namespace: str | None) -> None:
        self.namespace, self.name, self.inputs, self.outputs = namespace, "n", [], []


def _pipeline(*namespaces: str | None) -> Any:
    return type("P", (), {"nodes": [_Node(ns) for ns in namespaces]})()


def _hook_manager(*hooks: Any) -> Any:
    from kedro.framework.hooks.manager import _create_hook_manager

    manager = _create_hook_manager()
    for hook in hooks:
        manager.register(hook)
    return manager


def _run_params(root: Path, run_id: str) -> dict[str, Any]:
    return {"project_path": root.as_posix(), "run_id": run_id}


def test_hook_locks_from_the_nodes_and_releases_at_the_end_or_on_error(tmp_path: Path) -> None:
    from facescan.hooks import RunLockHook

    # Two sessions (two processes in real life: their lock files are opened separately).
    first, second = _hook_manager(RunLockHook()), _hook_manager(RunLockHook())
    one, two = _run_params(tmp_path, "run-1"), _run_params(tmp_path, "run-2")
    training_vit = _pipeline("vit", "vit")
    first.hook.before_pipeline_run(run_params=one, pipeline=training_vit, catalog=None)
    assert not _free(tmp_path / LOCK_DIR / "ns-vit.lock")
    assert _free(_project_lock(tmp_path), shared=True) and not _free(_project_lock(tmp_path))

    second.hook.before_pipeline_run(run_params=two, pipeline=_pipeline("resnet50"), catalog=None)
    second.hook.after_pipeline_run(
        run_params=two, run_result={}, pipeline=_pipeline("resnet50"), catalog=None
    )
    with pytest.raises(LockBusyError, match=r"writes data shared by every run.*project\.lock"):
        second.hook.before_pipeline_run(
            run_params=two, pipeline=_pipeline(None, "vit"), catalog=None
        )

    first.hook.on_pipeline_error(
        error=RuntimeError("node failed"), run_params=one, pipeline=training_vit, catalog=None
    )
    assert _free(_project_lock(tmp_path)) and _free(tmp_path / LOCK_DIR / "ns-vit.lock")
    second.hook.before_pipeline_run(run_params=two, pipeline=_pipeline(None), catalog=None)
    assert not _free(_project_lock(tmp_path), shared=True)
    second.hook.after_pipeline_run(
        run_params=two, run_result={}, pipeline=_pipeline(None), catalog=None
    )
    assert _free(_project_lock(tmp_path))


class _FailingHook:
    @hook_impl
    def before_pipeline_run(self) -> None:
        raise RuntimeError("another hook failed")


def test_hook_releases_when_a_later_hook_fails_or_a_run_was_interrupted(tmp_path: Path) -> None:
    from facescan.hooks import RunLockHook

    manager = _hook_manager(RunLockHook(), _FailingHook())
    with pytest.raises(RuntimeError, match="another hook failed"):
        manager.hook.before_pipeline_run(
            run_params=_run_params(tmp_path, "a"), pipeline=_pipeline(None), catalog=None
        )
    assert _free(_project_lock(tmp_path))  # Kedro calls no on_pipeline_error then

    # A run of this thread that never reached its end (Ctrl-C in a notebook: KeyboardInterrupt is
    # not passed to on_pipeline_error) does not block the next run of the same session's process.
    hook = RunLockHook()
    manager = _hook_manager(hook)
    manager.hook.before_pipeline_run(
        run_params=_run_params(tmp_path, "b"), pipeline=_pipeline(None), catalog=None
    )
    manager.hook.before_pipeline_run(
        run_params=_run_params(tmp_path, "c"), pipeline=_pipeline(None), catalog=None
    )
    manager.hook.after_pipeline_run(
        run_params=_run_params(tmp_path, "c"), run_result={}, pipeline=_pipeline(None), catalog=None
    )
    assert _free(_project_lock(tmp_path))


def test_the_project_registers_the_hook() -> None:
    from facescan import settings
    from facescan.hooks import RunLockHook

    assert any(isinstance(hook, RunLockHook) for hook in settings.HOOKS)


# --- real Kedro sessions -------------------------------------------------------------------------


@pytest.mark.slow
def test_kedro_run_stops_at_once_while_another_run_holds_the_lock(kedro_project: Path) -> None:
    with holding(kedro_project, "ns", "resnet50") as proc:
        with pytest.raises(LockBusyError, match=rf"project\.lock is held by pid {proc.pid} "):
            run_kedro(kedro_project, ["ingestion"])
        assert not any((kedro_project / "data" / "02_intermediate").iterdir())  # nothing ran
        with pytest.raises(LockBusyError, match=rf"ns-resnet50\.lock is held by pid {proc.pid} "):
            run_kedro(kedro_project, ["training"], namespaces=["resnet50"])
    assert not any((kedro_project / "data" / "06_models").iterdir())


@pytest.mark.slow
def test_kedro_runs_release_their_locks_when_they_fail_or_end(kedro_project: Path) -> None:
    with pytest.raises(ValueError, match="data.source.path must be set"):
        run_kedro(kedro_project, ["ingestion"], params={"data.source.type": "folder"})
    assert _free(_project_lock(kedro_project))
    run_kedro(kedro_project, ["ingestion"])
    run_kedro(kedro_project, ["ingestion"])  # a second session in this process after the first
    assert _free(_project_lock(kedro_project))


def test_a_namespace_run_that_builds_the_external_data_needs_the_project_alone(tmp_path) -> None:
    """`evaluate_external --namespaces X` writes the shared external cache (ExternalDataHook)."""
    from kedro.pipeline import Node, Pipeline

    from facescan.hooks import RunLockHook

    score = Node(lambda cache: cache, inputs="external_cache", outputs="m", namespace="resnet50")
    hook = RunLockHook()
    params = {"project_path": str(tmp_path), "run_id": "r1"}
    gen = hook.before_pipeline_run(run_params=params, pipeline=Pipeline([score]))
    next(gen)
    try:
        with pytest.raises(LockBusyError, match="project.lock"):
            RunLocks(tmp_path, plan_locks(["vit"])).acquire()  # even another namespace waits
    finally:
        with contextlib.suppress(StopIteration):
            gen.send(None)
        hook._release(params)
