"""What a newcomer sees: `kedro run` on a bad input ends with one clear sentence, not a deep traceback.

One real CLI run (a subprocess in a temp project, `--pipelines ingestion`: seconds); the other
error messages are checked at the function level next to their code (tests/data, tests/training,
tests/pipelines).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_wrong_class_folder_names_end_the_cli_output_with_the_fix(
    kedro_project: Path, tmp_path: Path
) -> None:
    faces = tmp_path / "faces"
    for i in range(2):
        _image(faces / "Real" / f"r{i}.png", i)
        _image(faces / "AI" / f"a{i}.png", 10 + i)
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "2000",  # rich wraps the traceback at the terminal width otherwise
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kedro",
            "run",
            "--env",
            "test",
            "--pipelines",
            "ingestion",
            "--params",
            f"data.source.type=folder,data.source.path={faces}",
        ],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    expected = (
        f"ValueError: data.source.classes: no class folder in {faces} is named for label 1 "
        "(fake): found AI/ (2 images, no label), Real/ (2 images, label 0), expected real or 0 "
        "for label 0 and fake or 1 for label 1 (names are not case-sensitive); rename the "
        "folders, or map them with data.source.classes = {Real: 0, AI: 1} (nested YAML in "
        "conf/local/parameters.yml; or --params data.source.classes.AI=1)"
    )
    lines = [line.rstrip() for line in result.stderr.splitlines() if line.strip()]
    # Whatever the terminal width, the message is all there...
    assert "".join(expected.split()) in "".join(result.stderr.split())
    # ... and at this width it is the last line the user sees.
    assert lines[-1] == expected
