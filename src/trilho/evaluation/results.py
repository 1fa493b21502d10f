"""What an evaluation hands back: the folds' scores and out-of-fold predictions, and the holdout's
report, assembled from the fits' raw results. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline
from sklearn.metrics import classification_report

from trilho.errors import EvaluationError
from trilho.evaluation.metrics import ALL_METRICS, confusion, probability_metrics, regression_scores, scores_from_confusion

__all__ = ["CVResult", "HoldoutResult", "cv_result", "holdout_result", "regression_holdout"]


@dataclass
class CVResult:
    folds: pd.DataFrame  # one row per fold: seed, fold, n_train, n_test, fit_s, one column per metric
    confusion: np.ndarray | None  # out-of-fold confusion matrix summed over every fold (None: a regression)
    wall_s: float
    workers: int
    # per seed and row: fold, y, pred, proba_<k> (a regression: fold, y, pred, the predicted value)
    oof: pd.DataFrame | None = field(default=None, repr=False)
    # nested CV (evaluation.nested_repeats): per seed, outer fold and row of another fold, the
    # 0/1 error and log loss of the model trained without both folds
    nested: pd.DataFrame | None = field(default=None, repr=False)
    pool: str = "threads"  # what ran the fits: "threads", "processes" (GIL-bound estimators), or "dask"
    # per explained fold (the rows of ``folds`` with an ``explain_s``) and feature, the fold's model
    # explained on its held-out rows (trilho.evaluation.explain), and the method; None when not asked for
    importance: np.ndarray | None = field(default=None, repr=False)
    importance_method: str = ""

    def scores(self, metric: str) -> np.ndarray:
        return self.folds[metric].to_numpy()

    @property
    def regression(self) -> bool:
        return self.confusion is None


@dataclass
class HoldoutResult:
    confusion: np.ndarray | None  # None: a regression
    report: dict[str, Any]
    report_text: str
    scores: dict[str, float]
    train_index: np.ndarray = field(repr=False)
    pipeline: Pipeline | None = field(default=None, repr=False)  # the fit on the training part
    test_index: np.ndarray | None = field(default=None, repr=False)
    pred: np.ndarray | None = field(default=None, repr=False)  # a regression's predictions of the test rows


def cv_result(rows: list[dict[str, Any]], wall: float, workers: int, y: np.ndarray,
               nested: list[pd.DataFrame] | None = None) -> CVResult:
    regression = bool(rows) and "cm" not in rows[0]
    confusion = None if regression else np.sum([r.pop("cm") for r in rows], axis=0)
    explained = [r.pop("importance") for r in rows if "importance" in r]
    methods = {r.pop("importance_method") for r in rows if "importance_method" in r}
    parts = []
    for r in rows:
        test, proba = r.pop("test"), r.pop("proba", None)
        pred = r.pop("pred", None)  # the decision's classes (the most probable without a rule), or the values
        if proba is None:
            part = pd.DataFrame({"pred": pred})
        else:
            part = pd.DataFrame(proba, columns=[f"proba_{k}" for k in range(proba.shape[1])])
            part.insert(0, "pred", proba.argmax(axis=1) if pred is None else pred)
        part.insert(0, "y", y[test])
        part.insert(0, "fold", r["fold"])
        part.insert(0, "row", test)
        part.insert(0, "seed", r["seed"])
        parts.append(part)
    oof = pd.concat(parts, ignore_index=True).sort_values(["seed", "row"], kind="stable").reset_index(drop=True)
    folds = pd.DataFrame(rows)
    bad = ~np.isfinite(folds[[m for m in ALL_METRICS if m in folds]].to_numpy(dtype="float64"))
    if bad.any():
        raise EvaluationError(f"{int(bad.any(axis=1).sum())} folds produced non-finite scores")
    inner = pd.concat(nested, ignore_index=True) if nested else None
    return CVResult(folds=folds, confusion=confusion, wall_s=wall, workers=workers, oof=oof, nested=inner,
                    importance=np.vstack(explained) if explained else None,
                    importance_method=methods.pop() if len(methods) == 1 else "")


def holdout_result(pipe: Pipeline, X, y, train, test, classes) -> HoldoutResult:
    pred = pipe.predict(X.iloc[test])
    labels = list(range(len(classes)))
    cm = confusion(y[test], pred, np.array(labels))
    kwargs = dict(labels=labels, target_names=classes, zero_division=0)
    proba = np.zeros((len(test), len(labels)))
    proba[:, pipe.classes_] = pipe.predict_proba(X.iloc[test])
    return HoldoutResult(
        confusion=cm,
        report=classification_report(y[test], pred, output_dict=True, **kwargs),
        report_text=classification_report(y[test], pred, **kwargs),
        scores={**scores_from_confusion(cm), **probability_metrics(y[test], proba, np.array(labels))},
        train_index=train,
        pipeline=pipe,
        test_index=test,
    )


def regression_holdout(pipe: Pipeline, X, y, train, test, quantile: float | None = None) -> HoldoutResult:
    """The holdout of a regression: every metric on the rows the fit on ``train`` never saw."""
    from trilho.model.catalog import predict_values

    pred = predict_values(pipe, X.iloc[test])
    return HoldoutResult(confusion=None, report={}, report_text="", scores=regression_scores(y[test], pred, quantile),
                         train_index=train, pipeline=pipe, test_index=test, pred=pred)
