"""A numeric target from `trilho init` to a served model: the file init writes runs unedited, the
run reports intervals that cover what they say, the page shows them, batch prediction and both
servers answer prediction, lower and upper, and the gate judges regressors on paired losses."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import requests

from tests.support.browser import assert_readable, open_page
from tests.support.services import model_server, trilho_server
from trilho.errors import ConfigError
from trilho.experiment import load_experiment
from trilho.init.profile import init_experiment
from trilho.init.propose import render
from trilho.settings import load_settings
from trilho.workflows.run import run_experiment

pytestmark = pytest.mark.training

TARGET = "price"


def houses(rows: int, seed: int) -> pd.DataFrame:
    """A priced table as users bring one: a skewed positive target, text categories, gaps written
    NA in a feature and in the target, an identifier."""
    rng = np.random.default_rng(seed)
    area = rng.gamma(4.0, 30.0, rows)
    rooms = rng.integers(1, 7, rows)
    age = rng.uniform(0, 80, rows)
    town = rng.choice(["North", "South", "Centre"], rows, p=[0.4, 0.4, 0.2])
    lift = {"North": 1.0, "South": 0.8, "Centre": 1.5}
    value = (50 + 2.0 * area + 8 * rooms - 0.6 * age + 25 * np.sin(age / 10)) * np.vectorize(lift.get)(town)
    price = value * np.exp(rng.normal(0, 0.12, rows))
    frame = pd.DataFrame({"house_id": np.arange(1, rows + 1), "area": area.round(1), "rooms": rooms,
                          "age": age.round(1), "town": town, TARGET: price.round(2)})
    frame["age"] = frame["age"].astype(object).where(rng.random(rows) > 0.05, "NA")
    frame[TARGET] = frame[TARGET].astype(object).where(rng.random(rows) > 0.03, "NA")
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`trilho init` on a 700-row file, its file run as written (one repeat, fewer trees), then a
    second run of a much weaker model (a mean-only ridge on one feature would be too contrived:
    three trees) into the same registry."""
    root = tmp_path_factory.mktemp("regression")
    settings = load_settings(env_file=None, lake=str(root / "lake"), tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                             cache_dir=root / "cache")
    data = root / "houses.csv"
    houses(700, 1).to_csv(data, index=False)
    proposal = init_experiment(f"file:{data}", settings, target=TARGET, name="houses")
    file = root / "houses.toml"
    file.write_text(render(proposal))
    fast = ["cv.n_repeats=2", "model.params.n_estimators=150"]
    first = run_experiment(load_experiment(file, fast), settings).summary
    weak = run_experiment(load_experiment(file, [*fast, "model.params.n_estimators=3",
                                                 "model.params.learning_rate=0.05"]), settings).summary
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_", "AWS_"))}
    env |= {"TRILHO_LAKE": settings.lake, "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "TRILHO_CACHE_DIR": str(root / "cache"), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return {"root": root, "settings": settings, "file": file, "proposal": proposal, "first": first, "weak": weak,
            "env": env}


def test_init_writes_a_regression_that_runs_unedited(trained):
    text = trained["file"].read_text()
    assert 'task = "regression"' in text and "labels" not in text.split("[data]")[1].split("[cv]")[0]
    for key in ("[resampler]", "calibration", "objective"):
        assert key not in text  # classification's keys are not written for a number
    config = trained["proposal"].config
    assert config["data"]["drop"] == ["house_id"] and "town" in config["data"]["categorical"]
    assert "mape" in config["evaluation"]["metrics"]  # the target is positive
    notes = " ".join(trained["proposal"].notes["labels"])
    assert "missing on" in notes and "left out" in notes
    summary = trained["first"]
    assert summary["task"] == "regression"
    left_out = summary["data"]["rows"]
    assert 640 <= left_out < 700  # the rows whose target is NA are left out


