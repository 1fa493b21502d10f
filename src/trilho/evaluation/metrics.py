"""The scores of a fold: every metric from confusion matrices and class probabilities, in numpy.

Closed forms equal to scikit-learn's functions (tests check them), computed for every fold and
for stacks of bootstrap confusion matrices at once, so they must cost little.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALL_METRICS", "CONFUSION_METRICS", "ECE_BINS", "LOWER_IS_BETTER", "METRICS", "METRIC_RANGE",
           "REGRESSION_METRICS", "average_precision", "average_ranks", "brier_score", "confusion",
           "expected_calibration_error", "metrics_for", "pinball_loss", "probability_metrics", "regression_scores",
           "reliability", "row_log_loss", "row_losses", "scores_from_confusion", "scores_from_confusions"]

METRICS = (
    "accuracy", "balanced_accuracy",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "precision_macro", "recall_macro", "f1_macro",
    "mcc", "roc_auc_ovr", "pr_auc", "log_loss", "brier", "ece",
)
# the values each metric can take: intervals are clipped to them
METRIC_RANGE = dict.fromkeys(METRICS, (0.0, 1.0)) | {"mcc": (-1.0, 1.0), "log_loss": (0.0, float("inf")),
                                                     "brier": (0.0, 2.0)}
ECE_BINS = 10  # equal-width bins of the predicted class's probability
CONFUSION_METRICS = METRICS[:9]  # computed from one confusion matrix; the rest need probabilities
# a numeric target's metrics: root mean squared, mean and median absolute error, R², mean absolute
# percentage error (a share: 0.12 is 12%; for targets that are never 0) and the pinball loss of the
# quantile a decision asks for (trilho.experiment's decision.costs over/under)
REGRESSION_METRICS = ("rmse", "mae", "r2", "median_ae", "mape", "pinball")
ALL_METRICS = METRICS + REGRESSION_METRICS
METRIC_RANGE |= dict.fromkeys(REGRESSION_METRICS, (0.0, float("inf"))) | {"r2": (-float("inf"), 1.0)}
METRIC_RANGE["coverage"] = (0.0, 1.0)  # a prediction interval's share of rows inside it (per group)
# losses: a smaller value is the better model
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece", "rmse", "mae", "median_ae", "mape", "pinball"})


def metrics_for(task: str) -> tuple[str, ...]:
    """The metric names an experiment of ``task`` ("classification" or "regression") may ask for."""
    return REGRESSION_METRICS if task == "regression" else METRICS


def pinball_loss(y: np.ndarray, pred: np.ndarray, quantile: float) -> float:
    """The mean pinball (quantile) loss: ``quantile`` times what is under-predicted, 1 - ``quantile``
    times what is over-predicted (scikit-learn's mean_pinball_loss with ``alpha=quantile``).

    >>> round(pinball_loss(np.array([10.0, 10.0]), np.array([8.0, 13.0]), 0.8), 4)   # (0.8 * 2 + 0.2 * 3) / 2
    1.1
    """
    diff = np.asarray(y, dtype="float64") - np.asarray(pred, dtype="float64")
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1) * diff)))


def regression_scores(y: np.ndarray, pred: np.ndarray, quantile: float | None = None) -> dict[str, float]:
    """Every metric of REGRESSION_METRICS for one fold's true values and predictions, equal to
    scikit-learn's functions (a test checks them); ``pinball`` at ``quantile`` (0.5 without one:
    half the mean absolute error). R² of a fold whose values are all equal (no variance to explain)
    is 0.0 here, whatever the predictions.

    >>> s = regression_scores(np.array([3.0, 5.0, 2.0, 8.0]), np.array([2.5, 5.0, 3.0, 7.0]))
    >>> round(s["rmse"], 4), s["mae"], round(s["r2"], 4), s["median_ae"]
    (0.75, 0.625, 0.8929, 0.75)
    """
    y = np.asarray(y, dtype="float64")
    pred = np.asarray(pred, dtype="float64")
    error = y - pred
    absolute = np.abs(error)
    spread = float(((y - y.mean()) ** 2).sum())
    eps = np.finfo(np.float64).eps  # scikit-learn's floor on |y| in the percentage error
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(absolute.mean()),
            "r2": 1.0 - float((error**2).sum()) / spread if spread > 0 else 0.0,
            "median_ae": float(np.median(absolute)),
            "mape": float(np.mean(absolute / np.maximum(np.abs(y), eps))),
            "pinball": pinball_loss(y, pred, 0.5 if quantile is None else quantile)}


def row_losses(y: np.ndarray, pred: np.ndarray, metric: str, quantile: float | None = None) -> np.ndarray:
    """Each row's share of a regression metric's loss, to pair two models row by row: the squared
    error (``rmse``, ``r2``), the absolute error (``mae``, ``median_ae``), the absolute percentage
    error (``mape``), the pinball loss (``pinball``)."""
    error = np.asarray(y, dtype="float64") - np.asarray(pred, dtype="float64")
    if metric in ("rmse", "r2"):
        return error**2
    if metric == "mape":
        return np.abs(error) / np.maximum(np.abs(np.asarray(y, dtype="float64")), np.finfo(np.float64).eps)
    if metric == "pinball":
        q = 0.5 if quantile is None else quantile
        return np.maximum(q * error, (q - 1) * error)
    return np.abs(error)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(num, dtype="float64")
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusions(cms: np.ndarray) -> dict[str, np.ndarray]:
    """CONFUSION_METRICS for a stack of confusion matrices (..., K, K): one array per metric."""
    cm = np.asarray(cms, dtype="float64")
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = support.sum(axis=-1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    weights = support / total[..., None]
    present = support > 0
    # Matthews correlation, multiclass (Gorodkin's R_K, as scikit-learn computes it); 0 when undefined
    covariance = tp.sum(axis=-1) * total - (support * predicted).sum(axis=-1)
    spread = np.sqrt((total**2 - (predicted**2).sum(axis=-1)) * (total**2 - (support**2).sum(axis=-1)))
    mcc = _ratio(covariance, spread)
    return {
        "accuracy": tp.sum(axis=-1) / total,
        "balanced_accuracy": (recall * present).sum(axis=-1) / present.sum(axis=-1),
        "precision_weighted": (precision * weights).sum(axis=-1),
        "recall_weighted": (recall * weights).sum(axis=-1),
        "f1_weighted": (f1 * weights).sum(axis=-1),
        "precision_macro": precision.mean(axis=-1),
        "recall_macro": recall.mean(axis=-1),
        "f1_macro": f1.mean(axis=-1),
        "mcc": mcc,
    }


def confusion(y: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The confusion matrix over the sorted ``labels`` (rows true, columns predicted), as
    scikit-learn's confusion_matrix gives it (a value outside ``labels`` is not counted), without
    its checks of the inputs: a fold's or a group's rows, many times a run.

    >>> confusion(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), np.arange(3)).tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    labels = np.asarray(labels)
    k = len(labels)
    truth, guess = np.searchsorted(labels, y), np.searchsorted(labels, pred)
    known = (truth < k) & (guess < k)
    known[known] = (labels[truth[known]] == np.asarray(y)[known]) & (labels[guess[known]] == np.asarray(pred)[known])
    return np.bincount(truth[known] * k + guess[known], minlength=k * k).reshape(k, k).astype(np.int64)


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Every metric in CONFUSION_METRICS from one confusion matrix (rows true, columns predicted).

    Equal to scikit-learn's functions with zero_division=0 when every class appears in the fold,
    which stratified folds guarantee; one matrix per fold instead of eight metric calls.

    >>> scores = scores_from_confusion(np.array([[8, 2], [1, 9]]))
    >>> scores["accuracy"], round(scores["precision_macro"], 3), round(scores["mcc"], 3)
    (0.85, 0.854, 0.704)
    """
    return {k: float(v) for k, v in scores_from_confusions(np.asarray(cm)).items()}



