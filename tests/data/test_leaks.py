"""Leaks and traps caught before any fit (trilho.data.leaks), in the run's report, tags and gate."""

from __future__ import annotations

import doctest
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FAST, shared_file
from tests.support import corpus
from trilho import DataValidationError, load_experiment
from trilho.data import leaks
from trilho.data.clean import clean
from trilho.data.curate import fold_data
from trilho.data.leaks import find_leaks, single_feature_scores, zero_width
from trilho.data.synthetic import diabetes
from trilho.data.tables import read_table
from trilho.data.validate import record_leaks, validate
from trilho.evaluation.gate import judge_leaks
from trilho.experiment import Experiment
from trilho.init.profile import init_experiment
from trilho.workflows.run import run_experiment

NAME = "diabetes-xgboost"


def test_the_docstring_examples_run():
    assert doctest.testmod(leaks).failed == 0


def test_a_copy_of_the_label_is_flagged_with_its_score_and_fix():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    X = pd.DataFrame({"respelled": np.array(["NEG", "DIABETIC", "PRE"], dtype=object)[y],  # the label in other words
                      "noisy": y + rng.normal(0, 0.05, 400),  # the label plus tiny noise
                      "honest": y * 0.8 + rng.normal(0, 1, 400)})
    found = find_leaks(X, y, ["N", "Y", "P"], categorical={"respelled"})
    flagged = {f["column"]: f for f in found if f["kind"] == "leak"}
    assert set(flagged) == {"respelled", "noisy"}
    assert flagged["respelled"]["score"] == 1.0 and flagged["noisy"]["score"] > 0.99
    assert "data.drop = ['noisy']" in flagged["noisy"]["message"] and "0.99" in flagged["noisy"]["message"]


def test_one_strong_but_honest_feature_is_not_flagged():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 800)
    X = pd.DataFrame({"strong": y * 2.5 + rng.normal(0, 1, 800), "weak": y * 0.3 + rng.normal(0, 1, 800)})
    scores = single_feature_scores(X, y)
    assert 0.9 < scores["strong"] < 0.98  # Φ(2.5/√2) = 0.96: strong, clearly under 0.99
    assert not [f for f in find_leaks(X, y, ["a", "b"]) if f["kind"] == "leak"]


def test_large_data_is_scored_on_a_sample_that_keeps_every_class():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(19_700, int), np.ones(300, int)]
    X = pd.DataFrame({"copy": y + rng.normal(0, 0.01, len(y)), "strong": y * 2.5 + rng.normal(0, 1, len(y))})
    whole = single_feature_scores(X, y)
    sampled = single_feature_scores(X, y, max_rows=5_000)  # the 300 rows of the rare class are all kept
    assert sampled["copy"] > 0.99 and abs(sampled["strong"] - whole["strong"]) < 0.02


def _prepared(exp: Experiment, path: Path):
    raw = read_table(path)
    assert not validate(raw, exp)["errors"]
    X, y, groups, _ = fold_data(clean(raw, exp), exp)
    return X, y, groups


@pytest.mark.parametrize("name", list(corpus.CORPUS))
def test_no_false_leak_on_the_corpus(name, settings, workdir):
    path, target, _ = corpus.write(name, workdir)
    exp = Experiment.model_validate(init_experiment(f"file:{path}", settings, target).config)
    X, y, groups = _prepared(exp, path)
    found = find_leaks(X, y, exp.data.classes, categorical=set(exp.data.categorical_maps), n_splits=exp.cv.n_splits,
                       leak_score=exp.validation.leak_score, groups=groups, random_state=exp.random_state)
    assert [f for f in found if f["kind"] in ("leak", "date")] == []
    # only the corpus's rare class (7 rows: 1.4 a test fold) is named, as too small to score
    assert [f["column"] for f in found if f["kind"] == "small_class"] == (["rare"] if name == "rare" else [])


def test_the_diabetes_data_is_not_flagged_and_the_check_is_cheap():
    path = shared_file("data", "diabetes.csv")
    exp = load_experiment("diabetes", [f'source.uri="file:{path}"'])
    X, y, groups = _prepared(exp, path)
    started = time.perf_counter()
    found = find_leaks(X, y, exp.data.classes, categorical={"Gender"}, n_splits=5, groups=groups, random_state=42)
    assert time.perf_counter() - started < 1.0  # 0.02 s here
    assert found == []
    scores = single_feature_scores(X, y, categorical={"Gender"}, groups=groups, random_state=42)
    assert max(scores, key=scores.get) == "HbA1c" and 0.9 < scores["HbA1c"] < 0.98  # 0.947: strong, honest


def test_date_columns_are_named_and_a_drifting_one_says_it_leaks_the_future():
    rng = np.random.default_rng(2)
    n = 1000
    day = np.sort(rng.integers(0, 3 * 365, n))
    y = (rng.random(n) < 0.1 + 0.5 * day / day.max()).astype(int)  # the positive share grows over time
    X = pd.DataFrame({
        "signup": (pd.Timestamp("2019-01-01") + pd.to_timedelta(day, "D")).strftime("%Y-%m-%d").astype(object),
        "stamp": rng.integers(1_600_000_000, 1_700_000_000, n).astype(float),  # Unix seconds, no drift
        "period": rng.choice([202101, 202102, 202111, 202212], n).astype(float),
        "age": rng.integers(18, 90, n).astype(float),
        "code": rng.choice(["A1", "B2", "C3"], n).astype(object),
    })
    found = {f["column"]: f for f in find_leaks(X, y, ["no", "yes"], categorical={"signup", "code"}) if f["kind"] == "date"}
    assert set(found) == {"signup", "stamp", "period"}
    assert "dates written as text" in found["signup"]["message"] and "drifts" in found["signup"]["message"]
    assert "data.drop = ['signup']" in found["signup"]["message"] and found["signup"]["score"] > 0.3
    assert "Unix timestamps in seconds" in found["stamp"]["message"] and "leak little" in found["stamp"]["message"]
    assert "YYYYMM" in found["period"]["message"]


