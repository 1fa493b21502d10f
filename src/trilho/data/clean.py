"""From a validated raw table to model inputs: pure, no I/O.

Labels are normalised and mapped to their codes here, and each class gets the name its rows
spell it by most (``class_names``: what the logged model's outputs are named by); features are
only typed (numbers as numbers, categories as stripped, upper-cased text). What is learned from
data (category codes, fill values for missing ones) is learned inside each training fold by the
pipeline's encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trilho.errors import DataValidationError
from trilho.experiment import Experiment
from trilho.model.encoding import (
    encoded_names,
    feature_spec,
    missing_words,
    normalise_text,
    numeric_column,
    parse_dates,
    unmark,
)

__all__ = ["CleanData", "as_written", "class_names", "clean", "typed_features", "unlabelled"]


@dataclass(frozen=True)
class CleanData:
    X: pd.DataFrame
    y: np.ndarray
    # the encoding before any fit (trilho.model.encoding); the pipeline's encoder learns the rest. Its
    # "classes" are the names the logged model gives its outputs: ``class_names`` of these rows
    spec: dict[str, Any]
    dropped_rows: int
    # evaluation.groups (and cv.group): each group column as the data writes it, one row per row of X
    # (a column the model does not use, such as one in data.drop, may split the metrics too)
    group_columns: pd.DataFrame | None = None
    # rows whose label is missing (an empty cell, "NA", a marker): left out before anything else
    unlabelled_rows: int = 0
    # rows whose cv.time date is missing (forward folds cannot place them): left out, counted
    undated_rows: int = 0

    def curated(self) -> pd.DataFrame:
        """Features and encoded target in one frame, as the curated zone stores them."""
        return self.X.assign(**{"__target__": self.y})


def as_written(values: pd.Series) -> pd.Series:
    """Values as the data writes them, only stripped (missing stays missing): the spelling a person
    reads, where ``normalise_text`` (stripped and upper-cased) is the one matching uses. Numbers read
    as numbers are written as ``normalise_text`` writes them (2.0 in a column with a gap is "2")."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return normalise_text(values)
    return values.astype("string").str.strip()


def class_names(labels: pd.Series, y: pd.Series | np.ndarray, classes: list[str]) -> list[str]:
    """Per class code, the spelling of it that most of its rows use (stripped, case kept: 300
    "Benign" and 2 "benign" are "Benign"): the names the logged model gives its outputs. ``labels``:
    the raw label column; ``y``: each row's code; ``classes``: the experiment's names, which win a
    tie (then the first in sort order) and name a class that has no rows."""
    pairs = pd.DataFrame({"code": np.asarray(y, dtype="int64"), "raw": labels.to_numpy()})
    found = pairs.value_counts(sort=False)  # each distinct raw value once, then spelled
    shown = as_written(pd.Series(found.index.get_level_values("raw"), dtype=labels.dtype)).to_numpy(dtype=object)
    tally = pd.Series(found.to_numpy()).groupby([found.index.get_level_values("code").to_numpy(), shown]).sum()
    best: dict[int, tuple[int, bool, str]] = {}
    for pair, n in tally.items():
        code, spelled = int(pair[0]), str(pair[1])  # type: ignore[index]
        key = (-int(n), spelled != classes[code], spelled)
        best[code] = min(best.get(code, key), key)
    return [best[code][2] if code in best else name for code, name in enumerate(classes)]


def unlabelled(df: pd.DataFrame, exp: Experiment) -> np.ndarray:
    """Where the label is missing: an empty cell, a word the writers use for a missing value (``NA``)
    or one of data.missing_markers, unless data.labels names that word as a class. Such rows are
    left out of training and scoring, and counted."""
    values = df[exp.data.target]
    words = [w for w in exp.data.written_missing if w.upper() not in exp.data.codes]
    markers = [m for m in exp.data.missing_markers if m not in exp.data.codes]
    return values.isna().to_numpy(dtype=bool) | missing_words(values, markers, words)


