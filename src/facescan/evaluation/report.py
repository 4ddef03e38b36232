"""The ablation report: one self-contained HTML page (no external files, plots as base64 PNGs).

It holds what a reader needs to judge the numbers: the run settings, the data (counts per split
and class, rejected files and why), the table with intervals and tests, the plots, caveats computed
from the numbers themselves (a test set too small to separate the variants, class imbalance, one
seed, synthetic data), and provenance (git commit, packages, hardware, the data's hash, wall time
per stage).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from facescan.evaluation.tables import markdown_columns, to_markdown

__all__ = [
    "REPORT_META",
    "caveats",
    "dataset_counts",
    "figure_to_base64",
    "manifest_hash",
    "render_report",
    "scoring_method",
]

#: The ``<meta name=...>`` tag a report carries its run's identity in (JSON content); the catalog's
#: ``ReportHistoryDataset`` reads it back to list earlier reports.
REPORT_META = "facescan-run"

#: Plot titles, in report order.
FIGURE_TITLES = {
    "roc_curves": "ROC curves (test set)",
    "accuracy_ci": "Accuracy with 95% bootstrap intervals",
    "accuracy_vs_gflops": "Accuracy against compute",
    "training_curves": "Training curves",
    "confusion_matrices": "Confusion matrices (threshold 0.5)",
    "robustness": "Robustness to perturbations",
    "reliability": "Calibration: reliability diagram and expected calibration error (test set)",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.caveat{background:#fff7e0;border-left:4px solid #e0a800;padding:.4em .8em;margin:.4em 0}
figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.3em}img{max-width:100%}
details{margin:.5em 0}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
.scroll{overflow-x:auto}
"""


