import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)

from trilho import ConfigError, EvaluationError
from trilho.evaluation import cv as evaluate
from trilho.evaluation.cv import cross_validate
from trilho.evaluation.metrics import CONFUSION_METRICS, scores_from_confusion
from trilho.evaluation.stats import percentile_spread, summarise
from trilho.model.catalog import build_pipeline

MODEL = {"name": "xgboost", "params": {"n_estimators": 10, "max_depth": 2}}
SMOTE = {"name": "smote", "params": {}}


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    X = pd.DataFrame({"a": rng.normal(y, 1.0), "b": rng.integers(0, 50, n), "c": rng.normal(0, 1, n)})
    return X, y


@pytest.mark.parametrize("seed", range(25))
def test_scores_from_confusion_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = np.r_[0, 1, 2, rng.integers(0, 3, 60)]  # every class present, as in a stratified fold
    y_pred = rng.choice(3, size=len(y_true), p=[0.6, 0.4, 0.0] if seed % 3 == 0 else [0.5, 0.3, 0.2])
    got = scores_from_confusion(confusion_matrix(y_true, y_pred, labels=[0, 1, 2]))
    want = {"accuracy": accuracy_score(y_true, y_pred), "balanced_accuracy": balanced_accuracy_score(y_true, y_pred)}
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        for avg in ("weighted", "macro"):
            want[f"{name}_{avg}"] = fn(y_true, y_pred, average=avg, zero_division=0)
    want["mcc"] = matthews_corrcoef(y_true, y_pred)
    assert set(got) == set(CONFUSION_METRICS)
    for key in CONFUSION_METRICS:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


@pytest.mark.training
def test_cross_validation_is_deterministic_and_parallel_equals_sequential():
    X, y = _data()
    kw = dict(model=MODEL, resampler=SMOTE, random_state=42, n_splits=4, seeds=[0, 1])
    seq = cross_validate(X, y, evaluate.Task(**kw), evaluate.Runner(n_jobs=1))
    assert len(seq.folds) == 8 and list(seq.folds["seed"]) == [0] * 4 + [1] * 4
    assert seq.confusion.sum() == 2 * len(y)  # each row is tested once per repeat
    par = cross_validate(X, y, evaluate.Task(**kw), evaluate.Runner(n_jobs=2))
    pd.testing.assert_frame_equal(seq.folds.drop(columns="fit_s"), par.folds.drop(columns="fit_s"))
    pd.testing.assert_frame_equal(seq.oof, par.oof)


@pytest.mark.training
def test_progress_is_reported_per_fold():
    X, y = _data()
    seen = []
    cross_validate(X, y, evaluate.Task(model=MODEL, resampler=SMOTE, random_state=0, n_splits=3, seeds=[0]), evaluate.Runner(n_jobs=2, progress=lambda done, total: seen.append((done, total))))
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.training
def test_fault_30_a_failing_fold_is_an_error_never_a_nan():
    X, y = _data()
    X = X.astype({"a": "float64"})
    X.loc[X.index[:3], "a"] = np.nan  # SMOTE refuses NaN: the fold fails
    with pytest.raises(EvaluationError, match=r"fold \d of seed 0 failed: ValueError: .*NaN"):
        cross_validate(X, y, evaluate.Task(model=MODEL, resampler=SMOTE, random_state=0, n_splits=3, seeds=[0]), evaluate.Runner(n_jobs=2))


def test_unknown_model_or_resampler_or_params_are_config_errors():
    with pytest.raises(ConfigError, match="model.name 'svm'"):
        build_pipeline({"name": "svm"}, SMOTE, 0)
    with pytest.raises(ConfigError, match="resampler.name 'adasin'"):
        build_pipeline(MODEL, {"name": "adasin"}, 0)
    with pytest.raises(ConfigError, match="bad parameters"):
        build_pipeline({"name": "random_forest", "params": {"colour": 1}}, SMOTE, 0)


def test_thread_budget_is_passed_to_the_model():
    assert build_pipeline(MODEL, SMOTE, 0, n_threads=1).named_steps["model"].n_jobs == 1
    assert list(build_pipeline(MODEL, {"name": "none"}, 0).named_steps) == ["model"]