def typed_features(df: pd.DataFrame, features: list[str], categorical: set[str],
                   dates: dict[str, str | None] | None = None) -> pd.DataFrame:
    """The feature columns typed: categoricals as normalised text (missing stays missing), dates
    (``dates``: per column its format) as date-times, the rest numeric (integers stay integers;
    infinite values become missing). Raises ``ValueError`` naming a column with text that is not a
    number, or not a date."""
    out = {}
    for col in features:
        values = df[col]
        if dates and col in dates:
            out[col] = parse_dates(col, values, dates[col])
            continue
        if col in categorical:
            out[col] = normalise_text(values).astype(object).where(values.notna(), None)
            continue
        out[col] = numeric_column(col, values)
    return pd.DataFrame(out, index=df.index)


def _dated_spec(spec: dict[str, Any], features: list[str], exp: Experiment) -> dict[str, str | None]:
    """The date columns into the spec (their parts and formats; the caller's columns as ``inputs``,
    the model's as ``features``); per date column, its format."""
    formats = {c: exp.data.date_formats.get(c) for c in exp.data.date_parts}
    if formats:
        missing_dates = sorted(set(formats) - set(features))
        if missing_dates:
            raise DataValidationError(f"data.dates names {missing_dates}, which the data has no column for; "
                                      f"its columns are {features}")
        spec["dates"] = {c: {"parts": exp.data.date_parts[c], "format": f} for c, f in formats.items()}
        spec["inputs"] = features
        spec["features"] = encoded_names(features, spec["dates"])
    return formats


def clean(df: pd.DataFrame, exp: Experiment) -> CleanData:
    """Drop identifiers, normalise and map labels, type the features, apply the missing-value policy."""
    target = exp.data.target
    features = [c for c in df.columns if c not in {target, *exp.data.drop}]
    maps = exp.data.categorical_maps
    gone = unlabelled(df, exp)
    df = df.loc[~gone] if gone.any() else df
    df = unmark(df, features, exp.data.missing_markers, exp.data.written_missing)
    if exp.regression:
        try:
            y = numeric_column(target, df[target]).astype("float64")
        except ValueError as exc:
            raise DataValidationError(f"{exc}: the target of a regression is a number; run validation first") from None
        if y.isna().any():
            raise DataValidationError(f"column {target!r} holds infinite values; run validation first")
        names: list[str] = []
    else:
        y = normalise_text(df[target]).map(exp.data.codes)
        if y.isna().any():
            raise DataValidationError(f"column {target!r} holds labels outside {exp.data.classes}; "
                                      "run validation first")
        names = class_names(df[target], y, exp.data.classes)
    spec = feature_spec(features, maps, names, exp.data.drop, exp.data.missing, exp.data.missing_markers,
                        exp.data.written_missing)
    formats = _dated_spec(spec, features, exp)
    if exp.regression:
        spec["task"] = "regression"
        spec["target"] = target
        spec["target_scale"] = exp.data.target_scale
    try:
        X = typed_features(df, features, set(maps), formats)
    except ValueError as exc:
        raise DataValidationError(str(exc)) from exc
    keep = X.notna().all(axis=1).to_numpy().copy()
    if not keep.all() and exp.data.missing == "reject":
        raise DataValidationError(f"{int((~keep).sum())} rows have missing or infinite values; "
                                  "set data.missing to 'impute', 'native' or 'drop'")
    if exp.data.missing != "drop":
        keep[:] = True
    undated = 0
    if exp.time_column is not None:  # forward folds cannot place a row without its time: left out, counted
        dated = X[exp.time_column].notna().to_numpy()
        undated = int((keep & ~dated).sum())
        keep &= dated
    X = X.loc[keep].reset_index(drop=True)
    found = None
    wanted = list(dict.fromkeys([*exp.evaluation.groups, *([exp.cv.group] if exp.cv.group else [])]))
    if wanted:
        found = df.loc[keep, wanted].reset_index(drop=True)
        found = found.assign(**{c: as_written(found[c]) for c in found.columns})
    kept = y[keep].to_numpy(dtype="float64" if exp.regression else "int64")
    return CleanData(X=X, y=kept, spec=spec, dropped_rows=int((~keep).sum()),
                     group_columns=found, unlabelled_rows=int(gone.sum()), undated_rows=undated)
