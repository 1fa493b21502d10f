"""The drift report between two versions of a data set (pure)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trilho.monitoring.drift import THRESHOLDS, compare_data


def _table(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    return pd.DataFrame({"x": rng.normal(shift, 1, rows).round(5), "colour": rng.choice(["RED", "BLUE"], rows),
                         "__target__": y})


def test_two_samples_of_one_population_do_not_drift():
    report = compare_data(_table(2000, 1), _table(2000, 2), ["no", "yes"], ["no", "yes"])
    assert not report["drifted"], report["reasons"]
    assert max(report["features"].values()) < 0.05 and report["label_shift"] < 0.05


def test_shifted_features_flipped_labels_and_new_conflicts_drift():
    old = _table(2000, 1)
    shifted = compare_data(old, _table(2000, 2, shift=1.0), ["no", "yes"], ["no", "yes"])
    assert shifted["drifted"] and shifted["features"]["x"] >= THRESHOLDS["psi"] and shifted["features"]["colour"] < 0.05
    assert compare_data(old, _table(2000, 2), ["no", "yes"], ["no", "yes"])["rows_in_both"] < 100
    relabelled = old.copy()
    relabelled.loc[:59, "__target__"] = 1 - relabelled.loc[:59, "__target__"]
    found = compare_data(old, relabelled, ["no", "yes"], ["no", "yes"])
    assert found["rows_in_both"] == 2000 and 60 <= found["relabelled_rows"] <= 65  # chance copies within the old set add a few
    assert any("changed label" in r for r in found["reasons"])
    copies = pd.concat([old, old.head(100).assign(__target__=lambda f: 1 - f["__target__"])], ignore_index=True)
    conflict = compare_data(old, copies, ["no", "yes"], ["no", "yes"])
    assert conflict["conflict_rate"]["challenger"] > conflict["conflict_rate"]["champion"] + 0.05
    assert conflict["relabelled_rows"] >= 100  # every copy of the first hundred rows carries the other label


def test_labels_spelled_otherwise_by_the_champion_are_the_same_labels():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=400), "__target__": rng.integers(0, 2, 400)})
    report = compare_data(frame, frame.copy(), ["BENIGN", "MALIGNANT"], ["Benign", "Malignant"])
    assert report["label_shift"] == 0 and report["relabelled"] == 0 and not report["drifted"]
    assert set(report["label_shares"]["champion"]) == {"Benign", "Malignant"}
