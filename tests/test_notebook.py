"""notebooks/ablation_results.ipynb: stored without outputs, and runs top to bottom in a kernel.

The end-to-end test runs ``kedro run --pipelines ablation --env test`` once in a temp project copy
(conf/test: 2 variants, tiny sizes), then executes the notebook with nbclient against that project
(``FACESCAN_PROJECT`` / ``FACESCAN_ENV``), in a kernel running this interpreter.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.conftest import REPO, run_kedro
from tests.project_copy import copy_project

NOTEBOOK = REPO / "notebooks" / "ablation_results.ipynb"
VARIANTS = ["resnet50", "aspp_crossscan_vit"]  # conf/test/parameters_ablation.yml
KERNEL = "facescan-test-python"  # a kernelspec written for the test: this interpreter, nothing else
PNG = b"\x89PNG\r\n\x1a\n"


def _kernelspec(root: Path) -> Path:
    """A Jupyter data dir whose kernel ``KERNEL`` runs ``sys.executable`` (the venv's Python).

    Put first on ``JUPYTER_PATH``, it wins over any ``python3`` kernel of the user or the system.
    """
    spec = root / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "facescan tests", "language": "python"})
    )
    return root / "jupyter"


def _execute(
    nb: nbformat.NotebookNode, root: Path, cwd: Path, env: dict[str, str | None]
) -> nbformat.NotebookNode:
    """Run ``nb`` top to bottom in a fresh kernel started in ``cwd``; outputs are stored in ``nb``.

    ``env`` sets (or, with None, removes) environment variables the kernel inherits. Raises
    ``nbclient.exceptions.CellExecutionError`` at the first failing cell (the outputs up to it
    stay in ``nb``).
    """
    with pytest.MonkeyPatch.context() as mp:
        jupyter_path = os.pathsep.join(
            filter(None, [str(_kernelspec(root)), os.environ.get("JUPYTER_PATH")])
        )
        mp.setenv("JUPYTER_PATH", jupyter_path)
        mp.setenv("KEDRO_DISABLE_TELEMETRY", "1")
        for name, value in env.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        client = NotebookClient(
            nb,
            kernel_name=KERNEL,
            timeout=600,
            startup_timeout=180,
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
    return nb


def _outputs(nb: nbformat.NotebookNode, output_type: str | None = None) -> list[Any]:
    """The outputs of every code cell (of one ``output_type`` when given)."""
    return [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if output_type is None or out.output_type == output_type
    ]


def _text(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed (streams) or displayed as text/plain or text/html."""
    parts = []
    for out in _outputs(nb):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("display_data", "execute_result"):
            parts.extend(str(out.data.get(k, "")) for k in ("text/plain", "text/html"))
    return "\n".join(parts)


def test_committed_notebook_is_valid_and_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and any(cell.cell_type == "markdown" for cell in nb.cells)
    for i, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{NOTEBOOK.name}: code cell {i} has stored outputs; clear them before committing "
            "(your editor's 'Clear All Outputs')"
        )
    assert nb.metadata.kernelspec.name == "python3"
    source = "\n".join(cell.source for cell in code)
    for needed in ("FACESCAN_PROJECT", "FACESCAN_ENV", "KedroSession.create", 'params:ablation"'):
        assert needed in source, needed


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """``(project, executed notebook)`` after an ablation run in the test environment."""
    root = tmp_path_factory.mktemp("notebook")
    project = copy_project(root)
    cwd = os.getcwd()
    os.chdir(project)
    try:
        run_kedro(project, ["ablation"], env="test")
    finally:
        os.chdir(cwd)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _execute(nb, root, project, {"FACESCAN_PROJECT": str(project), "FACESCAN_ENV": "test"})
    yield project, nb


@pytest.mark.slow
def test_notebook_runs_on_the_projects_outputs(executed: tuple[Path, Any]) -> None:
    project, nb = executed
    assert _outputs(nb, "error") == []
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    text = _text(nb)
    assert f"project:     {project}" in text  # FACESCAN_PROJECT, not the repository
    assert "environment 'test': 2 runs" in text


@pytest.mark.slow
def test_notebook_shows_the_ablation_table_with_every_variant(executed: tuple[Path, Any]) -> None:
    _, nb = executed
    tables = [
        out.data["text/html"]
        for out in _outputs(nb)
        if "text/html" in out.get("data", {}) and "ACC [95% CI]" in out.data["text/html"]
    ]
    assert len(tables) == 1
    for variant in VARIANTS:
        assert f"<th>{variant}</th>" in tables[0], variant
    assert "McNemar p" in tables[0]


@pytest.mark.slow
def test_notebook_draws_its_figures(executed: tuple[Path, Any]) -> None:
    _, nb = executed
    pngs = [out.data["image/png"] for out in _outputs(nb) if "image/png" in out.get("data", {})]
    # training curves, ROC curves, score distributions, accuracy vs compute, and the
    # class-activation maps' grid (explain_plots, issue 15)
    assert len(pngs) == 5
    for png in pngs:
        assert base64.b64decode(png).startswith(PNG)


@pytest.mark.slow
def test_notebook_without_outputs_says_to_run_the_ablation(tmp_path: Path) -> None:
    """No FACESCAN_PROJECT: the project is found from the working directory; no run yet."""
    project = copy_project(tmp_path)
    (project / "notebooks").mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"FACESCAN_PROJECT": None, "FACESCAN_ENV": "test"}
    with pytest.raises(CellExecutionError) as raised:
        _execute(nb, tmp_path, project / "notebooks", env)
    assert raised.value.ename == "FileNotFoundError", raised.value
    assert "No ablation outputs yet" in raised.value.evalue
    assert "make ablation" in raised.value.evalue
    assert f"project:     {project}" in _text(nb)