def probability_metrics(y: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """One-vs-rest ROC AUC and PR AUC (average precision; both macro over the classes present in
    the fold; for two classes the ROC AUC is the binary one and the PR AUC that of the second
    class, the positive one), log loss, the Brier score and the expected calibration error.

    Closed forms in numpy (equal to scikit-learn's roc_auc_score and log_loss, which a test
    checks); computed in every fold, so they must cost little.
    """
    index = np.searchsorted(labels, y)
    aucs, precisions = [], []
    for j in range(len(labels)):
        positive = index == j
        n_pos = int(positive.sum())
        if 0 < n_pos < len(y):
            ranks = average_ranks(proba[:, j])
            aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))
            if len(labels) > 2 or j == 1:
                precisions.append(average_precision(positive, proba[:, j]))
    return {"roc_auc_ovr": float(np.mean(aucs)) if aucs else float("nan"),
            "pr_auc": float(np.mean(precisions)) if precisions else float("nan"),
            "log_loss": float(row_log_loss(proba, index).mean()),
            "brier": brier_score(proba, index), "ece": expected_calibration_error(proba, index)}


def brier_score(proba: np.ndarray, index: np.ndarray) -> float:
    """The mean squared distance between the probabilities and the one-hot truth (``index``: each
    row's class column), as scikit-learn's brier_score_loss gives it: halved for two classes (the
    positive class's squared error, 0 to 1), whole for more (0 to 2).

    >>> round(brier_score(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])), 4)
    0.025
    """
    truth = np.zeros_like(proba, dtype="float64")
    truth[np.arange(len(index)), index] = 1.0
    total = float(((proba - truth) ** 2).sum(axis=1).mean())
    return total / 2 if proba.shape[1] == 2 else total


