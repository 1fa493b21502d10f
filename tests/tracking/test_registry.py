"""The registry and its promotion gate, against a real SQLite MLflow store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FAST
from trilho import load_experiment
from trilho.evaluation.gate import judge
from trilho.storage import LocalLake
from trilho.tracking.registry import list_versions, promote_by_hand
from trilho.workflows.run import run_experiment

NAME = "diabetes-xgboost"


def test_gate_decisions_from_fold_scores():
    rng = np.random.default_rng(0)
    champion = 0.80 + rng.normal(0, 0.02, 50)
    first = judge(champion, None, metric="f1_macro", margin=0.01, test_fraction=0.2)
    assert first.promote and "first model" in first.reason
    same = judge(champion.copy(), champion, metric="f1_macro", margin=0.01, test_fraction=0.2, champion_version="1")
    assert same.promote and same.comparison["mean_diff"] == 0 and same.comparison["p_value"] == 1.0
    worse = judge(champion - 0.05 + rng.normal(0, 0.005, 50), champion, metric="f1_macro", margin=0.01,
                   test_fraction=0.2, champion_version="1")
    assert not worse.promote and "possibly worse" in worse.reason and worse.comparison["high"] < 0
    slightly_worse = judge(champion - 0.002, champion, metric="f1_macro", margin=0.01, test_fraction=0.2,
                            champion_version="1")
    assert slightly_worse.promote  # within the margin


def _exp(small_csv, *extra):
    return load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', *FAST, *extra])


@pytest.mark.training
def test_register_gate_and_promote_by_hand(settings, small_csv, workdir):
    client = MlflowClient(settings.tracking_uri)
    first = run_experiment(_exp(small_csv), settings).summary["registry"]
    assert first["version"] == "1" and first["promote"] and first["aliases"] == ["challenger", "champion"]
    # the same procedure on the same folds: identical scores, promoted
    second = run_experiment(_exp(small_csv), settings).summary["registry"]
    assert second["promote"] and second["basis"] == "same folds, logged scores"
    assert second["comparison"]["mean_diff"] == 0
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    # a much weaker model on the same folds: stays challenger, the champion does not move
    weak = run_experiment(_exp(small_csv, "model.params.n_estimators=1", "model.params.max_depth=1",
                               "model.params.learning_rate=1e-6"), settings)
    third = weak.summary["registry"]
    assert not third["promote"] and third["comparison"]["low"] < -0.01 and third["comparison"]["mean_diff"] < 0
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "3"
    tags = client.get_model_version(NAME, "3").tags
    assert tags["trilho.gate.decision"] == "kept challenger" and tags["trilho.gate.against_version"] == "2"
    assert "possibly worse" in tags["trilho.gate.reason"]
    report = json.loads(LocalLake(settings.lake).get_bytes(f"reports/{weak.run_id}/promotion.json"))
    assert report["version"] == "3" and not report["promote"]
    # by hand, with the reason recorded
    record = promote_by_hand(settings.tracking_uri, NAME, "3", "demo of an override", "tester")
    assert record["previous_champion"] == "2"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"
    rows = list_versions(settings.tracking_uri, NAME)
    assert [r["version"] for r in rows] == ["3", "2", "1"]
    assert rows[0]["aliases"] == ["challenger", "champion"] and rows[0]["decision"] == "promoted by hand"


@pytest.mark.training
def test_same_data_on_other_folds_re_evaluates_the_champion(settings, small_csv, workdir):
    run_experiment(_exp(small_csv), settings)
    again = run_experiment(_exp(small_csv, "cv.first_seed=7"), settings).summary["registry"]
    assert again["basis"] == "champion re-evaluated on the challenger's folds"
    assert again["comparison"]["mean_diff"] == pytest.approx(0.0, abs=1e-12) and again["promote"]


@pytest.mark.training
def test_other_data_is_not_refitted_and_flipped_labels_are_not_promoted(settings, small_csv, workdir):
    import pandas as pd

    from trilho.data.synthetic import diabetes

    first = run_experiment(_exp(small_csv), settings).summary["registry"]
    assert first["promote"]
    fresh = workdir / "fresh.csv"  # a new sample of the same population: no drop, no drift, and yet
    diabetes(rows=300, seed=11).to_csv(fresh, index=False)
    second = run_experiment(_exp(fresh), settings).summary["registry"]
    assert second["basis"] == "other data: estimates and drift"
    assert second["drift"] is not None and not second["drift"]["drifted"], second["reason"]
    # without a reference set the gate cannot tell a better model from easier data: kept
    assert not second["promote"] and "cannot tell a better model from changed data" in second["reason"]

    flipped = workdir / "flipped.csv"  # the champion's data with 3% of the labels changed
    frame = pd.read_csv(small_csv)
    rows = np.random.default_rng(0).choice(len(frame), 9, replace=False)
    swap = {"N": "Y", "Y": "P", "P": "N"}
    frame.loc[rows, "CLASS"] = frame.loc[rows, "CLASS"].str.strip().map(swap)
    frame.to_csv(flipped, index=False)
    third = run_experiment(_exp(flipped), settings).summary["registry"]
    assert not third["promote"] and third["aliases"] == ["challenger"]
    assert third["drift"]["relabelled_rows"] == 9 and "changed label" in third["reason"]
    assert "trilho promote" in third["reason"]
    client = MlflowClient(settings.tracking_uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == first["version"]


def test_gate_on_other_data_from_estimates():
    from trilho.evaluation.gate import judge_changed_data

    rng = np.random.default_rng(1)
    champion = {"mean": 0.95, "low": 0.93, "high": 0.97}
    kwargs = dict(metric="f1_macro", margin=0.01, test_fraction=0.2, champion_version="3")
    close = judge_changed_data(0.94 + rng.normal(0, 0.01, 50), champion, {"drifted": False, "reasons": []}, **kwargs)
    # no drop and no drift, but without a reference set nothing on other data is promoted by the gate
    assert not close.promote and "no significant drop" in close.reason and "registry.reference" in close.reason
    drop = judge_changed_data(0.80 + rng.normal(0, 0.01, 50), champion, {"drifted": False, "reasons": []}, **kwargs)
    assert not drop.promote and "a significant drop" in drop.reason
    drifted = judge_changed_data(0.95 + rng.normal(0, 0.01, 50), champion,
                                     {"drifted": True, "reasons": ["label shares moved"]}, **kwargs)
    assert not drifted.promote and "label shares moved" in drifted.reason
    unknown = judge_changed_data(0.95 + rng.normal(0, 0.01, 50), champion, None, **kwargs)
    assert not unknown.promote and "drift was not measured" in unknown.reason


@pytest.mark.training
def test_registry_off_registers_nothing(settings, small_csv):
    summary = run_experiment(_exp(small_csv, 'registry.model_name=""'), settings).summary
    assert "registry" not in summary
    assert MlflowClient(settings.tracking_uri).search_registered_models() == []
