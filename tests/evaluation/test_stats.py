"""Interval formulas against hand-computed values; folds that keep copies together; resampling in training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trilho.data.synthetic import diabetes
from trilho.evaluation import cv as evaluate
from trilho.evaluation import stats
from trilho.evaluation.cv import cross_validate
from trilho.evaluation.metrics import scores_from_confusions
from trilho.evaluation.splits import duplicate_groups, holdout_split
from trilho.model.catalog import RESAMPLERS, ResamplerKind

SCORES = np.array([0.80, 0.84, 0.82, 0.86, 0.78])  # mean 0.82, sample variance 0.001


def test_naive_t_by_hand():
    # t(0.975, 4) = 2.7764451; se = sqrt(0.001 / 5)
    half = 2.7764451 * np.sqrt(0.001 / 5)
    assert stats.naive_t_interval(SCORES) == pytest.approx((0.82 - half, 0.82 + half), abs=1e-7)


def test_nadeau_bengio_corrected_t_by_hand():
    # 5-fold: n_test/n_train = 0.2/0.8 = 0.25; variance of the mean (1/5 + 0.25) * 0.001
    half = 2.7764451 * np.sqrt((1 / 5 + 0.25) * 0.001)
    assert stats.corrected_t_interval(SCORES, 0.2) == pytest.approx((0.82 - half, 0.82 + half), abs=1e-7)
    assert half > 2.7764451 * np.sqrt(0.001 / 5)  # always wider than the naive one


def test_percentile_spread_by_hand():
    # numpy's linear interpolation: position 0.025 * 4 = 0.1 between the two smallest, 0.78 and 0.80
    assert stats.percentile_spread(SCORES) == pytest.approx((0.782, 0.858))


def test_paired_test_by_hand_and_identical_models():
    a, b = SCORES, SCORES - np.array([0.01, 0.03, 0.02, 0.02, 0.02])  # d mean 0.02, var 0.00005
    t = 0.02 / np.sqrt((1 / 5 + 0.25) * 0.00005)
    got = stats.paired_corrected_t(a, b, 0.2)
    assert got["mean_diff"] == pytest.approx(0.02) and got["t"] == pytest.approx(t)
    from scipy import stats as st

    assert got["p_value"] == pytest.approx(2 * st.t.sf(t, 4))
    same = stats.paired_corrected_t(SCORES, SCORES.copy(), 0.2)
    assert same["mean_diff"] == 0 and same["p_value"] == 1.0 and same["low"] == same["high"] == 0


def test_fold_bootstrap_is_reproducible_and_inside_the_range():
    lo, hi = stats.fold_bootstrap_interval(SCORES, n_boot=4000)
    assert (lo, hi) == stats.fold_bootstrap_interval(SCORES, n_boot=4000)
    assert 0.78 <= lo < 0.82 < hi <= 0.86


def test_row_bootstrap_of_accuracy_matches_the_binomial_width():
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.9, y, 1 - y)[None, :]  # one repeat, 90% right
    offsets = stats.row_bootstrap_intervals(y, pred, 2, scores_from_confusions, ["accuracy"], n_boot=2000)
    lo, hi = offsets["accuracy"]
    width = 2 * 1.96 * np.sqrt(0.9 * 0.1 / n)
    assert hi - lo == pytest.approx(width, rel=0.12) and lo < 0 < hi


def test_the_row_bootstrap_by_pattern_counts_agrees_with_drawing_rows(monkeypatch):
    """Above EXACT_BOOTSTRAP_ROWS a replicate draws pattern counts, not rows: the same distribution."""
    rng = np.random.default_rng(7)
    n, k = 60_000, 3
    y = rng.choice(k, n, p=[0.6, 0.3, 0.1])
    pred = np.stack([np.where(rng.random(n) < p, y, rng.integers(0, k, n)) for p in (0.8, 0.82, 0.78)])
    metrics = ["accuracy", "f1_macro", "mcc"]
    assert n > stats.EXACT_BOOTSTRAP_ROWS
    counted = stats.row_bootstrap_intervals(y, pred, k, scores_from_confusions, metrics, n_boot=600)
    monkeypatch.setattr(stats, "EXACT_BOOTSTRAP_ROWS", 10 * n)
    drawn = stats.row_bootstrap_intervals(y, pred, k, scores_from_confusions, metrics, n_boot=600)
    for m in metrics:
        width = drawn[m][1] - drawn[m][0]
        assert counted[m][1] - counted[m][0] == pytest.approx(width, rel=0.15), m
        assert abs(counted[m][0] - drawn[m][0]) < 0.15 * width and abs(counted[m][1] - drawn[m][1]) < 0.15 * width
    # and it still has the binomial width for accuracy at a million rows, in well under a second a metric
    import time

    big = 1_000_000
    yb = rng.integers(0, 2, big)
    pb = np.where(rng.random(big) < 0.9, yb, 1 - yb)[None, :]
    start = time.perf_counter()
    lo, hi = stats.row_bootstrap_intervals(yb, pb, 2, scores_from_confusions, ["accuracy"])["accuracy"]
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.9 * 0.1 / big), rel=0.12)
    assert time.perf_counter() - start < 20  # was 28 s for the run's metrics; loose: a busy machine


def test_duplicate_groups_and_grouped_holdout_keep_copies_together():
    X = pd.DataFrame({"a": [1, 1, 2, 3, 3, 3, 4, 5], "b": [0, 0, 1, 2, 2, 2, 3, 4]})
    groups = duplicate_groups(X)
    assert len(set(groups)) == 5 and groups[0] == groups[1] and groups[3] == groups[4] == groups[5]
    data = diabetes(rows=400, seed=5)
    X = data.drop(columns=["CLASS", "ID", "No_Pation", "Gender"])
    y = data["CLASS"].str.strip().map({"N": 0, "Y": 1, "P": 2}).to_numpy()
    groups = duplicate_groups(X)
    assert len(set(groups)) < len(groups)  # the generator copies rows, as the real file does
    train, test = holdout_split(y, 0.3, 0, groups)
    assert not set(groups[train]) & set(groups[test])


class Recorder:
    """A resampler that only records the rows it is shown (and resamples nothing)."""

    seen: list[set] = []

    def __init__(self, random_state=None):
        self.random_state = random_state

    def fit_resample(self, X, y):
        Recorder.seen.append(set(X.index))
        return X, y


@pytest.mark.training
def test_resampling_sees_training_rows_only_and_grouped_folds_do_not_leak(monkeypatch):
    data = diabetes(rows=300, seed=9)
    X = data.drop(columns=["CLASS", "ID", "No_Pation", "Gender"])
    y = data["CLASS"].str.strip().map({"N": 0, "Y": 1, "P": 2}).to_numpy()
    groups = duplicate_groups(X)
    monkeypatch.setitem(RESAMPLERS, "recorder", ResamplerKind("recorder", "tests.evaluation.test_stats:Recorder"))
    Recorder.seen = []
    cv = cross_validate(X, y, evaluate.Task(model={"name": "logistic_regression", "params": {"max_iter": 1000}}, resampler={"name": "recorder"}, random_state=0, n_splits=5, seeds=[0, 1], groups=groups), evaluate.Runner())
    assert len(Recorder.seen) == 10
    oof = cv.oof
    # every fold: the rows the resampler saw and that fold's test rows are disjoint, and so are their groups
    tests_by_fold = [set(oof[oof["seed"] == s]["row"]) for s in (0, 1)]
    assert all(len(t) == 300 for t in tests_by_fold)
    seen_union = set().union(*Recorder.seen)
    assert seen_union == set(range(300))
    for seen in Recorder.seen:
        unseen = set(range(300)) - seen  # that fold's test rows
        assert not set(groups[list(seen)]) & set(groups[list(unseen)])


def test_intervals_are_clipped_to_what_the_metric_can_take():
    from trilho import load_experiment
    from trilho.evaluation.results import CVResult
    from trilho.reporting.summary import summary_metrics

    exp = load_experiment("diabetes", ['evaluation.metrics=["accuracy", "log_loss"]', "cv.n_repeats=1",
                                       'registry.model_name=""'])
    folds = pd.DataFrame({"accuracy": [1.0, 1.0, 0.96, 1.0, 0.98], "log_loss": [0.01, 0.02, 0.2, 0.01, 0.05]})
    summary = summary_metrics(CVResult(folds=folds, confusion=np.eye(3), wall_s=0, workers=1), exp)
    for method, bounds in summary["accuracy"]["intervals"].items():
        if bounds:
            assert 0 <= bounds[0] <= bounds[1] <= 1, method
    assert summary["accuracy"]["ci"][1] == 1.0  # the corrected t reaches past 1 here and is clipped
    assert summary["log_loss"]["ci"][0] >= 0


# Nested CV by hand: k = 3 folds of 2 rows, one repeat, 0/1 losses.
#   outer (fold j scored by the fit without j):   j0 [0, 1]  j1 [0, 0]  j2 [1, 1]
#   inner of j (the other folds, fits without j and that fold):
#     j0: [0, 1, 1, 1] mean 3/4   j1: [1, 1, 1, 0] mean 3/4   j2: [0, 0, 0, 1] mean 1/4
#   (e_in - e_out)² - var(out)/2: (0.25² - 0.25) = -0.1875, 0.75² = 0.5625, 0.75² = 0.5625
#   mse = mean · (k-1)/k = 0.3125 · 2/3 = 0.208333; Err_NCV = 7/12, Err_CV = 1/2
#   naive se = sd(inner losses, ddof=1)/√6 = sqrt(35/132)/√6 = 0.210219, upper bound √3 · that = 0.364110
#   sqrt(mse) = 0.456435 > upper → se = 0.364110
#   bias = (1 + 1/3)(7/12 - 1/2) = 1/9; centre = 7/12 - 1/9 = 0.472222; half = 1.959964 · 0.364110 = 0.713641
OUTER = (np.array([0, 1, 0, 0, 1, 1.0]), np.array([0, 0, 1, 1, 2, 2]))
INNER = (np.array([0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1.0]), np.repeat([0, 1, 2], 4))


def test_nested_cv_interval_by_hand():
    found = stats.nested_cv_interval(*OUTER, *INNER, n_folds=3, n_rows=6)
    assert found["mse"] == pytest.approx(0.208333, abs=1e-6)
    assert found["se_naive"] == pytest.approx(0.210219, abs=1e-6)
    assert found["se"] == pytest.approx(0.364110, abs=1e-6)  # clipped at √k · naive
    assert found["bias"] == pytest.approx(1 / 9)
    assert found["centre"] == pytest.approx(0.472222, abs=1e-6)
    assert found["low"] == pytest.approx(0.472222 - 0.713641, abs=1e-6)
    assert found["high"] == pytest.approx(0.472222 + 0.713641, abs=1e-6)


def test_nested_cv_interval_keeps_se_between_its_bounds():
    # inner means equal to outer means: the mse estimate is negative, se falls back to the naive one
    outer = (np.array([0, 1, 0, 1, 0, 1.0]), np.array([0, 0, 1, 1, 2, 2]))
    inner = (np.array([0, 1, 0, 1] * 3, dtype=float), np.repeat([0, 1, 2], 4))
    found = stats.nested_cv_interval(*outer, *inner, n_folds=3, n_rows=6, debias=False)
    assert found["mse"] < 0
    assert found["se"] == pytest.approx(found["se_naive"])
    assert found["centre"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="every outer fold"):
        stats.nested_cv_interval(*outer, inner[0][:4], inner[1][:4], n_folds=3, n_rows=6)


@pytest.mark.training
def test_nested_fits_train_without_both_folds_and_score_each_for_the_other(monkeypatch):
    data = diabetes(rows=200, seed=4)
    X = data.drop(columns=["CLASS", "ID", "No_Pation", "Gender"])
    y = data["CLASS"].str.strip().map({"N": 0, "Y": 1, "P": 2}).to_numpy()
    monkeypatch.setitem(RESAMPLERS, "recorder", ResamplerKind("recorder", "tests.evaluation.test_stats:Recorder"))
    Recorder.seen = []
    cv = cross_validate(X, y, evaluate.Task(model={"name": "logistic_regression", "params": {"max_iter": 1000}}, resampler={"name": "recorder"}, random_state=0, n_splits=4, seeds=[0, 1, 2], nested_repeats=2), evaluate.Runner())
    assert len(Recorder.seen) == 3 * 4 + 2 * 6  # the folds, then one fit per pair of folds in two repeats
    nested = cv.nested
    assert set(nested["seed"]) == {0, 1}
    fold_of = cv.oof.set_index(["seed", "row"])["fold"]
    for (seed, outer), part in nested.groupby(["seed", "outer"]):
        # outer fold j's inner CV scores every row outside j exactly once
        assert sorted(part["row"]) == sorted(cv.oof[(cv.oof["seed"] == seed) & (cv.oof["fold"] != outer)]["row"])
        assert (fold_of.loc[seed].loc[part["row"]].to_numpy() != outer).all()
    # every nested fit saw only rows outside its two folds: 100 rows of 200 at 4 folds of 50
    assert sorted(len(s) for s in Recorder.seen[-12:]) == [100] * 12
    bounds = stats.nested_bounds(cv.oof, cv.nested, 4)
    assert set(bounds) == {"accuracy", "log_loss"}
    assert bounds["accuracy"][0] < cv.scores("accuracy").mean() < bounds["accuracy"][1]
