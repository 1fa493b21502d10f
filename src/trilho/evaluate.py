"""Repeated stratified cross-validation with in-fold resampling, a holdout fit, a final fit.

Pure: arrays and frames in, scores and fitted estimators out. Folds run in a thread pool whose
size never exceeds the free cores, each fit single-threaded (XGBoost and the BLAS/OpenMP pools
release the GIL), so the machine is never oversubscribed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE, BorderlineSMOTE, RandomOverSampler
from imblearn.pipeline import Pipeline
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.model_selection import StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits
from xgboost import XGBClassifier

from trilho.errors import ConfigError, EvaluationError

__all__ = [
    "METRICS",
    "CVResult",
    "HoldoutResult",
    "build_pipeline",
    "cross_validate",
    "fit_final",
    "holdout",
    "scores_from_confusion",
]

# name -> (class, name of its thread-count parameter or None)
MODELS: dict[str, tuple[type, str | None]] = {
    "xgboost": (XGBClassifier, "n_jobs"),
    "random_forest": (RandomForestClassifier, "n_jobs"),
    "logistic_regression": (LogisticRegression, None),
}
RESAMPLERS: dict[str, type | None] = {
    "none": None,
    "smote": SMOTE,
    "borderline_smote": BorderlineSMOTE,
    "random_over": RandomOverSampler,
}
METRICS = (
    "accuracy", "balanced_accuracy",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "precision_macro", "recall_macro", "f1_macro",
)

ProgressFn = Callable[[int, int], None]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(num, dtype="float64")
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Every metric in METRICS from one confusion matrix (rows true, columns predicted).

    Equal to scikit-learn's functions with zero_division=0 when every class appears in the fold,
    which stratified folds guarantee; one matrix per fold instead of eight metric calls.
    """
    cm = np.asarray(cm, dtype="float64")
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    total = cm.sum()
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    weights = support / total
    present = support > 0
    return {
        "accuracy": float(tp.sum() / total),
        "balanced_accuracy": float(recall[present].mean()),
        "precision_weighted": float(precision @ weights),
        "recall_weighted": float(recall @ weights),
        "f1_weighted": float(f1 @ weights),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
    }


def build_pipeline(model: dict[str, Any], resampler: dict[str, Any], random_state: int,
                   n_threads: int = 1) -> Pipeline:
    """The imblearn pipeline: the resampler (fit on training rows only) then the model."""
    try:
        model_cls, thread_param = MODELS[model["name"]]
    except KeyError:
        raise ConfigError(f"model.name {model['name']!r} is unknown; choose from {sorted(MODELS)}") from None
    if resampler["name"] not in RESAMPLERS:
        raise ConfigError(f"resampler.name {resampler['name']!r} is unknown; choose from {sorted(RESAMPLERS)}")
    params = {"random_state": random_state, **model.get("params", {})}
    if thread_param:
        params[thread_param] = n_threads
    try:
        steps: list[tuple[str, Any]] = [("model", model_cls(**params))]
        resampler_cls = RESAMPLERS[resampler["name"]]
        if resampler_cls is not None:
            rparams = {"random_state": random_state, **resampler.get("params", {})}
            steps.insert(0, ("resampler", resampler_cls(**rparams)))
    except TypeError as exc:
        raise ConfigError(f"bad parameters for {model['name']} or {resampler['name']}: {exc}") from exc
    return Pipeline(steps)


@dataclass
class CVResult:
    folds: pd.DataFrame  # one row per fold: seed, fold, n_train, n_test, fit_s, one column per metric
    confusion: np.ndarray  # out-of-fold confusion matrix summed over every fold
    wall_s: float
    workers: int

    def scores(self, metric: str) -> np.ndarray:
        return self.folds[metric].to_numpy()


@dataclass
class HoldoutResult:
    confusion: np.ndarray
    report: dict[str, Any]
    report_text: str
    scores: dict[str, float]
    train_index: np.ndarray = field(repr=False)


def _split_plan(y: np.ndarray, n_splits: int, seeds: list[int]) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    dummy = np.zeros(len(y))
    return [
        (seed, i, train, test)
        for seed in seeds
        for i, (train, test) in enumerate(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(dummy, y))
    ]


