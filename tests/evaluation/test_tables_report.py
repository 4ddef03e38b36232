"""The ablation table, the robustness table, the plots and the HTML report on fabricated runs."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from facescan.evaluation.plots import (
    plot_accuracy_ci,
    plot_accuracy_vs_gflops,
    plot_confusion_matrices,
    plot_robustness,
    plot_roc_curves,
    plot_training_curves,
)
from facescan.evaluation.report import (
    caveats,
    dataset_counts,
    manifest_hash,
    render_report,
    scoring_method,
)
from facescan.evaluation.stats import bootstrap_ci
from facescan.evaluation.tables import (
    TABLE_COLUMNS,
    RunResult,
    ablation_table,
    robustness_table,
    run_warnings,
    runs_table,
    to_markdown,
)
from tests.evaluation.helpers import LABELS, PATHS, N, fake_run


@pytest.fixture(scope="module")
def runs() -> list[RunResult]:
    return [
        fake_run("resnet50", 0, 12),
        fake_run("vit", 0, 2, shuffle=True),
        fake_run("aspp", 0, 11),
    ]


def test_ablation_table_columns_values_and_paired_tests(runs) -> None:
    table, remarks = ablation_table(runs, baseline="resnet50", n_resamples=300, seed=0)
    assert list(table.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert list(table["variant"]) == ["resnet50", "vit", "aspp"]
    assert table["acc"].tolist() == pytest.approx([48 / 60, 58 / 60, 49 / 60])
    # Intervals are computed from the predictions with the given bootstrap settings.
    first = runs[0].predictions
    ci = bootstrap_ci(first["label"], first["p_fake"], first["pred"], n_resamples=300, seed=0)
    assert table.loc[0, "acc_ci_low"] == pytest.approx(ci["acc_ci_low"])
    # vit's predictions came shuffled: McNemar pairs them by path. vit fixes 10 of resnet50's 12
    # errors and makes none of its own: 10 discordant pairs, all one way.
    assert table.loc[1, "mcnemar_p"] == pytest.approx(2 * 0.5**10)
    assert table.loc[1, "delta_acc"] == pytest.approx(10 / 60)
    assert math.isnan(table.loc[0, "mcnemar_p"]) and table.loc[0, "is_baseline"]
    assert table.loc[2, "mcnemar_p"] == pytest.approx(1.0)
    assert len(remarks) == 2
    assert "beyond chance" in remarks[0] and "within noise" in remarks[1]
    assert table["mcnemar_p_holm"].tolist()[1] == pytest.approx(2 * 2 * 0.5**10)


def test_several_seeds_give_mean_and_std(runs) -> None:
    seeded = [
        fake_run("resnet50", 0, 12),
        fake_run("resnet50", 1, 6),
        fake_run("vit", 0, 2),
        fake_run("vit", 1, 4),
    ]
    table, _ = ablation_table(seeded, baseline="resnet50", n_resamples=100)
    assert table["n_seeds"].tolist() == [2, 2]
    assert table.loc[0, "acc"] == pytest.approx((48 / 60 + 54 / 60) / 2)
    assert table.loc[0, "acc_std"] == pytest.approx(np.std([48 / 60, 54 / 60], ddof=1))
    md = to_markdown(table, columns=["variant", "acc"])
    assert re.search(r"\| resnet50 \| 0\.850 ± 0\.071 \|", md)


def test_runs_on_different_test_sets_are_refused(runs) -> None:
    other = fake_run("vit", 0, 2)
    other.predictions = other.predictions.assign(path=[p + "x" for p in PATHS])
    with pytest.raises(ValueError, match="not scored on the same test images"):
        ablation_table([runs[0], other], baseline="resnet50", n_resamples=50)


def test_missing_baseline_gives_no_test_but_a_table(runs) -> None:
    table, remarks = ablation_table(runs[1:], baseline="resnet50", n_resamples=50)
    assert len(table) == 2 and table["mcnemar_p"].isna().all() and remarks == []


def test_robustness_table_has_drops_from_clean(runs) -> None:
    table = robustness_table(runs)
    assert table["perturbation"].tolist() == ["clean", "jpeg_q50"] * 3
    row = table[(table["variant"] == "vit") & (table["perturbation"] == "jpeg_q50")].iloc[0]
    assert row["acc_drop"] == pytest.approx(0.1)
    assert robustness_table([RunResult("a", "a", 0, {}, runs[0].predictions)]).empty


def test_every_plot_is_a_figure(runs) -> None:
    table, _ = ablation_table(runs, baseline="resnet50", n_resamples=50)
    figures = [
        plot_roc_curves(
            {r.variant: [(r.predictions["label"], r.predictions["p_fake"])] for r in runs}
        ),
        plot_training_curves({r.variant: r.history for r in runs}),
        plot_accuracy_ci(table),
        plot_confusion_matrices({r.variant: r.metrics["confusion_matrix"] for r in runs}),
        plot_accuracy_vs_gflops(table),
        plot_robustness(robustness_table(runs)),
        plot_robustness(pd.DataFrame()),
    ]
    for fig in figures:
        assert isinstance(fig, Figure) and fig.axes
    roc_legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert any(t.startswith("vit") and "AUC" in t for t in roc_legend)


def test_report_is_self_contained_and_has_table_plots_caveats_provenance(runs) -> None:
    table, remarks = ablation_table(runs, baseline="resnet50", n_resamples=50)
    split = pd.DataFrame(
        {
            "path": PATHS,
            "label": LABELS,
            "split": ["test"] * N,
            "sha256": [f"{i:064x}" for i in range(N)],
        }
    )
    rejected = pd.DataFrame(
        {"path": ["/x/a.jpg", "/x/b.jpg"], "reason": ["truncated file", "not an image"]}
    )
    notes = caveats(table, n_test_real=30, n_test_fake=30, source_type="synthetic", n_seeds=1)
    html = render_report(
        table=table,
        remarks=remarks,
        figures={"roc_curves": plot_roc_curves({"vit": [(LABELS, runs[1].predictions["p_fake"])]})},
        settings={"training": {"max_epochs": 2}},
        counts=dataset_counts(split),
        rejected=rejected,
        notes=notes,
        provenance={"git_commit": "abc123", "packages": {"torch": "2.x"}, "cpu": "test cpu"},
        robustness=robustness_table(runs),
        stage_timings={"training": 12.5},
        data_hash=manifest_hash(split),
    )
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert 'id="ablation-table"' in html and "<table" in html and "vit" in html
    assert html.count('src="data:image/png;base64,') == 1
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    for text in ("abc123", "truncated file", "12.5", "synthetic demo", "60 images", "torch"):
        assert text in html
    assert any("one seed" in n for n in notes) and any("60 images" in n for n in notes)
    assert "Scoring." not in html  # each image scored once: nothing to say
    mirrored = render_report(
        table=table,
        remarks=remarks,
        figures={},
        settings={},
        counts=None,
        rejected=None,
        notes=[],
        provenance={},
        scoring=scoring_method({"resnet50": "hflip", "vit": "hflip"}),
    )
    assert "<b>Scoring.</b> Every score is the mean of the image&#x27;s and its mirror" in mirrored


def test_scoring_method_says_how_thresholds_were_tuned_and_when_they_differ() -> None:
    # The best gap (or an older run without the key) is the default: nothing to say.
    assert scoring_method({"resnet50": "none"}, {"resnet50": "balanced_accuracy"}) is None
    assert scoring_method({"resnet50": "none"}, {"resnet50": None}) is None
    fitted = scoring_method({"resnet50": "none"}, {"resnet50": "logistic"})
    assert fitted.startswith("The decision threshold") and "training.threshold: logistic" in fitted
    both = scoring_method({"resnet50": "hflip"}, {"resnet50": "logistic"})
    assert both.startswith("Every score is the mean") and "logistic fit" in both
    mixed = scoring_method({"a": "none", "b": "none"}, {"b": "logistic", "a": None})
    assert "training.threshold: a: balanced_accuracy, b: logistic" in mixed


def test_scoring_method_says_how_runs_scored_and_when_they_differ() -> None:
    assert scoring_method({"resnet50": "none", "vit": None}) is None  # older metrics: none
    assert "training.tta: hflip" in scoring_method({"resnet50": "hflip"})
    mixed = scoring_method({"vit": "none", "resnet50": "hflip"})
    assert "training.tta: resnet50: hflip, vit: none" in mixed and "differ" in mixed


def test_manifest_hash_ignores_row_order_and_counts_are_per_split() -> None:
    split = pd.DataFrame(
        {
            "path": ["a", "b", "c"],
            "label": [0, 1, 1],
            "split": ["train", "test", "val"],
            "sha256": ["1", "2", "3"],
        }
    )
    assert manifest_hash(split) == manifest_hash(split.iloc[::-1])
    assert manifest_hash(split) != manifest_hash(split.assign(split="train"))
    counts = dataset_counts(split)
    assert counts.loc["total", "total"] == 3 and counts.loc["test", "fake"] == 1


def test_caveat_on_imbalance_and_unrankable_variants(runs) -> None:
    table, _ = ablation_table(runs, baseline="resnet50", n_resamples=100)
    notes = caveats(table, n_test_real=120, n_test_fake=40, n_seeds=3)
    assert any("imbalanced" in n and "75.0%" in n for n in notes)
    assert not any("one seed" in n for n in notes)


def test_accuracy_plots_never_draw_negative_error_bars() -> None:
    # A mean outside its interval (a table from elsewhere) used to make matplotlib raise
    # "'xerr' must not contain negative values"; the bar to the far bound is drawn, never a
    # negative one.
    table = pd.DataFrame(
        {
            "variant": ["a", "b"],
            "acc": [0.9, 0.5],
            "acc_ci_low": [0.92, 0.4],
            "acc_ci_high": [0.95, float("nan")],
            "gflops": [1.0, 2.0],
            "n_seeds": [2, 2],
            "is_baseline": [True, False],
        }
    )
    fig = plot_accuracy_ci(table, {"a": [0.85, 0.95], "b": [0.4, 0.6]})
    assert isinstance(fig, Figure)
    assert "seeds" in fig.axes[0].get_xlabel()
    assert isinstance(plot_accuracy_vs_gflops(table), Figure)


def test_several_seeds_table_intervals_contain_the_means() -> None:
    seeded = [
        fake_run("resnet50", 0, 12),
        fake_run("resnet50", 1, 2),
        fake_run("vit", 0, 30),
        fake_run("vit", 1, 1, shuffle=True),
        fake_run("vit", 2, 15),
    ]
    table, remarks = ablation_table(seeded, baseline="resnet50", n_resamples=200)
    assert table["n_seeds"].tolist() == [2, 3]
    for what in ("acc", "auc"):
        assert (table[f"{what}_ci_low"] <= table[what]).all()
        assert (table[what] <= table[f"{what}_ci_high"]).all()
    row = table.iloc[1]
    assert row["test"] == "bootstrap" and row["p_value"] > 0.05  # seeds 30 / 1 / 15 wrong
    assert "3 seeds" in remarks[0] and "bootstrap" in remarks[0]
    # ROC and training curves take every seed, grouped by variant.
    fig = plot_roc_curves(
        {
            v: [(r.predictions["label"], r.predictions["p_fake"]) for r in seeded if r.variant == v]
            for v in ("resnet50", "vit")
        }
    )
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("3 seeds" in t for t in labels) and any("2 seeds" in t for t in labels)
    fig = plot_training_curves(
        {r.namespace: r.history for r in seeded}, {r.namespace: r.variant for r in seeded}
    )
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["resnet50 (2 seeds)", "vit (3 seeds)"]


def test_collapsed_runs_are_flagged_with_their_first_epoch_loss() -> None:
    good = fake_run("resnet50", 0, 3)
    stuck = fake_run("aspp_vit", 0, 0)
    stuck.predictions = stuck.predictions.assign(p_fake=0.3, pred=0)  # all called real
    stuck.history = stuck.history.assign(train_loss=[2.8, 0.7][: len(stuck.history)])
    noisy = fake_run("vit", 0, 0)
    rng = np.random.default_rng(0)
    noisy.predictions = noisy.predictions.assign(
        p_fake=rng.uniform(size=N), pred=rng.integers(0, 2, N)
    )
    runs = runs_table([good, stuck, noisy], baseline="resnet50", n_resamples=200)
    assert runs["warning"].tolist()[0] == ""
    assert runs["warning"].tolist()[1] == "every test image called real"
    assert runs["warning"].tolist()[2].startswith("AUC ")
    assert "within noise of chance" in runs["warning"].tolist()[2]
    assert runs["first_epoch_train_loss"].tolist()[1] == pytest.approx(2.8)
    warnings = run_warnings(runs)
    assert len(warnings) == 2
    # Through the catalog's CSV an empty warning reads back as NaN: still no warning.
    assert len(run_warnings(runs.replace({"warning": {"": np.nan}}))) == 2
    assert "Run aspp_vit looks collapsed: every test image called real" in warnings[0]
    assert "first-epoch training loss was 2.80" in warnings[0] and "blew up" in warnings[0]
