"""The reporting pipeline on an in-memory catalog (SequentialRunner), from fabricated runs."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from facescan.pipelines.reporting import create_pipeline
from facescan.runs import VariantRun, expand_runs
from tests.evaluation.helpers import LABELS, PATHS, fake_run


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, to inspect intermediate outputs afterwards."""

    def _release(self) -> None:
        pass


PARAMETERS = {
    "data": {"source": {"type": "synthetic"}},
    "ablation": {"variants": ["resnet50", "vit"], "seeds": [0, 1], "baseline": "resnet50"},
    "evaluation": {"bootstrap": {"n_resamples": 100}},
    "training": {"max_epochs": 2},
}
#: What ``ablation_plots`` holds (one PNG per figure), sorted; test_ablation.py checks the files.
PLOT_FILES = [
    "accuracy_ci.png",
    "accuracy_vs_gflops.png",
    "confusion_matrices.png",
    "reliability.png",
    "robustness.png",
    "roc_curves.png",
    "training_curves.png",
]


@pytest.fixture(scope="module")
def outputs() -> dict:
    runs = expand_runs(PARAMETERS["ablation"])
    assert [r.namespace for r in runs] == [
        "resnet50_seed0",
        "resnet50_seed1",
        "vit_seed0",
        "vit_seed1",
    ]
    wrong = {"resnet50": (12, 10), "vit": (2, 3)}
    datasets = {}
    for run in runs:
        result = fake_run(run.variant, run.seed, wrong[run.variant][run.seed])
        for kind, value in (
            ("metrics", result.metrics),
            ("test_predictions", result.predictions),
            ("history", result.history),
            ("robustness", result.robustness),
        ):
            datasets[f"{run.namespace}.{kind}"] = MemoryDataset(value)
    split = pd.DataFrame(
        {
            "path": PATHS,
            "label": LABELS,
            "split": "test",
            "sha256": [f"{i:064x}" for i in range(len(PATHS))],
        }
    )
    datasets.update(
        test_cache=MemoryDataset(SimpleNamespace(sha256="c" * 64), copy_mode="assign"),
        split_manifest=MemoryDataset(split),
        rejected_images=MemoryDataset(pd.DataFrame({"path": ["/x.jpg"], "reason": ["zero bytes"]})),
        stage_timings=MemoryDataset({"training": 30.0, "evaluation": 4.0}),
        parameters=MemoryDataset(PARAMETERS),
        ablation_report_history=MemoryDataset(
            [
                {
                    "version": "2026-01-01T00.00.00.000Z",
                    "path": "reports/ablation_report.html/2026-01-01T00.00.00.000Z/ablation_report.html",
                    "git_commit": "0123456789abcdef",
                    "env": "base",
                    "variants": ["resnet50"],
                }
            ]
        ),
        report_run=MemoryDataset({"version": "2026-02-02T00.00.00.000Z", "env": "test"}),
        **{f"params:{k}": MemoryDataset(v) for k, v in PARAMETERS.items()},
        # Fake runs have no models: the class-activation maps are tested end to end instead
        # (tests/pipelines/test_ablation.py) and in tests/evaluation/test_explain.py.
        **{"params:reporting": MemoryDataset({"explain": {"enabled": False}})},
        **{f"{run.namespace}.model": MemoryDataset(None) for run in runs},
    )
    kept = (
        "ablation_table",
        "ablation_table_md",
        "ablation_runs",
        "ablation_plots",
        "ablation_report",
        "ablation_report_version",
        "robustness_table",
    )
    for name in kept:
        datasets[name] = KeptDataset(copy_mode="assign")
    catalog = DataCatalog(datasets=datasets)
    SequentialRunner().run(create_pipeline(runs), catalog)
    return {name: catalog.load(name) for name in kept}


