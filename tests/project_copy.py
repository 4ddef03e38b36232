"""A throw-away copy of the Kedro project: conf/ (without local/), pyproject.toml, empty data layers.

The layout every test that runs Kedro uses (``kedro_project`` in tests/conftest.py, the
module-scoped runs of test_ablation.py and test_notebook.py) and benchmarks/data_pipeline.py runs
its stages in. Only the standard library: the benchmark imports it without pytest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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


def copy_project(root: Path) -> Path:
    """``root``/project: the repository's conf/ (an empty conf/local) and pyproject.toml, an empty
    src/ (``bootstrap_project`` wants it; the installed package is imported) and empty data layers.

    Runs in it never touch the repository's data/.
    """
    project = root / "project"
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()
    for layer in LAYERS:
        (project / "data" / layer).mkdir(parents=True)
    return project