def reliability(proba: np.ndarray, index: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The predicted class's probability against how often it is right, in ``bins`` equal-width
    bins of that probability: per bin its rows, mean probability and share correct (NaN where
    the bin is empty)."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == index).astype("float64")
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = np.bincount(which, minlength=bins).astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, confidence, minlength=bins) / rows
        right = np.bincount(which, correct, minlength=bins) / rows
    return rows, mean_p, right


def expected_calibration_error(proba: np.ndarray, index: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error (top-label, Guo et al. 2017): over equal-width bins of the
    predicted class's probability, the rows' share times |share correct - mean probability|.
    0 for probabilities that mean what they say; it does not reward ranking."""
    rows, mean_p, right = reliability(proba, index, bins)
    used = rows > 0
    return float((rows[used] / rows.sum() * np.abs(right[used] - mean_p[used])).sum())


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank from 1, tied values sharing their mean rank (scipy.stats.rankdata's
    default, which a test checks), without its checks of the input: twice a fold and class.

    >>> average_ranks(np.array([0.3, 0.1, 0.3, 0.2])).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]  # where each run of tied values begins
    run = np.cumsum(starts)  # each ordered value's run, from 1
    bounds = np.r_[np.flatnonzero(starts), len(values)]  # each run's first position, and the end
    ranks = np.empty(len(values))
    ranks[order] = (bounds[run - 1] + bounds[run] + 1) / 2  # the mean of positions first+1 .. last+1
    return ranks


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as a step function (scikit-learn's average_precision_score):
    the sum over thresholds of precision times the recall gained there; tied scores form one threshold."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the end of each run of tied scores
    tp = np.cumsum(positive)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / tp[-1]
    return float((precision * recall_gain).sum())


def row_log_loss(proba: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each row's log loss: -log of its true class's probability (``index`` is the class's column),
    probabilities clipped to [1e-15, 1] and renormalised as scikit-learn's log_loss does."""
    clipped = np.clip(proba, 1e-15, 1.0)
    return -np.log(clipped[np.arange(len(index)), index] / clipped.sum(axis=1))
