"""Several seeds through the whole ``ablation`` pipeline: the README's remedy for a bad draw.

The test environment with ``ablation.seeds: [0, 1]`` in its parameters file, as a user would write
it in ``conf/local`` (which ``--env test`` replaces): two variants x two seeds, tiny sizes. The table, the per-run table, the plots, the
Markdown, the HTML report and the notebook must all work (before, ``plot_ablation`` failed with
matplotlib's "'xerr' must not contain negative values").
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from tests.pipelines.test_ablation import PNG, _only_version, run_ablation_in
from tests.pipelines.test_reporting import PLOT_FILES
from tests.project_copy import copy_project

pytestmark = pytest.mark.slow

VARIANTS = ["resnet50", "aspp_crossscan_vit"]  # conf/test/parameters_ablation.yml
SEEDS = [0, 1]
NAMESPACES = [f"{v}_seed{s}" for v in VARIANTS for s in SEEDS]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    project = copy_project(tmp_path_factory.mktemp("seeds"))
    params = project / "conf" / "test" / "parameters_ablation.yml"
    text = params.read_text()
    assert "  seeds: [0]\n" in text
    params.write_text(text.replace("  seeds: [0]\n", "  seeds: [0, 1]\n"))
    yield from run_ablation_in(project)


def _metrics(project: Path, ns: str) -> dict:
    return json.loads((project / "data" / "07_model_output" / ns / "metrics.json").read_text())


def test_table_gives_means_with_intervals_that_contain_them(seeded: Path) -> None:
    reporting = seeded / "data" / "08_reporting"
    table = pd.read_csv(_only_version(reporting / "ablation_table.csv"))
    assert table["variant"].tolist() == VARIANTS
    assert table["n_seeds"].tolist() == [2, 2]
    for row in table.itertuples():
        accs = [_metrics(seeded, f"{row.variant}_seed{s}")["acc"] for s in SEEDS]
        assert row.acc == pytest.approx(sum(accs) / 2)
        assert row.acc_ci_low <= row.acc <= row.acc_ci_high
        assert row.auc_ci_low <= row.auc <= row.auc_ci_high
        # the interval spans at least the seeds' own spread around the mean
        assert row.acc_ci_low <= max(accs) and row.acc_ci_high >= min(accs)
    base, other = table.iloc[0], table.iloc[1]
    assert bool(base["is_baseline"]) and pd.isna(base["p_value"])
    assert other["test"] == "bootstrap" and 0 < other["p_value"] <= 1
    assert other["delta_acc_ci_low"] <= other["delta_acc"] <= other["delta_acc_ci_high"]
    assert 0 < other["p_value_holm"] <= 1 and 0 < other["mcnemar_p"] <= 1


def test_every_run_has_its_own_row(seeded: Path) -> None:
    runs = pd.read_csv(_only_version(seeded / "data" / "08_reporting" / "ablation_runs.csv"))
    assert runs["namespace"].tolist() == NAMESPACES
    assert runs["seed"].tolist() == SEEDS * 2
    for row in runs.itertuples():
        m = _metrics(seeded, row.namespace)
        assert row.acc == pytest.approx(m["acc"]) and row.auc == pytest.approx(m["auc"])
        assert row.acc_ci_low <= row.acc <= row.acc_ci_high
        assert row.first_epoch_train_loss > 0
    # each non-baseline run is tested against the baseline run with its own seed
    assert runs.loc[runs["variant"] == "resnet50", "mcnemar_p"].isna().all()
    assert runs.loc[runs["variant"] != "resnet50", "mcnemar_p"].between(0, 1).all()


def test_plots_markdown_and_report_with_two_seeds(seeded: Path) -> None:
    reporting = seeded / "data" / "08_reporting"
    plots = _only_version(reporting / "ablation_plots")
    assert len(list(plots.iterdir())) == len(PLOT_FILES)
    assert all(p.read_bytes().startswith(PNG) for p in plots.iterdir())
    md = _only_version(reporting / "ablation_table.md").read_text()
    assert "mean over the variant's seeds" in md and "| p_value |" in md
    assert re.search(r"\| resnet50 \| \d\.\d{3} ± \d\.\d{3} \|", md)
    assert "## Every run" in md and all(ns in md for ns in NAMESPACES)
    assert "aspp_crossscan_vit vs resnet50" in md and "2 seeds" in md
    html = (reporting / "ablation_report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    # The plots and the class-activation maps' grid ("Where the models look").
    assert len(images) == len(PLOT_FILES) + 1
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    assert 'id="where"' in html
    assert "Several seeds." in html and 'id="runs"' in html
    assert all(ns in html for ns in NAMESPACES)
    assert "Each variant was trained once" not in html  # the one-seed caveat is gone


def test_notebook_runs_with_two_seeds(seeded: Path, tmp_path: Path) -> None:
    from tests.test_notebook import NOTEBOOK, _execute, _outputs, _text

    nb = nbformat.read(NOTEBOOK, as_version=4)
    _execute(nb, tmp_path, seeded, {"FACESCAN_PROJECT": str(seeded), "FACESCAN_ENV": "test"})
    assert _outputs(nb, "error") == []
    text = _text(nb)
    assert "environment 'test': 4 runs" in text
    assert all(ns in text for ns in NAMESPACES)
    assert "first_epoch_train_loss" in text  # the per-run table under the means