def cross_validate(X: pd.DataFrame, y: np.ndarray, *, model: dict, resampler: dict, random_state: int,
                   n_splits: int, seeds: list[int], n_jobs: int = 1,
                   progress: ProgressFn | None = None) -> CVResult:
    """For each seed, StratifiedKFold(n_splits, shuffle=True, random_state=seed); fit and score each fold."""
    labels = np.arange(int(y.max()) + 1)
    plan = _split_plan(y, n_splits, seeds)
    workers = max(1, min(n_jobs, len(plan)))
    threads_per_fit = max(1, n_jobs // workers)

    def run_fold(seed: int, i: int, train: np.ndarray, test: np.ndarray) -> dict[str, Any]:
        start = time.perf_counter()
        pipe = build_pipeline(model, resampler, random_state, threads_per_fit)
        pipe.fit(X.iloc[train], y[train])
        cm = confusion_matrix(y[test], pipe.predict(X.iloc[test]), labels=labels)
        return {"seed": seed, "fold": i, "n_train": len(train), "n_test": len(test),
                "fit_s": time.perf_counter() - start, "cm": cm, **scores_from_confusion(cm)}

    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with threadpool_limits(threads_per_fit), ThreadPoolExecutor(workers, thread_name_prefix="trilho-fold") as pool:
        futures = {pool.submit(run_fold, *task): task for task in plan}
        for future in as_completed(futures):
            seed, i = futures[future][:2]
            try:
                rows.append(future.result())
            except Exception as exc:
                for other in futures:
                    other.cancel()
                raise EvaluationError(f"fold {i} of seed {seed} failed: {type(exc).__name__}: {exc}") from exc
            if progress:
                progress(len(rows), len(plan))
    wall = time.perf_counter() - start
    rows.sort(key=lambda r: (seeds.index(r["seed"]), r["fold"]))
    confusion = np.sum([r.pop("cm") for r in rows], axis=0)
    folds = pd.DataFrame(rows)
    bad = ~np.isfinite(folds[list(METRICS)].to_numpy())
    if bad.any():
        raise EvaluationError(f"{int(bad.any(axis=1).sum())} folds produced non-finite scores")
    return CVResult(folds=folds, confusion=confusion, wall_s=wall, workers=workers)


def holdout(X: pd.DataFrame, y: np.ndarray, *, model: dict, resampler: dict, random_state: int,
            test_size: float, classes: list[str], n_jobs: int = 1) -> tuple[HoldoutResult, Pipeline]:
    """Stratified train/test split, fit on the training part, confusion matrix and report on the rest."""
    index = np.arange(len(y))
    train, test = train_test_split(index, test_size=test_size, random_state=random_state, stratify=y)
    pipe = build_pipeline(model, resampler, random_state, n_jobs)
    try:
        with threadpool_limits(n_jobs):
            pipe.fit(X.iloc[train], y[train])
    except Exception as exc:
        raise EvaluationError(f"holdout fit failed: {type(exc).__name__}: {exc}") from exc
    pred = pipe.predict(X.iloc[test])
    labels = list(range(len(classes)))
    cm = confusion_matrix(y[test], pred, labels=labels)
    kwargs = dict(labels=labels, target_names=classes, zero_division=0)
    result = HoldoutResult(
        confusion=cm,
        report=classification_report(y[test], pred, output_dict=True, **kwargs),
        report_text=classification_report(y[test], pred, **kwargs),
        scores=scores_from_confusion(cm),
        train_index=train,
    )
    return result, pipe


def fit_final(X: pd.DataFrame, y: np.ndarray, *, model: dict, resampler: dict, random_state: int,
              n_jobs: int = 1) -> Pipeline:
    """Fit the pipeline on the given rows (all of them by default) for logging and serving."""
    pipe = build_pipeline(model, resampler, random_state, n_jobs)
    try:
        with threadpool_limits(n_jobs):
            return pipe.fit(X, y)
    except Exception as exc:
        raise EvaluationError(f"final fit failed: {type(exc).__name__}: {exc}") from exc