def test_the_run_reports_intervals_that_cover_what_they_say(trained):
    summary = trained["first"]
    pi = summary["prediction_interval"]
    assert pi["level"] == 0.9 and pi["width"] == pytest.approx(2 * pi["half_width"])
    # every fold's interval is built from the other folds' residuals: its coverage is honest
    assert 0.84 <= pi["coverage"]["mean"] <= 0.96, pi["coverage"]
    assert 0.75 <= summary["holdout"]["interval"]["coverage"] <= 1.0
    assert len(pi["by_decile"]) == 10
    metrics = summary["cv"]["metrics"]
    assert set(metrics) == {"rmse", "mae", "r2", "median_ae", "mape"}
    assert metrics["r2"]["mean"] > 0.7 and metrics["rmse"]["ci"][0] < metrics["rmse"]["mean"] < metrics["rmse"]["ci"][1]
    models = summary["baselines"]["models"]
    assert models["mean"]["metrics"]["rmse"]["verdict"] == "better"  # the model beats the training mean
    assert "hist_gradient_boosting" in models
    assert summary["importance"]["features"]["area"]["rank"] == 1


def test_the_gate_keeps_a_worse_regressor_out_on_paired_losses(trained):
    first, weak = trained["first"]["registry"], trained["weak"]["registry"]
    assert first["promote"] and first["aliases"] == ["challenger", "champion"]
    # three trees at a small step predict little more than the mean: its paired RMSE is far worse
    assert not weak["promote"], weak["reason"]
    assert weak["metric"] == "rmse" and weak["comparison"]["mean_diff"] > first.get("margin", 0)
    assert weak["comparison"]["low"] > 0  # the whole interval says worse


def test_the_page_shows_the_regression_in_a_browser(trained, tmp_path):
    summary = trained["first"]
    folder = trained["root"] / "lake" / "reports" / summary["run_id"]
    page = folder / "report.html"
    figures = {"cv_boxplot.png", "intervals.png", "predicted_actual.png", "residuals.png", "coverage.png",
               "importance.png"}
    assert figures <= {p.name for p in folder.glob("*.png")}
    assert not {"confusion_matrix.png", "reliability.png", "roc_pr_curves.png"} & {p.name for p in folder.glob("*.png")}
    seen = open_page(page, tmp_path)
    assert_readable(seen, len(figures))
    assert "Prediction intervals" in seen["sections"] and "Calibration and the decision" not in seen["sections"]
    html = page.read_text()
    assert "covers" in html or "coverage out of fold" in html


def test_batch_prediction_returns_the_interval(trained):
    import io

    from trilho.serving.predict import predict_batch
    from trilho.storage import open_lake

    settings = trained["settings"]
    new = houses(200, 9)
    truth = pd.to_numeric(new.pop(TARGET), errors="coerce").to_numpy()
    path = trained["root"] / "new.csv"
    new.to_csv(path, index=False)
    done = predict_batch("models:/houses-xgboost@champion", str(path), settings)
    got = pd.read_parquet(io.BytesIO(open_lake(settings).get_bytes(done["key"])))
    assert {"prediction", "lower", "upper"} <= set(got.columns) and len(got) == 200
    assert (got["lower"] <= got["prediction"]).all() and (got["prediction"] <= got["upper"]).all()
    seen = np.isfinite(truth)
    inside = ((truth >= got["lower"]) & (truth <= got["upper"])).to_numpy()[seen]
    assert 0.8 <= inside.mean() <= 0.98  # new rows from the same process: about the 90% promised
    half = trained["first"]["prediction_interval"]["half_width"]
    assert np.allclose(got["upper"] - got["prediction"], half, rtol=1e-5)


@pytest.mark.services
def test_trilho_serve_answers_as_mlflow_models_serve_does(trained, tmp_path):
    rows = houses(6, 11).drop(columns=[TARGET])
    records = json.loads(rows.to_json(orient="records"))
    bodies = {
        "dataframe_split": {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))},
        "dataframe_records": {"dataframe_records": records},
        "numbers as text": {"dataframe_records": [{k: str(v) for k, v in r.items()} for r in records]},
    }
    uri = "models:/houses-xgboost/1"
    answers = {}
    with model_server(uri, trained["env"], tmp_path / "mlflow.log") as url:
        for name, body in bodies.items():
            got = requests.post(url + "/invocations", json=body, timeout=60)
            assert got.status_code == 200, (name, got.text[:500])
            answers[name] = got.json()
    first = answers["dataframe_records"]["predictions"]
    assert set(first[0]) == {"prediction", "lower", "upper"}
    with trilho_server(uri, trained["env"], tmp_path / "trilho.log", "--no-log") as (url, _):
        for name, body in bodies.items():
            got = requests.post(url + "/invocations", json=body, timeout=60)
            assert got.status_code == 200, (name, got.text[:500])
            assert got.json() == answers[name], name
        refused = requests.post(url + "/invocations", json={**bodies["dataframe_records"], "params": {"output": "proba"}},
                                timeout=30)
        assert refused.status_code == 400 and "predicts a number" in refused.json()["message"]


