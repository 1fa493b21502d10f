"""Figures, returned not saved: the caller decides where they go."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["comparison_figure", "confusion_matrix_figure", "coverage_figure", "curves_figure", "drift_figure", "fold_boxplot",
           "groups_figure", "importance_figure", "intervals_figure", "periods_figure", "predicted_actual_figure",
           "reliability_figure", "reliability_table", "residuals_figure"]

_MOST_POINTS = 4000  # a scatter of more rows says nothing more and draws slowly


def _margins(fig: Figure, left: float = 0.75, right: float = 0.2, bottom: float = 0.6, top: float = 0.4,
             **space: float) -> None:
    """Margins in inches, for a figure whose labels are all trilho's own words and numbers: a
    layout engine measures every label twice over (constrained layout was 40% of these figures'
    drawing time), for margins these labels always fit in."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        **space)


def _first_repeat(oof: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The first repeat's out-of-fold rows (each row once), at most _MOST_POINTS of them."""
    one = oof[oof["seed"] == oof["seed"].iloc[0]]
    return one.sample(_MOST_POINTS, random_state=seed) if len(one) > _MOST_POINTS else one


def fold_boxplot(folds: pd.DataFrame, metrics: list[str], title: str = "Cross-validation fold scores") -> Figure:
    """One box per metric over every fold, with the individual folds as points."""
    data = [folds[m].to_numpy() for m in metrics]
    if max((float(np.nanmax(np.abs(v))) for v in data if np.isfinite(v).any()), default=0.0) < 100:
        # scores of a few digits (every classification metric): the names, turned 30°, set the bottom margin
        fig = Figure(figsize=(1.4 * len(metrics) + 2, 4.5))
        _margins(fig, bottom=0.3 + 0.045 * max(len(m) for m in metrics))
    else:  # a regression's errors in the data's units: their tick labels can be long
        fig = Figure(figsize=(1.4 * len(metrics) + 2, 4.5), layout="constrained")
    ax = fig.add_subplot()
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
        ax.text(j, i, f"{value}\n{norm[i, j]:.0%}", ha="center", va="center",
                color="white" if norm[i, j] > 0.6 else "black")
    return fig


def curves_figure(oof: pd.DataFrame, classes: list[str]) -> Figure:
    """One-vs-rest ROC and precision-recall curves from the out-of-fold probabilities (all repeats pooled)."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    fig = Figure(figsize=(10, 4.3))
    _margins(fig, bottom=0.55, wspace=0.22)
    roc_ax, pr_ax = fig.subplots(1, 2)
    for k, name in enumerate(classes):
        truth = (oof["y"] == k).to_numpy()
        score = oof[f"proba_{k}"].to_numpy()
        fpr, tpr, _ = roc_curve(truth, score)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(truth, score)
        pr_ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(truth, score):.3f})")
    roc_ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one vs rest (out of fold)")
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, one vs rest (out of fold)")
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def intervals_figure(summary: Mapping[str, Any], metric: str) -> Figure:
    """Every interval method for one metric, side by side, around the fold mean.

    Each interval's bounds are written in a column right of the axes and the legend sits below
    them, so neither covers a bar, a bound or a method's name."""
    entry = summary[metric]
    methods = [(m, iv) for m, iv in entry["intervals"].items() if iv]
    fig = Figure(figsize=(6.4, 0.5 * len(methods) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    beside = ax.get_yaxis_transform()  # x in axes fractions, y in data: just right of the axes
    for i, (_method, (lo, hi)) in enumerate(methods):
        ax.plot([lo, hi], [i, i], lw=3)
        ax.annotate(f"[{lo:.3f}, {hi:.3f}]", xy=(1, i), xycoords=beside, xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.axvline(entry["mean"], color="black", lw=0.8, ls="--", label=f"fold mean {entry['mean']:.3f}")
    ax.set_yticks(range(len(methods)), [m for m, _ in methods])
    ax.set_xlabel(metric)
    ax.set_title(f"{metric}: intervals side by side")
    fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    return fig


def comparison_figure(table: pd.DataFrame, metric: str, baseline: str) -> Figure:
    """Each candidate's difference from the baseline on the same folds, with its corrected interval."""
    fig = Figure(figsize=(7, 0.55 * len(table) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    for i, row in enumerate(table.itertuples()):
        ax.plot([float(row.diff_low), float(row.diff_high)], [i, i], lw=3)  # type: ignore[arg-type]
        ax.plot([float(row.mean_diff)], [i], "o", color="black", ms=4)  # type: ignore[arg-type]
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(table)), table["candidate"])
    ax.set_xlabel(f"{metric}: candidate - {baseline} (corrected paired t interval)")
    ax.set_title("Candidates on identical folds")
    return fig


def reliability_table(oof: pd.DataFrame, n_classes: int, bins: int = 10) -> pd.DataFrame:
    """Per class (one vs rest) and equal-width bin of its out-of-fold probability: the rows, their
    mean probability and how often the class was the truth (every repeat pooled)."""
    parts = []
    truth = oof["y"].to_numpy()
    for k in range(n_classes):
        p = oof[f"proba_{k}"].to_numpy()
        which = np.minimum((p * bins).astype(int), bins - 1)
        rows = np.bincount(which, minlength=bins)
        used = rows > 0
        mean_p = np.bincount(which, p, minlength=bins)[used] / rows[used]
        seen = np.bincount(which, (truth == k).astype(float), minlength=bins)[used] / rows[used]
        parts.append(pd.DataFrame({"class": k, "bin": np.flatnonzero(used), "rows": rows[used],
                                   "mean_probability": mean_p, "observed": seen}))
    return pd.concat(parts, ignore_index=True)


def reliability_figure(table: pd.DataFrame, classes: list[str]) -> Figure:
    """Reliability curves: each class's mean predicted probability against how often it was the
    truth, per bin (a well-calibrated model lies on the diagonal); below, the rows per bin."""
    fig = Figure(figsize=(6.4, 6.4))
    _margins(fig, left=0.8, bottom=0.55, hspace=0.08)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    for k, name in enumerate(classes):
        part = table[table["class"] == k]
        top.plot(part["mean_probability"], part["observed"], marker="o", ms=3, label=name)
        bottom.plot(part["mean_probability"], part["rows"], marker=".", ms=3)
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    top.set(ylabel="observed share of the class", title="Reliability, one vs rest (out of fold)", xlim=(0, 1),
            ylim=(0, 1))
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="mean predicted probability (10 equal-width bins)", ylabel="rows", yscale="log")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig


def importance_figure(importance: Mapping[str, Any], top: int = 20) -> Figure:
    """The ``top`` most important features, out of fold: each one's mean over the explained folds
    with its interval (corrected t) and the folds' own values as points."""
    table = list(importance["features"].items())[:top][::-1]  # the most important at the top
    fig = Figure(figsize=(7.2, 0.32 * len(table) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (_name, entry) in enumerate(table):
        ax.barh(i, entry["mean"], color="tab:blue", alpha=0.75)
        ax.plot([entry["low"], entry["high"]], [i, i], color="black", lw=1.2)
    ax.set_yticks(range(len(table)), [name for name, _ in table], fontsize=8)
    ax.axvline(0, color="grey", lw=0.8)
    shown = f"top {len(table)} of {len(importance['features'])}" if len(importance["features"]) > top else "every feature"
    ax.set_xlabel(importance["measure"])
    ax.set_title(f"Feature importance, out of fold ({shown}; {importance['folds']} folds, "
                 f"{importance['level']:.0%} interval)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def groups_figure(groups: Mapping[str, Any], metric: str) -> Figure:
    """Per group column, each group's out-of-fold ``metric`` with its interval; groups too small to
    score are named below their column."""
    columns = [c for c in groups if groups[c]["groups"]] or list(groups)[:1]
    heights = [max(len(groups[c]["groups"]), 1) for c in columns]
    fig = Figure(figsize=(7.2, 0.38 * sum(heights) + 1.3 * len(columns) + 0.4), layout="constrained")
    axes = fig.subplots(len(columns), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, column in zip(axes, columns, strict=True):
        entry = groups[column]
        names = list(entry["groups"])
        for i, name in enumerate(names):
            found = entry["groups"][name]["metrics"].get(metric)
            if found:
                ax.plot([found["low"], found["high"]], [i, i], lw=3, color="tab:blue")
                ax.plot([found["mean"]], [i], "o", color="black", ms=4)
        ax.set_yticks(range(len(names)), [f"{n} ({entry['groups'][n]['rows']:,} rows)" for n in names], fontsize=8)
        small = entry["too_small"]
        listed = ", ".join(f"{k} ({v})" for k, v in list(small.items())[:4])
        more = f" and {len(small) - 4} more" if len(small) > 4 else ""
        note = f"\ntoo small to score: {listed}{more}" if small else ""
        gap = entry["gap"].get(metric)
        gap_text = (f"; gap {gap['diff']:+.3f}" + (f" [{gap['low']:+.3f}, {gap['high']:+.3f}]" if "low" in gap else "")
                    if gap else "")
        ax.set_title(f"{metric} by {column}{gap_text}{note}", fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.6, max(len(names), 1) - 0.4)
    axes[-1].set_xlabel(f"{metric}, out of fold (interval: corrected t)")
    return fig


def drift_figure(features: list[Mapping[str, Any]], threshold: float, top: int = 20) -> Figure:
    """Each feature's PSI (served rows against training), highest first, with the flag's threshold."""
    shown = features[:top][::-1]
    fig = Figure(figsize=(7, 0.35 * len(shown) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    values = [f["psi"] for f in shown]
    ax.barh([str(f["feature"]) for f in shown], values, color=["#c0392b" if v >= threshold else "#4c72b0" for v in values])
    ax.axvline(threshold, color="#333", linestyle="--", linewidth=1, label=f"flagged at {threshold}")
    ax.set_xlabel("population stability index")
    ax.set_title("Served rows against the training data")
    ax.legend(loc="lower right")
    return fig



def predicted_actual_figure(oof: pd.DataFrame, target: str) -> Figure:
    """A regression's out-of-fold predictions against the truth (first repeat), the diagonal drawn."""
    one = _first_repeat(oof)
    fig = Figure(figsize=(5.2, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(one["y"], one["pred"], s=8, alpha=0.4, color="tab:blue")
    low = float(min(one["y"].min(), one["pred"].min()))
    high = float(max(one["y"].max(), one["pred"].max()))
    ax.plot([low, high], [low, high], color="black", lw=1, ls="--", label="predicted = actual")
    ax.set_xlabel(f"actual {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.set_title(f"Out of fold, predicted against actual (n={len(one):,})")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def residuals_figure(oof: pd.DataFrame, half_width: float | None = None) -> Figure:
    """A regression's out-of-fold residuals (actual - predicted) against the prediction, and their
    histogram; the interval's half-width drawn as a band where there is one."""
    one = _first_repeat(oof)
    residual = one["y"].to_numpy() - one["pred"].to_numpy()
    fig = Figure(figsize=(10, 4.3), layout="constrained")
    scatter_ax, hist_ax = fig.subplots(1, 2)
    scatter_ax.scatter(one["pred"], residual, s=8, alpha=0.4, color="tab:blue")
    scatter_ax.axhline(0, color="black", lw=1)
    if half_width is not None and np.isfinite(half_width):
        for sign in (-1, 1):
            scatter_ax.axhline(sign * half_width, color="tab:orange", lw=1, ls="--")
    scatter_ax.set_xlabel("predicted")
    scatter_ax.set_ylabel("actual - predicted")
    scatter_ax.set_title("Residuals against the prediction")
    scatter_ax.grid(alpha=0.3)
    hist_ax.hist(residual, bins=40, color="tab:blue", alpha=0.8)
    hist_ax.axvline(0, color="black", lw=1)
    hist_ax.set_xlabel("actual - predicted")
    hist_ax.set_ylabel("rows")
    hist_ax.set_title("Residuals, out of fold")
    return fig


def coverage_figure(intervals: Mapping[str, Any]) -> Figure:
    """The prediction interval's out-of-fold coverage by decile of the prediction, against its level."""
    deciles = list(intervals.get("by_decile") or [])
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.bar([d["decile"] for d in deciles], [d["coverage"] for d in deciles], color="tab:blue", alpha=0.8)
    ax.axhline(intervals["level"], color="black", lw=1, ls="--", label=f"level {intervals['level']:.0%}")
    ax.set_xticks([d["decile"] for d in deciles])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("decile of the prediction (1 = lowest)")
    ax.set_ylabel("share of rows inside the interval")
    ax.set_title(f"Interval coverage out of fold; width {intervals['width']:.4g}")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def periods_figure(over_time: Mapping[str, Any]) -> Figure:
    """The primary metric of each forward fold in time order (each trained on the rows before its
    period), the latest period's score with its bootstrap interval, and the trend across periods."""
    metric = over_time["latest"]["metric"]
    periods = list(over_time["periods"])
    values = [p["scores"][metric] for p in periods]
    labels = [p["start"][:10] for p in periods]
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(values))
    ax.plot(x, values, "o-", color="tab:blue", label="forward fold (trained on earlier rows)")
    slope = over_time["trend"][metric]
    if len(values) > 1:
        ax.plot(x, np.mean(values) + slope * (x - x.mean()), ls=":", color="tab:gray", label=f"trend {slope:+.3g} a period")
    latest = over_time["latest"]
    interval, score = latest.get("interval"), latest["scores"][metric]
    ax.errorbar([len(values)], [score], color="tab:red", fmt="s", capsize=4,
                yerr=None if not interval else [[score - interval[0]], [interval[1] - score]],
                label="latest period (holdout), row bootstrap")
    ax.set_xticks([*x, len(values)], [*labels, latest["start"][:10]], rotation=30, ha="right")
    ax.set_xlabel("first day of the period tested")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by period, in time order")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return fig
