"""Baselines in every run, on the run's own folds: the majority class and a default model, with the
model's paired difference from each; a model that does not beat the majority class says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.dummy import DummyClassifier
from sklearn.metrics import f1_score, log_loss

from trilho.evaluation.baselines import compare, majority_folds
from trilho.evaluation.splits import split_plan
from trilho.experiment import Experiment
from trilho.workflows.run import run_experiment


def test_the_majority_class_scores_as_scikit_learns_prior_dummy_on_the_same_folds():
    rng = np.random.default_rng(0)
    y = rng.choice(3, 400, p=[0.6, 0.3, 0.1])
    groups = rng.integers(0, 300, 400)
    folds = majority_folds(y, 4, [3, 4], groups)
    assert len(folds) == 8
    for row, (seed, i, train, test) in zip(folds.itertuples(), split_plan(y, 4, [3, 4], groups), strict=True):
        dummy = DummyClassifier(strategy="prior").fit(np.zeros((len(train), 1)), y[train])
        proba = dummy.predict_proba(np.zeros((len(test), 1)))
        assert (row.seed, row.fold) == (seed, i)
        assert row.f1_macro == pytest.approx(f1_score(y[test], dummy.predict(np.zeros((len(test), 1))),
                                                      average="macro", labels=[0, 1, 2], zero_division=0))
        assert row.log_loss == pytest.approx(log_loss(y[test], proba, labels=[0, 1, 2]))
        assert row.roc_auc_ovr == pytest.approx(0.5)


def test_the_difference_is_signed_so_that_positive_is_better():
    model = pd.DataFrame({"seed": 0, "fold": range(5), "accuracy": [0.9, 0.92, 0.91, 0.93, 0.9],
                          "log_loss": [0.30, 0.32, 0.31, 0.29, 0.30]})
    base = model.assign(accuracy=[0.95, 0.96, 0.95, 0.97, 0.96], log_loss=[0.5, 0.52, 0.49, 0.5, 0.51])
    found = compare(model, {"majority": base}, ["accuracy", "log_loss"], "accuracy", 0.2, 0.95)
    acc, loss = found["models"]["majority"]["metrics"]["accuracy"], found["models"]["majority"]["metrics"]["log_loss"]
    assert acc["diff"] == pytest.approx(-0.046) and acc["verdict"] == "worse"
    assert loss["diff"] == pytest.approx(0.2) and loss["verdict"] == "better"  # a lower loss is the better model
    assert found["said"] == [found["said"][0]] and "is worse than the majority class on accuracy" in found["said"][0]


@pytest.mark.training
def test_a_run_that_cannot_beat_the_majority_class_says_so(settings, workdir):
    rng = np.random.default_rng(5)
    rows = 400
    frame = pd.DataFrame(rng.normal(0, 1, (rows, 3)).round(3), columns=["a", "b", "c"])  # no signal at all
    frame["label"] = np.where(rng.random(rows) < 0.1, "yes", "no")
    frame.to_csv(workdir / "noise.csv", index=False)
    exp = Experiment.model_validate({
        "name": "noise", "source": {"uri": f"file:{workdir / 'noise.csv'}"},
        "data": {"target": "label", "labels": ["no", "yes"]}, "cv": {"n_splits": 5, "n_repeats": 2},
        "model": {"name": "xgboost", "params": {"n_estimators": 15, "max_depth": 3}},
        "evaluation": {"metrics": ["accuracy", "f1_macro", "roc_auc_ovr"]},
        "registry": {"model_name": "noise", "primary_metric": "accuracy"}})
    summary = run_experiment(exp, settings).summary
    found = summary["baselines"]
    assert found["models"]["majority"]["folds"] == exp.cv.n_splits * exp.cv.n_repeats
    assert found["models"]["hist_gradient_boosting"]["folds"] == exp.cv.n_splits  # its first repeat
    majority = found["models"]["majority"]["metrics"]["accuracy"]
    assert majority["mean"] == pytest.approx(0.9, abs=0.02) and majority["verdict"] != "better"
    said = [line for line in summary["data"]["warnings"] if "majority class on accuracy" in line]
    assert len(said) == 1
    run = MlflowClient(settings.tracking_uri).get_run(summary["run_id"])
    assert "majority class on accuracy" in run.data.tags["trilho.baselines"]
    assert run.data.metrics["baseline_majority_accuracy_mean"] == pytest.approx(majority["mean"])
    assert "vs_hist_gradient_boosting_accuracy_diff" in run.data.metrics


@pytest.mark.training
def test_a_good_model_beats_the_majority_class_and_runs_without_baselines(settings, small_experiment):
    summary = run_experiment(small_experiment, settings).summary
    assert summary["baselines"]["models"]["majority"]["metrics"]["f1_macro"]["verdict"] == "better"
    assert not any("majority class" in line for line in summary["baselines"]["said"])
    plain = small_experiment.model_copy(update={"evaluation": small_experiment.evaluation.model_copy(
        update={"baselines": []})})
    assert "baselines" not in run_experiment(plain, settings).summary


@pytest.mark.training
def test_a_score_the_same_on_every_fold_is_named(settings, workdir):
    from tests.support import corpus

    frame, target, _, _ = corpus.leaky(rows=300)
    frame.to_csv(workdir / "leaky.csv", index=False)
    exp = Experiment.model_validate({
        "name": "leaky", "source": {"uri": f"file:{workdir / 'leaky.csv'}"},
        "data": {"target": target, "labels": ["good", "bad"], "categorical": ["closed_reason"]},
        "cv": {"n_splits": 5, "n_repeats": 1}, "model": {"name": "xgboost", "params": {"n_estimators": 10}},
        "evaluation": {"metrics": ["accuracy", "f1_macro"], "baselines": ["majority"]}})
    warnings = run_experiment(exp, settings).summary["data"]["warnings"]
    assert any(line.startswith("accuracy is 1.0000 on every fold") for line in warnings)
    assert any("closed_reason" in line for line in warnings)  # the leak check names the column first
