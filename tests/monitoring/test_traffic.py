"""Monitoring's pure core (served rows against the training profile, live metrics) and the prediction log."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trilho.model.encoding import feature_spec
from trilho.monitoring.prediction_log import PredictionLog, Served, read_log
from trilho.monitoring.traffic import MIN_ROWS, compare_traffic, live_metrics, training_profile
from trilho.storage import LocalLake


def _shape(rng: np.random.Generator, n: int, shift: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows of one population: a normal number, a skewed one, a few-valued integer, a text
    category in mixed case with gaps; ``shift`` moves named columns."""
    shift = shift or {}
    out = pd.DataFrame({
        "normal": rng.normal(50, 10, n),
        "skewed": rng.lognormal(0, 1, n),
        "count": rng.poisson(3, n).astype(float),
        "colour": rng.choice(["red", "Green", "BLUE", None], n, p=[0.5, 0.3, 0.15, 0.05]).astype(object),
    })
    if "normal" in shift:
        out["normal"] += 15  # one and a half standard deviations
    if "skewed" in shift:
        out.loc[rng.random(n) < 0.3, "skewed"] = np.nan  # 30% missing where training had none
    if "colour" in shift:
        out["colour"] = rng.choice(["red", "purple", "BLUE"], n, p=[0.3, 0.4, 0.3]).astype(object)
    return out


SPEC = feature_spec(["normal", "skewed", "count", "colour"], {"colour": {"RED": 0, "GREEN": 1, "BLUE": 2}}, ["no", "yes"],
                    [], "impute")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_traffic_like_the_training_data_is_not_flagged_and_shifted_traffic_is(seed):
    rng = np.random.default_rng(seed)
    train = _shape(rng, 2000)
    predicted = (train["normal"] > 55).astype(int).to_numpy()
    profile = training_profile(train, SPEC, predicted)
    assert profile["rows"] == 2000 and set(profile["features"]) == set(SPEC["features"])
    assert profile["features"]["colour"]["shares"].keys() == {"RED", "GREEN", "BLUE"}  # case aside
    assert abs(profile["predicted"]["yes"] - predicted.mean()) < 1e-12

    like = _shape(rng, 800).assign(prediction=np.where(rng.random(800) < predicted.mean(), "yes", "no"))
    report = compare_traffic(profile, like, SPEC)
    assert report["flags"] == [], report["flags"]
    assert max(f["psi"] for f in report["features"]) < 0.1

    shifted = _shape(rng, 800, {"normal": "", "skewed": "", "colour": ""}).assign(prediction="yes")
    report = compare_traffic(profile, shifted, SPEC)
    kinds = {(f["kind"], f["feature"]) for f in report["flags"]}
    assert {("drift", "normal"), ("missing", "skewed"), ("unseen", "colour"), ("drift", "colour"), ("predicted", None)} <= kinds
    assert not {f for k, f in kinds if f == "count"}  # the column that did not move is not flagged
    by_feature = {f["feature"]: f for f in report["features"]}
    assert by_feature["colour"]["unseen_share"] == pytest.approx((shifted["colour"] == "purple").mean(), abs=1e-4)
    assert by_feature["skewed"]["missing_served"] == pytest.approx(shifted["skewed"].isna().mean(), abs=1e-4)


def test_too_few_rows_flag_nothing_and_say_so():
    rng = np.random.default_rng(5)
    profile = training_profile(_shape(rng, 500), SPEC)
    few = _shape(rng, MIN_ROWS - 1, {"normal": ""})
    report = compare_traffic(profile, few, SPEC)
    assert report["flags"] == [] and not report["enough_rows"] and "too few" in report["note"]
    assert compare_traffic(profile, few.iloc[:0], SPEC)["note"] == "no served rows in this window"


def test_live_metrics_score_the_labelled_answers_against_the_cv_estimate():
    rng = np.random.default_rng(2)
    labels = rng.choice(["no", "yes"], 600)
    right = labels.copy()
    estimates = {"accuracy": {"mean": 0.9, "low": 0.88, "high": 0.92}}
    good = live_metrics(labels, right, ["no", "yes"], estimates)
    assert good["metrics"]["accuracy"]["live"] == 1.0 and good["flags"] == []
    wrong = np.where(rng.random(600) < 0.3, np.where(labels == "yes", "no", "yes"), labels)
    bad = live_metrics(labels, wrong, ["no", "yes"], estimates)
    entry = bad["metrics"]["accuracy"]
    assert entry["low"] <= entry["live"] <= entry["high"] < 0.88
    assert entry["live"] == pytest.approx((wrong == labels).mean(), abs=1e-4)
    assert [f["kind"] for f in bad["flags"]] == ["live"]