@pytest.mark.services
def test_served_answers_with_true_values_give_live_errors_and_coverage(trained, tmp_path):
    from trilho.workflows.monitor import monitor_model, record_feedback

    settings = trained["settings"]
    rows = houses(300, 21)
    truth = rows.pop(TARGET)
    shifted = rows.assign(area=rows["area"] * 3)  # far larger houses than any trained on
    with trilho_server("models:/houses-xgboost@champion", trained["env"], tmp_path / "serve.log") as (url, _):
        got = requests.post(url + "/invocations", json={"dataframe_split": json.loads(rows.to_json(
            orient="split", index=False))}, timeout=60)
        assert got.status_code == 200
        request = got.headers["X-Request-ID"]
    feedback = pd.DataFrame({"request_id": request, "row": range(300), "label": truth.astype(str)})
    feedback.to_csv(tmp_path / "truth.csv", index=False)
    kept = record_feedback(tmp_path / "truth.csv", "models:/houses-xgboost@champion", settings)
    assert kept["rows"] + kept["unlabelled_rows"] == 300 and kept["unlabelled_rows"] >= 1  # NA is no true value
    report = monitor_model("models:/houses-xgboost@champion", settings, batch=False, track=False)
    live = report["live"]
    assert live["rows"] == kept["rows"] and set(live["metrics"]) == {"rmse", "mae"}
    cv = trained["first"]["cv"]["metrics"]["rmse"]
    assert live["metrics"]["rmse"]["cv"]["mean"] == pytest.approx(cv["mean"])
    assert live["metrics"]["rmse"]["low"] < live["metrics"]["rmse"]["live"] < live["metrics"]["rmse"]["high"]
    assert 0.8 <= live["coverage"]["live"] <= 1.0 and live["coverage"]["level"] == 0.9
    assert not [f for f in report["flags"] if f["kind"] in ("live", "coverage", "predicted")], report["flags"]
    # the same model on shifted traffic: its predictions drift, said in one flag
    with trilho_server("models:/houses-xgboost@champion", trained["env"], tmp_path / "serve2.log") as (url, _):
        requests.post(url + "/invocations", json={"dataframe_split": json.loads(shifted.to_json(
            orient="split", index=False))}, timeout=60).raise_for_status()
    report = monitor_model("models:/houses-xgboost@champion", settings, batch=False, track=False,
                           since=None)
    assert any(f["kind"] == "predicted" for f in report["flags"]), report["flags"]


def test_compare_and_tune_take_regressors(workdir, settings):
    from trilho.experiment import Experiment
    from trilho.workflows.compare import compare, parse_candidates
    from trilho.workflows.tune import tune

    houses(400, 3).to_csv(workdir / "houses.csv", index=False)
    exp = Experiment.model_validate({
        "name": "houses", "task": "regression", "source": {"uri": f"file:{workdir / 'houses.csv'}"},
        "data": {"target": TARGET, "drop": ["house_id"], "categorical": ["town"]},
        "cv": {"n_splits": 3, "n_repeats": 1},
        "model": {"name": "xgboost", "params": {"n_estimators": 40, "max_depth": 3}},
        "decision": {"costs": {"over": 1, "under": 3}},
        "tune": {"trials": 3, "space": {"model.params.max_depth": {"int": [2, 4]}}},
        "tracking": {"experiment": "houses"}})
    assert exp.registry.primary_metric == "pinball"
    with pytest.raises(ConfigError, match="a regression takes models alone"):
        parse_candidates(["xgboost+smote", "ridge"], exp)
    with pytest.raises(ConfigError, match="'ridge' fits the mean only"):  # a quantile needs a quantile loss
        parse_candidates(["xgboost", "ridge"], exp)
    chosen = parse_candidates(["xgboost", "hist_gradient_boosting[max_iter=50]"], exp)
    assert chosen[0]["model"]["params"]["objective"] == "reg:quantileerror"  # each fits the 0.75 quantile
    assert chosen[1]["model"]["params"]["quantile"] == 0.75
    result = compare(exp, settings, chosen)
    table = result.table.set_index("candidate")
    assert list(table.index) == ["xgboost", "hist_gradient_boosting[max_iter=50]"]
    assert result.summary["metric"] == "pinball" and (table["mean"] > 0).all()
    plain = exp.model_copy(update={"decision": type(exp.decision)()})  # the mean: any regressor
    means = compare(plain, settings, parse_candidates(["xgboost", "ridge", "random_forest[n_estimators=30]"], plain),
                    metric="rmse")
    assert list(means.table["candidate"]) == ["xgboost", "ridge", "random_forest[n_estimators=30]"]
    tuned = tune(exp, settings)
    assert tuned.summary["direction"] == "minimize" and tuned.summary["metric"] == "pinball"
    honest = tuned.summary["honest"]
    assert honest["low"] <= honest["score"] <= honest["high"]


