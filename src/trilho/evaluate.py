"""Repeated stratified cross-validation with in-fold resampling, a holdout fit, a final fit.

Pure: arrays and frames in, scores and fitted estimators out. Folds run in a pool whose size never
exceeds the free cores, each fit single-threaded, so the machine is never oversubscribed: threads
for the estimators that release the GIL or finish quickly (XGBoost, logistic regression), loky's
worker processes for those whose fit is Python-heavy and holds it (the forests, histogram
boosting: measured in BENCHMARKS.md). Never bare forked children: a process whose main thread has fit an
XGBoost model leaves OpenMP state behind that deadlocks a forked child's first fit; loky starts
its workers by exec.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

from trilho.errors import EvaluationError
from trilho.models import build_pipeline, check_names, model_kind

__all__ = [
    "METRICS",
    "duplicate_groups",
    "grouped_stratified_folds",
    "holdout_split",
    "probability_metrics",
    "CVResult",
    "HoldoutResult",
    "build_pipeline",
    "check_names",
    "cross_validate",
    "cross_validate_many",
    "evaluate_all",
    "scores_from_confusion",
    "scores_from_confusions",
]

METRICS = (
    "accuracy", "balanced_accuracy",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "precision_macro", "recall_macro", "f1_macro",
    "mcc", "roc_auc_ovr", "pr_auc", "log_loss",
)
# the values each metric can take: intervals are clipped to them
METRIC_RANGE = {m: (0.0, 1.0) for m in METRICS} | {"mcc": (-1.0, 1.0), "log_loss": (0.0, float("inf"))}
CONFUSION_METRICS = METRICS[:9]  # computed from one confusion matrix; the rest need probabilities

ProgressFn = Callable[[int, int], None]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(num, dtype="float64")
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusions(cms: np.ndarray) -> dict[str, np.ndarray]:
    """CONFUSION_METRICS for a stack of confusion matrices (..., K, K): one array per metric."""
    cm = np.asarray(cms, dtype="float64")
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = support.sum(axis=-1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    weights = support / total[..., None]
    present = support > 0
    # Matthews correlation, multiclass (Gorodkin's R_K, as scikit-learn computes it); 0 when undefined
    covariance = tp.sum(axis=-1) * total - (support * predicted).sum(axis=-1)
    spread = np.sqrt((total**2 - (predicted**2).sum(axis=-1)) * (total**2 - (support**2).sum(axis=-1)))
    mcc = _ratio(covariance, spread)
    return {
        "accuracy": tp.sum(axis=-1) / total,
        "balanced_accuracy": (recall * present).sum(axis=-1) / present.sum(axis=-1),
        "precision_weighted": (precision * weights).sum(axis=-1),
        "recall_weighted": (recall * weights).sum(axis=-1),
        "f1_weighted": (f1 * weights).sum(axis=-1),
        "precision_macro": precision.mean(axis=-1),
        "recall_macro": recall.mean(axis=-1),
        "f1_macro": f1.mean(axis=-1),
        "mcc": mcc,
    }


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Every metric in CONFUSION_METRICS from one confusion matrix (rows true, columns predicted).

    Equal to scikit-learn's functions with zero_division=0 when every class appears in the fold,
    which stratified folds guarantee; one matrix per fold instead of eight metric calls.
    """
    return {k: float(v) for k, v in scores_from_confusions(np.asarray(cm)).items()}


@dataclass
class CVResult:
    folds: pd.DataFrame  # one row per fold: seed, fold, n_train, n_test, fit_s, one column per metric
    confusion: np.ndarray  # out-of-fold confusion matrix summed over every fold
    wall_s: float
    workers: int
    oof: pd.DataFrame | None = field(default=None, repr=False)  # per seed and row: fold, y, pred, proba_<k>
    # nested CV (evaluation.nested_repeats): per seed, outer fold and row of another fold, the
    # 0/1 error and log loss of the model trained without both folds
    nested: pd.DataFrame | None = field(default=None, repr=False)
    pool: str = "threads"  # what ran the fits: "threads", "processes" (GIL-bound estimators), or "dask"

    def scores(self, metric: str) -> np.ndarray:
        return self.folds[metric].to_numpy()


