"""Data read as its users wrote it: empty cells and the writers' own missing words (NA, NULL, ...) are
missing, any other word is a value; identifiers told by their values,
the category cut scaled to the rows, integer codes ordered as numbers (each failed before)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trilho.data.tables import read_table
from trilho.init.profile import init_experiment, profile_chunks
from trilho.init.propose import propose
from trilho.model.table_encoder import _ordered


def _roles(frame: pd.DataFrame, target: str) -> dict:
    return propose(profile_chunks([frame], target), "t", "file:t.csv", target).config["data"]


def test_a_class_written_none_is_a_class_and_a_label_written_na_is_missing(workdir, settings):
    rng = np.random.default_rng(0)
    rows = 300
    x = rng.normal(0, 1, rows)
    frame = pd.DataFrame({"x": x.round(3), "plan": rng.choice(["basic", "NA", "plus"], rows),
                          "risk": np.where(x > 0.5, "High", np.where(x < -0.5, "None", "NA"))})
    unlabelled = int((frame["risk"] == "NA").sum())
    path = workdir / "risk.csv"
    frame.to_csv(path, index=False)
    read = read_table(path)
    assert read["risk"].isna().sum() == 0 and set(read["risk"]) == {"High", "None", "NA"}  # read as written
    proposal = init_experiment(f"file:{path}", settings, target="risk")
    assert sorted(proposal.config["data"]["labels"]) == ["High", "None"]  # NA is no class (it was before)
    assert any(f"missing on {unlabelled} of {rows} rows" in n for n in proposal.notes["labels"])
    assert "plan" in proposal.config["data"]["categorical"]
    from trilho.experiment import Experiment
    from trilho.storage import open_lake
    from trilho.workflows.context import prepare

    exp = Experiment.model_validate(proposal.config)
    inputs = prepare(exp, settings, open_lake(settings))
    assert len(inputs.y) == rows - unlabelled and np.bincount(inputs.y).size == 2
    assert inputs.validation["unlabelled"]["rows"] == unlabelled and inputs.data.unlabelled_rows == unlabelled
    assert any(f"{unlabelled} rows have no label" in w for w in inputs.validation["warnings"])
    # "plan" writes NA: a missing value there too, counted as one
    assert inputs.validation["nulls"]["plan"] == int((frame["plan"] == "NA")[frame["risk"] != "NA"].sum())

    # where the data means NA as a value (North America, a class), data.not_missing keeps it
    kept = exp.model_copy(update={"data": exp.data.model_copy(update={
        "not_missing": ["NA"], "labels": {"High": 0, "NA": 1, "None": 2}})})
    kept = Experiment.model_validate(kept.model_dump())
    inputs = prepare(kept, settings, open_lake(settings))
    assert len(inputs.y) == rows and np.bincount(inputs.y).size == 3 and "nulls" not in inputs.validation or \
        "plan" not in inputs.validation["nulls"]


def test_a_word_outside_the_written_missing_words_is_refused_by_not_missing():
    from trilho.experiment import DataSpec

    with pytest.raises(ValueError, match=r"data.not_missing holds \['None'\]"):
        DataSpec.model_validate({"target": "y", "labels": ["a", "b"], "not_missing": ["None"]})


def test_a_number_column_writing_na_for_a_gap_reads_it_as_missing_with_no_marker(workdir, settings):
    rng = np.random.default_rng(1)
    values = rng.normal(50, 10, 200).round(1).astype(object)
    values[::20] = "NA"
    frame = pd.DataFrame({"score": values, "y": rng.choice(["a", "b"], 200)})
    path = workdir / "gaps.csv"
    frame.to_csv(path, index=False)
    proposal = init_experiment(f"file:{path}", settings, target="y")
    data = proposal.config["data"]
    assert "missing_markers" not in data and "score" in data["ranges"] and "score" not in data["categorical"]
    assert any("score" in n and "10" in n for n in proposal.notes["missing"])


def test_identifiers_are_told_by_values_not_by_names():
    rng = np.random.default_rng(2)
    rows = 2_000
    frame = pd.DataFrame({
        "num_total_cc_accounts": rng.integers(0, 300, rows),           # a count: repeats its values
        "balance_num": rng.gamma(2, 500, rows).round(0),               # an amount with a name like a code
        "account_id": rng.permutation(rows) + 10_000,                  # a run of whole numbers, unique
        "ref": [f"R{v:07d}" for v in rng.choice(10**7, rows, replace=False)],  # unique text codes
        "y": rng.choice(["yes", "no"], rows)})
    data = _roles(frame, "y")
    assert set(data["drop"]) == {"account_id", "ref"}
    assert "num_total_cc_accounts" not in data["drop"] and "balance_num" not in data["drop"]


def test_the_category_cut_scales_with_the_rows():
    rng = np.random.default_rng(3)
    states = [f"S{i:02d}" for i in range(51)]
    frame = pd.DataFrame({"state": rng.choice(states, 3_000), "x": rng.normal(0, 1, 3_000),
                          "y": rng.choice(["a", "b"], 3_000)})
    assert "state" in _roles(frame, "y")["categorical"]  # free text, and dropped, at 51 levels before
    notes = pd.DataFrame({"note": [f"note {i}" for i in range(5_000)], "x": rng.normal(0, 1, 5_000),
                          "y": rng.choice(["a", "b"], 5_000)})
    notes.loc[::2, "note"] = "same"  # not unique, so not an identifier: free text
    assert "note" in _roles(notes, "y")["drop"]


@pytest.mark.parametrize("values, expected", [(["10", "2", "1"], ["1", "2", "10"]),
                                              (["b", "10", "a"], ["10", "a", "b"])])
def test_integer_codes_are_ordered_as_numbers(values, expected):
    assert _ordered(values) == expected


def test_dates_are_recognised_and_said():
    rng = np.random.default_rng(4)
    days = pd.date_range("2021-01-01", periods=400, freq="D")
    frame = pd.DataFrame({"opened": days.strftime("%Y-%m-%d"), "seen": days.strftime("%d/%m/%Y %H:%M"),
                          "x": rng.normal(0, 1, 400), "y": rng.choice(["a", "b"], 400)})
    proposal = propose(profile_chunks([frame], "y"), "t", "file:t.csv", "y")
    data = proposal.config["data"]
    assert not {"opened", "seen"} & set(data["drop"])  # read as dates, given to the model as calendar parts
    assert "hour" in data["dates"]["seen"] and "hour" not in data["dates"]["opened"]
    assert data["date_formats"] == {"seen": "%d/%m/%Y %H:%M"}  # a first field over 12 is a day
    said = " ".join(proposal.notes["columns"])
    assert "'opened': dates, read as dates" in said and "'seen': dates and times" in said
    assert proposal.config["cv"]["scheme"] == "time" and proposal.config["cv"]["time"] == "opened"
    frame["code"] = rng.choice(["2021-A", "B"], 400)  # not dates
    assert "code" in _roles(frame, "y")["categorical"]


def test_init_on_a_header_line_only_says_so(workdir, settings):
    from trilho.errors import DataValidationError

    (workdir / "header.csv").write_text("a,b,y\n")
    with pytest.raises(DataValidationError, match="no data rows: .* holds a header line only"):  # "single value []"
        init_experiment(f"file:{workdir / 'header.csv'}", settings, target="y")
