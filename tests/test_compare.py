"""Candidates on identical folds, against a real SQLite MLflow store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from trilho import ConfigError, load_experiment
from trilho.compare import compare, parse_candidates
from trilho.storage import LocalLake

from .conftest import FAST


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
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"comparison.csv", "comparison.png", "fold_scores.csv"}
    assert LocalLake(settings.lake).exists(f"reports/{result.run_id}/comparison.csv")


def test_bad_candidates_are_named(small_csv):
    exp = _exp(small_csv)
    with pytest.raises(ConfigError, match="model 'svm' is unknown"):
        parse_candidates(["xgboost+smote", "svm+none"], exp)
    with pytest.raises(ConfigError, match="at least two"):
        parse_candidates(["xgboost+smote"], exp)
