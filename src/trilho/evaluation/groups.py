"""Every metric by group (``evaluation.groups``), out of fold, with intervals. Pure.

Each fold's held-out rows are split by the group column's value and scored as the whole fold is:
a group's score in a fold is the metric on that fold's rows of the group, so its mean over the
folds is the model's expected score on rows like them, and the folds give it a corrected-t
interval (their training rows overlap). The largest gap is between the best and the worst group
of each metric, paired fold by fold. A group with too few rows per fold to score is named with
its size, never dropped silently; a missing value is a group of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trilho.evaluation import stats
from trilho.evaluation.metrics import (
    LOWER_IS_BETTER,
    METRIC_RANGE,
    confusion,
    probability_metrics,
    regression_scores,
    scores_from_confusion,
)

__all__ = ["MAX_GROUPS", "MIN_ROWS", "MISSING", "OTHER", "group_folds", "group_labels", "group_metrics"]

MISSING = "(missing)"
OTHER = "(other)"
MAX_GROUPS = 20  # values shown one by one; a numeric column with more is cut into quartiles, text keeps the most frequent
MIN_ROWS = 10    # a group with fewer held-out rows per fold (on average) than this is said too small to score


def group_labels(values: pd.Series) -> pd.Series:
    """Each row's group: the value as written (case aside: a value is named by its most frequent
    spelling), ``(missing)`` for a missing one; a numeric column with more than ``MAX_GROUPS``
    values in quartile bins; other text beyond ``MAX_GROUPS`` values as ``(other)``."""
    numbers = pd.to_numeric(values, errors="coerce")
    present = values.notna()
    if bool(present.any()) and bool(numbers[present].notna().all()) and numbers.nunique() > MAX_GROUPS:
        bins = pd.qcut(numbers, 4, duplicates="drop")
        out = bins.map(lambda b: f"({b.left:g}, {b.right:g}]").astype(object)
        return out.where(present, MISSING).astype(str)
    text = values.astype("string").str.strip()
    key = text.str.upper()
    pairs = pd.DataFrame({"key": key, "text": text})[present.to_numpy()]
    spelled = pairs.groupby(["key", "text"]).size().reset_index(name="n").sort_values(
        ["key", "n", "text"], ascending=[True, False, True]).drop_duplicates("key").set_index("key")["text"]
    out = key.map(spelled).astype(object)
    counts = out[present].value_counts()
    if len(counts) > MAX_GROUPS:
        kept = set(counts.index[:MAX_GROUPS - 1])
        out = out.where(~present | out.isin(kept), OTHER)
    return out.where(present, MISSING).astype(str)


def group_folds(oof: pd.DataFrame, labels: pd.Series, metrics: list[str], n_classes: int,
                quantile: float | None = None) -> pd.DataFrame:
    """One row per fold and group: its held-out rows and every metric on them (NaN where a fold's
    rows of the group cannot give it, such as a ROC AUC on one class). ``n_classes`` 0: a numeric
    target (``quantile``: a quantile decision's, for the pinball loss); where the out-of-fold table
    carries each row's interval ``half_width``, ``coverage`` is the share of the group's rows inside."""
    y_all, pred_all = oof["y"].to_numpy(), oof["pred"].to_numpy()
    if n_classes == 0:
        y_all, pred_all = y_all.astype("float64"), pred_all.astype("float64")
        width = oof["half_width"].to_numpy() if "half_width" in oof else None

        def score(where: np.ndarray) -> dict[str, float]:
            found = regression_scores(y_all[where], pred_all[where], quantile)
            if len(where) < 2:  # one row has no R²
                found["r2"] = float("nan")
            if width is not None:
                found["coverage"] = float((np.abs(y_all[where] - pred_all[where]) <= width[where]).mean())
            return found
    else:
        codes = np.arange(n_classes)
        proba_all = oof[[f"proba_{k}" for k in range(n_classes)]].to_numpy()

        def score(where: np.ndarray) -> dict[str, float]:
            y, pred = y_all[where], pred_all[where]
            found = scores_from_confusion(confusion(y, pred, codes))
            found.update(probability_metrics(y, proba_all[where], codes))
            return found
    groups = labels.to_numpy(dtype=object)[oof["row"].to_numpy()]
    keys = pd.DataFrame({"seed": oof["seed"].to_numpy(), "fold": oof["fold"].to_numpy(), "group": groups})
    rows = []
    found_groups: dict[Any, Any] = keys.groupby(["seed", "fold", "group"], sort=True).indices
    for (seed, fold, group), where in found_groups.items():
        found = score(where)
        rows.append({"seed": seed, "fold": fold, "group": group, "rows": len(where),
                     **{m: found[m] for m in metrics}})
    return pd.DataFrame(rows)


def _interval(values: np.ndarray, metric: str, test_fraction: float, level: float) -> dict[str, Any] | None:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    low, high = (stats.corrected_t_interval(values, test_fraction, level) if values.std() > 0
                 else (float(values.mean()), float(values.mean())))
    lo, hi = METRIC_RANGE[metric]
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "low": max(float(low), lo),
            "high": min(float(high), hi), "folds": int(len(values))}


def _gap(wide: pd.DataFrame, scored: dict[str, dict[str, Any]], metric: str, test_fraction: float,
         level: float) -> dict[str, Any] | None:
    """The best and the worst group on ``metric`` and their difference, paired on the folds where
    both score (``wide``: one row per fold, a column per metric and group)."""
    means = {g: entry["metrics"][metric]["mean"] for g, entry in scored.items() if entry["metrics"].get(metric)}
    if len(means) < 2:
        return None
    lower = metric in LOWER_IS_BETTER
    best = min(means, key=means.__getitem__) if lower else max(means, key=means.__getitem__)
    worst = max(means, key=means.__getitem__) if lower else min(means, key=means.__getitem__)
    both = wide[metric][[best, worst]].dropna()
    out: dict[str, Any] = {"best": best, "worst": worst, "diff": float(means[best] - means[worst]), "folds": len(both)}
    if len(both) >= 2:
        paired = stats.paired_corrected_t(both[best].to_numpy(), both[worst].to_numpy(), test_fraction, level)
        out.update(diff=paired["mean_diff"], low=paired["low"], high=paired["high"], p_value=paired["p_value"])
    return out


def group_metrics(oof: pd.DataFrame, columns: pd.DataFrame, metrics: list[str], n_classes: int,
                  test_fraction: float, level: float = 0.95,
                  quantile: float | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Per group column: per value its rows, share, every metric's mean and interval over the
    folds, the values too small to score, and per metric the largest gap between groups; with the
    per-fold table behind it (one row per column, fold and group). A regression (``n_classes`` 0)
    whose out-of-fold table carries ``half_width`` gets the interval's ``coverage`` per group too."""
    if n_classes == 0 and "half_width" in oof:
        metrics = [*metrics, "coverage"]
    out: dict[str, Any] = {}
    tables = []
    seeds = oof["seed"].unique()
    n_folds = int(oof.groupby(["seed", "fold"]).ngroups)
    for column in columns.columns:
        labels = group_labels(columns[column])
        table = group_folds(oof, labels, metrics, n_classes, quantile)
        counts = labels.value_counts()
        scored: dict[str, dict[str, Any]] = {}
        small: dict[str, int] = {}
        for group, rows in counts.items():
            part = table[table["group"] == group]
            per_fold = part["rows"].sum() / n_folds if len(seeds) else 0.0
            if per_fold < MIN_ROWS:
                small[str(group)] = int(rows)
                continue
            scored[str(group)] = {"rows": int(rows), "share": float(rows / len(labels)),
                                  "metrics": {m: _interval(part[m].to_numpy(dtype="float64"), m, test_fraction, level)
                                              for m in metrics}}
        wide = table.pivot(index=["seed", "fold"], columns="group", values=metrics)  # a fold's groups side by side
        gaps = {m: _gap(wide, scored, m, test_fraction, level) for m in metrics}
        out[str(column)] = {"groups": scored, "too_small": small, "min_rows_per_fold": MIN_ROWS,
                            "gap": {m: g for m, g in gaps.items() if g is not None}}
        tables.append(table.assign(column=str(column)))
    return out, (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