@dataclass
class HoldoutResult:
    confusion: np.ndarray
    report: dict[str, Any]
    report_text: str
    scores: dict[str, float]
    train_index: np.ndarray = field(repr=False)
    pipeline: Pipeline | None = field(default=None, repr=False)  # the fit on the training part


def duplicate_groups(X: pd.DataFrame) -> np.ndarray:
    """One group id per distinct feature row: copies of a row share a group."""
    hashes = pd.util.hash_pandas_object(X, index=False).to_numpy()
    return pd.factorize(hashes)[0]


# up to this many groups, grouped folds are scikit-learn's StratifiedGroupKFold (a greedy loop over
# the groups in Python: 1.8 s a repeat at 8,300 groups here, 20 s at 83,000), which keeps the
# results of small data sets such as the diabetes one as they were; above it they are
# ``grouped_stratified_folds`` (vectorised: 0.16 s a repeat at 830,000 groups). BENCHMARKS.md.
EXACT_GROUP_LIMIT = 2_000


def grouped_stratified_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """The fold of each row, so that every copy of a row (one group) is in one fold and each
    class's rows are spread over the folds as evenly as whole groups allow; vectorised.

    Each group is stratified by its majority label: within a label, the groups are put in a
    random order (``seed``) and cut into ``n_splits`` runs of about equal row counts, a group
    going to the fold where its middle row falls. ``groups`` are ids 0..G-1.
    """
    g, y = np.asarray(groups, dtype=np.int64), np.asarray(y, dtype=np.int64)
    n_groups, n_labels = int(g.max()) + 1, int(y.max()) + 1
    sizes = np.bincount(g, minlength=n_groups)
    label = np.bincount(g * n_labels + y, minlength=n_groups * n_labels).reshape(n_groups, n_labels).argmax(axis=1)
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(label[order], kind="stable")]  # by label, in random order within one
    size, lab = sizes[order], label[order]
    per_label = np.bincount(lab, weights=size, minlength=n_labels)
    label_start = np.concatenate([[0.0], np.cumsum(per_label)[:-1]])
    middle = np.cumsum(size) - size / 2 - label_start[lab]  # the group's middle row within its label
    fold = np.empty(n_groups, dtype=np.int64)
    fold[order] = np.minimum((middle * n_splits / per_label[lab]).astype(np.int64), n_splits - 1)
    return fold[g]


def _split_plan(y: np.ndarray, n_splits: int, seeds: list[int], groups: np.ndarray | None = None
                ) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Stratified folds per seed; with ``groups``, rows of one group never straddle train and test."""
    dummy = np.zeros(len(y))
    plan = []
    for seed in seeds:
        if groups is None:
            splits = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(dummy, y)
        elif int(np.max(groups)) + 1 <= EXACT_GROUP_LIMIT:
            splits = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed).split(dummy, y, groups)
        else:
            fold = grouped_stratified_folds(y, groups, n_splits, seed)
            splits = ((np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(n_splits))
        plan += [(seed, i, train, test) for i, (train, test) in enumerate(splits)]
    return plan


def holdout_split(y: np.ndarray, fraction: float, random_state: int, groups: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train/test split; with ``groups``, whole groups go to one side (stratified by
    each group's first label), so that no copy of a test row is trained on."""
    rows = np.arange(len(y))
    if groups is None:
        train, test = train_test_split(rows, test_size=fraction, random_state=random_state, stratify=y)
        return train, test
    first = pd.Series(rows).groupby(groups).first()
    train_g, _ = train_test_split(first.index.to_numpy(), test_size=fraction, random_state=random_state,
                                  stratify=y[first.to_numpy()])
    in_train = np.isin(groups, train_g)
    return rows[in_train], rows[~in_train]


