"""The encoding step of every pipeline: learned inside each training fold, saved as plain JSON.

``TableEncoder`` learns, from the rows it is fitted on only, the categories of the categorical
columns that have no hand-written map and the fill value of every column (the median of a
numeric column, the most frequent code of a categorical one); the transform itself is
``trilho.model.encoding.encode_features``, the same code the logged model runs.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from trilho.model.encoding import (
    days_since_1970,
    encode_features,
    normalise_text,
    numeric_column,
    parse_dates,
    with_calendar,
)

__all__ = ["FILLED", "TableEncoder", "first_day"]

FILLED = frozenset({"impute", "drop"})  # the policies that learn fill values ("drop" fills at prediction only)


def first_day(when: pd.Series) -> float:
    """The first of some date-times, in days since 1970 (0 when none is there)."""
    days = days_since_1970(when)
    return float(days.min()) if days.notna().any() else 0.0


def _ordered(values) -> list[str]:
    """Category values in code order: by value when every one is a number (2 before 10), else as text."""
    values = list(values)
    try:
        return sorted(values, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(values)


class TableEncoder(TransformerMixin, BaseEstimator):
    """Raw feature columns in, numeric columns out, per the spec of ``trilho.model.encoding``."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    def fit(self, X: pd.DataFrame, y: Any = None) -> TableEncoder:
        origins = self.origins(X)
        X = with_calendar(X, {**self.spec, "dates": self.dated(origins)})
        filled = self.spec.get("missing") in FILLED
        counts = {c: normalise_text(X[c]).value_counts() for c in self.spec["categorical"]
                  if filled or self.spec["categorical"][c] is None}
        medians = {c: numeric_column(c, X[c]).astype("float64").median()
                   for c in self.spec["features"] if filled and c not in self.spec["categorical"]}
        self.learned(counts, medians, origins)
        # a column with no value in these rows (a feature recorded only from some date on, in an early
        # forward fold): nothing to learn from it, and some models cannot bin a column of gaps alone
        # (HistGradientBoosting); it reads as one constant in this fit's rows, as a filled gap does
        self.blank_ = [c for c in self.spec["features"] if c in X and X[c].isna().all()] if not filled else []
        return self

    def origins(self, X: pd.DataFrame) -> dict[str, float]:
        """Per date column, the day its ``days`` part counts from: the training rows' ``first_day``."""
        return {col: first_day(parse_dates(col, X[col], how.get("format")))
                for col, how in (self.spec.get("dates") or {}).items()}

    def dated(self, origins: dict[str, float]) -> dict[str, Any]:
        """The spec's date columns with their learned origins."""
        return {col: {**how, "origin": origins.get(col, 0.0)} for col, how in (self.spec.get("dates") or {}).items()}

    def learned(self, counts: dict[str, pd.Series], medians: dict[str, float],
                origins: dict[str, float] | None = None) -> TableEncoder:
        """Set the learned state from summaries of the training rows, however they were computed
        (this process's pandas, or a Dask cluster's partitions): ``counts`` the normalised values of
        the categorical columns with their counts, ``medians`` the median of each numeric column."""
        spec = copy.deepcopy(self.spec)
        if spec.get("dates"):
            spec["dates"] = self.dated(origins or {})
        fill: dict[str, float] = {}
        filled = spec.get("missing") in FILLED
        for col in spec["features"]:
            mapping = spec["categorical"].get(col, False)
            if mapping is None:  # learned from this fold: sorted, so the codes do not depend on row order
                seen = counts[col][counts[col] > 0].index
                mapping = spec["categorical"][col] = {v: i for i, v in enumerate(_ordered(map(str, seen)))}
            if not filled:  # "reject" refuses a gap, "native" hands it to the model
                continue
            if mapping is False:
                centre = medians[col]
            else:  # the most frequent code; a tie goes to the smallest code, whatever the row order
                found = pd.Series(counts[col].to_numpy(), index=pd.Index(counts[col].index).map(
                    lambda v, codes=mapping: codes.get(str(v)))).dropna()
                found = found.groupby(level=0).sum()
                centre = float(found[found == found.max()].index.min()) if found.sum() > 0 else 0.0
            fill[col] = 0.0 if pd.isna(centre) else float(centre)
        spec["fill"] = fill
        self.spec_ = spec
        self.n_features_in_ = len(spec["features"])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out = encode_features(X, self.spec_)
        blank = getattr(self, "blank_", [])
        return out.assign(**dict.fromkeys(blank, 0.0)) if blank else out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.spec["features"], dtype=object)
