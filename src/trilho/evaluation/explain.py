"""Which features drive the model, judged on rows its model never saw. Pure.

Every fold's model is explained on that fold's held-out rows:

- an XGBoost model by its own TreeSHAP (``pred_contribs``): the mean absolute contribution of
  each feature to the margin (log-odds), summed over the classes' margins for more than two;
- any other family by permutation importance (scikit-learn's): how much the held-out log loss
  grows when one feature's values are shuffled among the fold's rows.

A categorical feature is one column whatever its encoding (one-hot columns of a linear model are
shuffled together, as the raw column is), so every feature is named as the data names it. The
folds' values give each feature a mean, a spread and a corrected-t interval (``summarise``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trilho.evaluation import stats
from trilho.model.catalog import predict_values

__all__ = ["EXPLAIN_ROWS", "METHODS", "fold_importance", "summarise_importance", "top_features"]

# held-out rows a fold explains at most (a random subset beyond): TreeSHAP costs about 0.5 ms a
# row for 100 trees of depth 6, permutation one prediction of the rows per feature
EXPLAIN_ROWS = {"tree_shap": 2_000, "permutation": 2_000, "tree_shap_value": 2_000, "permutation_mse": 2_000}
METHODS = {
    "tree_shap": "mean |TreeSHAP contribution| to the margin (log-odds), held-out rows",
    "permutation": "increase in held-out log loss when the feature is shuffled",
    "tree_shap_value": "mean |TreeSHAP contribution| to the predicted value, held-out rows",
    "permutation_mse": "increase in held-out mean squared error when the feature is shuffled",
}


def _booster(pipe: Any) -> Any | None:
    """The XGBoost booster of a fitted pipeline whose model reads the encoder's columns directly
    (no one-hot step in between), else None."""
    inner = getattr(pipe, "pipeline_", pipe)  # trilho.evaluation.decision.Decided wraps the pipeline
    steps = [(n, s) for n, s in getattr(inner, "steps", []) if n not in {"encode", "resampler"}]
    if len(steps) != 1 or "encode" not in inner.named_steps:
        return None
    model = steps[0][1]
    return model.get_booster() if type(model).__module__.startswith(("xgboost", "trilho.model.weighting")) else None


def _tree_shap(pipe: Any, booster: Any, X: pd.DataFrame) -> np.ndarray:
    import xgboost

    inner = getattr(pipe, "pipeline_", pipe)
    encoded = inner.named_steps["encode"].transform(X).astype("float64")
    contribs = booster.predict(xgboost.DMatrix(encoded), pred_contribs=True)
    parts = np.abs(contribs[..., :-1])  # the last column is the bias
    return parts.mean(axis=0) if parts.ndim == 2 else parts.mean(axis=0).sum(axis=0)


def _permutation(pipe: Any, X: pd.DataFrame, codes: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    from sklearn.inspection import permutation_importance

    def neg_log_loss(estimator: Any, rows: pd.DataFrame, truth: np.ndarray) -> float:
        if not n_classes:  # a numeric target: the squared error
            return -float(np.mean((truth - predict_values(estimator, rows)) ** 2))
        proba = np.zeros((len(rows), n_classes))
        proba[:, estimator.classes_] = estimator.predict_proba(rows)
        picked = np.clip(proba[np.arange(len(truth)), truth], 1e-15, 1.0)
        return float(np.log(picked).mean())

    import warnings

    with warnings.catch_warnings():
        # on a fold's thread of trilho's pool, scikit-learn notes that its configuration is not the
        # thread's own; with n_jobs=1 the shuffles run in this thread, under this configuration
        warnings.filterwarnings("ignore", message=".*sklearn.utils.parallel.delayed.*", category=UserWarning)
        found = permutation_importance(pipe, X, codes, scoring=neg_log_loss, n_repeats=1, random_state=seed, n_jobs=1)
    return np.asarray(found.importances_mean, dtype="float64")


def fold_importance(pipe: Any, X: pd.DataFrame, codes: np.ndarray, n_classes: int, seed: int) -> tuple[str, np.ndarray]:
    """One fold's model explained on its held-out rows ``X`` (class ``codes``; a numeric target's
    values where ``n_classes`` is 0): the method's name and one value per column of ``X``. At most
    ``EXPLAIN_ROWS`` rows are used (chosen with ``seed``)."""
    booster = _booster(pipe)
    method = "tree_shap" if booster is not None else "permutation"
    if not n_classes:
        method = "tree_shap_value" if booster is not None else "permutation_mse"
    limit = EXPLAIN_ROWS[method]
    if len(X) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), limit, replace=False))
        X, codes = X.iloc[keep], codes[keep]
    if booster is not None:
        return method, _tree_shap(pipe, booster, X)
    return method, _permutation(pipe, X, codes, n_classes, seed)


def summarise_importance(values: np.ndarray, features: list[str], method: str, test_fraction: float,
                         level: float = 0.95) -> dict[str, Any]:
    """Per feature (by name, most important first): the mean over the folds, their standard
    deviation and the corrected-t interval of the mean (the folds' training rows overlap)."""
    values = np.asarray(values, dtype="float64")
    table: dict[str, dict[str, float]] = {}
    means = values.mean(axis=0)
    for j in np.argsort(-means, kind="stable"):
        column = values[:, j]
        if len(column) > 1 and column.std() > 0:
            low, high = stats.corrected_t_interval(column, test_fraction, level)
        else:
            low = high = float(column.mean())
        if method.startswith("tree_shap"):  # a mean absolute value is never below 0
            low = max(low, 0.0)
        table[features[j]] = {"mean": float(means[j]), "std": float(column.std(ddof=1)) if len(column) > 1 else 0.0,
                              "low": float(low), "high": float(high), "rank": len(table) + 1}
    return {"method": method, "measure": METHODS[method], "folds": int(values.shape[0]), "level": level,
            "features": table}


def top_features(importance: dict[str, Any], n: int = 5) -> list[str]:
    """The ``n`` most important features' names."""
    return list(importance["features"])[:n]
