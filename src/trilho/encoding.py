"""Turn raw feature columns into model inputs; shared by training and by the logged model.

This module depends on pandas and numpy only, so that it can travel inside a logged model
(MLflow ``code_paths``) and run where trilho is not installed. The spec it reads is plain JSON:

- ``features``: the feature columns, in order;
- ``categorical``: per categorical column, its ``{VALUE: code}`` map (values stripped and
  upper-cased), or ``null`` before the categories are learned from a training fold;
- ``missing``: the policy (``impute``, ``native``, ``drop``, ``reject``) and ``fill``: per column
  the value a missing one becomes (the training fold's median, or its most frequent code);
- ``classes``: the label names in the order of the model's outputs; ``identifiers``: the columns
  that name a row (batch predictions keep them).

A category never seen in training, like a missing value, gets the column's fill value (or stays
missing for a model that handles it natively): every row gets a prediction unless the policy is
``reject``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["encode_features", "feature_spec", "model_outputs", "normalise_map", "normalise_text", "numeric_column",
           "unseen_counts"]


def normalise_text(values: pd.Series) -> pd.Series:
    """Strip surrounding whitespace and upper-case, keeping missing values missing.

    Whole numbers read as floats (an integer column with a missing value) read as the integers
    they are: the code 2 is "2" whether or not its column had a gap.
    """
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(dtype="float64")
        finite = numbers[np.isfinite(numbers)]
        if np.array_equal(finite, np.round(finite)) and not np.isinf(numbers).any():
            values = values.astype("Int64")
    return values.astype("string").str.strip().str.upper()


def normalise_map(mapping: dict[str, int]) -> dict[str, int]:
    """A hand-written code map in the same spelling as the values it meets (stripped, upper-cased)."""
    return {str(k).strip().upper(): int(v) for k, v in mapping.items()}


def feature_spec(features: list[str], categorical: dict[str, dict[str, int] | None], classes: list[str],
                 identifiers: list[str] | None = None, missing: str = "reject") -> dict[str, Any]:
    """The plain-data description of the encoding (before any fit: learned maps are ``None``)."""
    return {
        "features": list(features),
        "categorical": {c: (None if m is None else normalise_map(m)) for c, m in categorical.items()},
        "classes": list(classes),
        "identifiers": list(identifiers or []),
        "missing": missing,
        "fill": {},
    }


def numeric_column(col: str, values: pd.Series) -> pd.Series:
    """A column as numbers (its own dtype kept when already numeric), infinite values as missing;
    ``ValueError`` naming the column and its non-numeric values."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        converted = values
    else:
        converted = pd.to_numeric(values, errors="coerce")
        bad = values[converted.isna() & values.notna()]
        if len(bad):
            raise ValueError(f"column {col!r} has non-numeric values {sorted(map(str, bad.unique()))[:10]}")
    if pd.api.types.is_float_dtype(converted) and np.isinf(converted.to_numpy(dtype="float64")).any():
        converted = converted.replace([np.inf, -np.inf], np.nan)  # infinite is as unknown as missing
    return converted


def codes(col: str, values: pd.Series, mapping: dict[str, int]) -> pd.Series:
    """A categorical column as codes; missing and unseen values become NaN."""
    return normalise_text(values).map(mapping).astype("float64")


def encode_features(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Select the spec's feature columns in order, encode categoricals, apply the missing policy.

    Numeric columns keep the dtype pandas gave them when nothing is filled (integers stay integers,
    which matters for resamplers that round synthetic rows back to the input dtype); codes are
    integers once complete. Raises ``ValueError`` naming the column and values it cannot encode.
    """
    missing = [c for c in spec["features"] if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature columns {missing}; expected {spec['features']}")
    policy, fill = spec.get("missing", "reject"), spec.get("fill", {})
    out = {}
    for col in spec["features"]:
        mapping = spec["categorical"].get(col, False)
        if mapping is False:
            values = numeric_column(col, df[col])
        elif mapping is None:
            raise ValueError(f"column {col!r}: categories not learned yet (fit the encoder first)")
        else:
            values = codes(col, df[col], mapping)
        if values.hasnans:
            if policy == "reject":
                rows = np.flatnonzero(values.isna().to_numpy())[:10].tolist()
                raise ValueError(f"column {col!r} has {int(values.isna().sum())} missing, infinite or unknown "
                                 f"values (rows {rows}) and the model's missing-value policy is 'reject'")
            if policy != "native" and col in fill:
                values = values.fillna(fill[col])
        if mapping is not False and not values.hasnans:
            values = values.astype("int64")
        out[col] = values
    return pd.DataFrame(out, index=df.index)


def unseen_counts(df: pd.DataFrame, spec: dict[str, Any]) -> dict[str, int]:
    """Per categorical column, how many values the model never saw in training (missing ones apart)."""
    out = {}
    for col, mapping in spec["categorical"].items():
        if col in df.columns and mapping:
            normal = normalise_text(df[col])
            n = int((normal.notna() & ~normal.isin(list(mapping))).sum())
            if n:
                out[col] = n
    return out


def model_outputs(proba_fn: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, spec: dict[str, Any],
                  output: str = "both"):
    """What the logged model returns for raw rows: labels, probabilities, or both.

    ``proba_fn`` maps encoded rows to class probabilities (one column per class, in ``classes``
    order; a single column is P(second class)). ``output="labels"`` gives a Series named
    ``prediction`` in the data's own terms, ``"proba"`` one ``proba_<class>`` column per class,
    ``"both"`` the label then the probabilities.
    """
    if output not in ("both", "labels", "proba"):
        raise ValueError(f"params output={output!r}: use 'both', 'labels' or 'proba'")
    X = encode_features(pd.DataFrame(frame), spec)
    proba = np.asarray(proba_fn(X), dtype="float64")
    if proba.ndim == 1:  # binary objectives give P(class 1)
        proba = np.column_stack([1.0 - proba, proba])
    classes = np.asarray(spec["classes"], dtype=object)
    labels = pd.Series(classes[proba.argmax(axis=1)], name="prediction", index=X.index)
    if output == "labels":
        return labels
    table = pd.DataFrame(proba, columns=[f"proba_{c}" for c in classes], index=X.index)
    return table if output == "proba" else pd.concat([labels, table], axis=1)


def booster_outputs(booster: Any, frame: pd.DataFrame, spec: dict[str, Any], output: str = "both"):
    """``model_outputs`` of an XGBoost Booster (only its ``inplace_predict`` is used)."""
    return model_outputs(lambda X: booster.inplace_predict(X.to_numpy(dtype=np.float32)), frame, spec, output)
