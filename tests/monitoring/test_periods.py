"""`trilho monitor` period by period: the window cut by its span, each period's drift judged on its
own rows, the live error per period from the labels that came back."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trilho.monitoring.traffic import training_profile
from trilho.workflows.monitor import PERIOD_ROWS, by_period, period_length


def _spec() -> dict:
    return {"features": ["x", "shop"], "categorical": {"shop": {"A": 0, "B": 1}}, "task": "regression"}


def test_the_window_is_cut_by_its_span():
    start = pd.Timestamp("2026-11-01")
    for days, length in ((1, "h"), (30, "D"), (200, "W"), (800, "M")):
        assert period_length(pd.Series([start, start + pd.Timedelta(days=days)])) == length


def test_each_period_is_judged_on_its_own_rows_and_labels():
    rng = np.random.default_rng(0)
    spec = _spec()
    train = pd.DataFrame({"x": rng.normal(0, 1, 2000), "shop": rng.choice(["A", "B"], 2000)})
    spec["profile"] = training_profile(train, spec, rng.normal(10, 1, 2000))
    days = np.repeat(pd.date_range("2026-11-01", periods=5, freq="D"), 200)
    x = rng.normal(0, 1, 1000)
    x[800:] += 3  # the last day drifts
    rows = pd.DataFrame({"x": x, "shop": rng.choice(["A", "B"], 1000), "prediction": rng.normal(10, 1, 1000),
                         "served_at": days.tz_localize("UTC"), "request_id": "r", "row": np.arange(1000)})
    rows = pd.concat([rows, rows.iloc[:5].assign(served_at=pd.Timestamp("2026-11-06", tz="UTC"))], ignore_index=True)
    joined = rows.iloc[:400].assign(label=rows["prediction"].iloc[:400] + np.r_[np.zeros(200), np.ones(200)])
    found = by_period(rows, joined, spec)
    assert found["length"] == "day"
    periods = found["periods"]
    assert [p["period"] for p in periods] == [f"2026-11-0{d}" for d in range(1, 7)]
    assert [p["rows"] for p in periods] == [200] * 5 + [5]
    assert periods[4]["top_feature"] == "x" and periods[4]["top_psi"] > 1.0  # the drifted day
    assert all(p["top_psi"] < 0.25 for p in periods[:4]), [p["top_psi"] for p in periods]
    assert "top_feature" not in periods[5] and periods[5]["rows"] < PERIOD_ROWS  # counted, not judged
    assert periods[0]["rmse"] == 0.0 and abs(periods[1]["rmse"] - 1.0) < 1e-9  # the live error per period
    assert "rmse" not in periods[2]
