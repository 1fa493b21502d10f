"""Metrics by group: each group's fold score is the metric on that fold's held-out rows of the group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from tests.support import corpus
from trilho.evaluation import cv as evaluate
from trilho.evaluation.groups import MISSING, OTHER, group_labels, group_metrics
from trilho.model.encoding import feature_spec


@pytest.fixture(scope="module")
def churn_cv():
    frame, target, _, _ = corpus.churn(rows=600, seed=8)
    X = frame.drop(columns=[target, "customer_id"])
    y = (frame[target].str.strip().str.upper() == "YES").astype(int).to_numpy()
    spec = {**feature_spec(list(X.columns), {"contract": None, "internet": None}, ["No", "Yes"]), "missing": "native"}
    task = evaluate.Task(model={"name": "xgboost", "params": {"n_estimators": 30, "max_depth": 3}},
                         resampler={"name": "none", "params": {}}, random_state=0, n_splits=5, seeds=[0, 1],
                         encoding=spec)
    return frame, evaluate.cross_validate(X, y, task)


@pytest.mark.training
def test_a_groups_scores_are_the_metric_on_its_out_of_fold_rows(churn_cv):
    frame, cv = churn_cv
    columns = frame[["internet"]]  # a categorical column with missing values, in mixed case
    found, table = group_metrics(cv.oof, columns, ["accuracy", "f1_macro", "roc_auc_ovr"], 2, 0.2)
    entry = found["internet"]
    labels = group_labels(frame["internet"])
    assert len(set(labels)) == 4 and {v.upper() for v in set(labels) - {MISSING}} == {"FIBER", "DSL", "NO_SERVICE"}
    oof = cv.oof.assign(group=labels.to_numpy()[cv.oof["row"].to_numpy()])
    for (seed, fold, group), rows in oof.groupby(["seed", "fold", "group"]):
        row = table[(table["seed"] == seed) & (table["fold"] == fold) & (table["group"] == group)].iloc[0]
        assert row["rows"] == len(rows)
        assert row["accuracy"] == pytest.approx(accuracy_score(rows["y"], rows["pred"]))
        assert row["f1_macro"] == pytest.approx(f1_score(rows["y"], rows["pred"], average="macro",
                                                         labels=[0, 1], zero_division=0))
        if rows["y"].nunique() == 2:
            assert row["roc_auc_ovr"] == pytest.approx(roc_auc_score(rows["y"], rows["proba_1"]))
    for group, scored in entry["groups"].items():
        part = table[table["group"] == group]
        assert scored["metrics"]["accuracy"]["mean"] == pytest.approx(part["accuracy"].mean())
        assert scored["metrics"]["accuracy"]["low"] <= scored["metrics"]["accuracy"]["mean"]
        assert scored["rows"] == int((labels == group).sum())
    # 20 missing values over 5 folds: 4 held-out rows a fold, too few to score; said, with the count
    assert entry["too_small"] == {MISSING: 20}
    gap = entry["gap"]["accuracy"]
    means = {g: e["metrics"]["accuracy"]["mean"] for g, e in entry["groups"].items()}
    assert gap["best"] == max(means, key=means.get) and gap["worst"] == min(means, key=means.get)
    assert gap["diff"] == pytest.approx(means[gap["best"]] - means[gap["worst"]]) and gap["low"] <= gap["diff"] <= gap["high"]


@pytest.mark.training
def test_a_loss_gap_puts_the_lowest_loss_first(churn_cv):
    frame, cv = churn_cv
    found, _ = group_metrics(cv.oof, frame[["contract"]], ["log_loss"], 2, 0.2)
    gap = found["contract"]["gap"]["log_loss"]
    means = {g: e["metrics"]["log_loss"]["mean"] for g, e in found["contract"]["groups"].items()}
    assert gap["best"] == min(means, key=means.get) and gap["diff"] <= 0


def test_group_values_are_named_as_written_case_aside_and_binned_or_capped():
    values = pd.Series(["Female", "female", " FEMALE", "Female", "male", None, "Male", "male"])
    assert group_labels(values).tolist() == ["Female"] * 4 + ["male", MISSING, "male", "male"]
    ages = pd.Series(np.arange(100, dtype=float))
    binned = group_labels(ages)
    assert binned.nunique() == 4 and binned.value_counts().tolist() == [25, 25, 25, 25]
    codes = pd.Series([f"c{i % 30}" for i in range(300)])
    capped = group_labels(codes)
    assert capped.nunique() == 20 and (capped == OTHER).sum() == 11 * 10


def test_a_regressions_groups_get_its_metrics_and_the_intervals_coverage():
    rng = np.random.default_rng(5)
    rows = 600
    town = pd.Series(rng.choice(["quiet", "noisy"], rows))
    noise = np.where(town == "noisy", 3.0, 0.5)
    oof = pd.DataFrame({"seed": 0, "row": np.arange(rows), "fold": np.arange(rows) % 5,
                        "y": rng.normal(0, 1, rows) * noise, "pred": np.zeros(rows), "half_width": 2.0})
    found, table = group_metrics(oof, pd.DataFrame({"town": town}), ["rmse", "mae"], 0, 0.2)
    groups = found["town"]["groups"]
    assert set(table.columns) >= {"rmse", "mae", "coverage"}
    assert groups["quiet"]["metrics"]["coverage"]["mean"] > 0.99 > 0.6 > groups["noisy"]["metrics"]["coverage"]["mean"]
    assert found["town"]["gap"]["rmse"]["worst"] == "noisy"
