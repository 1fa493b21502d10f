"""trilho tune: a small study on data made here, resumed, its best configuration through the gate."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.support import corpus
from trilho.errors import ConfigError
from trilho.experiment import Experiment, load_experiment
from trilho.storage import LocalLake


def _experiment(path, **tune: object) -> Experiment:
    return Experiment.model_validate({
        "name": "churn", "random_state": 3, "source": {"uri": f"file:{path}"},
        "data": {"target": "Churn", "labels": ["NO", "YES"], "drop": ["customer_id"],
                 "categorical": ["contract", "internet"], "missing": "impute"},
        "cv": {"n_splits": 3, "n_repeats": 2},
        "resampler": {"name": "smote"},
        "model": {"name": "xgboost", "params": {"n_estimators": 20, "max_depth": 3}},
        "tracking": {"experiment": "churn"}, "registry": {"model_name": "churn-xgb"},
        "tune": {"trials": 4, "space": {"model.params.n_estimators": {"int": [10, 40], "step": 10},
                                        "model.params.max_depth": {"int": [2, 5]},
                                        "model.params.learning_rate": {"float": [0.03, 0.3], "log": True},
                                        "resampler.params.k_neighbors": {"int": [3, 7]}}} | tune,
    })


@pytest.fixture
def churn_csv(workdir):
    frame, *_ = corpus.churn(rows=500, seed=7)
    path = workdir / "churn.csv"
    frame.to_csv(path, index=False)
    return path


def _children(client: MlflowClient, experiment_id: str, parent: str):
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")


@pytest.mark.training
def test_a_study_is_tracked_resumed_and_its_best_configuration_goes_through_the_gate(churn_csv, settings, workdir):
    from trilho.workflows.run import run_experiment
    from trilho.workflows.tune import tune

    exp = _experiment(churn_csv)
    first = tune(exp, settings, out=workdir / "tuned.toml")
    s = first.summary
    assert s["trials"]["this_command"] == s["trials"]["in_study"] == 4
    assert s["trials"]["complete"] + s["trials"]["pruned"] + s["trials"]["failed"] == 4
    assert s["held_out_rows"] + s["search_rows"] == 500 and s["held_out_rows"] == pytest.approx(100, abs=10)
    assert s["honest"]["low"] <= s["honest"]["score"] <= s["honest"]["high"]
    assert s["optimism"] == pytest.approx(s["best"]["cv_score"] - s["honest"]["score"])
    assert s["storage"] == f"sqlite:///{(workdir / 'optuna.db').resolve()}"  # beside mlflow.db
    # each trial ran on the experiment's folds: 3 folds x 2 repeats, unless pruned after a repeat
    for record in first.trials:
        assert len(record["fold_scores"]) in ((3, 6) if record["state"] == "pruned" else (6,))
    client = MlflowClient(settings.tracking_uri)
    parent = client.get_run(s["run_id"])
    assert parent.data.tags["trilho.kind"] == "tune"
    assert parent.data.metrics[f"honest_{s['metric']}"] == pytest.approx(s["honest"]["score"])
    children = _children(client, parent.info.experiment_id, s["run_id"])
    assert len(children) == 4 and all("trilho.trial.state" in c.data.tags for c in children)
    artifacts = {a.path for a in client.list_artifacts(s["run_id"])}
    assert {"tune.json", "tuned.toml", "optimization_history.png"} <= artifacts
    assert LocalLake(settings.lake).exists(s["lake"]["reports"] + "tune.json")  # the lake has it too

    # a second tune resumes the same study: new trials, numbered after the first ones
    again = tune(exp, settings, trials=3, out=workdir / "tuned.toml")
    assert again.summary["study"] == s["study"] and again.summary["trials"]["in_study"] == 7
    assert [r["number"] for r in again.trials] == [4, 5, 6]
    assert len({json.dumps(r["params"], sort_keys=True) for r in first.trials + again.trials}) == 7  # new points

    # the notebook shows the newest tune of the experiment, from the lake
    from trilho.reporting import explore

    latest = explore.latest_tune(LocalLake(settings.lake), "churn")
    assert latest["run_id"] == again.summary["run_id"]
    table = explore.tune_table(latest)
    assert table.loc[table.index[0], latest["metric"]] == round(latest["best"]["cv_score"], 4)
    assert "optimism" in table.index[-1]

    # the written file is an experiment: the usual run and the gate decide on it
    tuned = load_experiment(str(workdir / "tuned.toml"))
    best = again.summary["best"]["params"]
    assert tuned.model.params["n_estimators"] == best["model.params.n_estimators"]
    assert tuned.resampler.params["k_neighbors"] == best["resampler.params.k_neighbors"]
    summary = run_experiment(tuned, settings).summary
    assert summary["registry"]["version"] in (1, "1") and "promote" in summary["registry"]


@pytest.mark.parametrize(("space", "message"), [
    ({"model.params.not_a_param": {"int": [1, 3]}}, r"tune.space: model.params \['not_a_param'\] are not parameters"),
    ({"model.params.max_depth": {"int": [5, 5]}}, r"tune.space 'model.params.max_depth': the range \[5, 5\] is empty"),
    ({"model.params.learning_rate": {"float": [0.0, 0.3], "log": True}}, r"a log range must be positive"),
    ({"max_depth": {"int": [2, 5]}}, r"keys are model.params.NAME or resampler.params.NAME"),
    ({"model.params.max_depth": {"int": [2, 5], "float": [1, 2]}}, r"give exactly one of"),
    ({"model.params.booster": {"choice": []}}, r"choice needs a non-empty list"),
])
@pytest.mark.training
def test_a_bad_search_space_is_one_line_before_any_trial(space, message, churn_csv, settings, workdir):
    from trilho.workflows.tune import tune

    with pytest.raises(ConfigError, match=message):
        tune(_experiment(churn_csv, space=space), settings)
    assert LocalLake(settings.lake).list() == []  # nothing read, nothing stored
    assert not (workdir / "optuna.db").exists() and not (workdir / "mlflow.db").exists()


@pytest.mark.training
def test_a_trial_that_raises_is_recorded_as_failed_and_the_study_goes_on(churn_csv, settings, workdir):
    from trilho.workflows.tune import tune

    exp = _experiment(churn_csv, trials=6, space={"model.params.C": {"float": [-1.0, 1.0]}})
    exp = exp.model_copy(update={"model": exp.model.model_copy(update={"name": "logistic_regression", "params": {}})})
    s = tune(exp, settings, out=workdir / "t.toml").summary  # a negative C is refused by scikit-learn
    assert s["trials"]["failed"] >= 1 and s["trials"]["complete"] >= 1
    assert s["best"]["params"]["model.params.C"] > 0
    client = MlflowClient(settings.tracking_uri)
    children = _children(client, client.get_run(s["run_id"]).info.experiment_id, s["run_id"])
    assert sum(c.info.status == "FAILED" for c in children) == s["trials"]["failed"]
