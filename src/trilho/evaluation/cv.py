"""Repeated stratified cross-validation with in-fold resampling, a holdout fit, a final fit.

Pure: arrays and frames in, scores and fitted estimators out. A ``Task`` says what is evaluated
(the estimator, the folds, the extra fits), a ``Runner`` where (trilho.execution.pool on this machine, never
more fits at once than free cores, or a Dask executor from trilho.execution.cluster). ``start`` runs the
fits in the background and hands back the holdout and final models as futures as soon as each is
fit, so that whoever logs them can do so while the folds go on; nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline

from trilho.errors import EvaluationError
from trilho.evaluation.decision import decide, fit_decided
from trilho.evaluation.explain import fold_importance
from trilho.evaluation.metrics import confusion, probability_metrics, regression_scores, row_log_loss, scores_from_confusion
from trilho.evaluation.results import CVResult, HoldoutResult, cv_result, holdout_result, regression_holdout
from trilho.evaluation.splits import Plan, TimeOrder, holdout_split, split_plan
from trilho.execution.pool import Apart, Batch, ProgressFn, run_fits
from trilho.model.catalog import build_pipeline, fit_regressor, model_kind, predict_values

__all__ = ["Evaluation", "Runner", "Task", "answers", "answers_on", "cross_validate", "cross_validate_many", "evaluate_all",
           "fold_fit", "start", "start_apart"]


@dataclass(frozen=True, eq=False)
class Task:
    """What is evaluated: the estimator (model, resampler, seed, encoding), the folds (``n_splits``
    per seed, whole ``groups`` on one side), and the fits besides the folds: the holdout fit
    (``holdout_fraction``), the final fit on every row, and nested CV for the first
    ``nested_repeats`` seeds. ``label`` names the candidate in errors."""

    model: dict[str, Any]
    resampler: dict[str, Any]
    random_state: int
    n_splits: int
    seeds: list[int]
    encoding: dict[str, Any] | None = None
    groups: np.ndarray | None = None
    holdout_fraction: float | None = None
    classes: list[str] | None = None
    final_fit: bool = False
    nested_repeats: int = 0
    label: str | None = None
    # how a class is chosen from the probabilities (Experiment.decision_rule); None: the most probable
    decision: dict[str, Any] | None = None
    # the folds of the first ``explain_repeats`` seeds explain their models on their held-out rows
    # (trilho.evaluation.explain): one repeat explains every row once
    explain_repeats: int = 0
    # "classification" (``y`` holds class codes 0..k-1) or "regression" (``y`` holds numbers)
    kind: str = "classification"
    # regression: the quantile the model fits (its parameters say so already), for the pinball loss
    quantile: float | None = None
    # dated rows (cv.scheme = "time"): forward folds over time and the latest period as the holdout
    order: TimeOrder | None = None

    @property
    def estimator(self) -> dict[str, Any]:
        """``build_pipeline``'s arguments, small enough to travel with every fit."""
        return dict(model=self.model, resampler=self.resampler, random_state=self.random_state, encoding=self.encoding,
                    task=self.kind)

    @property
    def regression(self) -> bool:
        return self.kind == "regression"

    def but(self, **changes: Any) -> Task:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Runner:
    """Where the fits run: ``n_jobs`` at once on this machine, or on ``executor`` (trilho.execution.cluster);
    ``progress(done, total)`` as the folds finish."""

    n_jobs: int = 1
    executor: Any = None
    progress: ProgressFn | None = None


def _complement(n: int, rows: np.ndarray) -> np.ndarray:
    """The rows of 0..n-1 not in ``rows``, ascending."""
    keep = np.ones(n, dtype=bool)
    keep[rows] = False
    return np.flatnonzero(keep)


def _fitted(X, y, threads: int | Callable[[], int], estimator: dict, rows: np.ndarray | None,
            decision: dict[str, Any] | None, seed: int) -> Any:
    """The estimator fitted on ``rows`` (every row when None); with a decision rule, wrapped with it
    (its threshold chosen on the inner folds of those rows alone: trilho.evaluation.decision)."""
    def fit(picked: np.ndarray | None) -> Pipeline:
        return _fit(estimator, threads, X, y) if picked is None else _fit(estimator, threads, X.iloc[picked], y[picked])

    if estimator.get("task") == "regression":  # a quantile is in the model's parameters: no rule to fit
        return fit(rows)
    return fit_decided(fit, X, y, rows, decision, seed, estimator["model"].get("calibration", "none"))


