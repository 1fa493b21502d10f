import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_file
from trilho import DataValidationError, load_experiment
from trilho.data.clean import clean
from trilho.data.synthetic import diabetes
from trilho.data.tables import read_table
from trilho.data.validate import raise_for_errors, validate

EXP = load_experiment("diabetes")


def frame(rows=200, seed=1) -> pd.DataFrame:
    return diabetes(rows=rows, seed=seed)


def errors_of(df: pd.DataFrame, exp=EXP) -> str:
    report = validate(df, exp)
    with pytest.raises(DataValidationError) as info:
        raise_for_errors(report)
    assert info.value.report is report
    return str(info.value)


def test_real_data_report_matches_the_known_dirt():
    raw = read_table(shared_file("data", "diabetes.csv"))
    report = validate(raw, EXP)
    assert report["errors"] == []
    assert report["rows"] == 1000
    assert report["labels"]["raw_counts"] == {"Y": 840, "N": 102, "P": 53, "Y ": 4, "N ": 1}
    assert report["labels"]["normalised_rows"] == 5
    assert report["class_counts"] == {"N": 103, "Y": 844, "P": 53}
    # 170 rows repeat a whole raw row; the other 4 differ only by a label's trailing space, so once
    # labels are normalised no copy carries a conflicting label
    assert report["duplicates"] == {"rows_duplicating_another": 174, "with_conflicting_label": 0,
                                    "conflicting_lines": []}
    odd = report["out_of_range"]
    assert odd["HbA1c"]["min"] == 0.9 and odd["Chol"]["min"] == 0.0 and odd["Cr"]["max"] == 800
    data = clean(raw, EXP)
    assert list(data.X.columns) == ["Gender", "AGE", "Urea", "Cr", "HbA1c", "Chol", "TG", "HDL", "LDL", "VLDL", "BMI"]
    assert np.bincount(data.y).tolist() == [103, 844, 53]
    assert data.X["AGE"].dtype == "int64"  # integer columns stay integers (SMOTE rounds to the input dtype)


def test_fault_23_unknown_labels_are_listed_with_line_numbers():
    df = frame()
    df.loc[[4, 9], "CLASS"] = ["Q", "maybe"]
    df.loc[5, "CLASS"] = " n "  # normalised, not unknown
    message = errors_of(df)
    assert "2 unknown labels ['Q', 'maybe'] on lines [6, 11]" in message


def test_fault_24_non_numeric_values_name_column_and_line():
    df = frame()
    df["HbA1c"] = df["HbA1c"].astype(object)
    df.loc[2, "HbA1c"] = "1,5"
    df.loc[7, "HbA1c"] = "abc"
    assert "column 'HbA1c' has non-numeric values ['1,5', 'abc'] on lines [4, 9]" in errors_of(df)


def test_unknown_category_is_an_error():
    df = frame()
    df.loc[0, "Gender"] = "X"
    assert "column 'Gender' has values ['X']" in errors_of(df)


def test_fault_25_nan_and_inf_are_rejected_or_dropped_by_policy():
    df = frame()
    df.loc[3, "BMI"] = np.nan
    df.loc[8, "TG"] = np.inf
    assert "2 rows have missing or infinite feature values on lines [5, 10]" in errors_of(df)
    drop = load_experiment("diabetes", ["data.missing=drop"])
    report = validate(df, drop)
    assert report["errors"] == [] and report["nulls"] == {"BMI": 1} and report["infinities"] == {"TG": 1}
    assert clean(df, drop).dropped_rows == 2


def test_class_too_small_for_the_folds():
    df = frame()
    p_rows = df.index[df["CLASS"].str.strip() == "P"]
    df = df.drop(p_rows[2:])
    assert "class 'P' has 2 rows; 5-fold CV needs at least 5" in errors_of(df)


def test_fault_28_class_too_small_for_smote_neighbours():
    df = frame()
    p_rows = df.index[df["CLASS"].str.strip() == "P"]
    df = df.drop(p_rows[6:])
    assert "SMOTE with k_neighbors=5 needs 6" in errors_of(df)
    lowered = load_experiment("diabetes", ["resampler.params.k_neighbors=3"])
    assert validate(df, lowered)["errors"] == []


def test_fault_27_single_class_and_too_few_rows():
    df = frame()
    df["CLASS"] = "Y"
    assert "need at least 2 classes" in errors_of(df)
    assert "fewer than data.min_rows" in errors_of(frame().head(0))


def test_missing_columns_are_named():
    assert "missing columns ['CLASS']" in errors_of(frame().drop(columns=["CLASS"]))


