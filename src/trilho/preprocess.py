"""The encoding step of every pipeline: learned inside each training fold, saved as plain JSON.

``TableEncoder`` learns, from the rows it is fitted on only, the categories of the categorical
columns that have no hand-written map and the fill value of every column (the median of a
numeric column, the most frequent code of a categorical one); the transform itself is
``trilho.encoding.encode_features``, the same code the logged model runs.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from trilho.encoding import codes, encode_features, normalise_text, numeric_column

__all__ = ["TableEncoder"]


class TableEncoder(TransformerMixin, BaseEstimator):
    """Raw feature columns in, numeric columns out, per the spec of ``trilho.encoding``."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    def fit(self, X: pd.DataFrame, y: Any = None) -> TableEncoder:
        spec = copy.deepcopy(self.spec)
        fill: dict[str, float] = {}
        filled = spec.get("missing") in {"impute", "drop"}  # "drop" fills at prediction time only
        for col in spec["features"]:
            mapping = spec["categorical"].get(col, False)
            if mapping is None:  # learned from this fold: sorted, so the codes do not depend on row order
                seen = normalise_text(X[col]).dropna().unique()
                mapping = spec["categorical"][col] = {str(v): i for i, v in enumerate(sorted(seen))}
            if not filled:  # "reject" refuses a gap, "native" hands it to the model
                continue
            if mapping is False:
                centre = numeric_column(col, X[col]).astype("float64").median()
            else:
                found = codes(col, X[col], mapping).dropna()
                centre = float(found.value_counts().idxmax()) if len(found) else 0.0
            fill[col] = 0.0 if pd.isna(centre) else float(centre)
        spec["fill"] = fill
        self.spec_ = spec
        self.n_features_in_ = len(spec["features"])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return encode_features(X, self.spec_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.spec["features"], dtype=object)
