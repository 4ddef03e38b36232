"""Figures of the ablation report (matplotlib's object API; scikit-learn's ROC/confusion displays).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so nothing is
registered in a global figure manager and no display backend is needed; Kedro's
``matplotlib.MatplotlibDataset`` saves them and the HTML report embeds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay, roc_auc_score, roc_curve

__all__ = [
    "plot_accuracy_ci",
    "plot_accuracy_vs_gflops",
    "plot_confusion_matrices",
    "plot_robustness",
    "plot_roc_curves",
    "plot_training_curves",
]


def _no_data(fig: Figure, ax: Any, message: str) -> Figure:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def plot_roc_curves(scores: Mapping[str, Sequence[tuple[Any, Any]]]) -> Figure:
    """ROC curves of all variants on one axis, AUC in the legend.

    Args:
        scores: variant -> one ``(labels, p_fake)`` pair per seed on the test set; each seed's
            curve is drawn in the variant's colour and, with several seeds, the legend gives the
            mean AUC ± std over them.
    """
    fig = Figure(figsize=(6.0, 5.5), layout="constrained")
    ax = fig.subplots()
    drawn = 0
    for colour, (name, value) in zip(_colours(len(scores)), scores.items(), strict=True):
        runs = [(np.asarray(y), np.asarray(p)) for y, p in value if len(np.unique(y)) == 2]
        if not runs:
            continue  # no ROC curve with one class
        aucs = [roc_auc_score(y, p) for y, p in runs]
        label = f"{name} (AUC {aucs[0]:.3f})"
        if len(runs) > 1:
            label = (
                f"{name} (AUC {np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f}, {len(runs)} seeds)"
            )
        for i, (y, p) in enumerate(runs):
            fpr, tpr, _ = roc_curve(y, p, pos_label=1)
            ax.plot(
                fpr,
                tpr,
                color=colour,
                alpha=1.0 if i == 0 else 0.45,
                linewidth=1.5 if i == 0 else 1.0,
                label=label if i == 0 else None,
            )
        drawn += 1
    if not drawn:
        return _no_data(fig, ax, "no ROC curve: the test set has one class only")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="chance")
    ax.set_xlabel("false-positive rate (real called fake)")
    ax.set_ylabel("true-positive rate (fake called fake)")
    ax.set_title("ROC on the test set")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_training_curves(
    histories: Mapping[str, pd.DataFrame], groups: Mapping[str, str] | None = None
) -> Figure:
    """Train/validation loss and accuracy per epoch, one colour per variant.

    Args:
        histories: run (namespace) -> per-epoch table with ``epoch``, ``train_loss``,
            ``val_loss``, ``train_acc``, ``val_acc``.
        groups: run -> variant; runs of one variant (its seeds) share a colour and one legend
            entry. Without it every run is its own group.
    """
    fig = Figure(figsize=(11.0, 4.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    if not histories:
        return _no_data(fig, ax_loss, "no training history")
    groups = {name: (groups or {}).get(name, name) for name in histories}
    names = list(dict.fromkeys(groups.values()))
    colours = dict(zip(names, _colours(len(names)), strict=True))
    counts = {g: list(groups.values()).count(g) for g in names}
    labelled: set[str] = set()
    for name, h in histories.items():
        if h is None or len(h) == 0:
            continue
        group = groups[name]
        label = None
        if group not in labelled:
            label = group if counts[group] == 1 else f"{group} ({counts[group]} seeds)"
            labelled.add(group)
        for ax, what in ((ax_loss, "loss"), (ax_acc, "acc")):
            ax.plot(h["epoch"], h[f"train_{what}"], color=colours[group], linestyle="--", alpha=0.7)
            ax.plot(
                h["epoch"], h[f"val_{what}"], color=colours[group], marker="o", ms=3, label=label
            )
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (dashed: train, solid: val)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (dashed: train, solid: val)")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend(fontsize="small")
    return fig


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _error_bars(table: pd.DataFrame, what: str = "acc") -> np.ndarray:
    """(2, n) distances from each value to its interval's bounds, for ``errorbar``.

    The table's intervals contain their values (see ``ablation_table``); a bound that is NaN (no
    interval) draws no bar, and a value outside its interval (a table from elsewhere) draws a bar
    to the bound on the other side only, never a negative length.
    """
    value = table[what].to_numpy(float)
    err = np.vstack(
        [
            value - table[f"{what}_ci_low"].to_numpy(float),
            table[f"{what}_ci_high"].to_numpy(float) - value,
        ]
    )
    return np.clip(np.nan_to_num(err), 0.0, None)


def plot_accuracy_ci(
    table: pd.DataFrame, per_seed: Mapping[str, Sequence[float]] | None = None
) -> Figure:
    """Test accuracy per variant with its interval; the baseline's interval shaded.

    Args:
        table: the ablation table (``variant``, ``acc``, ``acc_ci_low``, ``acc_ci_high`` and
            optionally ``is_baseline``, ``n_seeds``).
        per_seed: variant -> each seed's accuracy, drawn as small crosses beside the mean.
    """
    fig = Figure(figsize=(7.0, 0.5 * max(len(table), 2) + 1.5), layout="constrained")
    ax = fig.subplots()
    if len(table) == 0:
        return _no_data(fig, ax, "no variants")
    y = np.arange(len(table))[::-1]
    acc = table["acc"].to_numpy(float)
    several = "n_seeds" in table and (table["n_seeds"] > 1).any()
    ax.errorbar(
        acc,
        y,
        xerr=_error_bars(table),
        fmt="o",
        capsize=4,
        label="mean over seeds" if several else None,
    )
    if per_seed:
        for yi, variant in zip(y, table["variant"], strict=True):
            values = list(per_seed.get(variant, []))
            if len(values) > 1:
                ax.plot(
                    values,
                    [yi - 0.18] * len(values),
                    "x",
                    color="black",
                    ms=5,
                    alpha=0.7,
                    label="one seed" if yi == y[0] else None,
                )
    if "is_baseline" in table and table["is_baseline"].any():
        base = table[table["is_baseline"]].iloc[0]
        ax.axvspan(
            base["acc_ci_low"],
            base["acc_ci_high"],
            color="grey",
            alpha=0.15,
            label=f"baseline {base['variant']} 95% CI",
        )
    if ax.get_legend_handles_labels()[0]:  # below the axes: never over a variant's points
        fig.legend(fontsize="small", loc="outside lower center", ncols=3)
    ax.set_yticks(y, table["variant"])
    ax.set_ylim(-0.6, len(table) - 0.4)
    what = "over test images and seeds" if several else "over test images"
    ax.set_xlabel(f"test accuracy (95% bootstrap CI {what})")
    ax.set_title("accuracy per variant")
    return fig


def plot_confusion_matrices(
    matrices: Mapping[str, Sequence[Sequence[int]]], class_names: Sequence[str] = ("real", "fake")
) -> Figure:
    """One confusion matrix per variant (rows: true class, columns: predicted), at threshold 0.5.

    With several seeds pass each variant's matrices summed over seeds (and say so in the name).
    """
    n = max(len(matrices), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.4 * cols, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, cm) in zip(axes, matrices.items(), strict=False):
        ConfusionMatrixDisplay(np.asarray(cm), display_labels=list(class_names)).plot(
            ax=ax, colorbar=False, values_format="d"
        )
        ax.set_title(name, fontsize="medium")
    for ax in axes[len(matrices) :]:
        ax.set_axis_off()
    return fig


def plot_accuracy_vs_gflops(table: pd.DataFrame) -> Figure:
    """Test accuracy (with CI) against forward GFLOPs per image: what each module costs and buys."""
    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    ax = fig.subplots()
    if len(table) == 0:
        return _no_data(fig, ax, "no variants")
    x = table["gflops"].to_numpy(float)
    acc = table["acc"].to_numpy(float)
    ax.errorbar(x, acc, yerr=_error_bars(table), fmt="o", capsize=3)
    for xi, yi, name in zip(x, acc, table["variant"], strict=True):
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize="small")
    ax.set_xlabel("forward GFLOPs per image")
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_title("accuracy vs compute")
    return fig


def plot_reliability(scores: Mapping[str, Sequence[tuple[Any, Any]]], n_bins: int = 10) -> Figure:
    """Reliability diagram: per variant, the fraction of fakes against the mean ``p_fake`` in each
    of ``n_bins`` equal-width bins (all seeds' test images pooled), with each variant's expected
    calibration error in the legend; the diagonal is perfect calibration.

    Args:
        scores: variant -> one ``(labels, p_fake)`` pair per seed.
    """
    from sklearn.calibration import calibration_curve

    from facescan.evaluation.metrics import expected_calibration_error

    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.subplots()
    if not scores:
        return _no_data(fig, ax, "no scored runs")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for colour, (variant, runs) in zip(_colours(len(scores)), scores.items(), strict=True):
        y = np.concatenate([np.asarray(labels) for labels, _ in runs])
        p = np.concatenate([np.asarray(p_fake, dtype=float) for _, p_fake in runs])
        frac, mean_p = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        ece = expected_calibration_error(y, p, n_bins)
        ax.plot(mean_p, frac, marker="o", color=colour, label=f"{variant} (ECE {ece:.3f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="mean p_fake in the bin",
        ylabel="fraction of fakes in the bin",
        title="Calibration on the test set",
    )
    ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_robustness(robustness: pd.DataFrame) -> Figure:
    """Accuracy and AUC per perturbation, one line per variant.

    Args:
        robustness: long table with ``variant``, ``perturbation`` (``clean`` first), ``acc``, ``auc``.
    """
    fig = Figure(figsize=(11.0, 4.5), layout="constrained")
    ax_acc, ax_auc = fig.subplots(1, 2)
    if robustness is None or len(robustness) == 0:
        return _no_data(fig, ax_acc, "robustness stage disabled (evaluation.robustness.enabled)")
    order = list(dict.fromkeys(robustness["perturbation"]))
    variants = list(dict.fromkeys(robustness["variant"]))
    for colour, name in zip(_colours(len(variants)), variants, strict=True):
        rows = robustness[robustness["variant"] == name].set_index("perturbation").reindex(order)
        ax_acc.plot(order, rows["acc"], marker="o", color=colour, label=name)
        ax_auc.plot(order, rows["auc"], marker="o", color=colour, label=name)
    for ax, what in ((ax_acc, "accuracy"), (ax_auc, "ROC AUC")):
        ax.set_ylabel(f"test {what}")
        ax.set_title(f"{what} under perturbations")
        ax.tick_params(axis="x", labelrotation=30)
    ax_auc.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax_acc.legend(fontsize="small")
    return fig
