"""Forward folds over time: no fold trains on its future (or within its gap), the latest period is
never seen by a fold, calendar parts are pandas' own on every fold and at prediction time, and a
shuffled split on dated rows is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trilho.errors import EvaluationError
from trilho.evaluation.splits import TimeOrder, holdout_split, later_training, split_plan
from trilho.experiment import Experiment
from trilho.model.encoding import encode_matrix, parse_dates, with_calendar
from trilho.model.table_encoder import TableEncoder


def _days(rows: int, seed: int) -> np.ndarray:
    """Uneven dated rows: several rows on some days, none on others, in no order."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.sort(rng.integers(0, rows // 2, rows)).astype(float) + 17_000)


@pytest.mark.parametrize(("gap", "max_train", "seed"), [(0, 0, 0), (3, 0, 1), (7, 40, 2), (0.5, 0, 3)])
def test_no_fold_trains_on_its_future_or_within_its_gap(gap, max_train, seed):
    days = _days(600, seed)
    order = TimeOrder(days, gap=gap, max_train=max_train, holdout=0.2)
    plan = split_plan(np.zeros(len(days)), 5, [0], order=order)
    assert len(plan) == 5
    for _, _, train, test in plan:
        assert len(train) and len(test)
        assert days[train].max() + gap < days[test].min()  # every training row before every test row, less the gap
        if max_train:
            assert days[test].min() - gap - days[train].min() <= max_train
    tests = np.concatenate([test for *_, test in plan])
    assert len(tests) == len(np.unique(tests))  # each row tested once at most
    assert later_training(days, plan) == (0, 5)


def test_the_latest_period_is_never_seen_by_a_fold():
    days = _days(500, 7)
    order = TimeOrder(days, gap=2, holdout=0.2)
    train, test = holdout_split(np.zeros(len(days)), 0.2, 0, order=order)
    assert abs(len(test) / len(days) - 0.2) < 0.05
    assert days[train].max() + 2 < days[test].min()
    latest = set(test.tolist())
    for _, _, fold_train, fold_test in split_plan(np.zeros(len(days)), 4, [0], order=order):
        assert latest.isdisjoint(fold_train.tolist()) and latest.isdisjoint(fold_test.tolist())
        assert days[fold_test].max() < days[test].min()
    # rows of one day never straddle a cut
    assert not set(days[train]) & set(days[test])


def test_too_few_times_for_the_folds_is_one_line():
    days = np.repeat([17_000.0, 17_001.0, 17_002.0], 10)
    with pytest.raises(EvaluationError, match="lower cv.n_splits"):
        split_plan(np.zeros(len(days)), 5, [0], order=TimeOrder(days, holdout=0.2))


def test_shuffled_folds_on_dated_rows_train_on_the_future():
    days = np.arange(300, dtype=float)
    plan = split_plan(np.zeros(300), 5, [0, 1])
    later, total = later_training(days, plan)
    assert later == total == 10


DATES = pd.Series(["2021-03-04", "2021-12-31 23:30", None, "2020-02-29T06:15:00+02:00", "2019-07-01"])
PARTS = ["year", "month", "day", "weekday", "dayofyear", "hour", "days", "season"]


def _spec(parts: list[str], fmt: str | None = None) -> dict:
    return {"features": ["x"], "inputs": ["when", "x"], "categorical": {}, "missing": "native", "fill": {},
            "dates": {"when": {"parts": parts, "format": fmt}}}


