"""The whole ``ablation`` pipeline (data -> training -> evaluation -> reporting) through Kedro.

One run in the test environment as configured (conf/test: 2 variants, 80 synthetic images at
40/32 px, 2 epochs) is shared by the assertions; a short run on faces-a (when present) checks that
real images give finite AUCs.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

from facescan.evaluation.report import manifest_hash
from facescan.evaluation.tables import TABLE_COLUMNS
from tests.conftest import run_kedro
from tests.pipelines.test_reporting import PLOT_FILES
from tests.project_copy import copy_project

pytestmark = pytest.mark.slow

VARIANTS = ["resnet50", "aspp_crossscan_vit"]  # conf/test/parameters_ablation.yml
PNG = b"\x89PNG\r\n\x1a\n"


def run_ablation_in(project: Path) -> Iterator[Path]:
    """Run ``kedro run --pipelines ablation --env test`` in ``project`` (cwd there), yield it."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        run_kedro(project, ["ablation"])
        yield project
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project copy after ``kedro run --pipelines ablation --env test`` (shared by the tests)."""
    yield from run_ablation_in(copy_project(tmp_path_factory.mktemp("ablation")))


def _only_version(folder: Path) -> Path:
    """The file inside a versioned dataset folder ``<name>/<timestamp>/<name>``."""
    versions = sorted(folder.iterdir())
    assert len(versions) == 1, versions
    return versions[0] / folder.name


def test_every_run_output_is_written(ablation: Path) -> None:
    data = ablation / "data"
    for ns in VARIANTS:
        assert _only_version(data / "06_models" / ns / "model.pt").is_file()
        out = data / "07_model_output" / ns
        for name in ("metrics.json", "test_predictions.csv", "history.csv", "robustness.csv"):
            assert (out / name).is_file(), f"{ns}/{name}"
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["namespace"] == ns and metrics["best_epoch"] in (1, 2)
        assert metrics["gflops"] > 0 and metrics["images_per_s"] > 0


def test_ablation_table_csv_and_markdown(ablation: Path) -> None:
    reporting = ablation / "data" / "08_reporting"
    table = pd.read_csv(_only_version(reporting / "ablation_table.csv"))
    assert list(table.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert table["variant"].tolist() == VARIANTS
    for ns, row in zip(VARIANTS, table.itertuples(), strict=True):
        metrics = json.loads(
            (ablation / "data" / "07_model_output" / ns / "metrics.json").read_text()
        )
        assert row.acc == pytest.approx(metrics["acc"]) and row.loss == pytest.approx(
            metrics["loss"]
        )
        assert row.acc_ci_low <= row.acc <= row.acc_ci_high
    assert pd.isna(table.loc[0, "mcnemar_p"]) and 0 < table.loc[1, "mcnemar_p"] <= 1
    md = _only_version(reporting / "ablation_table.md").read_text()
    assert "| variant | acc | loss |" in md and "aspp_crossscan_vit vs resnet50" in md
    robustness = pd.read_csv(_only_version(reporting / "robustness_table.csv"))
    assert set(robustness["variant"]) == set(VARIANTS) and len(robustness) == 2 * 7


def test_plots_are_png_files(ablation: Path) -> None:
    folder = _only_version(ablation / "data" / "08_reporting" / "ablation_plots")
    names = sorted(p.name for p in folder.iterdir())
    assert names == PLOT_FILES
    assert all((folder / n).read_bytes().startswith(PNG) for n in names)


def test_html_report_holds_table_plots_data_and_provenance(ablation: Path) -> None:
    html = (ablation / "data" / "08_reporting" / "ablation_report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    # The plots and the class-activation maps' grid ("Where the models look").
    assert len(images) == len(PLOT_FILES) + 1
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    assert 'id="where"' in html
    assert 'id="ablation-table"' in html and all(v in html for v in VARIANTS)
    split = pd.read_parquet(ablation / "data" / "03_primary" / "split_manifest.parquet")
    assert manifest_hash(split) in html
    for text in (
        "Caveats",
        "synthetic demo",
        "Wall time per stage",
        "training",
        "torch",
        "git_commit",
        "Robustness",
    ):
        assert text in html, text


def test_reporting_alone_rebuilds_from_saved_outputs(ablation: Path) -> None:
    os.chdir(ablation)
    reporting = ablation / "data" / "08_reporting"
    first = (reporting / "ablation_report.html").read_text()
    # Another run with other parameters: a second report, the first one kept and linked.
    run_kedro(ablation, ["reporting"], params={"evaluation.bootstrap.n_resamples": 150})
    versions = list((reporting / "ablation_table.csv").iterdir())
    assert len(versions) == 2  # versioned: the first table is kept
    reports = sorted((reporting / "reports" / "ablation_report.html").iterdir())
    assert [p.name for p in reports] == sorted(p.name for p in versions)  # same timestamps
    old, new = (p / "ablation_report.html" for p in reports)
    assert old.read_text().replace('<base href="../../../">', "") == first
    stable = (reporting / "ablation_report.html").read_text()
    assert new.read_text() == stable.replace("<head>", '<head><base href="../../../">', 1)
    settings = '"n_resamples": 150'
    assert settings in unescape(stable) and settings not in unescape(first)
    assert f"Report version <code>{reports[1].name}</code>" in stable
    link = f"reports/ablation_report.html/{reports[0].name}/ablation_report.html"
    assert f'<a href="{link}">{reports[0].name}</a>' in stable
    assert (reporting / link).is_file()  # the link resolves from the stable report's folder
    assert "No earlier report." in first


@pytest.mark.faces_a
def test_faces_a_short_run_gives_finite_aucs(faces_a: Path, kedro_project: Path) -> None:
    # A stratified subset (150 real, 50 fake: the set's 3:1) listed in the competition's CSV
    # format keeps the run short; the test split then holds 30 real and 10 fake faces.
    manifest = pd.read_csv(faces_a / "manifest.csv")
    subset = pd.concat(
        [
            manifest[manifest["label"] == "real"].head(150),
            manifest[manifest["label"] == "fake"].head(50),
        ]
    )
    labels_csv = kedro_project / "faces_a_subset.csv"
    subset[["path", "label"]].to_csv(labels_csv, index=False, header=["ImageName", "Label"])
    params = {
        "data": {"source": {"type": "csv", "path": str(faces_a), "labels_csv": str(labels_csv)}},
        "ablation": {"variants": ["resnet50", "se_resnet50"]},
        "training": {"max_epochs": 1},
        "evaluation": {"robustness": {"enabled": False}},
    }
    run_kedro(kedro_project, ["ablation"], params=params)
    table = pd.read_csv(
        _only_version(kedro_project / "data" / "08_reporting" / "ablation_table.csv")
    )
    assert table["variant"].tolist() == ["resnet50", "se_resnet50"]
    assert table["auc"].notna().all() and table["auc"].between(0, 1).all()
    assert table["auc_ci_low"].notna().all() and table["auc_ci_high"].notna().all()
    metrics = json.loads(
        (kedro_project / "data" / "07_model_output" / "resnet50" / "metrics.json").read_text()
    )
    assert (metrics["n_real"], metrics["n_fake"]) == (30, 10)
