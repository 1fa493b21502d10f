"""What a run's model is measured against, on its own folds: the majority class (no fit: every
test row gets its training fold's class shares) and a default reference model (scikit-learn's
HistGradientBoosting as it comes, no resampler, no threshold), with the paired difference on the
same folds and its interval. A model that does not beat the majority class on the primary metric
is said to, in one line. Pure: arrays and fold tables in, plain data out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trilho.evaluation import stats
from trilho.evaluation.cv import Task
from trilho.evaluation.metrics import LOWER_IS_BETTER, confusion, probability_metrics, regression_scores, scores_from_confusion
from trilho.evaluation.splits import TimeOrder, split_plan

__all__ = ["CONSTANT", "MAJORITY", "baseline_task", "compare", "constant_folds", "majority_folds", "verdict_lines"]

MAJORITY = "majority"
CONSTANT = ("mean", "median")  # a numeric target's baselines: the training folds' mean or median, no fit


def majority_folds(y: np.ndarray, n_splits: int, seeds: list[int], groups: np.ndarray | None = None,
                   order: TimeOrder | None = None) -> pd.DataFrame:
    """The majority class on every fold of the plan (the same folds the model's task draws,
    trilho.evaluation.splits): it predicts its training rows' most frequent class, with their class shares
    as probabilities."""
    labels = np.arange(int(y.max()) + 1)
    rows = []
    for seed, i, train, test in split_plan(y, n_splits, seeds, groups, order):
        shares = np.bincount(y[train], minlength=len(labels)) / len(train)
        proba = np.tile(shares, (len(test), 1))
        pred = np.full(len(test), int(shares.argmax()))
        cm = confusion(y[test], pred, labels)
        rows.append({"seed": seed, "fold": i, **scores_from_confusion(cm),
                     **probability_metrics(y[test], proba, labels)})
    return pd.DataFrame(rows)


def constant_folds(y: np.ndarray, n_splits: int, seeds: list[int], groups: np.ndarray | None = None,
                   how: str = "mean", quantile: float | None = None, order: TimeOrder | None = None
                   ) -> pd.DataFrame:
    """A numeric target's constant prediction on every fold of the plan: its training rows' mean
    (or median; the ``quantile`` a decision asks for, when there is one), every metric on the test rows."""
    rows = []
    for seed, i, train, test in split_plan(y, n_splits, seeds, groups, order):
        if quantile is not None:
            value = float(np.quantile(y[train], quantile))
        else:
            value = float(np.median(y[train]) if how == "median" else y[train].mean())
        rows.append({"seed": seed, "fold": i, **regression_scores(y[test], np.full(len(test), value), quantile)})
    return pd.DataFrame(rows)


def baseline_task(task: Task, model: str, repeats: int) -> Task:
    """``model`` with its defaults on the task's first ``repeats`` seeds: same folds, same encoding,
    no resampler, no calibration, no threshold, and no fit besides the folds (missing values
    imputed in-fold where the model cannot take them)."""
    from trilho.model.catalog import model_kind, quantile_params

    encoding = task.encoding
    if encoding is not None and encoding.get("missing") == "native" and not model_kind(model).native_missing:
        encoding = {**encoding, "missing": "impute"}
    if encoding is not None and encoding.get("target_scale") == "log":  # a default model: the target as it is
        encoding = {**encoding, "target_scale": "identity"}
    # a quantile decision: the default model fits the same quantile, where it can
    params = quantile_params(model, task.quantile) if task.quantile is not None else {}
    return task.but(encoding=encoding, model={"name": model, "params": params, "calibration": "none"},
                    resampler={"name": "none", "params": {}}, decision=None, seeds=task.seeds[:repeats],
                    holdout_fraction=None, final_fit=False, nested_repeats=0, explain_repeats=0,
                    label=f"baseline {model}")


def compare(model: pd.DataFrame, baselines: dict[str, pd.DataFrame], metrics: list[str], primary: str,
            test_fraction: float, level: float, forward: bool = False) -> dict[str, Any]:
    """Each baseline's mean per metric, and the model's paired difference from it on the folds
    both were scored on (corrected resampled t interval, as the gate uses), signed so that a
    positive difference is the model being better; ``verdict`` says better, worse or no different
    at ``level``. ``forward``: folds over time, which are not exchangeable: no interval is claimed,
    ``low`` and ``high`` are the smallest and largest paired difference of a fold, and the model is
    better (or worse) only when it is on every fold."""
    out: dict[str, Any] = {"primary_metric": primary, "level": level, "models": {},
                           "bounds": "fold range" if forward else "corrected_t"}
    for name, folds in baselines.items():
        both = model.merge(folds, on=["seed", "fold"], suffixes=("", "__base"))
        entry: dict[str, Any] = {"folds": len(both), "metrics": {}}
        for metric in metrics:
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            a, b = both[metric].to_numpy(), both[f"{metric}__base"].to_numpy()
            found: dict[str, Any] = {"mean": float(b.mean())}
            if len(both) >= 2 and forward:
                diffs = sign * (a - b)
                found |= {"diff": float(diffs.mean()), "low": float(diffs.min()), "high": float(diffs.max()),
                          "verdict": "better" if diffs.min() > 0 else "worse" if diffs.max() < 0 else "no different"}
            elif len(both) >= 2:
                paired = stats.paired_corrected_t(sign * a, sign * b, test_fraction, level)
                found |= {"diff": paired["mean_diff"], "low": paired["low"], "high": paired["high"],
                          "verdict": "better" if paired["low"] > 0 else "worse" if paired["high"] < 0 else "no different"}
            entry["metrics"][metric] = found
        out["models"][name] = entry
    out["said"] = verdict_lines(out)
    return out


def verdict_lines(found: dict[str, Any]) -> list[str]:
    """On the primary metric: a line when the model does not beat the majority class, and one per
    default model it is worse than (no different from one is no news: the screen shows the figures)."""
    primary, lines = found["primary_metric"], []
    for name, entry in found["models"].items():
        score = entry["metrics"].get(primary, {})
        plain = name == MAJORITY or name in CONSTANT
        if "verdict" not in score or score["verdict"] == "better" or (not plain and score["verdict"] != "worse"):
            continue
        what = ("the majority class" if name == MAJORITY else f"the training {name}" if plain
                else f"a default {name}")
        how = "is worse than" if score["verdict"] == "worse" else "does not beat"
        over = (f"(the smallest and largest of {entry['folds']} paired forward folds)"
                if found.get("bounds") == "fold range" else f"over {entry['folds']} paired folds")
        lines.append(f"the model {how} {what} on {primary}: {score['diff']:+.4f} "
                     f"[{score['low']:+.4f}, {score['high']:+.4f}] {over} "
                     f"(the baseline scores {score['mean']:.4f})")
    return lines