def test_summary_statistics():
    values = np.array([0.9, 0.95, 1.0, 0.97, 0.92])
    out = summarise({"accuracy": values}, 2.5, 97.5)["accuracy"]
    assert out["mean"] == pytest.approx(values.mean())
    assert out["std"] == pytest.approx(values.std(ddof=1))
    assert (out["low"], out["high"]) == percentile_spread(values) == tuple(np.percentile(values, [2.5, 97.5]))
    assert out["n"] == 5 and "fold scores" in out["interval"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probability_metrics_equal_scikit_learn(seed):
    from sklearn.metrics import log_loss, roc_auc_score

    from trilho.evaluation.metrics import probability_metrics

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 200)
    proba = rng.dirichlet([1, 1, 1], 200)
    proba[np.arange(200), y] += rng.uniform(0, 1, 200)  # informative, with ties rare but possible
    proba /= proba.sum(axis=1, keepdims=True)
    got = probability_metrics(y, proba, np.arange(3))
    mcc = scores_from_confusion(confusion_matrix(y, proba.argmax(axis=1), labels=[0, 1, 2]))["mcc"]
    assert mcc == pytest.approx(matthews_corrcoef(y, proba.argmax(axis=1)))
    assert got["roc_auc_ovr"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert got["log_loss"] == pytest.approx(log_loss(y, proba, labels=[0, 1, 2]))
    tied = np.round(proba, 1)  # many ties: ranks must average them
    tied /= tied.sum(axis=1, keepdims=True)
    assert probability_metrics(y, tied, np.arange(3))["roc_auc_ovr"] == pytest.approx(
        roc_auc_score(y, tied, multi_class="ovr", average="macro"))


@pytest.mark.parametrize("copies", [0.0, 0.4])
def test_vectorised_grouped_folds_keep_copies_together_and_classes_even(copies):
    import pandas as pd

    from trilho.evaluation.splits import grouped_stratified_folds, split_plan

    rng = np.random.default_rng(5)
    n = 20_000
    y = rng.choice(3, n, p=[0.7, 0.2, 0.1])
    ids = np.arange(n)
    repeat = rng.random(n) < copies  # a share of rows copy an earlier row, label and all
    ids[repeat] = rng.integers(0, n // 2, repeat.sum())
    y = y[ids]  # a copy carries the label of the row it copies
    groups = pd.factorize(ids)[0]
    fold = grouped_stratified_folds(y, groups, 5, seed=1)
    assert (pd.Series(fold).groupby(groups).nunique() == 1).all()  # every copy in one fold
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 0.01 * n
    for k in range(3):  # each class's rows spread evenly, to within a few groups
        per_fold = np.bincount(fold[y == k], minlength=5)
        assert per_fold.max() - per_fold.min() <= max(10, 0.01 * (y == k).sum())
    assert not np.array_equal(fold, grouped_stratified_folds(y, groups, 5, seed=2))
    assert np.array_equal(fold, grouped_stratified_folds(y, groups, 5, seed=1))
    plan = split_plan(y, 5, [1], groups)  # over the exact algorithm's limit: these folds
    assert all(np.array_equal(np.sort(test), np.flatnonzero(fold == i)) for _, i, _, test in plan)


@pytest.mark.training
def test_gil_bound_fits_run_in_worker_processes_with_the_same_scores():
    from trilho.evaluation import cv as evaluate  # noqa: F401  (evaluate: its EvaluationError)
    from trilho.model import catalog as models

    X, y = _data()
    forest = {"name": "random_forest", "params": {"n_estimators": 20}}
    kwargs = dict(model=forest, resampler=SMOTE, random_state=0, n_splits=3, seeds=[0, 1])
    in_processes = cross_validate(X, y, evaluate.Task(**kwargs), evaluate.Runner(n_jobs=2))
    assert in_processes.pool == "processes"
    sequential = cross_validate(X, y, evaluate.Task(**kwargs), evaluate.Runner(n_jobs=1))  # one worker: no pool to speak of
    assert sequential.pool == "threads"
    pd.testing.assert_frame_equal(in_processes.folds.drop(columns="fit_s"), sequential.folds.drop(columns="fit_s"))
    assert not models.MODELS["xgboost"].gil_bound
    assert cross_validate(X, y, evaluate.Task(model=MODEL, resampler=SMOTE, random_state=0, n_splits=3, seeds=[0]), evaluate.Runner(n_jobs=2)).pool == "threads"
    # a failure in a worker still surfaces as one EvaluationError naming the fit
    bad = {"name": "random_forest", "params": {"n_estimators": 20, "max_depth": -1}}
    with pytest.raises(evaluate.EvaluationError, match=r"fold \d of seed 0 failed"):
        cross_validate(X, y, evaluate.Task(model=bad, resampler=SMOTE, random_state=0, n_splits=3, seeds=[0]), evaluate.Runner(n_jobs=2))


@pytest.mark.training
def test_no_thread_outlives_fits_in_worker_processes():
    import threading

    X, y = _data()
    before = threading.active_count()
    cv = cross_validate(X, y, evaluate.Task(model={"name": "extra_trees", "params": {"n_estimators": 10}}, resampler=SMOTE, random_state=0, n_splits=3, seeds=[0]), evaluate.Runner(n_jobs=2))
    assert cv.pool == "processes"
    assert threading.active_count() == before, threading.enumerate()  # figures may be forked afterwards


@pytest.mark.training
def test_candidates_in_one_batch_score_as_they_do_alone():
    """compare's batch: GIL-bound and other fits on one pool give each candidate its own scores."""
    from trilho.evaluation.cv import cross_validate_many

    X, y = _data()
    candidates = [{"label": "xgb", "model": MODEL, "resampler": SMOTE},
                  {"label": "forest", "model": {"name": "random_forest", "params": {"n_estimators": 15}},
                   "resampler": {"name": "random_under", "params": {}}},
                  {"label": "linear", "model": {"name": "logistic_regression", "params": {}}, "resampler": SMOTE}]
    kw = dict(random_state=3, n_splits=3, seeds=[0, 1])
    seen = []
    together = cross_validate_many(X, y, [evaluate.Task(**{k: v for k, v in c.items() if k != 'label'}, label=c['label'], **kw) for c in candidates], evaluate.Runner(n_jobs=2, progress=lambda d, t: seen.append((d, t))))
    assert [cv.pool for cv in together] == ["threads", "processes", "threads"]
    assert seen[-1] == (18, 18) and len(seen) == 18
    for cand, cv in zip(candidates, together, strict=True):
        alone = cross_validate(X, y, evaluate.Task(model=cand["model"], resampler=cand["resampler"], **kw), evaluate.Runner(n_jobs=1))
        pd.testing.assert_frame_equal(cv.folds.drop(columns="fit_s"), alone.folds.drop(columns="fit_s"))
        pd.testing.assert_frame_equal(cv.oof, alone.oof)


@pytest.mark.training
def test_baselines_beside_the_model_or_apart_score_as_they_do_alone():
    """The run's default models: the larger ones' folds in the model's own pool (worker processes,
    spread among its fits), the small ones in a worker process of their own started beforehand;
    each scores as it does alone, and the model's progress counts its own folds only."""
    import threading

    from trilho.evaluation.baselines import baseline_task

    X, y = _data()
    task = evaluate.Task(model=MODEL, resampler=SMOTE, random_state=3, n_splits=3, seeds=[0, 1], holdout_fraction=0.3,
                         final_fit=True)
    hgb = baseline_task(task, "hist_gradient_boosting", 1)
    forest = baseline_task(task, "random_forest", 2)
    before = threading.active_count()
    apart = evaluate.start_apart(X, y, [hgb])
    seen = []
    runner = evaluate.Runner(n_jobs=2, progress=lambda done, total: seen.append(total))
    with evaluate.start(X, y, task, runner, [forest]) as fitting:
        cv, _, _ = fitting.result()
        (beside,) = fitting.beside()
    (alone_apart,) = apart.result()
    assert threading.active_count() == before  # no thread of the process apart outlives its result
    assert cv.pool == "processes" and set(seen) == {6}
    assert len(alone_apart.folds) == 3 and set(alone_apart.folds["seed"]) == {0}
    for got, base in ((alone_apart, hgb), (beside, forest)):
        alone = cross_validate(X, y, base, evaluate.Runner(n_jobs=1))
        pd.testing.assert_frame_equal(got.folds.drop(columns="fit_s"), alone.folds.drop(columns="fit_s"))
    mine = cross_validate(X, y, task, evaluate.Runner(n_jobs=1))
    pd.testing.assert_frame_equal(cv.folds.drop(columns="fit_s"), mine.folds.drop(columns="fit_s"))
