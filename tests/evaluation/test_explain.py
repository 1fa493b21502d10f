"""Explanations: out-of-fold importance (TreeSHAP for XGBoost, permutation for the rest) and
per-row contributions from the logged model's own files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.support import corpus
from trilho.evaluation import cv as evaluate
from trilho.evaluation.explain import fold_importance, summarise_importance
from trilho.model.answers import model_outputs
from trilho.model.catalog import build_pipeline
from trilho.model.code import servable as _servable
from trilho.model.encoding import encode_matrix, feature_spec
from trilho.serving.artifact import save_model_files

pytestmark = pytest.mark.training


def _spec(X: pd.DataFrame, categorical: list[str], classes: list[str], missing: str = "native") -> dict:
    return {**feature_spec(list(X.columns), dict.fromkeys(categorical), classes), "missing": missing}


def _churn():
    frame, target, _, _ = corpus.churn(rows=500, seed=4)
    X = frame.drop(columns=[target, "customer_id"])
    X["contract"] = X["contract"].str.strip().str.upper()
    X["internet"] = X["internet"].str.strip().str.upper()
    y = (frame[target].str.strip().str.upper() == "YES").astype(int).to_numpy()
    return X, y, ["contract", "internet"], ["No", "Yes"]


def _species():
    frame, target, _, _ = corpus.species(rows=300, seed=5)
    return frame.drop(columns=[target]), frame[target].to_numpy(), [], ["0", "1", "2"]


def _logged(pipe, spec, X, folder):
    """The model as its files hold it: the servable's own loading, outputs and explainer."""
    saved = save_model_files(pipe, spec, folder, X)
    servable = _servable()
    import json

    spec = json.loads((saved / "spec.json").read_text())
    classifier, proba = servable.load_classifier(spec, str(saved / spec["file"]))
    return spec, classifier, proba, servable.load_explainer(spec, classifier)


@pytest.mark.parametrize("data", [_churn, _species])
def test_tree_shap_contributions_add_up_to_the_margin_for_every_row(data, tmp_path):
    X, y, categorical, classes = data()
    spec = _spec(X, categorical, classes)
    params = {"n_estimators": 40, "max_depth": 3, **({"objective": "multi:softprob"} if len(classes) > 2 else {})}
    pipe = build_pipeline({"name": "xgboost", "params": params}, {"name": "none", "params": {}}, 0, 1, spec).fit(X, y)
    spec, booster, proba, explainer = _logged(pipe, spec, X, tmp_path / "model")
    out = model_outputs(proba, X, spec, matrix=True, explainer=explainer)
    contributions = out[[f"contrib_{c}" for c in X.columns]].to_numpy()  # one column per feature, by name
    import xgboost

    margin = booster.predict(xgboost.DMatrix(encode_matrix(X, spec), feature_names=booster.feature_names),
                             output_margin=True)
    codes = np.searchsorted(classes, out["explained_class"].to_numpy()) if len(classes) > 2 else np.ones(len(X), int)
    if margin.ndim == 2:
        margin = margin[np.arange(len(X)), codes]
    np.testing.assert_allclose(contributions.sum(axis=1) + out["base_value"].to_numpy(), margin, rtol=0, atol=1e-4)
    if len(classes) > 2:  # the predicted class is the one explained
        assert (out["explained_class"] == out["prediction"]).all()
    else:  # the positive class, whose probability is the margin's sigmoid
        np.testing.assert_allclose(1 / (1 + np.exp(-margin)), out["proba_Yes"], atol=1e-5)


def test_a_model_without_tree_shap_explains_against_its_typical_row(tmp_path):
    X, y, categorical, classes = _churn()
    spec = _spec(X, categorical, classes, "impute")
    pipe = build_pipeline({"name": "random_forest", "params": {"n_estimators": 30}}, {"name": "none", "params": {}},
                          0, 1, spec).fit(X, y)
    spec, _, proba, explainer = _logged(pipe, spec, X, tmp_path / "model")
    assert set(spec["reference"]) == set(X.columns)
    rows = X.head(20)
    out = model_outputs(proba, rows, spec, explainer=explainer)
    assert [c for c in out.columns if c.startswith("contrib_")] == [f"contrib_{c}" for c in X.columns]
    assert "base_value" not in out  # these need not add up, so no base is claimed
    # setting a feature to its typical value moves the answer by exactly the contribution
    typical = rows.copy()
    code = spec["categorical"]["contract"]
    typical["contract"] = next(k for k, v in code.items() if v == spec["reference"]["contract"])
    moved = model_outputs(proba, typical, spec)["proba_Yes"].to_numpy()
    np.testing.assert_allclose(out["proba_Yes"].to_numpy() - moved, out["contrib_contract"].to_numpy(), atol=1e-12)


def test_permutation_importance_ranks_an_injected_noise_feature_last():
    X, y, categorical, classes = _churn()
    X = X.assign(noise=np.random.default_rng(0).normal(size=len(X)))
    spec = _spec(X, categorical, classes)
    task = evaluate.Task(model={"name": "hist_gradient_boosting", "params": {"max_iter": 60}},
                         resampler={"name": "none", "params": {}}, random_state=0, n_splits=5, seeds=[0, 1],
                         encoding=spec, explain_repeats=1)
    cv = evaluate.cross_validate(X, y, task)
    assert cv.importance_method == "permutation" and cv.importance is not None and cv.importance.shape == (5, 5)
    assert cv.folds["explain_s"].notna().sum() == 5  # the first repeat only
    found = summarise_importance(cv.importance, list(X.columns), cv.importance_method, 0.2)
    assert list(found["features"])[-1] == "noise"
    assert found["features"]["noise"]["low"] <= 0 <= found["features"]["noise"]["high"]
    assert found["features"][list(found["features"])[0]]["low"] > 0


def test_tree_shap_importance_is_measured_on_held_out_rows_only():
    X, y, categorical, classes = _species()
    spec = _spec(X, categorical, classes)
    pipe = build_pipeline({"name": "xgboost", "params": {"n_estimators": 20, "objective": "multi:softprob"}},
                          {"name": "none", "params": {}}, 0, 1, spec).fit(X.iloc[:200], y[:200])
    method, held = fold_importance(pipe, X.iloc[200:], y[200:], 3, 0)
    _, again = fold_importance(pipe, X.iloc[200:], y[200:], 3, 1)
    _, seen = fold_importance(pipe, X.iloc[:200], y[:200], 3, 0)
    assert method == "tree_shap" and held.shape == (4,) and (held >= 0).all()
    np.testing.assert_array_equal(held, again)  # every row used: no sampling under the cap
    assert not np.allclose(held, seen)  # it depends on the rows it is given


def test_summarise_importance_orders_by_mean_with_a_corrected_interval():
    values = np.array([[0.1, 2.0, 0.5], [0.2, 2.2, 0.4], [0.0, 1.8, 0.6], [0.1, 2.1, 0.5]])
    found = summarise_importance(values, ["a", "b", "c"], "tree_shap", 0.25)
    assert list(found["features"]) == ["b", "c", "a"]
    b = found["features"]["b"]
    assert b["rank"] == 1 and b["low"] < b["mean"] < b["high"] and b["mean"] == pytest.approx(2.025)
    assert found["features"]["a"]["low"] >= 0  # a mean |contribution| is never negative