def probability_metrics(y: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """One-vs-rest ROC AUC and PR AUC (average precision; both macro over the classes present in
    the fold; for two classes the ROC AUC is the binary one and the PR AUC that of the second
    class, the positive one) and log loss.

    Closed forms in numpy (equal to scikit-learn's roc_auc_score and log_loss, which a test
    checks); computed in every fold, so they must cost little.
    """
    from scipy.stats import rankdata

    index = np.searchsorted(labels, y)
    aucs, precisions = [], []
    for j in range(len(labels)):
        positive = index == j
        n_pos = int(positive.sum())
        if 0 < n_pos < len(y):
            ranks = rankdata(proba[:, j])
            aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))
            if len(labels) > 2 or j == 1:
                precisions.append(average_precision(positive, proba[:, j]))
    return {"roc_auc_ovr": float(np.mean(aucs)) if aucs else float("nan"),
            "pr_auc": float(np.mean(precisions)) if precisions else float("nan"),
            "log_loss": float(row_log_loss(proba, index).mean())}


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as a step function (scikit-learn's average_precision_score):
    the sum over thresholds of precision times the recall gained there; tied scores form one threshold."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the end of each run of tied scores
    tp = np.cumsum(positive)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / tp[-1]
    return float((precision * recall_gain).sum())


def row_log_loss(proba: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each row's log loss: -log of its true class's probability (``index`` is the class's column),
    probabilities clipped to [1e-15, 1] and renormalised as scikit-learn's log_loss does."""
    clipped = np.clip(proba, 1e-15, 1.0)
    return -np.log(clipped[np.arange(len(index)), index] / clipped.sum(axis=1))


# A fit is a module-level function ``fn(X, y, threads, *args)`` and its small arguments: the data
# travel apart from the task, so that a cluster holds them once (trilho.cluster), not once per fit.
Fit = tuple[Callable[..., Any], tuple]


def _in_worker(fn: Callable[..., Any], X, y, threads: int, args: tuple) -> Any:
    """A fit away from this process, its native thread pools held to its share of the cores."""
    with threadpool_limits(threads):
        return fn(X, y, threads, *args)


_HELD: dict[str, Any] = {}  # in a worker process: the data it was started with


def _hold(X, y) -> None:
    """A worker process's initializer: the data arrive once per worker, not once per fit."""
    _HELD["X"], _HELD["y"] = X, y


def _in_process(fn: Callable[..., Any], threads: int, args: tuple) -> Any:
    return _in_worker(fn, _HELD["X"], _HELD["y"], threads, args)


@contextlib.contextmanager
def _processes(workers: int, X, y):
    """loky's worker processes (started by exec, never a bare fork: the OpenMP state an XGBoost
    fit leaves in this process cannot reach them), each given the data once when it starts."""
    from joblib.externals.loky import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, initializer=_hold, initargs=(X, y))
    try:
        yield pool
    finally:  # workers and their manager thread go: no thread outlives the fits (trilho.parallel forks)
        pool.shutdown(wait=True)


class _Cores:
    """The pool's cores and how many of its fits are unfinished: while fewer fits are left than
    cores (the pool's last moments), a fit running in a thread may take the idle cores."""

    def __init__(self, total: int, fits: int) -> None:
        self.total, self.unfinished = total, fits
        self._lock = threading.Lock()

    def share(self) -> int:
        return max(1, self.total // max(1, min(self.total, self.unfinished)))

    def run(self, call: Callable[[Callable[[], int]], Any]) -> Any:
        """``call(share)``, counted as unfinished until it returns."""
        try:
            return call(self.share)
        finally:
            with self._lock:
                self.unfinished -= 1


class _Local:
    """The fits on this machine: at most ``n_jobs`` at once, one core each. A fit that holds the
    GIL runs in a worker process, its slot's thread waiting for it; the others in the thread, where
    an XGBoost fit takes the cores the pool's finished fits left idle (trilho.models)."""

    def __init__(self, n_jobs: int) -> None:
        self.n_jobs = n_jobs

    @contextlib.contextmanager
    def session(self, X, y, gil_bound: list[bool]):
        workers = max(1, min(self.n_jobs, len(gil_bound)))
        threads = max(1, self.n_jobs // workers)
        processes = any(gil_bound) and workers > 1
        with contextlib.ExitStack() as stack:
            stack.enter_context(threadpool_limits(threads))
            pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="trilho-fit"))
            procs = stack.enter_context(_processes(workers, X, y)) if processes else None
            cores = _Cores(self.n_jobs, len(gil_bound))

            def submit(fit: Fit, gil: bool):
                fn, args = fit
                if procs is not None and gil:  # the slot's thread waits for its worker process
                    return pool.submit(cores.run, lambda _share: procs.submit(_in_process, fn, threads, args).result())
                return pool.submit(cores.run, lambda share: fn(X, y, share, *args))

            yield submit, as_completed, ("processes" if processes else "threads"), workers


def _run_tasks(X, y, fits: list[Fit], names: list[str], n_jobs: int,
               progress: ProgressFn | None = None, tick: list[bool] | None = None,
               meanwhile: Callable[[], None] | None = None, on_result: Callable[[int, Any], None] | None = None,
               gil_bound: list[bool] | None = None, executor: Any = None) -> tuple[list[Any], str, int]:
    """Run independent fits, one core each, on this machine (``n_jobs`` at once; those whose
    estimator holds the GIL, ``gil_bound``, in worker processes: trilho.models says which,
    BENCHMARKS.md measures it) or on ``executor`` (trilho.cluster's Dask executor); any failure
    raises, naming the fit.

    ``meanwhile`` runs in this thread once every fit is submitted, ``on_result(i, result)`` as each
    fit arrives: work that waits on a server rather than a core overlaps the fits. Returns the
    results in order, what ran the GIL-bound fits (or all of them) and how many ran at once."""
    results: list[Any] = [None] * len(fits)
    gil_bound = gil_bound or [False] * len(fits)
    done = 0
    total = sum(tick) if tick else len(fits)
    runner = executor or _Local(n_jobs)
    with runner.session(X, y, gil_bound) as (submit, completed, pool, workers):
        futures = {submit(fit, gil): i for i, (fit, gil) in enumerate(zip(fits, gil_bound, strict=True))}
        try:
            if meanwhile:
                meanwhile()
            for future in completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as exc:
                    raise EvaluationError(f"{names[i]} failed: {type(exc).__name__}: {exc}") from exc
                if on_result:
                    on_result(i, results[i])
                if tick is None or tick[i]:
                    done += 1
                    if progress:
                        progress(done, total)
        except BaseException:
            for other in futures:
                other.cancel()
            raise
    return results, pool, workers


def _complement(n: int, rows: np.ndarray) -> np.ndarray:
    """The rows of 0..n-1 not in ``rows``, ascending."""
    keep = np.ones(n, dtype=bool)
    keep[rows] = False
    return np.flatnonzero(keep)


def _fold_fit(X, y, threads: int | Callable[[], int], estimator: dict, seed: int, i: int, test: np.ndarray, labels: np.ndarray
              ) -> dict[str, Any]:
    """One fold: trained on every row outside ``test``, scored on ``test``."""
    start = time.perf_counter()
    train = _complement(len(y), test)
    pipe = build_pipeline(**estimator, n_threads=threads)
    pipe.fit(X.iloc[train], y[train])
    proba = np.zeros((len(test), len(labels)))
    proba[:, pipe.classes_] = pipe.predict_proba(X.iloc[test])
    pred = labels[proba.argmax(axis=1)]  # what predict() gives for these models
    cm = confusion_matrix(y[test], pred, labels=labels)
    return {"seed": seed, "fold": i, "n_train": len(train), "n_test": len(test),
            "fit_s": time.perf_counter() - start, "cm": cm, "test": test, "proba": proba,
            **scores_from_confusion(cm), **probability_metrics(y[test], proba, labels)}


def _pair_fit(X, y, threads: int | Callable[[], int], estimator: dict, seed: int, folds: tuple[int, int],
              tests: tuple[np.ndarray, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """One fit of nested CV: trained without two folds, it scores both, each for the other's inner CV."""
    held = np.concatenate(tests)
    train = _complement(len(y), held)
    pipe = build_pipeline(**estimator, n_threads=threads).fit(X.iloc[train], y[train])
    proba = np.zeros((len(held), len(labels)))
    proba[:, pipe.classes_] = pipe.predict_proba(X.iloc[held])
    truth = np.searchsorted(labels, y[held])
    outer = np.repeat([folds[1], folds[0]], [len(tests[0]), len(tests[1])])  # rows of one fold serve the other
    return pd.DataFrame({"seed": seed, "outer": outer, "row": held,
                         "error": (proba.argmax(axis=1) != truth).astype("float64"),
                         "logloss": row_log_loss(proba, truth)})


def _rows_fit(X, y, threads: int | Callable[[], int], estimator: dict, rows: np.ndarray | None) -> Pipeline:
    """One fit on ``rows`` (every row when None)."""
    pipe = build_pipeline(**estimator, n_threads=threads)
    return pipe.fit(X, y) if rows is None else pipe.fit(X.iloc[rows], y[rows])


def _cv_result(rows: list[dict[str, Any]], wall: float, workers: int, y: np.ndarray,
               nested: list[pd.DataFrame] | None = None) -> CVResult:
    confusion = np.sum([r.pop("cm") for r in rows], axis=0)
    parts = []
    for r in rows:
        test, proba = r.pop("test"), r.pop("proba")
        part = pd.DataFrame(proba, columns=[f"proba_{k}" for k in range(proba.shape[1])])
        part.insert(0, "pred", proba.argmax(axis=1))
        part.insert(0, "y", y[test])
        part.insert(0, "fold", r["fold"])
        part.insert(0, "row", test)
        part.insert(0, "seed", r["seed"])
        parts.append(part)
    oof = pd.concat(parts, ignore_index=True).sort_values(["seed", "row"], kind="stable").reset_index(drop=True)
    folds = pd.DataFrame(rows)
    bad = ~np.isfinite(folds[list(METRICS)].to_numpy())
    if bad.any():
        raise EvaluationError(f"{int(bad.any(axis=1).sum())} folds produced non-finite scores")
    inner = pd.concat(nested, ignore_index=True) if nested else None
    return CVResult(folds=folds, confusion=confusion, wall_s=wall, workers=workers, oof=oof, nested=inner)


def _holdout_result(pipe: Pipeline, X, y, train, test, classes) -> HoldoutResult:
    pred = pipe.predict(X.iloc[test])
    labels = list(range(len(classes)))
    cm = confusion_matrix(y[test], pred, labels=labels)
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
    )


def cross_validate(X: pd.DataFrame, y: np.ndarray, *, model: dict, resampler: dict, random_state: int,
                   n_splits: int, seeds: list[int], n_jobs: int = 1,
                   progress: ProgressFn | None = None, groups: np.ndarray | None = None,
                   nested_repeats: int = 0, encoding: dict | None = None, executor: Any = None) -> CVResult:
    """For each seed, StratifiedKFold(n_splits, shuffle=True, random_state=seed) (or its grouped
    variant when ``groups`` is given); fit and score each fold."""
    cv, _, _ = evaluate_all(X, y, model=model, resampler=resampler, random_state=random_state,
                            n_splits=n_splits, seeds=seeds, n_jobs=n_jobs, progress=progress, groups=groups,
                            nested_repeats=nested_repeats, encoding=encoding, executor=executor)
    return cv


def _fold_fits(estimator: dict, plan: list, labels: np.ndarray, prefix: str = "") -> tuple[list[Fit], list[str]]:
    """One fit per fold of the plan, and its name."""
    fits = [(_fold_fit, (estimator, seed, i, test, labels)) for seed, i, _train, test in plan]
    return fits, [f"{prefix}fold {i} of seed {seed}" for seed, i, _train, _test in plan]


def cross_validate_many(X: pd.DataFrame, y: np.ndarray, *, candidates: list[dict[str, Any]], random_state: int,
                        n_splits: int, seeds: list[int], n_jobs: int = 1, progress: ProgressFn | None = None,
                        groups: np.ndarray | None = None, encoding: dict | None = None,
                        executor: Any = None) -> list[CVResult]:
    """Several candidates (each ``{"model": ..., "resampler": ...}``) on the same folds: every fit
    of every candidate in one batch on one pool, so the pool starts once and no core waits for a
    candidate's last fold. Each candidate's scores are those ``cross_validate`` gives it alone."""
    labels = np.arange(int(y.max()) + 1)
    plan = _split_plan(y, n_splits, seeds, groups)
    fits: list[Fit] = []
    names, gil = [], []
    for cand in candidates:
        estimator = dict(model=cand["model"], resampler=cand["resampler"], random_state=random_state,
                         encoding=encoding)
        more, called = _fold_fits(estimator, plan, labels, f"{cand.get('label', cand['model']['name'])}: ")
        fits += more
        names += called
        gil += [model_kind(cand["model"]["name"]).gil_bound] * len(more)
    start = time.perf_counter()
    results, pool, workers = _run_tasks(X, y, fits, names, n_jobs, progress, gil_bound=gil, executor=executor)
    wall = time.perf_counter() - start
    out = []
    for k in range(len(candidates)):
        cv = _cv_result(results[k * len(plan):(k + 1) * len(plan)], wall, workers, y)
        cv.pool = "processes" if pool == "processes" and gil[k * len(plan)] else ("dask" if pool == "dask" else "threads")
        out.append(cv)
    return out


def evaluate_all(X: pd.DataFrame, y: np.ndarray, *, model: dict, resampler: dict, random_state: int,
                 n_splits: int, seeds: list[int], n_jobs: int = 1, progress: ProgressFn | None = None,
                 holdout_fraction: float | None = None, classes: list[str] | None = None,
                 final_fit: bool = False, groups: np.ndarray | None = None, nested_repeats: int = 0,
                 meanwhile: Callable[[], None] | None = None,
                 on_fit: Callable[[str, Pipeline], None] | None = None, encoding: dict | None = None,
                 executor: Any = None) -> tuple[CVResult, HoldoutResult | None, Pipeline | None]:
    """The folds, the holdout fit, the final fit and the nested-CV fits of the first
    ``nested_repeats`` seeds (one per pair of folds) as one batch of independent fits on one pool.

    The two larger fits go first so that the pool's last moments are not spent on one long fit;
    ``on_fit("holdout" | "final", pipeline)`` is called in this thread as soon as each is ready,
    while the folds go on, and ``meanwhile`` once every fit is submitted. ``executor``: where the
    fits run when not on this machine (trilho.cluster); the same fits, seeds and scores either way.
    """
    estimator = dict(model=model, resampler=resampler, random_state=random_state, encoding=encoding)
    labels = np.arange(int(y.max()) + 1)
    fits: list[Fit] = []
    names, tick, kinds = [], [], []
    split = None
    if holdout_fraction:
        split = holdout_split(y, holdout_fraction, random_state, groups)
        fits.append((_rows_fit, (estimator, split[0]))), names.append("holdout fit"), tick.append(False)
        kinds.append("holdout")
    if final_fit:
        fits.append((_rows_fit, (estimator, None))), names.append("final fit"), tick.append(False)
        kinds.append("final")
    extra = len(fits)
    plan = _split_plan(y, n_splits, seeds, groups)
    more, called = _fold_fits(estimator, plan, labels)
    fits += more
    names += called
    tick += [True] * len(more)
    n_folds = len(plan)
    tests = {(seed, i): test for seed, i, _, test in plan}
    for seed in seeds[:nested_repeats]:
        for a in range(n_splits):
            for b in range(a + 1, n_splits):
                fits.append((_pair_fit, (estimator, seed, (a, b), (tests[seed, a], tests[seed, b]), labels)))
                names.append(f"nested fit without folds {a} and {b} of seed {seed}")
                tick.append(True)
    start = time.perf_counter()
    def arrived(i: int, result: Any) -> None:
        if on_fit and i < len(kinds):
            on_fit(kinds[i], result)

    gil = [model_kind(model["name"]).gil_bound] * len(fits)
    results, pool, workers = _run_tasks(X, y, fits, names, n_jobs, progress, tick, meanwhile, arrived, gil, executor)
    cv = _cv_result(results[extra:extra + n_folds], time.perf_counter() - start, workers, y,
                    results[extra + n_folds:])
    cv.pool = pool
    held = _holdout_result(results[0], X, y, *split, classes or [str(c) for c in labels]) if split else None
    final = results[extra - 1] if final_fit else None
    return cv, held, final
