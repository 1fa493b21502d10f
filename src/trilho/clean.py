"""From a validated raw table to model inputs: pure, no I/O.

Labels are normalised and mapped to their codes here; features are only typed (numbers as
numbers, categories as stripped, upper-cased text). What is learned from data (category codes,
fill values for missing ones) is learned inside each training fold by the pipeline's encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trilho.encoding import feature_spec, normalise_text, numeric_column, unmark
from trilho.errors import DataValidationError
from trilho.experiment import Experiment

__all__ = ["CleanData", "clean", "typed_features"]


@dataclass(frozen=True)
class CleanData:
    X: pd.DataFrame
    y: np.ndarray
    spec: dict[str, Any]  # the encoding before any fit (trilho.encoding); the pipeline's encoder learns the rest
    dropped_rows: int

    def curated(self) -> pd.DataFrame:
        """Features and encoded target in one frame, as the curated zone stores them."""
        return self.X.assign(**{"__target__": self.y})


def typed_features(df: pd.DataFrame, features: list[str], categorical: set[str]) -> pd.DataFrame:
    """The feature columns typed: categoricals as normalised text (missing stays missing), the rest
    numeric (integers stay integers; infinite values become missing). Raises ``ValueError`` naming
    a column with text that is not a number."""
    out = {}
    for col in features:
        values = df[col]
        if col in categorical:
            out[col] = normalise_text(values).astype(object).where(values.notna(), None)
            continue
        out[col] = numeric_column(col, values)
    return pd.DataFrame(out, index=df.index)


def clean(df: pd.DataFrame, exp: Experiment) -> CleanData:
    """Drop identifiers, normalise and map labels, type the features, apply the missing-value policy."""
    target = exp.data.target
    features = [c for c in df.columns if c not in {target, *exp.data.drop}]
    maps = exp.data.categorical_maps
    spec = feature_spec(features, maps, exp.data.classes, exp.data.drop, exp.data.missing, exp.data.missing_markers)
    df = unmark(df, features, exp.data.missing_markers)
    y = normalise_text(df[target]).map(exp.data.labels)
    if y.isna().any():
        raise DataValidationError(f"column {target!r} holds labels outside {exp.data.classes}; "
                                  "run validation first")
    try:
        X = typed_features(df, features, set(maps))
    except ValueError as exc:
        raise DataValidationError(str(exc)) from exc
    keep = X.notna().all(axis=1).to_numpy().copy()
    if not keep.all() and exp.data.missing == "reject":
        raise DataValidationError(f"{int((~keep).sum())} rows have missing or infinite values; "
                                  "set data.missing to 'impute', 'native' or 'drop'")
    if exp.data.missing != "drop":
        keep[:] = True
    X = X.loc[keep].reset_index(drop=True)
    return CleanData(X=X, y=y[keep].to_numpy(dtype="int64"), spec=spec, dropped_rows=int((~keep).sum()))
