"""What a logged model answers: the classes' probabilities (calibrated by the map a run fitted),
the class each row gets (the argmax, or the decision rule's threshold or costs), and each feature's
share of an answer. The output half of the model's own code, beside ``encoding`` (its input half).

Like ``encoding``, this module depends on pandas and numpy only and travels inside every logged
model (MLflow ``code_paths``), where it imports ``encoding`` by its file name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

try:  # a loaded model finds encoding.py beside this file in its code/ folder (code_paths)
    from encoding import encode_features, encode_matrix
except ImportError:  # inside trilho: the package's own copy
    from trilho.model.encoding import encode_features, encode_matrix

__all__ = ["answers", "calibrated", "check_output", "class_probabilities", "decided", "explained_class", "explanations",
           "in_target_units", "model_outputs", "predicted_values", "value_answers"]


def calibrated(proba: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """The probabilities through the model's calibration map (none: as they are). Two classes: the
    map of the second class's probability, the first its complement. More: one map per class, one
    vs rest, the rows renormalised (a row mapped to all zeros becomes uniform). A map is
    ``{"a", "b"}`` (sigmoid of a * logit(p) + b) or ``{"x", "y"}`` (isotonic: a step function,
    linear between its knots)."""
    if not calibration:
        return proba

    def one(p: np.ndarray, m: dict[str, Any]) -> np.ndarray:
        if "a" in m:
            q = np.clip(p, 1e-12, 1 - 1e-12)
            return 1.0 / (1.0 + np.exp(-(m["a"] * np.log(q / (1 - q)) + m["b"])))
        return np.interp(p, m["x"], m["y"])

    maps = calibration["maps"]
    if proba.shape[1] == 2:
        p1 = one(proba[:, 1], maps[0])
        return np.column_stack([1.0 - p1, p1])
    out = np.column_stack([one(proba[:, k], m) for k, m in enumerate(maps)])
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / out.shape[1])


def decided(proba: np.ndarray, decision: dict[str, Any] | None) -> np.ndarray:
    """Each row's class code as the model was logged to decide: the most probable class, a
    threshold on the positive class's probability (``{"positive", "threshold"}``), or the class of
    least expected cost (``{"costs"}``, costs[true][predicted]). Models logged without a decision
    answer with the most probable class, as they always did."""
    if not decision:
        return proba.argmax(axis=1)
    if decision.get("objective") == "costs":
        return (proba @ np.asarray(decision["costs"], dtype="float64")).argmin(axis=1)
    positive = int(decision["positive"])
    return np.where(proba[:, positive] >= float(decision["threshold"]), positive, 1 - positive)


def model_outputs(proba_fn: Callable[[Any], np.ndarray], frame: pd.DataFrame, spec: dict[str, Any],
                  output: str = "both", matrix: bool = False, records: bool = False,
                  explainer: Callable[..., dict[str, np.ndarray]] | None = None):
    """What the logged model returns for raw rows: labels, probabilities, or both.

    ``proba_fn`` maps encoded rows to class probabilities (one column per class, in ``classes``
    order; a single column is P(second class)); it is given ``encode_matrix``'s float matrix when
    ``matrix`` (XGBoost's boosters), else ``encode_features``'s frame (scikit-learn estimators,
    fitted on frames). ``output="labels"`` gives a Series named ``prediction`` in the data's own
    terms, ``"proba"`` one ``proba_<class>`` column per class, ``"both"`` the label then the
    probabilities. ``explainer(X, probabilities, codes)`` (the encoded rows, the function from
    encoded rows to calibrated probabilities, each row's class code) gives columns to add after
    them: each feature's contribution to the row's answer (``explanations``).
    """
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    check_output(output, spec)
    X = encode_matrix(frame, spec) if matrix else encode_features(frame, spec)
    return answers(proba_fn, X, spec, output, records=records, explainer=explainer, index=frame.index)


def check_output(output: str, spec: dict[str, Any] | None = None) -> None:
    """Refuse an ``output`` parameter the model does not know, naming the ones it does."""
    if spec is not None and spec.get("task") == "regression" and output == "proba":
        raise ValueError("params output='proba': this model predicts a number, with no class probabilities; use "
                         "'both' (the prediction and its interval) or 'labels' (the prediction alone)")
    if output not in ("both", "labels", "proba"):
        raise ValueError(f"params output={output!r}: use 'both', 'labels' or 'proba'")


def predicted_values(predict_fn: Callable[[Any], np.ndarray], X: Any, spec: dict[str, Any]) -> np.ndarray:
    """A regression model's predicted values of encoded rows, in the target's units."""
    return in_target_units(predict_fn(X), spec.get("target_scale", "identity"), float(spec.get("smear", 1.0)))


def in_target_units(raw: Any, scale: str, smear: float = 1.0) -> np.ndarray:
    """A regression model's own outputs in the target's units: a model fit on the target's log
    (``scale`` "log") taken back with its smearing factor (trilho.model.catalog.fit_regressor)."""
    values = np.asarray(raw, dtype="float64").reshape(-1)
    return np.exp(values) * smear if scale == "log" else values


def value_answers(values: np.ndarray, spec: dict[str, Any], output: str = "both", records: bool = False,
                  extra: dict[str, np.ndarray] | None = None, index: Any = None):
    """What a regression model returns: ``prediction``, and with ``output="both"`` the interval
    ``lower`` and ``upper`` (the prediction plus or minus the half-width the run measured at its
    level: trilho.evaluation.conformal), then any explanation columns."""
    out: dict[str, Any] = {"prediction": values}
    interval = spec.get("interval")
    if output == "both" and interval:
        half = float(interval["half_width"])
        out |= {"lower": values - half, "upper": values + half}
    out |= extra or {}
    if records:
        listed = {k: np.asarray(v).tolist() for k, v in out.items()}
        return [{k: v[i] for k, v in listed.items()} for i in range(len(values))]
    if output == "labels" and not extra:
        return pd.Series(values, name="prediction", index=index)
    return pd.DataFrame(out, index=index)


def class_probabilities(proba_fn: Callable[[Any], np.ndarray], X: Any, spec: dict[str, Any]) -> np.ndarray:
    """The model's calibrated class probabilities of encoded rows, one column per class."""
    found = np.asarray(proba_fn(X), dtype="float64")
    if found.ndim == 1:  # binary objectives give P(class 1)
        found = np.column_stack([1.0 - found, found])
    return calibrated(found, spec.get("calibration"))


def answers(proba_fn: Callable[[Any], np.ndarray], X: Any, spec: dict[str, Any], output: str = "both",
            records: bool = False, explainer: Callable[..., dict[str, np.ndarray]] | None = None,
            index: Any = None, proba: np.ndarray | None = None):
    """``model_outputs`` of rows already encoded (``X``); ``proba``: their class probabilities where
    they were already computed (with other rows, in one call: a served batch; a regression's values)."""
    if spec.get("task") == "regression":
        values = predicted_values(proba_fn, X, spec) if proba is None else np.asarray(proba, dtype="float64")
        extra = explainer(X, lambda rows: predicted_values(proba_fn, rows, spec), values) if explainer else None
        return value_answers(values, spec, output, records, extra, index)
    probabilities = lambda rows: class_probabilities(proba_fn, rows, spec)
    proba = probabilities(X) if proba is None else proba
    classes = np.asarray(spec["classes"], dtype=object)
    codes = decided(proba, spec.get("decision"))
    labels = classes[codes]
    extra = explainer(X, probabilities, codes) if explainer is not None else {}
    if records:
        names = [f"proba_{c}" for c in classes] if output != "labels" else []
        rows = [dict(zip(names, p, strict=True)) for p in proba.tolist()] if names else [{} for _ in labels]
        if output != "proba":
            rows = [{"prediction": label, **row} for label, row in zip(labels.tolist(), rows, strict=True)]
        if extra:
            listed = {k: np.asarray(v).tolist() for k, v in extra.items()}
            rows = [{**row, **{k: v[i] for k, v in listed.items()}} for i, row in enumerate(rows)]
        return rows
    if output == "labels" and not extra:
        return pd.Series(labels, name="prediction", index=index)
    columns = {} if output == "labels" else {f"proba_{c}": proba[:, i] for i, c in enumerate(classes)}
    out = columns if output == "proba" else {"prediction": labels, **columns}
    return pd.DataFrame({**out, **extra}, index=index)


def explained_class(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """The class each row's explanation is about: the second class for two (the positive one, whose
    probability a threshold is on), the predicted class for more."""
    return np.ones(len(codes), dtype=np.int64) if n_classes == 2 else np.asarray(codes, dtype=np.int64)


def explanations(contributions: np.ndarray, spec: dict[str, Any], which: np.ndarray,
                 base: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The columns an explanation adds: ``contrib_<feature>`` (one per feature, in the spec's
    order), ``base_value`` where the contributions add up to the answer from it, and
    ``explained_class``, the class they are about."""
    out = {f"contrib_{c}": contributions[:, j] for j, c in enumerate(spec["features"])}
    if base is not None:
        out["base_value"] = base
    if not spec["classes"]:  # a regression: about the predicted value
        return out
    out["explained_class"] = np.asarray(spec["classes"], dtype=object)[which]
    return out