def test_calendar_parts_equal_pandas_on_a_fold_and_at_prediction_time():
    frame = pd.DataFrame({"when": DATES, "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    spec = _spec(PARTS)
    names = [f"when.{p}" for p in PARTS if p not in ("season",)] + ["when.season_sin", "when.season_cos"]
    spec["features"] = [*names, "x"]
    fold = frame.iloc[[0, 1, 4]]  # the training fold: its first day is the origin of "days"
    encoder = TableEncoder(spec).fit(fold)
    # an offset is dropped: a row keeps the wall-clock time it was written in (06:15 on 29 February)
    when = pd.to_datetime(DATES.str.replace("+02:00", ""), format="ISO8601")
    assert when.iloc[3] == pd.Timestamp("2020-02-29 06:15")
    origin = when.iloc[[0, 1, 4]].min()
    expected = pd.DataFrame({
        "when.year": when.dt.year, "when.month": when.dt.month, "when.day": when.dt.day,
        "when.weekday": when.dt.day_of_week, "when.dayofyear": when.dt.day_of_year,
        "when.hour": when.dt.hour + when.dt.minute / 60, "when.days": (when - origin) / pd.Timedelta(days=1),
        "when.season_sin": np.sin(2 * np.pi * (when.dt.day_of_year - 1) / 365.25),
        "when.season_cos": np.cos(2 * np.pi * (when.dt.day_of_year - 1) / 365.25)}).astype("float64")
    trained = encoder.transform(frame)
    pd.testing.assert_frame_equal(trained[expected.columns].reset_index(drop=True), expected, check_names=False)
    # the logged model's encoding of rows sent as text (one sent as a date-time), in another order
    served = frame.iloc[::-1].reset_index(drop=True)
    matrix = encode_matrix(served, encoder.spec_)
    np.testing.assert_allclose(matrix[:, :len(expected.columns)], expected.iloc[::-1].to_numpy(), equal_nan=True)
    assert encoder.spec_["dates"]["when"]["origin"] == pytest.approx((origin - pd.Timestamp(0)) / pd.Timedelta(days=1))


def test_a_date_format_and_epoch_seconds_read_as_the_file_says():
    day_first = parse_dates("d", pd.Series(["04/03/2021", "31/12/2020"]), "%d/%m/%Y")
    assert day_first.tolist() == [pd.Timestamp("2021-03-04"), pd.Timestamp("2020-12-31")]
    epoch = parse_dates("d", pd.Series([0, 86_400 * 365]), "epoch")
    assert epoch.tolist() == [pd.Timestamp("1970-01-01"), pd.Timestamp("1971-01-01")]
    parts = with_calendar(pd.DataFrame({"when": ["31/12/2020"], "x": [1]}), _spec(["weekday"], "%d/%m/%Y"))
    assert parts["when.weekday"].tolist() == [3.0]  # a Thursday


def test_a_value_that_is_no_date_names_it_and_the_fix():
    with pytest.raises(ValueError, match=r"'signup'.*\['31/12/2020'\].*data.date_formats.signup"):
        parse_dates("signup", pd.Series(["2020-12-30", "31/12/2020"]))
    with pytest.raises(ValueError, match=r"numbers where dates are expected.*epoch"):
        parse_dates("signup", pd.Series([1_600_000_000, 1_600_086_400]))


def _experiment(**changes) -> dict:
    base = {"name": "dated", "task": "regression", "source": {"uri": "file:x.csv"},
            "data": {"target": "y", "dates": ["when"]}, "cv": {"scheme": "time", "n_repeats": 1},
            "model": {"name": "xgboost"}}
    for key, value in changes.items():
        section, _, name = key.partition(".")
        base[section] = {**base[section], name: value}
    return base


@pytest.mark.parametrize(("change", "said"), [
    ({"cv.n_repeats": 3}, "set cv.n_repeats = 1"),
    ({"cv.time": "other"}, "cv.time 'other' is not one of data.dates"),
    ({"data.dates": {"when": ["month", "fortnight"]}}, r"data.dates.when lists \['fortnight'\]"),
    ({"data.date_formats": {"other": "%d/%m/%Y"}}, r"data.date_formats names \['other'\]"),
    ({"evaluation.intervals": ["nested_cv"]}, "nested_cv"),
])
def test_time_settings_that_cannot_run_are_one_line(change, said):
    data = _experiment()
    for key, value in change.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    with pytest.raises(ValueError, match=said):
        Experiment.model_validate(data)


def test_a_list_of_dates_gets_every_part_but_the_hour():
    exp = Experiment.model_validate(_experiment())
    assert exp.time_column == "when"
    assert exp.data.date_parts == {"when": [p for p in PARTS if p != "hour"]}


def test_a_feature_with_no_value_in_an_early_fold_still_fits():
    from trilho.model.catalog import build_pipeline
    from trilho.model.encoding import feature_spec

    # a column recorded only from some date on: the first forward fold's rows hold none of it
    X = pd.DataFrame({"later": np.r_[np.full(50, np.nan), np.arange(50.0)], "x": np.arange(100.0)})
    y = np.r_[np.zeros(25), np.ones(25), np.zeros(25), np.ones(25)].astype(int)
    spec = feature_spec(["later", "x"], {}, ["0", "1"], missing="native")
    pipe = build_pipeline({"name": "hist_gradient_boosting", "params": {}}, {"name": "none", "params": {}}, 0, 1, spec)
    pipe.fit(X.iloc[:50], y[:50])
    assert pipe.named_steps["encode"].blank_ == ["later"]
    assert pipe.predict(X.iloc[50:]).shape == (50,)


def test_a_window_bounds_the_holdout_fit_and_the_final_fit_alike():
    days = np.arange(1000, dtype=float)
    order = TimeOrder(days, gap=10, max_train=100, holdout=0.2)
    train, test = order.holdout_split()
    assert days[test].min() == 800 and days[train].max() == 789 and days[train].min() == 690
    final = order.final_rows()
    assert days[final].min() == 899 and days[final].max() == 999  # the served model: the last 100 days
    assert TimeOrder(days).final_rows() is None  # no window: every row


def test_rows_without_their_ordering_date_are_left_out_and_counted():
    from trilho.data.clean import clean
    from trilho.data.validate import validate

    frame = pd.DataFrame({"when": [f"2021-01-{d:02d}" for d in range(1, 31)], "x": np.arange(30.0),
                          "y": np.arange(30.0) * 2})
    frame.loc[[3, 17], "when"] = "NA"
    exp = Experiment.model_validate({**_experiment(), "data": {"target": "y", "dates": ["when"], "missing": "native"}})
    report = validate(frame, exp)
    assert report["undated"]["rows"] == 2 and any("no date in 'when'" in w for w in report["warnings"])
    data = clean(frame, exp)
    assert data.undated_rows == 2 and len(data.y) == 28 and data.X["when"].notna().all()


def test_forward_folds_judge_a_baseline_fold_by_fold():
    from trilho.evaluation.baselines import compare

    model = pd.DataFrame({"seed": 0, "fold": range(5), "rmse": [1.0, 1.1, 0.9, 1.2, 1.0]})
    mean = pd.DataFrame({"seed": 0, "fold": range(5), "rmse": [2.0, 2.5, 0.95, 3.0, 2.2]})
    found = compare(model, {"mean": mean}, ["rmse"], "rmse", 0.2, 0.95, forward=True)
    entry = found["models"]["mean"]["metrics"]["rmse"]
    assert found["bounds"] == "fold range" and entry["verdict"] == "better"  # better on every fold
    assert entry["low"] == pytest.approx(0.05) and entry["high"] == pytest.approx(1.8)
    assert found["said"] == []  # no "does not beat the mean" from a t interval of folds that are not exchangeable
    mixed = mean.assign(rmse=[2.0, 0.5, 0.95, 3.0, 2.2])
    assert compare(model, {"mean": mixed}, ["rmse"], "rmse", 0.2, 0.95, forward=True)[
        "models"]["mean"]["metrics"]["rmse"]["verdict"] == "no different"


def test_a_dates_calendar_parts_are_reported_but_never_flagged_as_drift():
    from trilho.monitoring.traffic import compare_traffic, training_profile

    spec = {"features": ["when.month", "x"], "inputs": ["when", "x"], "categorical": {}, "fill": {},
            "dates": {"when": {"parts": ["month"], "format": None, "origin": 0.0}}}
    rng = np.random.default_rng(1)
    past = pd.DataFrame({"when": pd.date_range("2020-01-01", periods=730, freq="D").strftime("%Y-%m-%d"),
                         "x": rng.normal(0, 1, 730)})
    profile = training_profile(past, spec)
    served = with_calendar(pd.DataFrame({"when": ["2022-03-01"] * 200, "x": rng.normal(3, 1, 200)}), spec)
    report = compare_traffic(profile, served, spec)
    psi = {f["feature"]: f["psi"] for f in report["features"]}
    assert psi["when.month"] > 1 and psi["x"] > 1  # both moved
    assert [f["feature"] for f in report["flags"] if f["kind"] == "drift"] == ["x"]  # only x is drift


def test_groups_stay_whole_across_forward_folds():
    rng = np.random.default_rng(3)
    customers = rng.integers(0, 150, 900)  # each customer's rows spread over time
    days = np.sort(rng.integers(0, 400, 900)).astype(float)
    order = TimeOrder(days, holdout=0.2, groups=customers, group_column="customer")
    for _, _, train, test in split_plan(np.zeros(900), 4, [0], order=order):
        assert len(train) and not set(customers[train]) & set(customers[test])
        assert days[train].max() < days[test].min()
    train, test = order.holdout_split()
    assert not set(customers[train]) & set(customers[test])
    # a group in every period (a store) cannot be kept whole: one line says why
    stores = np.tile([0, 1, 2], 300)
    with pytest.raises(EvaluationError, match="cv.group 'store'.*not ones present in every period"):
        split_plan(np.zeros(900), 4, [0], order=TimeOrder(days, holdout=0.2, groups=stores, group_column="store"))
