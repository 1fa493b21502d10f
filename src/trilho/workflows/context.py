"""What every conductor (``run``, ``compare``, ``tune``) stands on, opened in one order.

``conduct`` opens the executor (a Dask cluster is checked before anything is read), prepares the
data (ingest, validation, cleaning, the reference set when asked, the rows and groups the folds
see) and then the tracking store (checked before any fit, or, asked for, opened beside the fits
and checked as each one ends), and yields them as one ``Context``.
The context builds the ``trilho.evaluation.cv.Task`` of the experiment (the one place that turns experiment
settings into what the folds evaluate), the runner on the free cores, and times stages into one
``timings`` table. Each conductor then reads as its own stages.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trilho.data.clean import CleanData
from trilho.data.curate import fold_data, fold_group_columns, load_clean
from trilho.data.ingest import Ingested
from trilho.data.leaks import blocking, find_leaks
from trilho.data.reference import ReferenceSet, load_reference, without_reference
from trilho.data.validate import record_leaks
from trilho.evaluation import cv as evaluate
from trilho.evaluation.splits import TimeOrder, later_training, split_plan
from trilho.execution import collector
from trilho.execution.cluster import open_executor
from trilho.experiment import Experiment
from trilho.model.catalog import quantile_params
from trilho.model.encoding import days_since_1970
from trilho.schemas import ValidationReport
from trilho.settings import Settings
from trilho.storage import Lake, open_lake
from trilho.tracking import Tracker

__all__ = ["Context", "Prepared", "Progress", "TrackerBeside", "check_leaks", "conduct", "experiment_task", "open_tracker",
           "prepare"]

Progress = Callable[[str, int, int], None]


def open_tracker(settings: Settings, experiment: str) -> Tracker:
    """The tracking store named by settings (checked, bounded wait), its stale runs closed."""
    tracker = Tracker(settings.tracking_uri, experiment, pending_file=settings.cache_dir / "unfinished_runs.json",
                      wait_s=settings.mlflow_wait_s)
    tracker.close_stale_runs()
    return tracker


class TrackerBeside:
    """The tracking store opened on a thread of its own while this process fits: its imports,
    its connection and, for a fresh SQLite store, MLflow's building of the file (3 s here, on one
    core) then run beside the fits instead of before them. ``failed()`` is its error once known,
    for the fits to stop at; ``wait()`` the tracker, or that error."""

    def __init__(self, settings: Settings, experiment: str) -> None:
        self._tracker: Tracker | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(settings, experiment), name="trilho-tracker-open",
                                        daemon=True)
        self._thread.start()

    def _open(self, settings: Settings, experiment: str) -> None:
        try:
            self._tracker = open_tracker(settings, experiment)
        except BaseException as exc:  # for the waiting thread to raise
            self._error = exc

    def failed(self) -> BaseException | None:
        return None if self._thread.is_alive() else self._error

    def wait(self) -> Tracker:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._tracker is not None
        return self._tracker

    def close(self) -> None:
        """On the way out: the opening ends first (it cannot be stopped), then the tracker's thread."""
        self._thread.join()
        if self._tracker is not None:
            self._tracker.close()


@dataclass
class Prepared:
    """The data stage's hand-over: the ingest, the raw table, its report, the cleaned data (less
    the reference set's rows, when there is one), and the rows and groups the folds see."""

    ingested: Ingested
    raw: pd.DataFrame
    validation: ValidationReport
    data: CleanData
    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray | None
    duplicates: dict[str, Any]
    reference: ReferenceSet | None = None  # registry.reference: the gate's rows, left out of training
    reference_rows_left_out: int = 0
    group_columns: pd.DataFrame | None = None  # evaluation.groups, one row per row of X
    order: TimeOrder | None = None  # cv.scheme = "time": each row's time, the folds' gap and window

    @property
    def sha256(self) -> str:
        return self.ingested.manifest["sha256"]

    @property
    def leaks(self) -> tuple[str, ...]:
        """The messages of the one-feature leaks found before any fit (the gate keeps such a model
        out of champion)."""
        return tuple(f["message"] for f in blocking(self.validation.get("leaks", [])))


