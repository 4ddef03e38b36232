"""Kedro hooks of facescan."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from facescan.locks import RunLocks, plan_locks
from facescan.pipelines.evaluate_external.hooks import SHARED_OUTPUT

logger = logging.getLogger(__name__)

STAGE_TIMINGS = "stage_timings"
REPORT = "ablation_report"


def _filepath(catalog: Any, name: str) -> str | None:
    """Absolute path of a file dataset of the catalog, or None."""
    try:
        dataset = catalog.get(name) if hasattr(catalog, "get") else catalog._get_dataset(name)
        path = getattr(dataset, "_filepath", None)
    except Exception:  # noqa: BLE001 - a log line must never fail a finished run
        return None
    return str(Path(str(path)).resolve()) if path else None


REPORT_RUN = "report_run"


class ReportRunHook:
    """Hands the report node this run's identity: Kedro's save version (the timestamp of every
    versioned dataset the run writes) and the environment, saved as ``report_run`` before the
    first node runs (``run_params`` holds them; no node can read them otherwise)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if REPORT_RUN in catalog and any(REPORT_RUN in n.inputs for n in pipeline.nodes):
            catalog.save(
                REPORT_RUN,
                {"version": run_params.get("run_id"), "env": run_params.get("env") or "local"},
            )


def _stage_of(node: Any) -> str:
    """The pipeline a node comes from: the package under facescan.pipelines defining its function."""
    func = getattr(node.func, "func", node.func)  # functools.partial binds the variant
    parts = getattr(func, "__module__", "").split(".")
    if len(parts) >= 3 and parts[:2] == ["facescan", "pipelines"]:
        return parts[2]
    return "other"


class StageTimingHook:
    """Wall time per stage (ingestion, split, ..., reporting) and per node.

    A node's time includes saving its outputs (Kedro saves them after ``after_node_run``, and lazy
    outputs such as the image caches do their work while being saved). Logged at the end of a run
    and saved as the ``stage_timings`` dataset (when the catalog has it); a node that reads
    ``stage_timings`` (the report) receives the timings of every stage that ran before it.
    """

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._stages: dict[str, float] = defaultdict(float)
        self._producer: dict[str, str] = {}
        self._run_start = 0.0
        self._report: str | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._started.clear()
        self._stages.clear()
        self._producer = {out: _stage_of(n) for n in pipeline.nodes for out in n.outputs}
        self._report = REPORT if REPORT in self._producer else None
        self._run_start = time.perf_counter()
        if any(STAGE_TIMINGS in n.inputs for n in pipeline.nodes):
            self._save(catalog)  # so that the dataset exists when the report loads it

    @hook_impl
    def before_node_run(self, node: Any) -> dict[str, Any] | None:
        self._started[node.name] = time.perf_counter()
        if STAGE_TIMINGS in node.inputs:
            return {STAGE_TIMINGS: self.timings()}
        return None

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        self._stages[_stage_of(node)] += seconds

    @hook_impl
    def before_dataset_saved(self, dataset_name: str) -> None:
        self._started["save:" + dataset_name] = time.perf_counter()

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        start = self._started.pop("save:" + dataset_name, None)
        if start is not None and dataset_name in self._producer:
            self._stages[self._producer[dataset_name]] += time.perf_counter() - start

    @hook_impl
    def after_pipeline_run(self, catalog: Any) -> None:
        self._save(catalog)
        total = time.perf_counter() - self._run_start
        per_stage = ", ".join(f"{k} {v:.1f} s" for k, v in self._stages.items())
        logger.info("Run finished in %.1f s (%s)", total, per_stage or "no nodes ran")
        path = _filepath(catalog, self._report) if self._report else None
        if path:
            logger.info("The ablation report: %s", path)

    def timings(self) -> dict[str, float]:
        """Seconds per stage so far."""
        return {k: round(v, 3) for k, v in self._stages.items()}

    def _save(self, catalog: Any) -> None:
        if STAGE_TIMINGS in catalog:
            catalog.save(STAGE_TIMINGS, self.timings())


class RunLockHook:
    """Keeps two runs of one project from writing the same data (:mod:`facescan.locks`).

    Before the first node (and before any other hook's ``before_pipeline_run``: this one wraps
    them), the run takes the locks its nodes need under ``<project>/data/.locks``: the project lock
    alone when a node outside any namespace writes shared data (ingestion, split, preprocess,
    reporting), else the project lock shared plus one lock per namespace, so that variants train
    side by side. A run that cannot get them stops at once with
    :class:`~facescan.locks.LockBusyError` naming the holders' pids and commands. The locks are
    released when the run ends or fails, after the other hooks' ``after_pipeline_run`` /
    ``on_pipeline_error`` (the stage timings are saved under them), and when another hook's
    ``before_pipeline_run`` fails. Only this process holds them: DDP workers are spawned processes
    that neither inherit nor take them.
    """

    def __init__(self) -> None:
        # run id -> (thread that started the run, its locks)
        self._runs: dict[str, tuple[int, RunLocks]] = {}

    @hook_impl(wrapper=True)
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Any
    ) -> Generator[None, Any, Any]:
        self._release_abandoned()
        root = run_params.get("project_path")
        if root:
            namespaces = [node.namespace for node in pipeline.nodes]
            if any(SHARED_OUTPUT in n.inputs for n in pipeline.nodes) and (
                SHARED_OUTPUT not in pipeline.all_outputs()
            ):
                namespaces.append(None)  # ExternalDataHook will write the shared external data
            plan = plan_locks(namespaces)
            locks = RunLocks(Path(root), plan).acquire()
            self._runs[_run_key(run_params)] = (threading.get_ident(), locks)
            logger.debug("Run locks held: %s", ", ".join(str(lock) for lock in locks.locks))
        else:
            logger.warning("No project_path in run_params: this run takes no run lock")
        try:
            return (yield)
        except BaseException:
            self._release(run_params)
            raise

    @hook_impl(wrapper=True)
    def after_pipeline_run(self, run_params: dict[str, Any]) -> Generator[None, Any, Any]:
        try:
            return (yield)
        finally:
            self._release(run_params)

    @hook_impl(wrapper=True)
    def on_pipeline_error(self, run_params: dict[str, Any]) -> Generator[None, Any, Any]:
        try:
            return (yield)
        finally:
            self._release(run_params)

    def _release(self, run_params: dict[str, Any]) -> None:
        entry = self._runs.pop(_run_key(run_params), None)
        if entry is not None:
            entry[1].release()

    def _release_abandoned(self) -> None:
        """Release the locks of runs that never reached their end: started by this thread (a new
        run means the earlier one is over: Ctrl-C in a notebook, which Kedro does not pass to
        ``on_pipeline_error``) or by a thread that is gone."""
        alive = {thread.ident for thread in threading.enumerate()}
        me = threading.get_ident()
        for key, (thread, locks) in list(self._runs.items()):
            if thread == me or thread not in alive:
                logger.warning("Releasing the run locks of run %s, which did not finish", key)
                self._runs.pop(key, None)
                locks.release()


def _run_key(run_params: dict[str, Any]) -> str:
    return str(run_params.get("run_id"))