def figure_to_base64(fig: Figure, *, dpi: int = 110) -> str:
    """PNG bytes of a figure, base64-encoded (for ``<img src="data:image/png;base64,...">``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def manifest_hash(split_manifest: pd.DataFrame) -> str:
    """SHA-256 identifying the data and its split: over sorted (sha256, label, split) rows.

    Independent of row order and of where the files live, so the same images split the same way
    give the same hash on any machine.
    """
    cols = [c for c in ("sha256", "label", "split") if c in split_manifest]
    if not cols:
        return "unknown"
    rows = sorted(split_manifest[cols].astype(str).agg("\t".join, axis=1))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def dataset_counts(
    split_manifest: pd.DataFrame, class_names: Sequence[str] = ("real", "fake")
) -> pd.DataFrame:
    """Images per split (rows: train, val, test, total) and class (columns), with totals."""
    counts = pd.crosstab(split_manifest["split"], split_manifest["label"])
    counts = counts.reindex(
        index=[s for s in ("train", "val", "test") if s in counts.index],
        columns=[0, 1],
        fill_value=0,
    )
    counts.columns = list(class_names)
    counts.loc["total"] = counts.sum()
    counts["total"] = counts.sum(axis=1)
    counts.index.name = "split"
    return counts


def _setting_sentence(
    key: str,
    values: Mapping[str, str | None],
    default: str,
    uniform: Mapping[str, str],
    mixed: tuple[str, str],
) -> str | None:
    """One sentence on a run setting (``key``, namespace -> value, None read as ``default``):
    nothing when every run used ``default``, ``uniform[value]`` when all used one other value,
    else ``mixed`` (lead, tail) around the listed values."""
    values = {name: value or default for name, value in values.items()}
    used = set(values.values())
    if used <= {default}:
        return None
    if len(used) == 1:
        return uniform[used.pop()]
    listed = ", ".join(f"{name}: {value}" for name, value in sorted(values.items()))
    return f"{mixed[0]} ({key}: {listed}): {mixed[1]}"


def scoring_method(
    tta: Mapping[str, str | None], thresholds: Mapping[str, str | None] | None = None
) -> str | None:
    """How the runs scored their images (``training.tta``, namespace -> value) and tuned their
    decision thresholds (``training.threshold``, namespace -> value), a sentence each; None when
    every run scored each image once with the best-gap threshold (the report's way; a missing
    value is read as that).
    """
    sentences = [
        _setting_sentence(
            "training.tta",
            tta,
            "none",
            {
                "hflip": "Every score is the mean of the image's and its mirror image's p_fake "
                "(training.tta: hflip): the table, the curves, the robustness table and the "
                "threshold tuned on validation alike."
            },
            (
                "The runs score their images differently",
                "hflip averages the image's and its mirror image's p_fake, none scores the image "
                "once, so their numbers differ by more than the variant.",
            ),
        ),
        _setting_sentence(
            "training.threshold",
            thresholds or {},
            "balanced_accuracy",
            {
                "logistic": "The decision threshold (acc_at_val_threshold; predict decides with "
                "it) is where a class-balanced logistic fit of the validation labels on the "
                "scores' log-odds crosses 1/2 (training.threshold: logistic)."
            },
            (
                "The runs tuned their decision thresholds differently",
                "their acc_at_val_threshold differ by more than the variant.",
            ),
        ),
    ]
    return " ".join(s for s in sentences if s) or None


def caveats(
    table: pd.DataFrame,
    *,
    n_test_real: int,
    n_test_fake: int,
    source_type: str | None = None,
    n_seeds: int = 1,
    alpha: float = 0.05,
) -> list[str]:
    """Warnings a careful reader should see before trusting a difference in the table.

    Args:
        table: the ablation table.
        n_test_real: real test images.
        n_test_fake: fake test images.
        source_type: ``data.source.type`` (the synthetic demo gets its own caveat).
        n_seeds: training seeds per variant.
        alpha: significance level.
    """
    out: list[str] = []
    n = n_test_real + n_test_fake
    if n:
        # Half-width of a 95% Wald interval at 90% accuracy, and what one image is worth.
        half = 100 * 1.96 * math.sqrt(0.9 * 0.1 / n)
        widths = (table["acc_ci_high"] - table["acc_ci_low"]).dropna()
        spread = table["acc"].max() - table["acc"].min() if len(table) > 1 else 0.0
        if n < 1000 or (len(widths) and spread < widths.median()):
            out.append(
                f"The test set has {n} images: one image is {100 / n:.2f} accuracy points and a "
                f"95% interval is about ±{half:.1f} points wide even at 90% accuracy (median width "
                f"here {100 * float(widths.median()) if len(widths) else float('nan'):.1f} points). "
                f"The variants span {100 * spread:.1f} points"
                + (
                    ", less than one interval: the table cannot rank them."
                    if len(widths) and spread < widths.median()
                    else "; treat differences smaller than an interval as noise."
                )
            )
    if n and min(n_test_real, n_test_fake) / n < 0.35:
        major = max(n_test_real, n_test_fake) / n
        out.append(
            f"The classes are imbalanced ({n_test_real} real, {n_test_fake} fake): always "
            f"answering the majority class scores {100 * major:.1f}% accuracy. Read acc_real, "
            "acc_fake, AUC and the balanced accuracy, not accuracy alone."
        )
    baseline = table["is_baseline"].astype(bool) if "is_baseline" in table else False
    p_col = "p_value" if "p_value" in table else "mcnemar_p"
    tested = table.loc[~baseline, p_col].dropna() if p_col in table else pd.Series()
    if len(tested):
        holm = table[f"{p_col}_holm"].dropna() if f"{p_col}_holm" in table else tested
        test = "bootstrap over images and seeds" if n_seeds > 1 else "McNemar"
        if not (holm < alpha).any():
            out.append(
                f"No variant differs from the baseline beyond chance ({test}, Holm-adjusted over "
                f"{len(tested)} comparison{'s' if len(tested) != 1 else ''}, alpha {alpha:g})."
            )
        elif (tested < alpha).sum() > (holm < alpha).sum():
            out.append(
                f"{int((tested < alpha).sum())} comparison(s) have p < {alpha:g} but only "
                f"{int((holm < alpha).sum())} survive the Holm adjustment for "
                f"{len(tested)} comparisons."
            )
    if n_seeds < 2:
        out.append(
            "Each variant was trained once (one seed). Differences between variants include "
            "seed-to-seed variation this table cannot show; list several seeds in ablation.seeds "
            "to get mean ± std."
        )
    if source_type == "synthetic":
        out.append(
            "The data is facescan's built-in synthetic demo (generated images, not faces of "
            "people): these numbers show the pipeline works, not how well a variant detects "
            "AI-generated faces."
        )
    for col in ("auc", "acc_real", "acc_fake"):
        if col in table and table[col].isna().any():
            out.append(f"Some {col} values are undefined (NaN): the test set lacks a class.")
            break
    return out


def _html_table(df: pd.DataFrame, *, index: bool = False, float_digits: int = 4) -> str:
    def fmt(x: Any) -> str:
        if x is None or (isinstance(x, str) and not x.strip()):
            return "–"
        if isinstance(x, bool | np.bool_):
            return "yes" if x else "–"
        if isinstance(x, int | np.integer):
            return f"{int(x):,}"
        if isinstance(x, float | np.floating):
            if math.isnan(x):
                return "–"
            if float(x).is_integer() and abs(x) >= 100:
                return f"{int(x):,}"
            return f"{x:.{float_digits}g}" if 0 < abs(x) < 1e-3 else f"{x:.{float_digits}f}"
        return str(x)

    shown = df.copy()
    for c in shown.columns:
        shown[c] = shown[c].map(fmt)
    return '<div class="scroll">' + shown.to_html(index=index, escape=True, border=0) + "</div>"


def _versions(run: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    """Which version this report is, and the earlier ones with links (newest first)."""
    e = html.escape
    version = run.get("version")
    text = (
        f"<p>Report version <code>{e(str(version))}</code> (environment "
        f"<code>{e(str(run.get('env', 'unknown')))}</code>); every version is kept under "
        "<code>data/08_reporting/reports/</code>.</p>"
        if version
        else "<p>This report is not versioned (rendered outside a Kedro run).</p>"
    )
    earlier = [h for h in history if h.get("version") != version]
    if not earlier:
        return text + "<p>No earlier report.</p>"
    rows = []
    for h in sorted(earlier, key=lambda h: str(h.get("version")), reverse=True):
        variants = h.get("variants")
        rows.append(
            f'<tr><td><a href="{e(str(h.get("path", "")))}">{e(str(h.get("version")))}</a></td>'
            f"<td>{e(str(h.get('git_commit') or '–'))[:12]}</td>"
            f"<td>{e(str(h.get('env') or '–'))}</td>"
            f"<td style='text-align:left'>"
            f"{e(', '.join(variants) if isinstance(variants, list) else '–')}</td></tr>"
        )
    return (
        text
        + f'<details id="earlier-reports"><summary>Earlier reports ({len(earlier)})</summary>'
        + "<table><tr><th>version</th><th>git commit</th><th>environment</th><th style='text-align:left'>variants</th>"
        + "</tr>"
        + "".join(rows)
        + "</table></details>"
    )


def _kv_table(items: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td style='text-align:left'>"
        f"{html.escape(v if isinstance(v, str) else json.dumps(v, default=str))}</td></tr>"
        for k, v in items.items()
    )
    return f"<table>{rows}</table>"


def render_report(
    *,
    table: pd.DataFrame,
    remarks: Sequence[str],
    figures: Mapping[str, Figure | str],
    settings: Mapping[str, Any],
    counts: pd.DataFrame | None,
    rejected: pd.DataFrame | None,
    notes: Sequence[str],
    provenance: Mapping[str, Any],
    runs: pd.DataFrame | None = None,
    robustness: pd.DataFrame | None = None,
    per_source: pd.DataFrame | None = None,
    explain: Mapping[str, Figure | str] | None = None,
    stage_timings: Mapping[str, float] | None = None,
    data_hash: str = "unknown",
    title: str = "facescan ablation report",
    seeds_method: str | None = None,
    scoring: str | None = None,
    run: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Render the report as one HTML string.

    Args:
        table: the ablation table.
        remarks: plain-language comparisons with the baseline.
        figures: plot name -> Figure (or an already base64-encoded PNG), embedded in order.
        settings: parameters worth showing (nested dicts are shown as JSON).
        counts: images per split and class (:func:`dataset_counts`).
        rejected: ``rejected_images`` (``path``, ``reason``).
        notes: caveats (:func:`caveats`).
        provenance: code and machine (``facescan.provenance.collect``).
        runs: one row per trained run (``ablation_runs``: its metrics, git commit, data...).
        robustness: the robustness table.
        per_source: accuracy and AUC per image source (:func:`~facescan.evaluation.tables.
            per_source_table`); shown when the test set has more than one source per class.
        explain: the "Where the models look" figure(s) (:func:`facescan.evaluation.explain.
            explain_runs`), embedded as PNG.
        stage_timings: stage -> wall seconds.
        data_hash: :func:`manifest_hash` of the split manifest.
        title: page title.
        seeds_method: how the numbers over several seeds are made (shown above the table), or
            None with one seed per variant.
        scoring: how the runs scored their images (:func:`scoring_method`), shown above the
            table; None when each image was scored once.
        run: this report's identity (``version``: Kedro's save version, ``env``, ``variants``,
            ``git_commit``), written in a ``facescan-run`` meta tag and shown at the top.
        history: earlier reports (``version``, ``path`` relative to data/08_reporting/, and what
            their meta tag recorded), listed with links, newest first.
    """
    e = html.escape
    meta = {k: v for k, v in (run or {}).items() if v is not None}
    meta.setdefault("git_commit", str(provenance.get("git_commit", "unknown")))
    meta.setdefault("created_utc", str(provenance.get("created_utc", "")))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="{REPORT_META}" content="{e(json.dumps(meta, default=str))}">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>Generated {e(str(provenance.get('created_utc', '')))} from git commit "
        f"<code>{e(str(provenance.get('git_commit', 'unknown')))}</code>"
        f"{' (with uncommitted changes)' if provenance.get('git_dirty') is True else ''}; "
        f"data hash <code>{e(data_hash[:16])}</code>.</p>",
    ]
    parts.append(_versions(meta, history))

    parts.append("<h2>Caveats</h2>")
    parts += [f'<div class="caveat">{e(n)}</div>' for n in notes] or ["<p>None.</p>"]

    parts.append('<h2 id="ablation-table">Ablation table</h2>')
    parts.append(
        "<p>ACC and LOSS (mean cross-entropy) as in the report's Table 1, then ROC AUC, average "
        "precision, equal error rate, accuracy on real and on fake images, 95% paired bootstrap "
        "intervals, the p-value of the test against the baseline (McNemar's exact test with one "
        "seed; see below with several), parameters, forward GFLOPs per "
        "image, measured inference throughput, training time and best epoch.</p>"
    )
    if seeds_method:
        parts.append(f"<p><b>Several seeds.</b> {e(seeds_method.replace('`', ''))}</p>")
    if scoring:
        parts.append(f"<p><b>Scoring.</b> {e(scoring)}</p>")
    parts.append(_html_table(table))
    if remarks:
        parts.append(
            "<h3>Significance</h3><ul>" + "".join(f"<li>{e(r)}</li>" for r in remarks) + "</ul>"
        )
    parts.append(
        "<details><summary>Markdown</summary><pre>"
        + e(to_markdown(table, columns=markdown_columns(table)))
        + "</pre></details>"
    )
    if runs is not None and len(runs):
        parts.append(
            '<h3 id="runs">Every run</h3><p>One row per variant and seed: the run\'s own test '
            "metrics, its image-bootstrap intervals, McNemar's p against the baseline's run with the "
            "same seed, its first-epoch training loss (chance is 0.69), and where it came from.</p>"
            + _html_table(runs)
        )

    if per_source is not None and len(per_source):
        parts.append('<h2 id="sources">Per source</h2>')
        parts.append(
            "<p>Each source of test images (a camera, a generator: the sub-folder under its "
            "class folder, or the CSV's third column) against every image of the other class: "
            "accuracy on its images at p_fake 0.5 and the ROC AUC, with 95% bootstrap intervals "
            "(the cross-generator protocol of CNNDetection and DeepfakeBench). A detector that "
            "holds up only on the sources it was trained on shows here first.</p>"
            + _html_table(per_source)
        )

    if robustness is not None and len(robustness):
        parts.append('<h2 id="robustness">Robustness</h2>')
        parts.append(
            "<p>Test images re-encoded / blurred / down-and-up-sampled identically for "
            "both classes; accuracy and AUC per perturbation, and the drop from clean.</p>"
        )
        for what, title in (("acc", "Accuracy"), ("auc", "ROC AUC")):
            wide = robustness.pivot_table(
                index="variant", columns="perturbation", values=what, sort=False
            )
            # The columns' name ("perturbation") would render as an empty extra column.
            parts.append(
                f"<h3>{title}</h3>" + _html_table(wide.rename_axis(columns=None).reset_index())
            )

    if explain:
        parts.append('<h2 id="where">Where the models look</h2>')
        parts.append(
            "<p>Grad-CAM (captum's LayerGradCam) of each variant's evidence for <em>fake</em> "
            "(the log-odds behind p_fake) on the same test images: half real, half fake, the "
            "baseline's most confident mistakes first. Red = the region that raised p_fake. The "
            "last spatial features are used: layer4, the ASPP output, or the tail ViT's tokens laid "
            "back on their grid (Cross Scan: its four directions mapped back to the same grid and "
            "summed; under each image the weight FeatureFusion gave each direction, * the one it "
            "keeps). A cell's title: its p_fake, red when the decision at 0.5 is wrong.</p>"
        )
        for name, fig in explain.items():
            data = fig if isinstance(fig, str) else figure_to_base64(fig, dpi=80)
            parts.append(
                f'<figure id="explain-{e(name)}"><img alt="{e(name)}" '
                f'src="data:image/png;base64,{data}"></figure>'
            )

    parts.append('<h2 id="plots">Plots</h2>')
    names = [k for k in FIGURE_TITLES if k in figures] + [
        k for k in figures if k not in FIGURE_TITLES
    ]
    for name in names:
        fig = figures[name]
        data = fig if isinstance(fig, str) else figure_to_base64(fig)
        parts.append(
            f'<figure id="plot-{e(name)}"><figcaption>{e(FIGURE_TITLES.get(name, name))}'
            f'</figcaption><img alt="{e(name)}" src="data:image/png;base64,{data}"></figure>'
        )

    parts.append('<h2 id="data">Data</h2>')
    if counts is not None:
        parts.append(_html_table(counts.reset_index()))
    if rejected is not None:
        if len(rejected):
            by_reason = rejected.groupby("reason").size().sort_values(ascending=False)
            parts.append(
                f"<p>{len(rejected)} file(s) rejected at ingestion:</p>"
                + _html_table(by_reason.rename("files").reset_index())
            )
            parts.append(
                "<details><summary>Rejected files</summary>"
                + _html_table(rejected.head(500))
                + "</details>"
            )
        else:
            parts.append("<p>No file was rejected at ingestion.</p>")

    parts.append('<h2 id="settings">Run settings</h2>')
    parts.append(_kv_table(settings))

    parts.append('<h2 id="provenance">Provenance</h2>')
    if stage_timings:
        timings = pd.DataFrame(
            {"stage": list(stage_timings), "seconds": [float(v) for v in stage_timings.values()]}
        )
        parts.append("<h3>Wall time per stage</h3>" + _html_table(timings))
    else:
        parts.append("<p>Wall time per stage: not recorded for this run.</p>")
    shown = {k: v for k, v in provenance.items() if k != "packages"}
    shown["data hash (split manifest)"] = data_hash
    parts.append(_kv_table(shown))
    if provenance.get("packages"):
        parts.append("<h3>Packages</h3>" + _kv_table(provenance["packages"]))
    parts.append("</body></html>")
    return "\n".join(parts)