def prepare(exp: Experiment, settings: Settings, lake: Lake, *, reference: bool = False) -> Prepared:
    """Ingest, validate and clean; leave out the reference set's rows (``reference``); the folds' rows."""
    ingested, raw, validation, data = load_clean(exp, settings, lake)
    chosen, left_out = None, 0
    if reference:
        chosen, unusable = load_reference(exp, settings, lake)
        if unusable:
            validation["warnings"].append(unusable)
        data, left_out = without_reference(data, chosen)
    X, y, groups, duplicates = fold_data(data, exp)
    check_leaks(validation, X, y, exp, groups)
    columns, whole = fold_group_columns(data, exp), None
    if exp.cv.group and columns is not None:  # forward folds keep these groups whole; not a metric split
        whole = pd.factorize(columns[exp.cv.group], use_na_sentinel=False)[0]
        if exp.cv.group not in exp.evaluation.groups:
            columns = columns.drop(columns=[exp.cv.group]) if len(columns.columns) > 1 else None
    return Prepared(ingested, raw, validation, data, X, y, groups, duplicates, chosen, left_out,
                    columns, time_order(X, exp, whole))


def time_order(X: pd.DataFrame, exp: Experiment, whole: np.ndarray | None = None) -> TimeOrder | None:
    """The rows' times under cv.scheme = "time" (None otherwise), and the groups kept whole
    (``whole``: cv.group's codes). Every row has its time: cleaning left out the rows without one."""
    col = exp.time_column
    if col is None:
        return None
    days = days_since_1970(X[col]).to_numpy()
    return TimeOrder(days, exp.cv.gap, exp.cv.max_train, exp.evaluation.holdout_fraction, col, whole,
                     exp.cv.group or None)


def check_leaks(validation: ValidationReport, X: pd.DataFrame, y: np.ndarray, exp: Experiment,
                groups: np.ndarray | None = None) -> None:
    """The leak checks on the rows the folds will see, into the report (``validate.record_leaks``):
    under ``validation.leaks = "reject"`` a one-feature leak stops the run before any fit."""
    dates = list(exp.data.date_parts)  # declared dates: a trend along them is what the folds must face, no leak
    findings = find_leaks(X.drop(columns=dates), y, exp.data.classes, categorical=set(exp.data.categorical_maps),
                          n_splits=exp.cv.n_splits, leak_score=exp.validation.leak_score, groups=groups,
                          random_state=exp.random_state)
    if dates and exp.cv.scheme != "time":
        findings.append(shuffled_dates(X, y, exp, groups))
    record_leaks(validation, findings, exp.validation.leaks)


def shuffled_dates(X: pd.DataFrame, y: np.ndarray, exp: Experiment, groups: np.ndarray | None) -> dict[str, Any]:
    """The finding that shuffled folds train on rows later than those they test, on dated rows."""
    col = next(iter(exp.data.date_parts))
    days = days_since_1970(X[col]).to_numpy()
    plan = split_plan(y, exp.cv.n_splits, exp.cv.seeds, groups)
    later, total = later_training(np.nan_to_num(days, nan=-np.inf), plan)
    distinct = len(np.unique(days[np.isfinite(days)]))
    fix = ("set cv.scheme = \"time\" (forward folds, the latest period held out)"
           if distinct >= 2 * (exp.cv.n_splits + 1) else
           f"its {distinct} distinct dates are too few for {exp.cv.n_splits} forward folds: judge the model on rows "
           "later than its training rows (a reference set from the latest period)")
    return {"column": col, "kind": "date", "score": round(later / max(total, 1), 4),
            "message": f"column {col!r} dates the rows (data.dates) but cv.scheme is {exp.cv.scheme!r}: {later} of "
                       f"{total} folds train on rows later than rows they test, so the CV scores flatter a model "
                       f"that will predict later rows; {fix}"}


def experiment_task(exp: Experiment, encoding: dict[str, Any], groups: np.ndarray | None,
                    order: TimeOrder | None = None, **changes: Any) -> evaluate.Task:
    """The experiment's estimator on its folds (``n_splits`` per seed, ``groups`` whole; forward
    folds over time with ``order``); ``changes`` replace any field (another model, other seeds, the
    holdout and final fits)."""
    model, decision, quantile = exp.model.model_dump(), exp.decision_rule(), None
    if exp.regression and decision is not None:  # a quantile: the model's own loss, no rule after it
        quantile = decision["quantile"]
        model["params"] = {**model["params"], **quantile_params(exp.model.name, quantile)}
        decision = None
    # another model (compare, tune, a champion re-evaluated) fits the quantile the changes name, else the experiment's
    wanted = changes.get("quantile", quantile)
    if wanted is not None and "model" in changes:
        other = changes["model"]
        changes["model"] = {**other, "params": {**other.get("params", {}), **quantile_params(other["name"], wanted)}}
    task = evaluate.Task(model=model, resampler=exp.resampler.model_dump(),
                         random_state=exp.random_state, n_splits=exp.cv.n_splits, seeds=exp.cv.seeds,
                         encoding=encoding, groups=groups, decision=decision, kind=exp.task, quantile=quantile,
                         order=order)
    return task.but(**changes) if changes else task


