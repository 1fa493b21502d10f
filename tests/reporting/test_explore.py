"""The exploration helpers the notebook calls: pure frames and figures."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from trilho import load_experiment
from trilho.data.synthetic import diabetes
from trilho.data.validate import validate
from trilho.reporting import explore


def test_figures_and_tables_from_a_raw_table():
    exp = load_experiment("diabetes")
    raw = diabetes(rows=300, seed=4)
    for make in (explore.class_balance_figure, explore.distributions_figure, explore.feature_boxplots_figure,
                 explore.correlation_figure):
        fig = make(raw, exp)
        assert isinstance(fig, Figure) and fig.axes
    tables = explore.report_tables(validate(raw, exp))
    assert tables["overview"].loc[0, "rows"] == 300 and set(tables["classes"].index) == {"N", "Y", "P"}


def test_duplicates_table_marks_conflicting_labels():
    exp = load_experiment("diabetes")
    raw = diabetes(rows=40, seed=2).drop_duplicates(subset=["AGE", "Urea", "Cr", "HbA1c"]).reset_index(drop=True)
    twin = raw.iloc[[0, 0, 1]].copy()
    twin.iloc[1, twin.columns.get_loc("CLASS")] = "N" if raw.loc[0, "CLASS"].strip() != "N" else "Y"
    twin["Gender"] = twin["Gender"].str.lower()  # the same after normalisation
    table = explore.duplicates_table(pd.concat([raw, twin], ignore_index=True), exp)
    conflicted = table[table["conflicting_labels"]]
    assert len(conflicted) == 3 and conflicted["copies"].eq(3).all()
    assert not table[~table["conflicting_labels"]].empty  # row 1 and its copy agree
    report = validate(pd.concat([raw, twin], ignore_index=True), exp)
    assert report["duplicates"]["with_conflicting_label"] >= 1 and 2 in report["duplicates"]["conflicting_lines"]


def test_intervals_table_and_run_link():
    summary = {"run_id": "abc", "mlflow_experiment_id": "7", "cv": {"metrics": {"accuracy": {
        "mean": 0.9, "std": 0.02, "ci_method": "corrected_t",
        "intervals": {"percentile": (0.86, 0.94), "corrected_t": (0.88, 0.92)}}}}}
    table = explore.intervals_table(summary)
    assert table.loc["accuracy", "corrected_t *"] == "0.8800 – 0.9200"
    assert explore.run_link("http://mlflow:5000", summary) == "http://mlflow:5000/#/experiments/7/runs/abc"
    assert explore.run_link("sqlite:///m.db", summary).startswith("http://127.0.0.1:5000/#/")


def test_every_spelling_of_a_class_is_counted_under_its_name():
    from trilho.experiment import Experiment
    from trilho.reporting.explore import _labels

    exp = Experiment.model_validate({"name": "a", "source": {"uri": "file:a.csv"}, "model": {"name": "xgboost"},
                                     "data": {"target": "t", "labels": [["NO", "N"], ["YES", "Y"]]}})
    raw = pd.DataFrame({"t": ["yes", "Y", " n", "No", "maybe", None]})
    assert _labels(raw, exp).tolist() == ["YES", "YES", "NO", "NO", "MAYBE", pd.NA]
