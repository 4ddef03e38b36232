"""Shared fixtures: a throw-away copy of the Kedro project, and the faces-a data set when present."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.project_copy import REPO, copy_project

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

FACES_A = REPO.parent / "shared" / "data" / "faces-a"


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's conf/ and pyproject.toml in a temp dir (cwd), with empty data/ layers
    (:func:`tests.project_copy.copy_project`; module-scoped runs call that directly).

    Runs in it never touch the repository's data/.
    """
    project = copy_project(tmp_path)
    monkeypatch.chdir(project)
    return project


def nest_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted keys -> nested dicts, as `kedro run --params a.b=c` does (values keep their types)."""
    nested: dict[str, Any] = {}
    for key, value in (params or {}).items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def run_kedro(
    project: Path,
    pipelines: list[str] | tuple[str, ...] = ("ablation",),
    env: str = "test",
    params: dict[str, Any] | None = None,
    **run_kwargs: Any,
) -> dict[str, Any]:
    """Run pipelines of the project copy through a real KedroSession (hooks, catalog, runner).

    ``params`` may use dotted keys (``{"data.source.type": "folder"}``), like ``--params``.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, env=env, runtime_params=nest_params(params)
    ) as session:
        return session.run(pipeline_names=list(pipelines), **run_kwargs)


def load_catalog(project: Path, env: str = "test", params: dict[str, Any] | None = None) -> Any:
    """The catalog of the project copy, as a run in ``env`` would see it."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, env=env, runtime_params=nest_params(params)
    ) as session:
        return session.load_context().catalog


@pytest.fixture
def faces_a() -> Path:
    """../shared/data/faces-a, or skip."""
    if not (FACES_A / "manifest.csv").is_file():
        pytest.skip("../shared/data/faces-a is absent")
    return FACES_A