def _served(i: int, rows: int = 3) -> Served:
    return Served(f"r{i}", time.time(), "m", "1", 1.5, np.full((rows, 2), float(i)), ("a", "b"),
                  {"kind": ["x"] * rows}, ["yes"] * rows, np.tile([0.2, 0.8], (rows, 1)), ["no", "yes"])


def test_the_prediction_log_writes_every_row_it_queued_and_flushes_on_close(tmp_path: Path):
    lake = LocalLake(str(tmp_path / "lake"))
    counted: dict[str, int] = {}
    log = PredictionLog(lake, "predictions/served", flush_s=0.2, on_count=lambda k, n: counted.__setitem__(k, counted.get(k, 0) + n))
    for i in range(50):
        assert log.offer(_served(i))
    time.sleep(0.5)  # one flush on its own
    for i in range(50, 70):
        log.offer(_served(i))
    log.close()
    frame = read_log(lake, "predictions/served/m")
    assert len(frame) == 210 and log.written == 210 and counted == {"written": 210}
    assert frame["request_id"].nunique() == 70 and sorted(frame["row"].unique()) == [0, 1, 2]
    assert list(frame.columns[:6]) == ["request_id", "row", "served_at", "model_name", "model_version", "latency_ms"]
    assert {"a", "b", "kind", "prediction", "proba_no", "proba_yes"} <= set(frame.columns)
    assert len(read_log(lake, "predictions/served/m", version="2")) == 0


class _BrokenLake(LocalLake):
    def __init__(self, root: str, delay_s: float = 0.0, fail: bool = True) -> None:
        super().__init__(root)
        self.delay_s, self.fail = delay_s, fail

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        time.sleep(self.delay_s)
        if self.fail:
            raise OSError("the store is down")
        return super().put_bytes(key, data, overwrite=overwrite)


def test_a_failing_or_slow_lake_never_slows_or_fails_a_request_and_drops_are_counted(tmp_path: Path):
    broken = PredictionLog(_BrokenLake(str(tmp_path / "a")), flush_s=0.05)
    for i in range(10):
        broken.offer(_served(i))
    broken.close()
    assert broken.dropped == 30 and broken.written == 0

    slow = PredictionLog(_BrokenLake(str(tmp_path / "b"), delay_s=1.0, fail=False), flush_s=0.05, max_rows=30)
    timings = []
    outcomes = []
    for i in range(40):
        start = time.perf_counter()
        outcomes.append(slow.offer(_served(i)))
        timings.append(time.perf_counter() - start)
    assert max(timings) < 0.05  # the request path only queues
    assert outcomes.count(False) > 0 and slow.dropped == 3 * outcomes.count(False)  # a full queue drops, counted
    slow.close()
    assert slow.written + slow.dropped == 120


def test_the_log_keeps_a_filled_gap_as_missing_and_only_the_numeric_columns_as_numbers(tmp_path: Path):
    lake = LocalLake(str(tmp_path / "lake"))
    log = PredictionLog(lake, flush_s=60)
    X = np.array([[1.0, 7.0, 2.0], [3.0, 0.0, 4.0]])  # column 1 is a category's code; row 1's "a" was filled
    gaps = np.array([[False, False, False], [True, True, False]])
    log.offer(Served("r", time.time(), "m", "1", 1.0, X, ("a", "b"), {"kind": ["x", None]}, ["no", "yes"],
                     np.array([[0.6, 0.4], [0.3, 0.7]]), ("no", "yes"), (0, 2), gaps))
    log.close()
    frame = read_log(lake, "predictions/served/m")
    assert frame["a"].tolist()[0] == 1.0 and np.isnan(frame["a"].tolist()[1]) and frame["b"].tolist() == [2.0, 4.0]
    assert frame["kind"].iloc[0] == "x" and pd.isna(frame["kind"].iloc[1]) and frame["prediction"].tolist() == ["no", "yes"]
