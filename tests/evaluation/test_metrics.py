"""The confusion matrix, the Brier score and the expected calibration error, and the reliability table behind the figure."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, confusion_matrix

from trilho.evaluation.metrics import (
    METRICS,
    average_ranks,
    brier_score,
    confusion,
    expected_calibration_error,
    probability_metrics,
)
from trilho.reporting.plots import reliability_figure, reliability_table


def _calibrated(rows: int, k: int, seed: int = 0):
    """Probabilities drawn first, labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(k) * 0.7, rows)
    y = np.array([rng.choice(k, p=p) for p in proba])
    return proba, y


@pytest.mark.parametrize("k", [2, 4])
def test_brier_matches_scikit_learn(k):
    proba, y = _calibrated(600, k)
    expected = brier_score_loss(y, proba[:, 1] if k == 2 else proba, labels=list(range(k)))
    assert brier_score(proba, y) == pytest.approx(expected)
    assert probability_metrics(y, proba, np.arange(k))["brier"] == pytest.approx(expected)
    assert {"brier", "ece"} <= set(METRICS)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    proba, y = _calibrated(20_000, 3)
    assert expected_calibration_error(proba, y) < 0.02
    sharp = proba ** 4 / (proba ** 4).sum(axis=1, keepdims=True)  # the same ranking, overconfident
    assert expected_calibration_error(sharp, y) > 0.08
    assert sharp.argmax(axis=1).tolist() == proba.argmax(axis=1).tolist()  # the same predictions
    # one bin of all-correct rows at probability 1: no error; at probability 0.6: 0.4
    assert expected_calibration_error(np.array([[0.0, 1.0]] * 5), np.ones(5, dtype=int)) == pytest.approx(0)
    assert expected_calibration_error(np.array([[0.4, 0.6]] * 5), np.ones(5, dtype=int)) == pytest.approx(0.4)


def test_the_reliability_table_follows_the_diagonal_for_calibrated_probabilities():
    import pandas as pd

    proba, y = _calibrated(30_000, 2, seed=4)
    oof = pd.DataFrame({"y": y, "proba_0": proba[:, 0], "proba_1": proba[:, 1]})
    table = reliability_table(oof, 2)
    assert set(table["class"]) == {0, 1} and table["rows"].sum() == 2 * len(y)
    busy = table[table["rows"] > 500]
    assert np.abs(busy["observed"] - busy["mean_probability"]).max() < 0.03
    fig = reliability_figure(table, ["no", "yes"])
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3  # two classes and the diagonal


@pytest.mark.parametrize("seed", range(4))
def test_the_confusion_matrix_equals_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.choice(np.arange(-2, 9), size=4, replace=False))
    y = rng.choice(np.arange(-3, 10), size=300)  # values outside the labels are not counted
    pred = rng.choice(labels, size=300)
    got = confusion(y, pred, labels)
    assert got.dtype == np.int64
    assert got.tolist() == confusion_matrix(y, pred, labels=labels).tolist()


@pytest.mark.parametrize("seed", range(4))
def test_average_ranks_equal_scipys(seed):
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    values = np.round(rng.random(200), 1 + seed % 2)  # many ties, or fewer
    assert average_ranks(values).tolist() == rankdata(values).tolist()
    assert average_ranks(np.array([2.0])).tolist() == [1.0]
