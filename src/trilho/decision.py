"""How a class is chosen from the probabilities, and where a threshold comes from.

A rule (``Experiment.decision_rule``) is one of: the threshold on the positive class that
maximises a metric of the confusion matrix (``metric``), the most precise threshold that keeps
the positive class's recall at a floor (``recall``), the most sensitive one that keeps its
precision at a floor (``precision``), or the class of least expected cost (``costs``,
``costs[true][predicted]``). A threshold is chosen on the **inner out-of-fold predictions of the
training rows alone** (3 stratified folds inside the fit's own training rows), so a held-out fold
is always scored with a threshold it never saw; the model is then fitted on every training row.
Pure: arrays in, a fitted ``Decided`` classifier or codes out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from trilho.metrics import scores_from_confusions

__all__ = ["INNER_SPLITS", "Decided", "choose_threshold", "decide", "fit_decided", "needs_threshold"]

INNER_SPLITS = 3  # folds inside a fit's training rows that give its threshold


def needs_threshold(rule: dict[str, Any] | None) -> bool:
    return bool(rule) and rule["objective"] in ("metric", "recall", "precision")


def _confusions(truth: np.ndarray, score: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """One 2x2 confusion matrix per cut (positive when score >= cut): (cuts, 2, 2), rows true."""
    order = np.argsort(score, kind="mergesort")
    s, t = score[order], truth[order].astype(np.int64)
    below = np.searchsorted(s, cuts, side="left")          # rows predicted negative at each cut
    pos_below = np.concatenate([[0], np.cumsum(t)])[below]  # positives among them
    n, positives = len(t), int(t.sum())
    tn = below - pos_below
    fn = pos_below
    tp = positives - fn
    fp = (n - positives) - tn
    return np.stack([np.stack([tn, fp], axis=-1), np.stack([fn, tp], axis=-1)], axis=-2)


def choose_threshold(truth: np.ndarray, score: np.ndarray, rule: dict[str, Any]) -> float:
    """The threshold on ``score`` (the positive class's probability; ``truth`` 1 for the positive
    class) that the rule asks for. Candidates are midpoints between distinct scores (and 0.5);
    among equally good ones the one nearest 0.5 wins. When no threshold reaches a floor, the one
    that comes closest is taken (the run's scores then show the floor was missed)."""
    distinct = np.unique(score)
    cuts = np.unique(np.concatenate([(distinct[:-1] + distinct[1:]) / 2, [0.5], distinct[:1], distinct[-1:] + 1e-9]))
    cm = _confusions(truth, score, cuts)
    tp, fp, fn = cm[:, 1, 1].astype(float), cm[:, 0, 1].astype(float), cm[:, 1, 0].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    objective = rule["objective"]
    if objective == "metric":
        value = scores_from_confusions(cm)[rule["metric"]]
    elif objective == "recall":  # holding the floor, the most precise; short of it, the closest
        held = recall >= rule["floor"]
        value = np.where(held, 1.0 + precision, recall)
    else:
        held = precision >= rule["floor"]
        value = np.where(held, 1.0 + recall, precision)
    best = value >= value.max() - 1e-12
    return float(cuts[best][np.argmin(np.abs(cuts[best] - 0.5))])


def decide(proba: np.ndarray, rule: dict[str, Any] | None, threshold: float | None) -> np.ndarray:
    """Each row's class code: the rule's (a threshold on the positive class, or least expected
    cost), or the most probable class when there is no rule."""
    if not rule:
        return proba.argmax(axis=1)
    if rule["objective"] == "costs":
        return (proba @ np.asarray(rule["costs"], dtype="float64")).argmin(axis=1)
    positive = int(rule["positive"])
    return np.where(proba[:, positive] >= threshold, positive, 1 - positive)


def _inner_threshold(fit: Callable[[np.ndarray], Any], X, y: np.ndarray, rule: dict[str, Any], seed: int) -> float:
    """The threshold from the inner out-of-fold probabilities of the rows (X, y)."""
    from sklearn.model_selection import StratifiedKFold

    positive = int(rule["positive"])
    score = np.zeros(len(y))
    splits = min(INNER_SPLITS, int(np.bincount(y).min()))
    if splits < 2:  # too few rows of a class to hold any out: the usual cut
        return 0.5
    for inner_train, inner_test in StratifiedKFold(splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        model = fit(inner_train)
        proba = model.predict_proba(X.iloc[inner_test])
        column = list(model.classes_).index(positive) if positive in model.classes_ else None
        score[inner_test] = 0.0 if column is None else proba[:, column]
    return choose_threshold((y == positive).astype(int), score, rule)


class Decided:
    """A fitted pipeline and the rule that turns its probabilities into classes (with the
    threshold its own training rows gave)."""

    def __init__(self, pipeline: Any, rule: dict[str, Any], threshold: float | None) -> None:
        self.pipeline_ = pipeline
        self.rule_ = rule
        self.threshold_ = threshold

    @property
    def classes_(self) -> np.ndarray:
        return self.pipeline_.classes_

    @property
    def named_steps(self) -> Any:
        return self.pipeline_.named_steps

    @property
    def steps(self) -> list:
        return self.pipeline_.steps

    def predict_proba(self, X) -> np.ndarray:
        return self.pipeline_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        full = np.zeros((len(proba), int(max(self.classes_)) + 1))
        full[:, self.classes_] = proba
        return decide(full, self.rule_, self.threshold_)

    def spec(self) -> dict[str, Any]:
        """What the logged model needs to decide as this does (plain JSON)."""
        if self.rule_["objective"] == "costs":
            return {"objective": "costs", "costs": self.rule_["costs"]}
        return {"objective": self.rule_["objective"], "positive": int(self.rule_["positive"]),
                "threshold": float(self.threshold_)}


def fit_decided(fit: Callable[[np.ndarray | None], Any], X, y: np.ndarray, rows: np.ndarray | None,
                rule: dict[str, Any] | None, seed: int) -> Any:
    """``fit(rows)`` (a fitted pipeline on those rows; every row when None), wrapped with the rule:
    a threshold is first chosen on the inner folds of ``rows`` alone."""
    model = fit(rows)
    if not rule:
        return model
    threshold = None
    if needs_threshold(rule):
        picked = np.arange(len(y)) if rows is None else np.asarray(rows)
        threshold = _inner_threshold(lambda inner: fit(picked[inner]), X.iloc[picked], y[picked], rule, seed)
    return Decided(model, rule, threshold)