def test_table_has_one_row_per_variant_with_seed_spread(outputs) -> None:
    table = outputs["ablation_table"]
    assert table["variant"].tolist() == ["resnet50", "vit"]
    assert list(table.columns[:3]) == ["variant", "acc", "loss"]
    assert table.loc[0, "acc"] == pytest.approx((48 / 60 + 50 / 60) / 2)
    assert table.loc[0, "acc_std"] == pytest.approx(np.std([48 / 60, 50 / 60], ddof=1))
    assert table["n_seeds"].tolist() == [2, 2]
    # McNemar pools the seed-paired runs: vit_seed0 fixes 10 of resnet50_seed0's 12 errors and
    # vit_seed1 7 of resnet50_seed1's 10, making none of their own: 17 discordant pairs, one way.
    assert table.loc[1, "mcnemar_p"] == pytest.approx(2 * 0.5**17)
    # The decision uses the bootstrap over images and seeds: the difference never crosses 0 here.
    assert table.loc[1, "test"] == "bootstrap"
    assert table.loc[1, "p_value"] == pytest.approx(2 / 101)  # the floor for 100 resamples
    assert table.loc[1, "delta_acc"] == pytest.approx((10 / 60 + 7 / 60) / 2)
    for what in ("acc", "auc"):
        assert (table[f"{what}_ci_low"] <= table[what]).all()
        assert (table[what] <= table[f"{what}_ci_high"]).all()


def test_runs_table_keeps_every_seed(outputs) -> None:
    runs = outputs["ablation_runs"]
    assert runs["namespace"].tolist() == [
        "resnet50_seed0",
        "resnet50_seed1",
        "vit_seed0",
        "vit_seed1",
    ]
    assert runs["acc"].tolist() == pytest.approx([48 / 60, 50 / 60, 58 / 60, 57 / 60])
    assert runs["mcnemar_p"].iloc[2:].tolist() == pytest.approx([2 * 0.5**10, 2 * 0.5**7])
    assert runs["mcnemar_p"].iloc[:2].isna().all()
    assert {"git_commit", "data_fingerprint"} <= set(runs.columns)


def test_markdown_has_the_table_and_the_remarks(outputs) -> None:
    md = outputs["ablation_table_md"]
    assert md.startswith("# Ablation table")
    assert re.search(r"^\| variant \| acc \| loss \| auc", md, re.M)
    assert "± " in md and "vit vs resnet50" in md


def test_plots_are_figures_named_as_png(outputs) -> None:
    plots = outputs["ablation_plots"]
    assert sorted(plots) == PLOT_FILES
    assert all(isinstance(f, Figure) for f in plots.values())


def test_report_embeds_table_plots_and_caveats(outputs) -> None:
    html = outputs["ablation_report"]
    assert html.count('src="data:image/png;base64,') == len(PLOT_FILES)
    assert 'id="ablation-table"' in html and "vit_seed1" in html
    assert "synthetic demo" in html and "60 images" in html
    assert "zero bytes" in html  # the rejected file's reason
    assert re.search(r"Wall time per stage</h3>.*<td>training</td>\s*<td>30\.0+</td>", html, re.S)
    assert outputs["robustness_table"]["variant"].unique().tolist() == ["resnet50", "vit"]


def test_metrics_scored_on_another_test_set_are_refused() -> None:
    """Issue 13 item 3: after the split or the images change, old metrics are not reported."""
    from facescan.pipelines.reporting.nodes import gather_results

    result = fake_run("resnet50", 0, 3)
    metrics = {**result.metrics, "test_cache_sha256": "a" * 64}
    values = (metrics, result.predictions, result.history, result.robustness)
    current = SimpleNamespace(sha256="b" * 64)
    with pytest.raises(
        ValueError,
        match=r"^resnet50\.metrics \(data/07_model_output/resnet50/metrics.json\) was scored on "
        r"another test set .* kedro run --pipelines training,evaluation --namespaces resnet50$",
    ):
        gather_results([("resnet50", "resnet50", 0)], current, *values)
    same = SimpleNamespace(sha256="a" * 64)
    assert gather_results([("resnet50", "resnet50", 0)], same, *values)[0].variant == "resnet50"