def _fit(estimator: dict, threads: int | Callable[[], int], X, y) -> Any:
    """``build_pipeline``'s pipeline fitted on ``X``, ``y``: a regression's on the scale its data spec
    names (``target_scale``: the target as it is, or its log; trilho.model.catalog.fit_regressor)."""
    pipe = build_pipeline(**estimator, n_threads=threads)
    if estimator.get("task") == "regression":
        return fit_regressor(pipe, X, y, str((estimator.get("encoding") or {}).get("target_scale", "identity")))
    return pipe.fit(X, y)


def regression_fold(X, y, pipe, seed: int, i: int, train: np.ndarray, test: np.ndarray, start: float,
                    quantile: float | None, explain: bool) -> dict[str, Any]:
    """A regression fold's scores, predictions and explanation, once its model is fit."""
    pred = predict_values(pipe, X.iloc[test])
    fit_s = time.perf_counter() - start
    explained = {}
    if explain:
        step = time.perf_counter()
        method, values = fold_importance(pipe, X.iloc[test], y[test], 0, seed * 1009 + i)
        explained = {"importance": values, "importance_method": method, "explain_s": time.perf_counter() - step}
    return {"seed": seed, "fold": i, "n_train": len(train), "n_test": len(test), "fit_s": fit_s, "test": test,
            "pred": pred, **explained, **regression_scores(y[test], pred, quantile)}


def fold_fit(X, y, threads: int | Callable[[], int], estimator: dict, seed: int, i: int, test: np.ndarray, labels: np.ndarray,
             decision: dict[str, Any] | None = None, explain: bool = False, quantile: float | None = None,
             train: np.ndarray | None = None) -> dict[str, Any]:
    """One fold: trained on ``train`` (None: every row outside ``test``), scored on ``test`` (and,
    with ``explain``, its model explained on ``test``: trilho.evaluation.explain)."""
    start = time.perf_counter()
    if train is None:  # the usual case travels without its training rows: they are the complement
        train = _complement(len(y), test)
    pipe = _fitted(X, y, threads, estimator, train, decision, seed)
    if estimator.get("task") == "regression":
        return regression_fold(X, y, pipe, seed, i, train, test, start, quantile, explain)
    proba = np.zeros((len(test), len(labels)))
    proba[:, pipe.classes_] = pipe.predict_proba(X.iloc[test])
    codes = decide(proba, decision, getattr(pipe, "threshold_", None))  # argmax without a rule: what predict() gives
    pred = labels[codes]
    cm = confusion(y[test], pred, labels)
    threshold = getattr(pipe, "threshold_", None)
    fit_s = time.perf_counter() - start
    explained = {}
    if explain:
        step = time.perf_counter()
        method, values = fold_importance(pipe, X.iloc[test], np.searchsorted(labels, y[test]), len(labels), seed * 1009 + i)
        explained = {"importance": values, "importance_method": method, "explain_s": time.perf_counter() - step}
    return {"seed": seed, "fold": i, "n_train": len(train), "n_test": len(test),
            "fit_s": fit_s, "cm": cm, "test": test, "proba": proba, "pred": codes,
            **({"threshold": float("nan") if threshold is None else threshold} if decision else {}), **explained,
            **scores_from_confusion(cm), **probability_metrics(y[test], proba, labels)}