def test_fault_26_duplicates_with_conflicting_labels_are_counted():
    df = frame().drop_duplicates(subset=[c for c in frame().columns if c not in {"ID", "No_Pation", "CLASS"}])
    df = df.reset_index(drop=True)
    copies = df.iloc[[0, 1, 2]].copy()
    copies["CLASS"] = [{"Y": "N"}.get(c.strip(), "Y") for c in copies["CLASS"]]
    report = validate(pd.concat([df, df.iloc[[5]], copies], ignore_index=True), EXP)
    n = len(df)  # file lines are index + 2 (the header is line 1): the originals and their relabelled copies
    assert report["duplicates"] == {"rows_duplicating_another": 4, "with_conflicting_label": 3,
                                    "conflicting_lines": [2, 3, 4, n + 3, n + 4, n + 5]}
    assert f"4 of the {n + 4:,} rows repeat an earlier row's features (3 with a different label)" in report["warnings"]


def test_spellings_of_one_class_are_one_class_and_the_report_says_which_were_merged():
    exp = EXP.model_copy(update={"data": EXP.data.model_copy(update={"labels": {
        "N": 0, "NO": 0, "P": 1, "Y": 2, "YES": 2}})})
    exp = type(EXP).model_validate(exp.model_dump())  # validated as a file's labels would be
    df = frame()
    df.loc[[3, 8], "CLASS"] = ["yes", " No"]
    report = validate(df, exp)
    assert report["errors"] == []
    assert report["labels"]["merged"] == {"N": ["N", "NO"], "Y": ["Y", "YES"]}
    assert set(report["class_counts"]) == {"N", "P", "Y"}
    data = clean(df, exp)
    assert data.y[3] == 2 and data.y[8] == 0
    assert np.bincount(data.y).sum() == len(df)
    df.loc[5, "CLASS"] = "maybe"
    assert "known labels are {'N': ['N', 'NO'], 'P': ['P'], 'Y': ['Y', 'YES']}" in errors_of(df, exp)


def test_missing_markers_are_counted_as_missing_and_cleaned_to_gaps():
    df = frame()
    df["HbA1c"] = df["HbA1c"].astype(object)
    df.loc[[2, 7], "HbA1c"] = ["?", " ? "]
    assert "column 'HbA1c' has non-numeric values" in errors_of(df)  # unknown to the experiment: refused
    data = EXP.model_dump()
    data["data"] = {**data["data"], "missing_markers": [" ? "], "missing": "impute"}
    exp = type(EXP).model_validate(data)
    report = validate(df, exp)
    assert report["errors"] == []
    assert report["missing"]["by_column"]["HbA1c"] == 2
    cleaned = clean(df, exp)
    assert cleaned.X["HbA1c"].isna().sum() == 2 and cleaned.X["HbA1c"].dtype == "float64"
    assert cleaned.spec["markers"] == ["?"]
    assert df.loc[2, "HbA1c"] == "?"  # the raw frame is left as it was


def test_the_logged_models_classes_are_each_class_spelled_as_the_data_spells_it_most():
    """Labels are matched with case and spaces ignored, and the codes are the experiment's; what a
    person sees (the logged model's `prediction` and `proba_<class>` names, from the spec) is each
    class as most of its rows write it, whatever case the experiment file lists it in."""
    from trilho.data.clean import class_names

    exp = EXP.model_copy(update={"data": EXP.data.model_copy(update={"labels": {"N": 0, "NO": 0, "Y": 1, "YES": 1,
                                                                               "P": 2}})})
    df = frame(rows=400)
    labels = np.array(["No"] * 300 + ["no"] * 2 + ["n "] * 40 + ["yes"] * 30 + [" Y"] * 10 + ["p"] * 18)
    df["CLASS"] = labels
    data = clean(df, exp)
    assert data.spec["classes"] == ["No", "yes", "p"]  # "No" (300) and "n " (40) both mean N: the most written
    assert data.y.tolist() == [0] * 342 + [1] * 40 + [2] * 18  # the codes are the experiment's, as before
    assert exp.data.classes == ["N", "Y", "P"]
    # the shipped data spells its classes as its experiment does: nothing changes there
    assert clean(frame(), EXP).spec["classes"] == ["N", "Y", "P"]
    # a tie goes to the experiment's own spelling, then to the first in sort order; no rows: the experiment's
    tied = pd.Series(["Benign", "benign", "Malignant", "malignant"])
    assert class_names(tied, [0, 0, 1, 1], ["benign", "MALIGNANT", "Other"]) == ["benign", "Malignant", "Other"]
    assert class_names(pd.Series([1.0, 0.0, 1.0]), [1, 0, 1], ["0", "1"]) == ["0", "1"]  # numbers read as numbers