@dataclass
class Context:
    """One conductor's surroundings: the experiment, the settings, the lake, the executor, the
    prepared data and the tracker; ``timings`` collects each stage's seconds."""

    exp: Experiment
    settings: Settings
    lake: Lake
    executor: Any
    inputs: Prepared
    opened: Tracker | TrackerBeside
    clock: float
    timings: dict[str, float] = field(default_factory=dict)
    early: Any = None  # what conduct's ``early`` started before the tracker opened

    @property
    def tracker(self) -> Tracker:
        """The tracking store; opened beside the fits, once it is open (or its error)."""
        return self.opened.wait() if isinstance(self.opened, TrackerBeside) else self.opened

    def check_tracker(self) -> None:
        """Raise the tracking store's error if it failed to open beside the fits."""
        if isinstance(self.opened, TrackerBeside) and (error := self.opened.failed()) is not None:
            raise error

    def task(self, **changes: Any) -> evaluate.Task:
        """The experiment's task on the prepared folds; ``changes`` as in ``experiment_task`` (the
        encoding and the groups among them)."""
        encoding, groups = changes.pop("encoding", self.inputs.data.spec), changes.pop("groups", self.inputs.groups)
        return experiment_task(self.exp, encoding, groups, changes.pop("order", self.inputs.order), **changes)

    def runner(self, progress: Progress | None = None, stage: str = "cv", total: int | None = None) -> evaluate.Runner:
        """The fits on the free cores (or the executor); ``progress(stage, done, total)`` as they end.
        With the tracking store opening beside them, the fits stop at its error."""
        def report(done: int, n: int) -> None:
            self.check_tracker()
            if progress is not None:
                progress(stage, done, n if total is None else total)

        checks = progress is not None or isinstance(self.opened, TrackerBeside)
        return evaluate.Runner(self.settings.free_cores(), self.executor, report if checks else None)

    def tags(self, kind: str) -> dict[str, str]:
        """The tags every run of this context carries."""
        tags = {"trilho.experiment": self.exp.name, "trilho.data_sha256": self.inputs.sha256, "trilho.kind": kind}
        found = self.inputs.validation.get("leaks", [])
        for key, what in (("trilho.leaks", "leak"), ("trilho.date_columns", "date"), ("trilho.small_classes", "small_class")):
            named = [f["column"] for f in found if f["kind"] == what]
            if named:  # searchable: tags."trilho.leaks" LIKE '%col%'
                tags[key] = ", ".join(named)[:4000]
        return tags

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the seconds the block takes to ``timings[key]`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - start

    def elapsed(self) -> float:
        """Seconds since the context began opening."""
        return time.perf_counter() - self.clock


@contextlib.contextmanager
def conduct(exp: Experiment, settings: Settings, *, lake: Lake | None = None, reference: bool = False,
            early: Callable[[Prepared], Any] | None = None, tracker_beside: bool = False) -> Iterator[Context]:
    """The executor, the prepared data and the tracker, in that order; the tracker's thread and
    the executor are closed on the way out. ``early(inputs)`` starts, with the prepared data,
    work that needs no MLflow while this process opens the tracking store (a core is otherwise
    idle then); what it returns is the context's ``early``. ``tracker_beside``: the store opens on
    a thread of its own (``TrackerBeside``), for a conductor that needs it only once its fits end."""
    clock = time.perf_counter()
    lake = lake or open_lake(settings)
    with open_executor(settings) as executor:  # a Dask cluster is checked before anything is read
        inputs = prepare(exp, settings, lake, reference=reference)
        data_s = time.perf_counter() - clock
        started = early(inputs) if early is not None else None
        tracker: Tracker | TrackerBeside
        if tracker_beside:
            tracker = TrackerBeside(settings, exp.tracking.experiment)
        else:
            tracker = open_tracker(settings, exp.tracking.experiment)  # fails before any training
        collector.started()  # imported, read and opened: the collector goes back to the usual
        context = Context(exp, settings, lake, executor, inputs, tracker, clock, {"data_s": data_s}, started)
        try:
            yield context
        finally:
            tracker.close()
