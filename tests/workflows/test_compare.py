"""Candidates on identical folds, against a real SQLite MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FAST
from tests.support.processes import fork_servers, loky_children, running
from tests.support.services import free_port
from trilho import ConfigError, TrackingError, load_experiment
from trilho.storage import LocalLake
from trilho.workflows.compare import compare, parse_candidates


def _exp(small_csv):
    return load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', *FAST])


@pytest.mark.training
def test_two_identical_candidates_show_no_difference(settings, small_csv):
    exp = _exp(small_csv)
    result = compare(exp, settings, parse_candidates(["xgboost+smote", "xgboost+smote"], exp))
    twin = result.table.iloc[1]
    assert twin["candidate"] == "xgboost+smote#2"
    assert twin["mean_diff"] == 0 and twin["p_value"] == 1.0  # same folds, same seeds: the same scores


@pytest.mark.training
def test_candidates_share_folds_and_are_logged_as_children(settings, small_csv):
    exp = _exp(small_csv)
    chosen = parse_candidates(["xgboost+smote", "logistic_regression+none", "random_forest+smote"], exp)
    before = loky_children()
    result = compare(exp, settings, chosen, metric="accuracy")
    table = result.table.set_index("candidate")
    assert list(table.index) == ["xgboost+smote", "logistic_regression+none", "random_forest+smote"]
    base = table.loc["xgboost+smote"]
    assert base["mean_diff"] == 0
    for name, row in table.iterrows():
        assert row["diff_low"] <= row["mean_diff"] <= row["diff_high"] and 0 <= row["p_value"] <= 1, name
        assert row["mean_diff"] == pytest.approx(result.scores[name].mean() - result.scores["xgboost+smote"].mean())
    client = MlflowClient(settings.tracking_uri)
    children = client.search_runs([client.get_run(result.run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(r.data.tags["trilho.candidate"] for r in children) == sorted(table.index)
    # the parent run is recorded once the fits end (the store opens beside them), dated from their start
    begun, ended = client.get_run(result.run_id).info.start_time, client.get_run(result.run_id).info.end_time
    assert begun <= min(r.info.start_time for r in children) and (ended - begun) / 1000 >= result.summary["seconds"] - 0.002
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"comparison.csv", "comparison.png", "fold_scores.csv"}
    assert LocalLake(settings.lake).exists(f"reports/{result.run_id}/comparison.csv")
    assert loky_children() <= before  # the forest's worker processes, started while the store opened, have ended


@pytest.mark.training
def test_a_tracking_store_that_does_not_open_stops_the_comparison(settings, small_csv):
    port = free_port()  # nobody listens there
    gone = settings.model_copy(update={"tracking_uri": f"http://127.0.0.1:{port}", "mlflow_wait_s": 0.5})
    exp = _exp(small_csv)
    before = loky_children()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port}"):
        compare(exp, gone, parse_candidates(["xgboost+smote", "random_forest+smote"], exp))
    assert loky_children() <= before


def test_bad_candidates_are_named(small_csv):
    exp = _exp(small_csv)
    with pytest.raises(ConfigError, match="model 'svm' is unknown"):
        parse_candidates(["xgboost+smote", "svm+none"], exp)
    with pytest.raises(ConfigError, match="at least two"):
        parse_candidates(["xgboost+smote"], exp)


def test_candidates_take_parameters_in_brackets(small_csv):
    exp = _exp(small_csv)
    chosen = parse_candidates(["random_forest[n_estimators=100, max_depth=8]+smote[k_neighbors=3]",
                               "random_forest+none", "logistic_regression[C=0.5,penalty='l2']",
                               "xgboost[learning_rate=1e+0]+none",
                               "sklearn.ensemble:RandomForestClassifier[n_estimators=20]+none"], exp)
    first, plain, linear, boosted, imported = chosen
    assert imported["model"] == {"name": "sklearn.ensemble:RandomForestClassifier", "params": {"n_estimators": 20}}
    assert first["label"] == "random_forest[n_estimators=100,max_depth=8]+smote[k_neighbors=3]"
    assert first["model"] == {"name": "random_forest", "params": {"n_estimators": 100, "max_depth": 8}}
    assert first["resampler"]["params"]["k_neighbors"] == 3
    assert plain["model"]["params"] == {} and plain["label"] == "random_forest+none"  # the family's defaults apply
    assert linear["model"]["params"] == {"C": 0.5, "penalty": "l2"} and linear["resampler"]["name"] == "none"
    assert boosted["model"]["params"]["learning_rate"] == 1.0  # a + inside brackets is the value's
    assert boosted["model"]["params"]["n_estimators"] == exp.model.params["n_estimators"]  # the experiment's own kept


@pytest.mark.parametrize("spec, message", [
    ("random_forest[n_trees=100]", "n_trees"),                  # a parameter the estimator does not take
    ("random_forest[n_estimators]", "must look like key=value"),
    ("random_forest[n_estimators=100", "not NAME or NAME\\[key=value"),
    ("random_forest+smote+none", "at most one resampler"),
    ("random_forest[n_estimators=a b]", "quote it"),
])
def test_bad_candidate_parameters_are_named(small_csv, spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_candidates(["xgboost+smote", spec], _exp(small_csv))


@pytest.mark.training
def test_a_candidate_is_fitted_with_the_parameters_given(settings, small_csv):
    exp = _exp(small_csv)
    result = compare(exp, settings, parse_candidates(["random_forest[n_estimators=5]+none",
                                                      "random_forest[n_estimators=60]+none"], exp))
    labels = list(result.table["candidate"])
    assert labels == ["random_forest[n_estimators=5]+none", "random_forest[n_estimators=60]+none"]
    assert result.table.iloc[1]["mean_diff"] != 0  # other trees, other scores on the same folds
    client = MlflowClient(settings.tracking_uri)
    children = client.search_runs([client.get_run(result.run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(r.data.params["model.params.n_estimators"] for r in children) == ["5", "60"]
    metrics = client.get_run(result.run_id).data.metrics
    assert "random_forest_n_estimators_5__none_f1_macro_mean" in metrics


@pytest.mark.training
@pytest.mark.processes
def test_the_command_forks_the_forests_workers_from_its_fit_server(workdir, small_csv):
    env = {**os.environ, "TRILHO_LAKE": str(workdir / "lake"), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
           "TRILHO_CACHE_DIR": str(workdir / "cache"), "COLUMNS": "200"}
    command = [sys.executable, "-m", "trilho", "compare", "xgboost+smote", "random_forest[n_estimators=20]+smote",
               "--source", f"file:{small_csv}", "--set", 'source.sha256=""', *(f"--set={o}" for o in FAST)]
    servers: set[int] = set()
    forked: set[int] = set()
    with subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while proc.poll() is None:
            for server, workers in fork_servers(proc.pid).items():
                servers.add(server)
                forked |= workers
            time.sleep(0.05)
        out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    assert "random_forest" in out and "Traceback" not in err
    assert len(servers) == 1  # the command started one server
    assert 1 <= len(forked) <= 2  # the forests' workers: forked from it
    deadline = time.monotonic() + 30
    while running(servers | forked) and time.monotonic() < deadline:  # they end with the command
        time.sleep(0.1)
    assert not running(servers | forked)
