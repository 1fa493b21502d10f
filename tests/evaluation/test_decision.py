"""A decision chosen inside each training fold: thresholds a held-out fold never saw, costs, and
the logged model deciding as the fit did."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trilho.evaluation.cv import fold_fit
from trilho.evaluation.decision import choose_threshold, decide, fit_decided
from trilho.evaluation.metrics import scores_from_confusion
from trilho.model.answers import decided, model_outputs
from trilho.model.catalog import build_pipeline


def _imbalanced(rows: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(0, 1, (rows, 3)), columns=["a", "b", "c"])
    y = (X["a"] + rng.normal(0, 1.2, rows) > 1.6).astype(int).to_numpy()
    return X, y


def _brute(truth, score, metric):
    best = None
    for cut in np.unique(np.concatenate([score, [0.5]])):
        pred = (score >= cut).astype(int)
        cm = np.array([[np.sum((truth == a) & (pred == b)) for b in (0, 1)] for a in (0, 1)])
        value = scores_from_confusion(cm)[metric]
        if best is None or value > best + 1e-12:
            best = value
    return best


@pytest.mark.parametrize("metric", ["f1_macro", "accuracy", "mcc", "balanced_accuracy"])
def test_the_metric_threshold_is_the_best_of_every_cut(metric):
    rng = np.random.default_rng(1)
    truth = (rng.random(400) < 0.2).astype(int)
    score = np.clip(truth * 0.25 + rng.random(400) * 0.75, 0, 1).round(3)
    cut = choose_threshold(truth, score, {"objective": "metric", "metric": metric})
    pred = (score >= cut).astype(int)
    cm = np.array([[np.sum((truth == a) & (pred == b)) for b in (0, 1)] for a in (0, 1)])
    assert scores_from_confusion(cm)[metric] == pytest.approx(_brute(truth, score, metric))


def test_a_recall_floor_is_held_by_the_most_precise_cut():
    rng = np.random.default_rng(2)
    truth = (rng.random(500) < 0.3).astype(int)
    score = np.clip(truth * 0.3 + rng.random(500) * 0.7, 0, 1)
    cut = choose_threshold(truth, score, {"objective": "recall", "floor": 0.9})
    caught = score[truth == 1] >= cut
    assert caught.mean() >= 0.9
    tighter = np.sort(score[truth == 1])[int(np.ceil(0.1 * truth.sum())) - 1:][:1]  # the floor's own cut, or above
    assert cut >= tighter[0] - 1e-9 or caught.mean() >= 0.9


def test_costs_choose_the_class_of_least_expected_cost():
    proba = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    costs = [[0, 1, 1], [5, 0, 1], [1, 1, 0]]
    rule = {"objective": "costs", "costs": costs}
    expected = (proba @ np.array(costs)).argmin(axis=1)
    # rows 0 and 1: argmax says class 0, but missing class 1 costs 5
    assert decide(proba, rule, None).tolist() == expected.tolist() == [1, 1, 2]
    assert decided(proba, {"objective": "costs", "costs": costs}).tolist() == expected.tolist()
    assert decided(proba, None).tolist() == proba.argmax(axis=1).tolist()  # a model logged without a decision


def test_a_folds_threshold_comes_from_its_training_rows_alone():
    X, y = _imbalanced()
    rule = {"objective": "metric", "metric": "f1_macro", "floor": 0.0, "positive": 1, "costs": []}
    estimator = {"model": {"name": "logistic_regression", "params": {}}, "resampler": {"name": "none"},
                 "random_state": 0, "encoding": None}
    test = np.arange(0, 600, 5)
    labels = np.arange(2)
    found = fold_fit(X, y, 1, estimator, 3, 0, test, labels, rule)
    train = np.setdiff1d(np.arange(600), test)
    Xt, yt = X.iloc[train].reset_index(drop=True), y[train]
    alone = fit_decided(lambda rows: build_pipeline(**estimator).fit(Xt if rows is None else Xt.iloc[rows],
                                                                     yt if rows is None else yt[rows]),
                        Xt, yt, None, rule, 3)
    assert found["threshold"] == pytest.approx(alone.threshold_)
    assert found["threshold"] < 0.5  # a rare class: f1_macro wants a lower cut than 0.5
    flipped = y.copy()
    flipped[test] = 1 - flipped[test]  # the held-out rows' labels play no part in their threshold
    assert fold_fit(X, flipped, 1, estimator, 3, 0, test, labels, rule)["threshold"] == found["threshold"]
    plain = fold_fit(X, y, 1, estimator, 3, 0, test, labels)
    assert "threshold" not in plain and found["f1_macro"] > plain["f1_macro"]


@pytest.mark.parametrize("family", ["xgboost", "logistic_regression"])
def test_the_logged_model_decides_as_the_fit_did(family, tmp_path):
    from trilho.model.encoding import feature_spec
    from trilho.model.servable import load_classifier
    from trilho.serving.artifact import save_model_files

    X, y = _imbalanced(seed=4)
    spec = feature_spec(list(X.columns), {}, ["no", "yes"], [], "impute")
    estimator = {"model": {"name": family, "params": {}}, "resampler": {"name": "none"}, "random_state": 0,
                 "encoding": spec}
    rule = {"objective": "recall", "metric": "", "floor": 0.8, "positive": 1, "costs": []}
    model = fit_decided(lambda rows: build_pipeline(**estimator).fit(X if rows is None else X.iloc[rows],
                                                                     y if rows is None else y[rows]),
                        X, y, None, rule, 0)
    folder = save_model_files(model, spec, tmp_path / "model")
    written = json.loads((folder / "spec.json").read_text())
    assert written["decision"] == {"objective": "recall", "positive": 1, "threshold": model.threshold_}
    _, proba_fn = load_classifier(written, str(folder / written["file"]))
    out = model_outputs(proba_fn, X, written, matrix=getattr(proba_fn, "matrix", False))
    expected = np.asarray(["no", "yes"], dtype=object)[model.predict(X)]
    assert out["prediction"].tolist() == expected.tolist()
    assert (out["prediction"] == "yes").sum() > (model.predict_proba(X).argmax(axis=1) == 1).sum()  # not argmax


@pytest.mark.training
def test_a_run_reports_its_thresholds_and_logs_a_model_that_applies_its_own(settings, workdir):
    from mlflow.tracking import MlflowClient

    from tests.support import corpus
    from trilho.experiment import Experiment
    from trilho.tracking.model import load_model
    from trilho.workflows.run import run_experiment

    frame, target, _, _ = corpus.credit(rows=1_500, positive=0.1)
    frame.to_csv(workdir / "credit.csv", index=False)
    exp = Experiment.model_validate({
        "name": "credit", "source": {"uri": f"file:{workdir / 'credit.csv'}"},
        "data": {"target": target, "labels": ["0", "1"], "categorical": ["purpose"]},
        "cv": {"n_splits": 4, "n_repeats": 1}, "model": {"name": "xgboost", "params": {"n_estimators": 30, "max_depth": 3}},
        "decision": {"objective": "recall", "floor": 0.6},
        "evaluation": {"metrics": ["accuracy", "f1_macro", "recall_macro"], "baselines": ["majority"]},
        "registry": {"model_name": "credit-decided"}})
    summary = run_experiment(exp, settings).summary
    found = summary["decision"]["threshold"]
    assert len(found["folds"]) == 4 and found["low"] <= found["mean"] <= found["high"] < 0.5
    assert found["model"] is not None and 0 < found["model"] < 0.5
    run = MlflowClient(settings.tracking_uri).get_run(summary["run_id"])
    assert run.data.metrics["decision_threshold_model"] == pytest.approx(found["model"])
    model = load_model(summary["model_uri"], workdir / "loaded", settings.tracking_uri)
    rows = frame.drop(columns=target).head(400)
    out = model.predict(rows)
    expected = np.where(out["proba_1"] >= found["model"], "1", "0")
    assert out["prediction"].tolist() == expected.tolist()
    assert (out["prediction"] == "1").sum() > (out["proba_1"] >= 0.5).sum()


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibration_in_each_fold_mends_probabilities_oversampling_inflated(method):
    from trilho.evaluation.cv import Task, cross_validate

    X, y = _imbalanced(rows=1_200, seed=6)
    task = Task(model={"name": "xgboost", "params": {"n_estimators": 40, "max_depth": 3}, "calibration": "none"},
                resampler={"name": "random_over", "params": {}}, random_state=0, n_splits=4, seeds=[0, 1])
    raw = cross_validate(X, y, task).folds
    mended = cross_validate(X, y, task.but(model={**task.model, "calibration": method})).folds
    assert mended["brier"].mean() < raw["brier"].mean() - 0.01
    assert mended["ece"].mean() < raw["ece"].mean()
    assert mended["log_loss"].mean() < raw["log_loss"].mean()


def test_the_logged_model_returns_calibrated_probabilities(tmp_path):
    from trilho.model.encoding import feature_spec
    from trilho.model.servable import load_classifier
    from trilho.serving.artifact import save_model_files

    X, y = _imbalanced(seed=7)
    spec = feature_spec(list(X.columns), {}, ["no", "yes"], [], "impute")
    estimator = {"model": {"name": "logistic_regression", "params": {}}, "resampler": {"name": "random_over"},
                 "random_state": 0, "encoding": spec}
    model = fit_decided(lambda rows: build_pipeline(**estimator).fit(X if rows is None else X.iloc[rows],
                                                                     y if rows is None else y[rows]),
                        X, y, None, None, 0, "sigmoid")
    folder = save_model_files(model, spec, tmp_path / "model")
    written = json.loads((folder / "spec.json").read_text())
    assert written["calibration"]["method"] == "sigmoid" and "decision" not in written
    _, proba_fn = load_classifier(written, str(folder / written["file"]))
    out = model_outputs(proba_fn, X, written)
    assert np.allclose(out["proba_yes"], model.predict_proba(X)[:, 1])
    assert not np.allclose(out["proba_yes"], model.pipeline_.predict_proba(X)[:, 1])  # the map did something