def _pair_fit(X, y, threads: int | Callable[[], int], estimator: dict, seed: int, folds: tuple[int, int],
              tests: tuple[np.ndarray, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """One fit of nested CV: trained without two folds, it scores both, each for the other's inner CV."""
    held = np.concatenate(tests)
    train = _complement(len(y), held)
    pipe = _fit(estimator, threads, X.iloc[train], y[train])
    outer = np.repeat([folds[1], folds[0]], [len(tests[0]), len(tests[1])])  # rows of one fold serve the other
    if estimator.get("task") == "regression":  # the squared error: the loss RMSE's nested interval is on
        error = y[held] - predict_values(pipe, X.iloc[held])
        return pd.DataFrame({"seed": seed, "outer": outer, "row": held, "error": error**2, "logloss": np.abs(error)})
    proba = np.zeros((len(held), len(labels)))
    proba[:, pipe.classes_] = pipe.predict_proba(X.iloc[held])
    truth = np.searchsorted(labels, y[held])
    return pd.DataFrame({"seed": seed, "outer": outer, "row": held,
                         "error": (proba.argmax(axis=1) != truth).astype("float64"),
                         "logloss": row_log_loss(proba, truth)})


def _rows_fit(X, y, threads: int | Callable[[], int], estimator: dict, rows: np.ndarray | None,
              decision: dict[str, Any] | None = None, seed: int = 0) -> Any:
    """One fit on ``rows`` (every row when None), with the decision rule when there is one."""
    return _fitted(X, y, threads, estimator, rows, decision, seed)


def answers_on(X: pd.DataFrame, y: np.ndarray, task: Task, train: np.ndarray, test: np.ndarray, threads: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
    """The task's estimator fitted on ``train`` (its decision rule too) and its ``answers`` on ``test``."""
    return answers(_fitted(X, y, threads, task.estimator, train, task.decision, task.random_state), X, y, test,
                   task.regression)


def answers(pipe: Any, X: pd.DataFrame, y: np.ndarray, test: np.ndarray, regression: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """A fitted estimator's answers on ``test``: (predicted class codes, class probabilities), or a
    regression's (values, the values as one column)."""
    if regression:
        values = np.asarray(predict_values(pipe, X.iloc[test]), dtype="float64")
        return values, values[:, None]
    proba = np.zeros((len(test), int(y.max()) + 1))
    proba[:, pipe.classes_] = pipe.predict_proba(X.iloc[test])
    return np.asarray(pipe.predict(X.iloc[test])), proba


def _plan_fits(task: Task, plan: Plan, labels: np.ndarray, batch: Batch, prefix: str = "", tick: bool = True) -> None:
    """One fit per fold of the plan."""
    gil = model_kind(task.model["name"]).gil_bound
    for seed, i, train, test in plan:
        explain = seed in task.seeds[:task.explain_repeats]
        given = train if task.order is not None else None  # forward folds: not the complement
        batch.add((fold_fit, (task.estimator, seed, i, test, labels, task.decision, explain, task.quantile, given)),
                  f"{prefix}fold {i} of seed {seed}", tick, gil)


def _nested_fits(task: Task, plan: Plan, labels: np.ndarray, batch: Batch) -> None:
    """Nested CV of the first ``nested_repeats`` seeds: one fit per pair of folds."""
    gil = model_kind(task.model["name"]).gil_bound
    tests = {(seed, i): test for seed, i, _, test in plan}
    for seed in task.seeds[:task.nested_repeats]:
        for a in range(task.n_splits):
            for b in range(a + 1, task.n_splits):
                batch.add((_pair_fit, (task.estimator, seed, (a, b), (tests[seed, a], tests[seed, b]), labels)),
                          f"nested fit without folds {a} and {b} of seed {seed}", True, gil)


def _labels(y: np.ndarray, task: Task) -> np.ndarray:
    """The class codes 0..k-1 of a classification; none for a regression."""
    return np.arange(0) if task.regression else np.arange(int(y.max()) + 1)


def _run_task(X: pd.DataFrame, y: np.ndarray, task: Task, runner: Runner,
              arrived: Callable[[str, Any], None] | None = None, stop: threading.Event | None = None,
              beside: Sequence[Task] = ()) -> tuple[CVResult, HoldoutResult | None, Pipeline | None, list[CVResult]]:
    """Every fit of the task as one batch; ``arrived("holdout" | "final", pipeline)`` as each of
    those two is fit, while the folds go on. The folds of the tasks ``beside`` it (baselines: no
    holdout, no final fit) are in the same batch, spread among the task's folds (``_spread``);
    their results come fourth, in order."""
    labels = _labels(y, task)
    batch = Batch()
    gil = model_kind(task.model["name"]).gil_bound
    kinds: dict[int, str] = {}
    split = None
    if task.holdout_fraction:  # the two larger fits first: the pool's last moments are not one long fit
        split = holdout_split(y, task.holdout_fraction, task.random_state, task.groups, task.order)
        kinds[batch.add((_rows_fit, (task.estimator, split[0], task.decision, task.random_state)), "holdout fit", False,
                        gil)] = "holdout"
    if task.final_fit:
        final = task.order.final_rows() if task.order is not None else None  # a window: its last days only
        kinds[batch.add((_rows_fit, (task.estimator, final, task.decision, task.random_state)), "final fit", False,
                        gil)] = "final"
    extra = len(batch.fits)
    plan = split_plan(y, task.n_splits, task.seeds, task.groups, task.order)
    _plan_fits(task, plan, labels, batch)
    _nested_fits(task, plan, labels, batch)
    own = len(batch.fits)
    spans = []
    for other in beside:
        first = len(batch.fits)
        _plan_fits(other, split_plan(y, other.n_splits, other.seeds, other.groups, other.order), labels, batch,
                   f"{other.label or other.model['name']}: ", tick=False)
        spans.append((first, len(batch.fits)))
    if spans:
        batch.order = _spread(extra, own, len(batch.fits))

    def on_result(i: int, result: Any) -> None:
        if arrived and i in kinds:
            arrived(kinds[i], result)

    begun = time.perf_counter()
    results, pool, workers = run_fits(X, y, batch, runner.n_jobs, runner.executor, runner.progress, on_result, stop)
    wall = time.perf_counter() - begun
    cv = cv_result(results[extra:extra + len(plan)], wall, workers, y, results[extra + len(plan):own])
    cv.pool = pool
    others = [cv_result(results[a:b], wall, workers, y) for a, b in spans]
    if task.regression:
        held = regression_holdout(results[0], X, y, *split, task.quantile) if split else None
    else:
        classes = task.classes or [str(c) for c in labels]
        held = holdout_result(results[0], X, y, *split, classes) if split else None
    return cv, held, (results[extra - 1] if task.final_fit else None), others


def _spread(first: int, own: int, total: int) -> list[int]:
    """The order a batch's fits start in: its own fits ``0..own-1`` in order, and the fits beside
    them (``own..total-1``) evenly among its own from fit ``first`` on (after the holdout and
    final fits), so that the pool's last moments are not the baselines' fits alone."""
    gap = (own - first) / (total - own + 1)
    at = [float(i) for i in range(own)] + [first + gap * (k + 1) - 0.5 for k in range(total - own)]
    return sorted(range(total), key=lambda fit: at[fit])


class Evaluation:
    """The fits of one task, running in a background thread: ``model("holdout" | "final")`` is a
    future of that fit, resolved as soon as it is fit; ``result()`` waits for every fit, and
    ``beside()`` gives the results of the tasks evaluated beside it (``_run_task``)."""

    def __init__(self, X: pd.DataFrame, y: np.ndarray, task: Task, runner: Runner, beside: Sequence[Task] = ()) -> None:
        self._models: dict[str, Future] = {"holdout": Future(), "final": Future()}
        self._stop = threading.Event()
        self._done: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(X, y, task, runner, beside), name="trilho-evaluate",
                                        daemon=True)
        self._thread.start()

    def model(self, kind: str) -> Future:
        return self._models[kind]

    def result(self) -> tuple[CVResult, HoldoutResult | None, Pipeline | None]:
        return self._done.result()[:3]

    def beside(self) -> list[CVResult]:
        return self._done.result()[3]

    def stop(self) -> None:
        """Cancel the fits not yet started and wait for those running."""
        self._stop.set()
        self._thread.join()

    def join(self) -> None:
        self._thread.join()

    def _run(self, X: pd.DataFrame, y: np.ndarray, task: Task, runner: Runner, beside: Sequence[Task]) -> None:
        try:
            self._done.set_result(_run_task(X, y, task, runner, lambda kind, pipe: self._models[kind].set_result(pipe),
                                            self._stop, beside))
        except BaseException as exc:  # a waiter on any future learns why
            self._done.set_exception(exc)
        for future in self._models.values():
            if not future.done():
                future.set_exception(self._done.exception() or EvaluationError("that fit was not asked for"))


@contextlib.contextmanager
def start(X: pd.DataFrame, y: np.ndarray, task: Task, runner: Runner | None = None, beside: Sequence[Task] = ()
          ) -> Iterator[Evaluation]:
    """``with evaluate.start(X, y, task, runner) as fitting``: the task's fits (and the folds of the
    tasks ``beside`` it) run in the background; leaving the block early stops them, leaving it
    normally waits for them."""
    evaluation = Evaluation(X, y, task, runner or Runner(), beside)
    try:
        yield evaluation
    except BaseException:
        evaluation.stop()
        raise
    evaluation.join()


def _each_alone(X: pd.DataFrame, y: np.ndarray, tasks: Sequence[Task]) -> list[CVResult]:
    return [cross_validate(X, y, task, Runner(n_jobs=1)) for task in tasks]


def start_apart(X: pd.DataFrame, y: np.ndarray, tasks: Sequence[Task], apart: Apart | None = None) -> Apart:
    """Each task's folds cross-validated one fit at a time in a worker process of its own (``apart``
    when it is free: one started ahead), while this process goes on; ``.result()`` gives their
    ``CVResult`` in order."""
    if apart is None or not apart.free:
        apart = Apart()
    return apart.submit(_each_alone, X, y, list(tasks))


def evaluate_all(X: pd.DataFrame, y: np.ndarray, task: Task, runner: Runner | None = None
                 ) -> tuple[CVResult, HoldoutResult | None, Pipeline | None]:
    """The folds, the holdout fit, the final fit and the nested-CV fits as one batch on one pool;
    the same fits, seeds and scores wherever they run. In this thread: nothing waits to overlap them."""
    return _run_task(X, y, task, runner or Runner())[:3]


def cross_validate(X: pd.DataFrame, y: np.ndarray, task: Task, runner: Runner | None = None) -> CVResult:
    """For each seed, StratifiedKFold(n_splits, shuffle=True, random_state=seed) (or its grouped
    variant when the task has ``groups``); fit and score each fold."""
    plain = task.but(holdout_fraction=None, final_fit=False)
    return evaluate_all(X, y, plain, runner)[0]


def cross_validate_many(X: pd.DataFrame, y: np.ndarray, tasks: list[Task], runner: Runner | None = None
                        ) -> list[CVResult]:
    """Several candidates on the same folds (the first task's ``n_splits``, ``seeds`` and
    ``groups``): every fit of every candidate in one batch on one pool, so the pool starts once and
    no core waits for a candidate's last fold. Each one's scores are those ``cross_validate`` gives
    it alone."""
    runner = runner or Runner()
    first = tasks[0]
    labels = _labels(y, first)
    plan = split_plan(y, first.n_splits, first.seeds, first.groups, first.order)
    batch = Batch()
    for task in tasks:
        _plan_fits(task, plan, labels, batch, f"{task.label or task.model['name']}: ")
    # the candidates' folds in turn (fold 0 of each, fold 1 of each, ...): a fit that holds the GIL
    # in a worker process then runs beside another candidate's fit in a thread, rather than two
    # fits of one candidate in threads contending for the GIL
    batch.order = [c * len(plan) + k for k in range(len(plan)) for c in range(len(tasks))]
    begun = time.perf_counter()
    results, pool, workers = run_fits(X, y, batch, runner.n_jobs, runner.executor, runner.progress)
    wall = time.perf_counter() - begun
    out = []
    for k, task in enumerate(tasks):
        cv = cv_result(results[k * len(plan):(k + 1) * len(plan)], wall, workers, y)
        gil = model_kind(task.model["name"]).gil_bound
        cv.pool = "dask" if pool == "dask" else ("processes" if pool == "processes" and gil else "threads")
        out.append(cv)
    return out
