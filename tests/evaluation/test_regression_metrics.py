"""A numeric target's pieces, without a fit: its metrics against scikit-learn's, the prediction
interval's finite-sample rank and coverage, folds that see the target's tails, the experiment's
one-line refusals, and the leak check on a copy of the target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from trilho import ConfigError, load_experiment
from trilho.data.leaks import find_leaks
from trilho.evaluation import conformal
from trilho.evaluation.metrics import regression_scores
from trilho.evaluation.splits import strata
from trilho.experiment import Experiment


@pytest.mark.parametrize("seed", range(5))
def test_each_metric_equals_scikit_learns_on_every_fold(seed):
    rng = np.random.default_rng(seed)
    y = rng.lognormal(3, 0.8, 500)
    pred = y * rng.normal(1, 0.2, 500) + rng.normal(0, 2, 500)
    for fold in np.array_split(rng.permutation(500), 5):
        got = regression_scores(y[fold], pred[fold], quantile=0.8)
        assert got["rmse"] == pytest.approx(sk.root_mean_squared_error(y[fold], pred[fold]), rel=1e-12)
        assert got["mae"] == pytest.approx(sk.mean_absolute_error(y[fold], pred[fold]), rel=1e-12)
        assert got["r2"] == pytest.approx(sk.r2_score(y[fold], pred[fold]), rel=1e-12)
        assert got["median_ae"] == pytest.approx(sk.median_absolute_error(y[fold], pred[fold]), rel=1e-12)
        assert got["mape"] == pytest.approx(sk.mean_absolute_percentage_error(y[fold], pred[fold]), rel=1e-12)
        assert got["pinball"] == pytest.approx(sk.mean_pinball_loss(y[fold], pred[fold], alpha=0.8), rel=1e-12)


def test_the_half_width_is_the_finite_sample_rank():
    residuals = np.arange(1.0, 20.0)  # 19 residuals: ceil(20 * 0.9) = 18th smallest
    assert conformal.half_width(residuals, 0.9) == 18.0
    assert conformal.half_width(-residuals, 0.9) == 18.0  # absolute values
    assert conformal.half_width(residuals, 0.95) == 19.0  # ceil(20 * 0.95) = 19
    assert conformal.half_width(np.arange(1.0, 19.0), 0.95) == np.inf  # 18: no rank reaches 95%
    # the plain 90th percentile would promise less than 90% on few rows; the rank keeps the promise
    assert conformal.half_width(residuals, 0.9) > np.quantile(residuals, 0.9)


def test_the_interval_covers_its_level_on_exchangeable_rows_and_not_much_more():
    rng = np.random.default_rng(0)
    n, trials, level = 19, 4000, 0.9
    residuals = np.abs(rng.standard_t(3, (trials, n + 1)))
    covered = np.array([residuals[t, -1] <= conformal.half_width(residuals[t, :-1], level) for t in range(trials)])
    # exactly ceil((n+1) level) / (n+1) = 18/20 in expectation; a plain quantile gives about 0.86 here
    assert 0.88 <= covered.mean() <= 0.92


def test_fold_coverage_uses_the_other_folds_residuals_only():
    rng = np.random.default_rng(1)
    rows = 400
    y = rng.normal(0, 1, rows)
    oof = pd.DataFrame({"seed": 0, "row": np.arange(rows), "fold": np.arange(rows) % 4, "y": y,
                        "pred": np.zeros(rows)})
    oof.loc[oof["fold"] == 3, "y"] *= 10  # one noisy fold: the others' residuals cannot cover it
    table = conformal.coverage_by_fold(oof, 0.9)
    assert len(table) == 4
    noisy = table[table["fold"] == 3].iloc[0]
    assert noisy["coverage"] < 0.5 and noisy["half_width"] < 2.5
    assert (table[table["fold"] != 3]["coverage"] > 0.9).all()
    summary = conformal.interval_summary(oof, 0.9, table)
    assert summary["coverage"]["low"] == pytest.approx(noisy["coverage"])
    assert len(summary["by_decile"]) == 10


def test_folds_of_a_numeric_target_see_its_tails():
    from trilho.evaluation.splits import grouped_stratified_folds

    rng = np.random.default_rng(2)
    y = rng.lognormal(0, 1.5, 300)  # a few very large values
    bins = strata(y, 5)
    assert bins.max() == 9 and np.bincount(bins).min() >= 25
    fold = grouped_stratified_folds(bins, np.arange(300), 5, 0)
    top = np.argsort(y)[-30:]  # the highest tenth
    assert set(np.bincount(fold[top], minlength=5)) == {6}  # each fold holds six of them
    assert strata(np.array([0, 1, 1, 0]), 2).tolist() == [0, 1, 1, 0]  # class codes are left as they are


def _regression(**changes) -> dict:
    config = {"name": "prices", "task": "regression", "source": {"uri": "file:prices.csv"},
              "data": {"target": "price"}, "model": {"name": "xgboost", "params": {}}}
    for key, value in changes.items():
        section, name = key.split("__")
        config.setdefault(section, {})[name] = value
    return config


@pytest.mark.parametrize(("key", "value", "named"), [
    ("resampler__name", "smote", "resampler.name"),
    ("model__calibration", "isotonic", "model.calibration"),
    ("decision__objective", "metric", "decision.objective"),
    ("data__labels", ["no", "yes"], "data.labels"),
    ("decision__costs", [[0, 1], [5, 0]], "decision.costs"),
])
def test_a_classification_key_in_a_regression_is_one_line_naming_it(key, value, named):
    with pytest.raises(ValueError) as found:
        Experiment.model_validate(_regression(**{key: value}))
    message = str(found.value)
    said = [line for line in message.splitlines() if named in line]
    assert said and "is for classification" in said[0] and "remove it" in said[0]


def test_a_regression_file_gets_its_own_defaults_and_a_quantile_from_costs(tmp_path):
    exp = Experiment.model_validate(_regression())
    assert exp.regression and exp.evaluation.metrics == ["rmse", "mae", "r2", "median_ae"]
    assert exp.registry.primary_metric == "rmse" and exp.prediction.level == 0.9
    costly = Experiment.model_validate(_regression(decision__costs={"over": 1, "under": 4}))
    assert costly.decision.quantile == pytest.approx(0.8)
    assert costly.evaluation.metrics[-1] == "pinball" and costly.registry.primary_metric == "pinball"
    assert costly.decision_rule() == {"objective": "quantile", "quantile": pytest.approx(0.8)}
    assert Experiment.model_validate(_regression(data__target_scale="log")).data.target_scale == "log"
    with pytest.raises(ValueError, match="target_scale = 'log' needs model.distributed = false"):
        Experiment.model_validate(_regression(data__target_scale="log", model__distributed=True))
    path = tmp_path / "prices.toml"
    path.write_text('name = "p"\ntask = "regression"\n[source]\nuri = "file:p.csv"\n[data]\ntarget = "y"\n'
                    '[resampler]\nname = "smote"\n[model]\nname = "xgboost"\n')
    with pytest.raises(ConfigError) as found:
        load_experiment(path)
    assert "resampler.name = 'smote' is for classification" in str(found.value)


def test_a_copy_of_the_target_is_a_leak_and_an_honest_feature_is_not():
    rng = np.random.default_rng(3)
    y = rng.lognormal(10, 0.7, 1500)
    X = pd.DataFrame({"log_price": np.log(y).round(6), "area": np.log(y) + rng.normal(0, 0.5, 1500),
                      "noise": rng.normal(0, 1, 1500), "town": rng.choice(["a", "b", "c"], 1500)})
    found = find_leaks(X, y, [], categorical={"town"})
    leaks = [f for f in found if f["kind"] == "leak"]
    assert [f["column"] for f in leaks] == ["log_price"]
    assert "alone predicts the target" in leaks[0]["message"] and "data.drop = ['log_price']" in leaks[0]["message"]
    assert not [f for f in found if f["kind"] == "small_class"]  # a number has no classes


def test_a_pile_of_equal_values_leaves_no_stratum_too_small_to_split():
    from trilho.evaluation.splits import holdout_split

    y = np.array([0.0] * 9 + [1.0] * 10 + [2.0] + [3.0] * 80)  # zero-inflated, one lone value
    bins = strata(y, 5)
    assert np.bincount(bins).min() >= 10  # equal counts, ties ranked by row
    train, test = holdout_split(y, 0.3, 0)
    assert len(train) + len(test) == 100 and len(test) == 30


def test_a_quantile_decision_refuses_a_baseline_that_fits_the_mean_only_and_the_margin_follows_the_target():
    from trilho.workflows.promote import gate_margin

    with pytest.raises(ValueError, match="'random_forest' fits the mean only"):
        Experiment.model_validate(_regression(decision__costs={"over": 1, "under": 4},
                                              evaluation__baselines=["mean", "random_forest"]))
    y = np.random.default_rng(0).normal(200_000, 50_000, 1000)  # prices: 0.01 would ask for a better model
    assert gate_margin(Experiment.model_validate(_regression()), y) == pytest.approx(0.01 * y.std())
    assert gate_margin(Experiment.model_validate(_regression(registry__margin=500.0)), y) == 500.0
