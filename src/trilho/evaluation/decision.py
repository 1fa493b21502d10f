"""Calibrated probabilities, how a class is chosen from them, and where a threshold comes from.

``model.calibration`` ("sigmoid": Platt's logistic map of the log-odds; "isotonic": a monotone
step map) is fitted on the same inner out-of-fold probabilities as the threshold, never on the
rows a fold is scored on.

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

from trilho.evaluation.metrics import scores_from_confusions
from trilho.model.answers import calibrated, decided

__all__ = ["INNER_SPLITS", "Decided", "choose_threshold", "decide", "fit_calibration", "fit_decided", "needs_threshold"]

INNER_SPLITS = 3  # folds inside a fit's training rows that give its threshold


def needs_threshold(rule: dict[str, Any] | None) -> bool:
    return rule is not None and rule["objective"] in ("metric", "recall", "precision")


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
    cost), or the most probable class when there is no rule; as the logged model decides."""
    if not rule:
        return proba.argmax(axis=1)
    if rule["objective"] == "costs":
        return decided(proba, {"objective": "costs", "costs": rule["costs"]})
    return decided(proba, {"positive": int(rule["positive"]), "threshold": threshold})


def fit_calibration(proba: np.ndarray, y: np.ndarray, method: str) -> dict[str, Any]:
    """A calibration map (trilho.model.answers.calibrated reads it) fitted on out-of-fold ``proba``
    (one column per class) and the true codes ``y``: for two classes one map of the second class's
    probability, for more one per class, one vs rest."""
    columns = [1] if proba.shape[1] == 2 else list(range(proba.shape[1]))
    maps = []
    for k in columns:
        p, truth = proba[:, k], (y == k).astype(float)
        if method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            q = np.clip(p, 1e-12, 1 - 1e-12)
            if truth.min() == truth.max():
                maps.append({"a": 1.0, "b": 0.0})
                continue
            fit = LogisticRegression(C=1e6, max_iter=1000).fit(np.log(q / (1 - q))[:, None], truth)
            maps.append({"a": float(fit.coef_[0, 0]), "b": float(fit.intercept_[0])})
        else:
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, truth)
            maps.append({"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
    return {"method": method, "maps": maps}


def _inner_proba(fit: Callable[[np.ndarray], Any], X, y: np.ndarray, seed: int, n_classes: int) -> np.ndarray | None:
    """Out-of-fold probabilities of the rows (X, y) from ``INNER_SPLITS`` stratified folds of them
    (None when a class has too few rows to hold any out)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_classes)
    splits = min(INNER_SPLITS, int(counts[counts > 0].min()))
    if splits < 2:
        return None
    proba = np.zeros((len(y), n_classes))
    for inner_train, inner_test in StratifiedKFold(splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        model = fit(inner_train)
        proba[np.ix_(inner_test, model.classes_)] = model.predict_proba(X.iloc[inner_test])
    return proba


class Decided:
    """A fitted pipeline and the rule that turns its probabilities into classes (with the
    threshold its own training rows gave)."""

    def __init__(self, pipeline: Any, rule: dict[str, Any] | None, threshold: float | None,
                 calibration: dict[str, Any] | None = None, n_classes: int = 2) -> None:
        self.pipeline_ = pipeline
        self.rule_ = rule
        self.threshold_ = threshold
        self.calibration_ = calibration
        self.n_classes_ = n_classes

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(self.n_classes_) if self.calibration_ else self.pipeline_.classes_

    @property
    def named_steps(self) -> Any:
        return self.pipeline_.named_steps

    @property
    def steps(self) -> list:
        return self.pipeline_.steps

    def predict_proba(self, X) -> np.ndarray:
        """The pipeline's probabilities, through the calibration map when there is one."""
        proba = self.pipeline_.predict_proba(X)
        if not self.calibration_:
            return proba
        full = np.zeros((len(proba), self.n_classes_))
        full[:, self.pipeline_.classes_] = proba
        return calibrated(full, self.calibration_)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        full = np.zeros((len(proba), int(max(self.classes_)) + 1))
        full[:, self.classes_] = proba
        return decide(full, self.rule_, self.threshold_)

    def spec(self) -> dict[str, Any]:
        """What the logged model needs to answer as this does (plain JSON): ``calibration`` and
        ``decision`` keys of its spec.json, each only when there is one."""
        out: dict[str, Any] = {}
        if self.calibration_:
            out["calibration"] = self.calibration_
        if self.rule_ and self.rule_["objective"] == "costs":
            out["decision"] = {"objective": "costs", "costs": self.rule_["costs"]}
        elif self.rule_:
            out["decision"] = {"objective": self.rule_["objective"], "positive": int(self.rule_["positive"]),
                               "threshold": float(self.threshold_ if self.threshold_ is not None else 0.5)}
        return out


def fit_decided(fit: Callable[[np.ndarray | None], Any], X, y: np.ndarray, rows: np.ndarray | None,
                rule: dict[str, Any] | None, seed: int, calibration: str = "none") -> Any:
    """``fit(rows)`` (a fitted pipeline on those rows; every row when None), wrapped with the
    calibration map and the rule: both are first fitted on the inner out-of-fold probabilities of
    ``rows`` alone (the threshold on the calibrated ones). Neither asked for: the bare pipeline."""
    model = fit(rows)
    if not rule and calibration == "none":
        return model
    n_classes = int(y.max()) + 1
    picked = np.arange(len(y)) if rows is None else np.asarray(rows)
    inner = None
    if calibration != "none" or needs_threshold(rule):
        inner = _inner_proba(lambda part: fit(picked[part]), X.iloc[picked], y[picked], seed, n_classes)
    mapping = None
    if calibration != "none" and inner is not None:
        mapping = fit_calibration(inner, y[picked], calibration)
        inner = calibrated(inner, mapping)
    threshold = None
    if rule is not None and needs_threshold(rule):
        positive = int(rule["positive"])
        threshold = 0.5 if inner is None else choose_threshold((y[picked] == positive).astype(int), inner[:, positive],
                                                               rule)
    return Decided(model, rule, threshold, mapping, n_classes)
