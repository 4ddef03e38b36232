"""Shared fixtures: a throw-away copy of the Kedro project, and the faces-a data set when present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
FACES_A = REPO.parent / "shared" / "data" / "faces-a"
LAYERS = (
    "01_raw",
    "02_intermediate",
    "03_primary",
    "04_feature",
    "05_model_input",
    "06_models",
    "07_model_output",
    "08_reporting",
)


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's conf/ and pyproject.toml in a temp dir (cwd), with empty data/ layers.

    Runs in it never touch the repository's data/.
    """
    project = tmp_path / "project"
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()  # bootstrap_project wants it; the installed package is imported
    for layer in LAYERS:
        (project / "data" / layer).mkdir(parents=True)
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
