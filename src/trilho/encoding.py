"""Turn raw feature columns into model inputs; shared by training and by the logged model.

This module depends on pandas and numpy only, so that it can travel inside a logged model
(MLflow ``code_paths``) and run where trilho is not installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["booster_outputs", "encode_features", "feature_spec", "normalise_text"]


def normalise_text(values: pd.Series) -> pd.Series:
    """Strip surrounding whitespace and upper-case, keeping missing values missing."""
    return values.astype("string").str.strip().str.upper()


def feature_spec(features: list[str], categorical: dict[str, dict[str, int]], classes: list[str],
                 identifiers: list[str] | None = None) -> dict[str, Any]:
    """The plain-data description of the encoding, saved beside a logged model.

    ``identifiers`` are the columns that name a row (not features): batch predictions keep them.
    """
    return {
        "features": list(features),
        "categorical": {c: {k.strip().upper(): int(v) for k, v in m.items()} for c, m in categorical.items()},
        "classes": list(classes),
        "identifiers": list(identifiers or []),
    }


def encode_features(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Select the spec's feature columns in order and encode categoricals to their codes.

    Numeric columns keep the dtype pandas gave them (integers stay integers, which matters for
    resamplers that round synthetic rows back to the input dtype). Raises ``ValueError`` naming
    the column and the values when something cannot be encoded.
    """
    missing = [c for c in spec["features"] if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature columns {missing}; expected {spec['features']}")
    out = {}
    for col in spec["features"]:
        values = df[col]
        mapping = spec["categorical"].get(col)
        if mapping is not None:
            normal = normalise_text(values)
            codes = normal.map(mapping)
            bad = normal[codes.isna()]
            if len(bad):
                raise ValueError(
                    f"column {col!r} has values {sorted(map(str, bad.unique()))[:10]} outside "
                    f"{sorted(mapping)}"
                )
            out[col] = codes.astype("int64")
        elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out[col] = values
        else:
            converted = pd.to_numeric(values, errors="coerce")
            bad = values[converted.isna() & values.notna()]
            if len(bad):
                raise ValueError(
                    f"column {col!r} has non-numeric values {sorted(map(str, bad.unique()))[:10]}"
                )
            out[col] = converted
    return pd.DataFrame(out, index=df.index)


def booster_outputs(booster: Any, frame: pd.DataFrame, spec: dict[str, Any], output: str = "both"):
    """What the logged model returns for raw rows: labels, probabilities, or both.

    ``booster`` is an XGBoost Booster (only its ``inplace_predict`` is used, so this module needs no
    XGBoost import). ``output="labels"`` gives a Series named ``prediction`` in the data's own terms,
    ``"proba"`` one ``proba_<class>`` column per class, ``"both"`` the label then the probabilities.
    """
    if output not in ("both", "labels", "proba"):
        raise ValueError(f"params output={output!r}: use 'both', 'labels' or 'proba'")
    X = encode_features(pd.DataFrame(frame), spec)
    proba = np.asarray(booster.inplace_predict(X.to_numpy(dtype=np.float32)), dtype="float64")
    if proba.ndim == 1:  # binary objectives give P(class 1)
        proba = np.column_stack([1.0 - proba, proba])
    classes = np.asarray(spec["classes"], dtype=object)
    labels = pd.Series(classes[proba.argmax(axis=1)], name="prediction", index=X.index)
    if output == "labels":
        return labels
    table = pd.DataFrame(proba, columns=[f"proba_{c}" for c in classes], index=X.index)
    return table if output == "proba" else pd.concat([labels, table], axis=1)
