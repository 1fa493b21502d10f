"""The files of a model before it is logged: the fitted encoding as JSON, the classifier without
pickle (XGBoost's own file, or skops with the exact types it may hold), the reference row its
explanations start from, and the training profile ``trilho monitor`` holds served rows against.

``trilho.tracking.model`` logs these files to MLflow and loads them back; this module only writes them.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pandas as pd

from trilho.errors import StorageError
from trilho.model.code import servable

__all__ = ["REFERENCE_ROWS", "reference_row", "save_model_files"]


REFERENCE_ROWS = 10_000  # training rows, at most, that give the reference row of an explanation


def reference_row(encoder: Any, X: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Each feature's typical training value, encoded: the median of a number, the most frequent
    code of a category (missing values aside; a column with none gets 0). What a model that has
    no TreeSHAP of its own sets a feature to, to see how much the feature moved its answer."""
    import numpy as np

    if len(X) > REFERENCE_ROWS:
        X = X.sample(REFERENCE_ROWS, random_state=seed)
    encoded = encoder.transform(X)
    out = {}
    for col in encoded.columns:
        values = encoded[col].dropna()
        if not len(values):
            out[col] = 0.0
        elif col in encoder.spec_["categorical"]:
            counts = values.value_counts()
            out[col] = float(counts[counts == counts.max()].index.min())
        else:
            out[col] = float(np.median(values.to_numpy(dtype="float64")))
    return out


def save_model_files(pipeline: Any, spec: dict[str, Any], folder: Path, background: pd.DataFrame | None = None) -> Path:
    """The fitted encoding as JSON and the fitted classifier without pickle: XGBoost's own file, or
    skops for every other family (with what it needs to be trusted); the resampler stays behind.
    ``background``: training rows, whose typical values (``reference_row``) the model explains
    its answers against when it has no TreeSHAP."""
    from trilho.model import catalog as models

    steps = models.serving_steps(pipeline)
    if "encode" in pipeline.named_steps:
        own: dict[str, Any] = {k: spec[k] for k in ("task", "target", "interval") if k in spec}  # a regression's
        if getattr(pipeline, "target_scale_", "identity") == "log":  # fit on the log: taken back with its factor
            own |= {"target_scale": "log", "smear": float(pipeline.smear_)}
        spec = {**pipeline.named_steps["encode"].spec_, "classes": spec["classes"], "identifiers": spec["identifiers"],
                **own}
    if hasattr(pipeline, "rule_"):  # a calibration map or decision rule (evaluation.decision.Decided): the model applies them
        spec = {**spec, **pipeline.spec()}
    folder.mkdir(parents=True, exist_ok=True)
    estimator = steps[-1][1]
    from xgboost import XGBModel

    if len(steps) == 1 and isinstance(estimator, XGBModel):  # class-weighted ones too: weights act in fit only
        spec = {**spec, "format": "xgboost", "file": "booster.ubj"}
        _write(folder / spec["file"], lambda path: estimator.get_booster().save_model(path))
    else:
        import skops.io
        from sklearn.pipeline import Pipeline

        package = type(estimator).__module__.split(".")[0]
        spec = {**spec, "format": "skops", "file": "classifier.skops",
                "trusted_packages": [] if package in {"sklearn"} else [package],
                "requirements": [] if package in {"sklearn"} else [_distribution(package)]}
        if background is not None and "encode" in pipeline.named_steps:  # XGBoost explains by TreeSHAP instead
            spec["reference"] = reference_row(pipeline.named_steps["encode"], background)
        _write(folder / spec["file"], lambda path: skops.io.dump(estimator if len(steps) == 1 else Pipeline(steps), path))
        # the exact types the file holds beyond skops' defaults: loading trusts these and nothing else
        spec["skops_types"] = sorted(skops.io.get_untrusted_types(file=folder / spec["file"]))
    if background is not None and len(background):
        spec["profile"] = _profile(spec, folder / spec["file"], background)
    _write(folder / "spec.json", lambda path: path.write_text(json.dumps(spec, indent=2)))
    return folder


def _profile(spec: dict[str, Any], classifier: Path, X: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """The training rows' profile (``trilho.monitoring.traffic``), which ``trilho monitor`` holds served rows
    against: up to ``REFERENCE_ROWS`` of them, with the classes the saved model itself predicts."""
    from trilho.model.answers import class_probabilities, decided, predicted_values
    from trilho.model.encoding import encode_features, encode_matrix, input_columns
    from trilho.monitoring.traffic import training_profile

    if len(X) > REFERENCE_ROWS:
        X = X.sample(REFERENCE_ROWS, random_state=seed)
    X = X[input_columns(spec)]
    working = dict(spec)  # the encoders remember layouts in the spec they are given: not in the file's
    _, proba = servable().load_classifier(working, str(classifier))
    encoded = encode_matrix(X, working) if getattr(proba, "matrix", False) else encode_features(X, working)
    if spec.get("task") == "regression":
        return training_profile(X, spec, predicted_values(proba, encoded, working))
    predicted = decided(class_probabilities(proba, encoded, working), working.get("decision"))
    return training_profile(X, spec, predicted)


def _write(path: Path, write: Any) -> None:
    """One model file written, or one line saying which file could not be and why."""
    from xgboost.core import XGBoostError

    try:
        write(path)
    except (OSError, XGBoostError) as exc:  # a full disk, a folder in the file's place, XGBoost's own write
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StorageError(f"cannot write the model file {path}: {reason}") from None


def _distribution(package: str) -> str:
    """The distribution that installs an import package (``sklearn`` -> ``scikit-learn``)."""
    found = importlib.metadata.packages_distributions().get(package, [package])
    return found[0]