def test_a_model_of_the_targets_log_is_taken_back_to_the_mean(workdir, settings):
    import mlflow

    from trilho.errors import DataValidationError
    from trilho.experiment import Experiment
    from trilho.model.catalog import build_pipeline, fit_regressor, predict_values
    from trilho.storage import open_lake

    rng = np.random.default_rng(8)
    X = pd.DataFrame({"a": rng.normal(0, 1, 2000), "b": rng.normal(0, 1, 2000)})
    y = np.exp(1.0 + X["a"] + rng.normal(0, 0.8, 2000)).to_numpy()  # a log-normal target: mean above median
    # a flexible model nearly fits its own training rows: the factor must come from rows it never saw
    pipe = fit_regressor(build_pipeline({"name": "xgboost", "params": {"n_estimators": 300, "max_depth": 6}},
                                        {"name": "none", "params": {}}, 0, task="regression"), X, y, "log")
    assert pipe.smear_ > 1.1  # its training residuals would have given about 1
    X_new = pd.DataFrame({"a": rng.normal(0, 1, 4000), "b": rng.normal(0, 1, 4000)})
    y_new = np.exp(1.0 + X_new["a"] + rng.normal(0, 0.8, 4000)).to_numpy()
    raw = np.exp(pipe.predict(X_new))
    assert np.allclose(predict_values(pipe, X_new), raw * pipe.smear_)
    assert abs(predict_values(pipe, X_new).mean() / y_new.mean() - 1) < 0.15 < abs(raw.mean() / y_new.mean() - 1)

    frame = houses(500, 6)
    frame.to_csv(workdir / "houses.csv", index=False)
    config = {"name": "houses", "task": "regression", "source": {"uri": f"file:{workdir / 'houses.csv'}"},
              "data": {"target": TARGET, "drop": ["house_id"], "categorical": ["town"], "target_scale": "log"},
              "cv": {"n_splits": 3, "n_repeats": 1}, "model": {"name": "xgboost", "params": {"n_estimators": 80}},
              "evaluation": {"metrics": ["rmse", "mape"]},
              "tracking": {"experiment": "houses"}, "registry": {"model_name": "houses-log"}}
    summary = run_experiment(Experiment.model_validate(config), settings).summary
    spec = json.loads(open_lake(settings).get_bytes(summary["lake"]["reports"] + "model/spec.json"))
    assert spec["target_scale"] == "log" and 1.0 < spec["smear"] < 1.2
    mlflow.set_tracking_uri(settings.tracking_uri)
    answer = mlflow.pyfunc.load_model(summary["model_uri"]).predict(frame.drop(columns=[TARGET]))
    assert (answer["lower"] < answer["prediction"]).all() and (answer["prediction"] > 0).all()
    truth = pd.to_numeric(frame[TARGET], errors="coerce")
    assert np.corrcoef(answer["prediction"][truth.notna()], truth.dropna())[0, 1] > 0.9
    assert summary["cv"]["metrics"]["mape"]["mean"] < 0.25  # scored in the target's units
    # a target at or below 0 has no log: one line naming the rows
    frame.loc[[4, 9], TARGET] = -1.0
    frame.to_csv(workdir / "houses.csv", index=False)
    with pytest.raises(DataValidationError, match="2 values at or below 0.*target_scale = 'identity'"):
        run_experiment(Experiment.model_validate(config | {"registry": {}}), settings)
