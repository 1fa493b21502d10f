"""Dated rows from `trilho init` to a served model: init reads the dates and proposes forward folds
unedited, the run never trains a fold on its future and says which estimate its headline is, the
calendar reaches the model (a weekly season is learned), and predict, both servers and the monitor
derive the same parts from dates sent as text."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import requests

from tests.support.services import model_server, trilho_server
from trilho.experiment import load_experiment
from trilho.init.profile import init_experiment
from trilho.init.propose import render
from trilho.serving.predict import predict_batch
from trilho.settings import load_settings
from trilho.storage import open_lake
from trilho.workflows.run import run_experiment

pytestmark = pytest.mark.training

WEEK = np.array([0.0, 0.5, 0.6, 0.5, 0.8, 4.0, 5.0])  # Saturdays and Sundays sell far more


def shop(days: int, seed: int, day_first: bool = False) -> pd.DataFrame:
    """Daily sales with a trend, a weekly season and a yearly one, a temperature, and a
    yes/no "busy" label for the classification; dates as a spreadsheet writes them."""
    rng = np.random.default_rng(seed)
    when = pd.date_range("2016-01-04", periods=days, freq="D")
    t = np.arange(days)
    sales = 20 + 0.01 * t + 3 * WEEK[when.day_of_week] + 2 * np.sin(2 * np.pi * when.day_of_year / 365.25)
    sales = sales + rng.normal(0, 0.6, days)
    frame = pd.DataFrame({"date": when.strftime("%d/%m/%Y" if day_first else "%Y-%m-%d"),
                          "temp": rng.normal(18, 6, days).round(1), "sales": sales.round(2)})
    frame["busy"] = np.where(sales > np.quantile(sales, 0.7), "yes", "no")
    return frame


@pytest.fixture(scope="module")
def dated(tmp_path_factory):
    root = tmp_path_factory.mktemp("dated")
    settings = load_settings(env_file=None, lake=str(root / "lake"), tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                             cache_dir=root / "cache")
    frame = shop(1200, 3)
    past, future = frame.iloc[:1000], frame.iloc[1000:]
    past.drop(columns=["busy"]).to_csv(root / "sales.csv", index=False)
    proposal = init_experiment(f"file:{root / 'sales.csv'}", settings, target="sales", name="sales",
                               reference_to=root / "sales.reference.csv")
    file = root / "sales.toml"
    file.write_text(render(proposal))
    result = run_experiment(load_experiment(file, ["model.params.n_estimators=200"]), settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_", "AWS_"))}
    env |= {"TRILHO_LAKE": settings.lake, "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "TRILHO_CACHE_DIR": str(root / "cache"), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return {"root": root, "settings": settings, "file": file, "proposal": proposal, "result": result,
            "future": future, "env": env}


def test_init_reads_the_dates_and_proposes_forward_folds(dated):
    config = dated["proposal"].config
    assert config["data"]["dates"] == {"date": ["year", "month", "day", "weekday", "dayofyear", "days", "season"]}
    assert config["cv"]["scheme"] == "time" and config["cv"]["time"] == "date" and config["cv"]["n_repeats"] == 1
    assert config["evaluation"]["holdout_fraction"] == 0.2
    assert "reference" not in config["registry"]  # no rows are taken from the periods the model needs
    text = dated["file"].read_text()
    assert 'scheme = "time"' in text and "forward folds over time" in text


def test_the_run_never_trains_a_fold_on_its_future_and_says_what_its_headline_is(dated):
    result = dated["result"]
    oof, folds = result.cv.oof, result.cv.folds
    frame = pd.read_csv(dated["root"] / "sales.csv")
    days = pd.to_datetime(frame["date"])
    assert len(folds) == 5 and set(oof["seed"]) == {0}
    for fold in range(5):
        tested = days.iloc[oof.loc[oof["fold"] == fold, "row"]]
        trained = int(folds.loc[folds["fold"] == fold, "n_train"].iloc[0])
        # forward folds: fold k trains on every row before its period, and only on those
        assert trained == int((days < tested.min()).sum())
    over_time = result.summary["time"]
    held = result.holdout
    assert days.iloc[held.test_index].min() > days.iloc[oof["row"]].max()  # the latest period: never in a fold
    assert over_time["latest"]["rows"] == len(held.test_index) == 200
    assert [p["start"] for p in over_time["periods"]] == sorted(p["start"] for p in over_time["periods"])
    low, high = over_time["latest"]["interval"]
    assert low < over_time["latest"]["scores"]["rmse"] < high
    assert "not exchangeable" in over_time["statement"] and "no interval" in over_time["statement"]
    assert all(m["ci"] is None for m in result.summary["cv"]["metrics"].values())  # no pooled interval claimed
    # the weekly season reaches the model through the calendar: weekday is among its strongest features
    top = list(result.summary["importance"]["features"])[:3]
    assert "date.weekday" in top, top
    assert result.summary["cv"]["metrics"]["r2"]["mean"] > 0.8


def test_a_shuffled_scheme_on_dated_rows_is_named(dated):
    exp = load_experiment(dated["file"], ["cv.scheme=stratified", "model.params.n_estimators=20",
                                          "evaluation.baselines=[]", "evaluation.explain_repeats=0"])
    result = run_experiment(exp, dated["settings"])
    found = [f for f in result.validation["leaks"] if f["kind"] == "date"]
    assert found and found[0]["column"] == "date" and "set cv.scheme = \"time\"" in found[0]["message"]
    assert found[0]["score"] == 1.0  # every shuffled fold trains on rows later than some it tests
    # the forward champion's logged fold scores are not this run's folds: it is re-evaluated on them
    assert result.summary["registry"]["basis"] == "champion re-evaluated on the challenger's folds"


def test_predict_and_both_servers_derive_the_calendar_from_dates_sent_as_text(dated, tmp_path):
    settings, env = dated["settings"], dated["env"]
    future = dated["future"].drop(columns=["sales", "busy"]).reset_index(drop=True)
    future.loc[3, "date"] = "NA"  # R's missing date: imputed like any gap
    future.to_csv(tmp_path / "future.csv", index=False)
    done = predict_batch("models:/sales-xgboost@champion", str(tmp_path / "future.csv"), settings)
    import io

    predicted = pd.read_parquet(io.BytesIO(open_lake(settings).get_bytes(done["key"])))
    truth = dated["future"]["sales"].to_numpy()
    rmse = float(np.sqrt(np.mean((predicted["prediction"].to_numpy() - truth) ** 2)))
    # a date-blind default model cannot see the weekend: the calendar makes the future far better predicted
    from sklearn.ensemble import HistGradientBoostingRegressor

    past = pd.read_csv(dated["root"] / "sales.csv")
    blind = HistGradientBoostingRegressor(random_state=0).fit(past[["temp"]], past["sales"])
    blind_rmse = float(np.sqrt(np.mean((blind.predict(dated["future"][["temp"]]) - truth) ** 2)))
    assert rmse < 0.6 * blind_rmse, (rmse, blind_rmse)
    rows = future.head(7).astype({"temp": str})  # numbers as JSON strings, dates as text
    body = {"dataframe_records": rows.to_dict(orient="records")}
    with model_server("models:/sales-xgboost@champion", env, tmp_path / "mlflow.log") as url:
        theirs = requests.post(url + "/invocations", json=body, timeout=60)
    assert theirs.status_code == 200, theirs.text[:500]
    with trilho_server("models:/sales-xgboost@champion", env, tmp_path / "serve.log", "--no-log") as (url, _):
        ours = requests.post(url + "/invocations", json=body, timeout=60)
        bad = requests.post(url + "/invocations", json={"dataframe_records": [{**body["dataframe_records"][0],
                                                                               "date": "2020-31-12"}]}, timeout=60)
    assert ours.status_code == 200 and ours.json() == theirs.json()
    np.testing.assert_allclose([p["prediction"] for p in ours.json()["predictions"]],
                               predicted["prediction"].head(7), rtol=1e-5)
    assert bad.status_code == 400 and "'date'" in bad.json()["message"] and "date_formats" in bad.json()["message"]


def test_a_dated_classification_with_day_first_dates_runs_as_init_wrote_it(tmp_path):
    settings = load_settings(env_file=None, lake=str(tmp_path / "lake"), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                             cache_dir=tmp_path / "cache")
    shop(700, 5, day_first=True).drop(columns=["sales"]).to_csv(tmp_path / "busy.csv", index=False)
    proposal = init_experiment(f"file:{tmp_path / 'busy.csv'}", settings, target="busy", name="busy")
    config = proposal.config
    assert config["data"]["date_formats"] == {"date": "%d/%m/%Y"}  # a first field over 12 is a day
    assert config["cv"]["scheme"] == "time"
    file = tmp_path / "busy.toml"
    file.write_text(render(proposal))
    summary = run_experiment(load_experiment(file, ["model.params.n_estimators=100"]), settings).summary
    latest = summary["time"]["latest"]
    assert latest["metric"] == "f1_macro" and latest["interval"] is not None
    assert summary["holdout"]["scores"]["roc_auc_ovr"] > 0.85  # weekends are busy: the weekday tells


def test_the_gate_compares_on_the_latest_period_row_by_row(dated):
    first = dated["result"].summary["registry"]
    assert first["promote"]  # the first model
    weak = run_experiment(load_experiment(dated["file"], ["model.params.n_estimators=3", "evaluation.baselines=[]",
                                                          "evaluation.explain_repeats=0"]), dated["settings"])
    record = weak.summary["registry"]
    assert not record["promote"], record["reason"]
    assert record["basis"].startswith("latest period")
    assert "on the latest period, both models fitted on the rows before it (200 rows never trained on)" in record["reason"]
    assert record["comparison"]["reference_rows"] == 200


def test_compare_and_tune_go_forward_on_dated_rows(dated):
    from trilho.workflows.compare import compare, parse_candidates
    from trilho.workflows.tune import tune

    exp = load_experiment(dated["file"], ["model.params.n_estimators=60", "tune.trials=2",
                                          'tune.space={"model.params.max_depth" = {"int" = [2, 4]}}'])
    chosen = parse_candidates(["xgboost", "ridge"], exp)
    result = compare(exp, dated["settings"], chosen, metric="rmse")
    table = result.table.set_index("candidate")
    assert list(table.index) == ["xgboost", "ridge"], table.columns.tolist()
    assert table.loc["ridge", "mean"] > table.loc["xgboost", "mean"]  # a straight line cannot see the weekend
    tuned = tune(exp, dated["settings"], out=dated["root"] / "tuned.toml")
    summary = tuned.summary
    # the rows the search never saw are the latest fifth (the search folds on the rows before them)
    frame = pd.read_csv(dated["root"] / "sales.csv")
    assert summary["held_out_rows"] == 200 and summary["search_rows"] == 800
    assert np.isfinite(summary["honest"]["score"])
    assert load_experiment(dated["root"] / "tuned.toml").cv.scheme == "time"
    assert len(frame) == 1000


def test_customers_stay_whole_across_forward_folds(tmp_path):
    settings = load_settings(env_file=None, lake=str(tmp_path / "lake"), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                             cache_dir=tmp_path / "cache")
    rng = np.random.default_rng(8)
    rows = 600
    customer = np.sort(rng.integers(0, 120, rows))  # customers sign up one after another, each a few weeks
    when = pd.Timestamp("2022-01-01") + pd.to_timedelta(customer * 3 + rng.integers(0, 20, rows), unit="D")
    spend = rng.gamma(2, 10, rows)
    frame = pd.DataFrame({"customer": customer, "date": when.strftime("%Y-%m-%d"), "spend": spend.round(2),
                          "churn": np.where(spend + rng.normal(0, 5, rows) > 20, "yes", "no")})
    frame.to_csv(tmp_path / "churn.csv", index=False)
    from trilho.experiment import Experiment

    exp = Experiment.model_validate({
        "name": "churn", "source": {"uri": f"file:{tmp_path / 'churn.csv'}"},
        "data": {"target": "churn", "labels": ["no", "yes"], "drop": ["customer"], "dates": {"date": ["weekday"]}},
        "cv": {"scheme": "time", "n_splits": 3, "group": "customer"},
        "model": {"name": "xgboost", "params": {"n_estimators": 30}},
        "evaluation": {"holdout_fraction": 0.2, "baselines": []}, "tracking": {"experiment": "churn"}})
    result = run_experiment(exp, settings)
    oof, folds = result.cv.oof, result.cv.folds
    days = pd.to_datetime(frame["date"])
    for fold in range(3):
        rows = oof.loc[oof["fold"] == fold, "row"].to_numpy()
        tested = set(frame["customer"].to_numpy()[rows])
        trained = int(folds.loc[folds["fold"] == fold, "n_train"].iloc[0])
        before = frame[(days < days.to_numpy()[rows].min()) & ~frame["customer"].isin(tested)]
        assert trained == len(before)  # the rows before the period, less the customers it tests
    held = result.holdout
    ids = frame["customer"].to_numpy()
    assert not set(ids[held.train_index]) & set(ids[held.test_index])