def test_a_class_too_small_to_score_is_named():
    y = np.array([0] * 300 + [1] * 30 + [2] * 12)
    X = pd.DataFrame({"x": np.random.default_rng(3).normal(0, 1, len(y))})
    small = [f for f in find_leaks(X, y, ["common", "ok", "tiny"], n_splits=5) if f["kind"] == "small_class"]
    assert [f["column"] for f in small] == ["tiny"]  # 30 rows are 6 a fold, kept; 12 are 2.4
    assert small[0]["score"] == 2.4 and "2.4 per test fold of 5" in small[0]["message"]


def test_zero_width_names_a_metric_with_every_fold_the_same():
    lines = zero_width({"accuracy": {"mean": 1.0, "std": 0.0, "low": 1.0, "high": 1.0, "intervals": {}},
                        "f1_macro": {"mean": 0.9, "std": 0.02, "low": 0.86, "high": 0.94, "intervals": {}}})
    assert len(lines) == 1 and lines[0].startswith("accuracy is 1.0000 on every fold") and "[1.0000, 1.0000]" in lines[0]


def test_reject_raises_naming_the_column_and_warn_only_reports():
    findings = [{"column": "after", "kind": "leak", "score": 1.0, "message": "column 'after' alone predicts"},
                {"column": "tiny", "kind": "small_class", "score": 2.0, "message": "class 'tiny' has 10 rows"}]
    report = {"errors": [], "warnings": []}
    record_leaks(report, findings, "warn")  # type: ignore[arg-type]
    assert report["leaks"] == findings and report["warnings"] == [f["message"] for f in findings]
    with pytest.raises(DataValidationError, match=r"'after' 1\.0000.*data\.drop = \['after'\]"):
        record_leaks({"errors": [], "warnings": []}, findings, "reject")  # type: ignore[arg-type]
    record_leaks({"errors": [], "warnings": []}, findings[1:], "reject")  # type: ignore[arg-type]  # not a leak


def test_the_gate_keeps_a_leaking_challenger_and_names_the_column():
    decision = judge_leaks(["column 'after' alone predicts the label"], np.ones(5), metric="f1_macro", margin=0.01)
    assert not decision.promote and "'after'" in decision.reason and decision.basis == "leak check"
    assert decision.tags()["trilho.gate.decision"] == "kept challenger"


def _leaky_csv(workdir: Path) -> Path:
    """The small diabetes set with a lab value recorded after the diagnosis: the label plus tiny noise."""
    frame = diabetes(rows=300, seed=3)
    code = frame["CLASS"].str.strip().map({"N": 0, "Y": 1, "P": 2})
    frame.insert(3, "after_dx", (code * 10 + np.random.default_rng(4).normal(0, 0.1, len(frame))).round(3))
    path = workdir / "leaky.csv"
    frame.to_csv(path, index=False)
    return path


def _exp(csv: Path, *extra: str) -> Experiment:
    return load_experiment("diabetes", [f'source.uri="file:{csv}"', 'source.sha256=""', *FAST, *extra])


@pytest.mark.training
def test_a_leaking_run_is_flagged_everywhere_and_never_champion(settings, small_csv, workdir):
    client = MlflowClient(settings.tracking_uri)
    leaky = run_experiment(_exp(_leaky_csv(workdir)), settings)
    flagged = [f for f in leaky.validation["leaks"] if f["kind"] == "leak"]
    assert [f["column"] for f in flagged] == ["after_dx"] and flagged[0]["score"] > 0.99
    assert any("'after_dx' alone predicts the label" in w for w in leaky.summary["data"]["warnings"])
    assert client.get_run(leaky.run_id).data.tags["trilho.leaks"] == "after_dx"
    record = leaky.summary["registry"]
    assert not record["promote"] and record["aliases"] == ["challenger"] and "'after_dx'" in record["reason"]
    assert record["basis"] == "leak check"
    aliases = {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()}
    assert aliases == {"challenger": "1"}  # a first model, yet not champion
    assert "'after_dx'" in client.get_model_version(NAME, "1").tags["trilho.gate.reason"]
    # the same experiment on data without the column: promoted as before, untagged
    clean_run = run_experiment(_exp(small_csv), settings)
    assert clean_run.summary["registry"]["promote"] and clean_run.summary["registry"]["aliases"] == ["challenger", "champion"]
    assert [f for f in clean_run.validation["leaks"] if f["kind"] == "leak"] == []
    assert "trilho.leaks" not in client.get_run(clean_run.run_id).data.tags
    assert json.loads((workdir / "lake" / "reports" / clean_run.run_id / "summary.json").read_text())["registry"]["promote"]


def test_reject_stops_the_run_before_any_fit(settings, workdir):
    with pytest.raises(DataValidationError, match=r"'after_dx'.*data\.drop = \['after_dx'\]"):
        run_experiment(_exp(_leaky_csv(workdir), "validation.leaks=reject"), settings)
    assert not (workdir / "mlflow.db").exists()  # the tracking store is opened after the data stage: no run began
