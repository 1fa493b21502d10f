"""Figures, returned not saved: the caller decides where they go."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["confusion_matrix_figure", "fold_boxplot"]


def fold_boxplot(folds: pd.DataFrame, metrics: list[str], title: str = "Cross-validation fold scores") -> Figure:
    """One box per metric over every fold, with the individual folds as points."""
    fig = Figure(figsize=(1.4 * len(metrics) + 2, 4.5), layout="constrained")
    ax = fig.add_subplot()
    data = [folds[m].to_numpy() for m in metrics]
    ax.boxplot(data, tick_labels=metrics, showmeans=True)
    rng = np.random.default_rng(0)  # jitter only, for legibility
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=8, alpha=0.5, color="tab:blue")
    ax.set_title(f"{title} (n={len(folds)})")
    ax.set_ylabel("score")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
    return fig


def confusion_matrix_figure(cm: np.ndarray, classes: list[str], title: str) -> Figure:
    """Counts with row-normalised shading, true labels on rows."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of true class")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, f"{value}", ha="center", va="center", color="white" if norm[i, j] > 0.6 else "black")
    return fig
