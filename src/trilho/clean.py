"""From a validated raw table to model inputs: pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trilho.encoding import encode_features, feature_spec, normalise_text
from trilho.errors import DataValidationError
from trilho.experiment import Experiment

__all__ = ["CleanData", "clean"]


@dataclass(frozen=True)
class CleanData:
    X: pd.DataFrame
    y: np.ndarray
    spec: dict[str, Any]
    dropped_rows: int

    def curated(self) -> pd.DataFrame:
        """Features and encoded target in one frame, as the curated zone stores them."""
        return self.X.assign(**{"__target__": self.y})


def clean(df: pd.DataFrame, exp: Experiment) -> CleanData:
    """Drop identifiers, normalise and map labels, encode categoricals, apply the non-finite policy."""
    target = exp.data.target
    features = [c for c in df.columns if c not in {target, *exp.data.drop}]
    spec = feature_spec(features, exp.data.categorical, exp.data.classes, exp.data.drop)
    y = normalise_text(df[target]).map(exp.data.labels)
    if y.isna().any():
        raise DataValidationError(f"column {target!r} holds labels outside {exp.data.classes}; "
                                  "run validation first")
    try:
        X = encode_features(df, spec)
    except ValueError as exc:
        raise DataValidationError(str(exc)) from exc
    keep = np.isfinite(X.to_numpy(dtype="float64")).all(axis=1)
    if not keep.all() and exp.data.nonfinite == "reject":
        raise DataValidationError(f"{int((~keep).sum())} rows have missing or infinite values; "
                                  "set data.nonfinite='drop' to drop them")
    X = X.loc[keep].reset_index(drop=True)
    return CleanData(X=X, y=y[keep].to_numpy(dtype="int64"), spec=spec, dropped_rows=int((~keep).sum()))
