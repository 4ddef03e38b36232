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
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

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


def plot_roc_curves(scores: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> Figure:
    """ROC curves of all variants on one axis, AUC in the legend.

    Args:
        scores: variant -> (labels, p_fake) on the test set.
    """
    fig = Figure(figsize=(6.0, 5.5), layout="constrained")
    ax = fig.subplots()
    drawn = 0
    for name, (labels, p_fake) in scores.items():
        if len(np.unique(labels)) < 2:
            continue  # no ROC curve with one class
        RocCurveDisplay.from_predictions(labels, p_fake, name=name, ax=ax, pos_label=1)
        drawn += 1
    if not drawn:
        return _no_data(fig, ax, "no ROC curve: the test set has one class only")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="chance")
    ax.set_xlabel("false-positive rate (real called fake)")
    ax.set_ylabel("true-positive rate (fake called fake)")
    ax.set_title("ROC on the test set")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_training_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Train/validation loss and accuracy per epoch, one colour per variant.

    Args:
        histories: variant -> per-epoch table with ``epoch``, ``train_loss``, ``val_loss``,
            ``train_acc``, ``val_acc``.
    """
    fig = Figure(figsize=(11.0, 4.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    if not histories:
        return _no_data(fig, ax_loss, "no training history")
    colours = _colours(len(histories))
    for colour, (name, h) in zip(colours, histories.items(), strict=True):
        if h is None or len(h) == 0:
            continue
        for ax, what in ((ax_loss, "loss"), (ax_acc, "acc")):
            ax.plot(h["epoch"], h[f"train_{what}"], color=colour, linestyle="--", alpha=0.7)
            ax.plot(h["epoch"], h[f"val_{what}"], color=colour, marker="o", ms=3, label=name)
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


def plot_accuracy_ci(table: pd.DataFrame) -> Figure:
    """Test accuracy per variant with its bootstrap interval; the baseline's interval shaded.

    Args:
        table: the ablation table (``variant``, ``acc``, ``acc_ci_low``, ``acc_ci_high`` and
            optionally ``is_baseline``).
    """
    fig = Figure(figsize=(7.0, 0.5 * max(len(table), 2) + 1.5), layout="constrained")
    ax = fig.subplots()
    if len(table) == 0:
        return _no_data(fig, ax, "no variants")
    y = np.arange(len(table))[::-1]
    acc = table["acc"].to_numpy(float)
    err = np.vstack(
        [acc - table["acc_ci_low"].to_numpy(float), table["acc_ci_high"].to_numpy(float) - acc]
    )
    ax.errorbar(acc, y, xerr=np.nan_to_num(err), fmt="o", capsize=4)
    if "is_baseline" in table and table["is_baseline"].any():
        base = table[table["is_baseline"]].iloc[0]
        ax.axvspan(
            base["acc_ci_low"],
            base["acc_ci_high"],
            color="grey",
            alpha=0.15,
            label=f"baseline {base['variant']} 95% CI",
        )
        ax.legend(fontsize="small", loc="lower right")
    ax.set_yticks(y, table["variant"])
    ax.set_xlabel("test accuracy (95% bootstrap CI)")
    ax.set_title("accuracy per variant")
    return fig


def plot_confusion_matrices(
    matrices: Mapping[str, Sequence[Sequence[int]]], class_names: Sequence[str] = ("real", "fake")
) -> Figure:
    """One confusion matrix per variant (rows: true class, columns: predicted), at threshold 0.5."""
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
    err = np.vstack(
        [acc - table["acc_ci_low"].to_numpy(float), table["acc_ci_high"].to_numpy(float) - acc]
    )
    ax.errorbar(x, acc, yerr=np.nan_to_num(err), fmt="o", capsize=3)
    for xi, yi, name in zip(x, acc, table["variant"], strict=True):
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize="small")
    ax.set_xlabel("forward GFLOPs per image")
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_title("accuracy vs compute")
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