def test_per_source_results_with_two_sources_per_class() -> None:
    """Issue 12: each source against every image of the other class, with intervals."""
    from facescan.evaluation.tables import per_source_table

    result = fake_run("resnet50", 0, 3)
    paths = result.predictions["path"].tolist()
    labels = result.predictions["label"].tolist()
    seen = {0: 0, 1: 0}
    sources = {}
    for p, y in zip(paths, labels, strict=True):  # alternate two sources within each class
        sources[p] = (("ffhq", "celeba") if y == 0 else ("stylegan2", "sdxl"))[seen[y] % 2]
        seen[y] += 1
    table = per_source_table([result], sources, n_resamples=100)
    assert set(table["source"]) == {"ffhq", "celeba", "stylegan2", "sdxl"}
    assert set(table["class"]) == {"real", "fake"}
    assert table["n"].sum() == len(paths)
    assert (table["acc_ci_low"] <= table["acc"]).all() and (
        table["acc"] <= table["acc_ci_high"]
    ).all()
    assert (table["auc_ci_low"] <= table["auc"]).all() and (
        table["auc"] <= table["auc_ci_high"]
    ).all()
    # A source's AUC is that of its images against all of the other class.
    from sklearn.metrics import roc_auc_score

    preds = result.predictions
    src = preds["path"].map(sources)
    subset = preds[(src == "sdxl") | (preds["label"] == 0)]
    row = table.set_index("source").loc["sdxl"]
    assert row["auc"] == pytest.approx(roc_auc_score(subset["label"], subset["p_fake"]))


def test_reporting_of_no_runs_is_empty() -> None:
    assert len(create_pipeline([]).nodes) == 0
    assert (
        len(create_pipeline([VariantRun("a", "a", None)]).nodes) == 7
    )  # gather, table, robustness, per source, maps, plots, report


def test_report_says_its_version_and_links_the_earlier_ones(outputs) -> None:
    html = outputs["ablation_report"]
    assert "Report version <code>2026-02-02T00.00.00.000Z</code>" in html
    assert "environment <code>test</code>" in html
    link = "reports/ablation_report.html/2026-01-01T00.00.00.000Z/ablation_report.html"
    assert f'<a href="{link}">2026-01-01T00.00.00.000Z</a>' in html
    assert "<td>0123456789ab</td><td>base</td>" in html
    meta = re.search(r'<meta name="facescan-run" content="([^"]*)">', html)
    assert meta and "2026-02-02T00.00.00.000Z" in meta.group(1) and "vit" in meta.group(1)
    # The versioned copy is the same page, its links resolved from data/08_reporting/.
    versioned = outputs["ablation_report_version"]
    assert versioned == html.replace("<head>", '<head><base href="../../../">', 1)


def test_report_tables_have_no_blank_cells_and_no_empty_index_column(outputs) -> None:
    html = outputs["ablation_report"]
    assert not re.search(r"<td>\s*</td>", html)  # an empty cell renders as "–"
    robustness = html[html.index('id="robustness"') : html.index('id="plots"')]
    # pandas' columns name ("perturbation") used to add a header row with an empty first cell
    assert "<th>perturbation</th>" not in robustness and "<th></th>" not in robustness
    assert re.search(r"<th>variant</th>\s*<th>clean</th>", robustness)


def test_report_history_dataset_lists_saved_versions_with_their_meta(tmp_path) -> None:
    from kedro.io import DatasetError

    from facescan.datasets import ReportHistoryDataset

    folder = tmp_path / "08_reporting" / "reports" / "ablation_report.html"
    dataset = ReportHistoryDataset(str(folder))
    assert dataset.load() == []  # nothing saved yet
    for version, meta in (
        ("2026-01-02T00.00.00.000Z", '{"env": "paper", "variants": ["resnet50"]}'),
        ("2026-01-01T00.00.00.000Z", None),
    ):
        (folder / version).mkdir(parents=True)
        head = (
            f'<meta name="facescan-run" content="{meta.replace(chr(34), "&quot;")}">'
            if meta
            else ""
        )
        (folder / version / "ablation_report.html").write_text(f"<html><head>{head}</head></html>")
    (folder / "stray.txt").write_text("not a version")
    history = dataset.load()
    assert [h["version"] for h in history] == [
        "2026-01-01T00.00.00.000Z",
        "2026-01-02T00.00.00.000Z",
    ]
    assert history[0] == {
        "version": "2026-01-01T00.00.00.000Z",
        "path": "reports/ablation_report.html/2026-01-01T00.00.00.000Z/ablation_report.html",
    }
    assert history[1]["env"] == "paper" and history[1]["variants"] == ["resnet50"]
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save([])
