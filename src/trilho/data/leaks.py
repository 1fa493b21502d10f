"""Leaks and traps caught before any fit: pure, the cleaned rows in, findings out.

Three checks on the rows the folds will see (``trilho.workflows.context.prepare`` runs them):

- ``leak``: a feature that alone predicts the label almost perfectly (a copy of the target, or a
  value known only after the outcome). Each feature's own out-of-fold ROC AUC (one-vs-rest, the
  lowest over the classes): a numeric feature cut into quantile bins, a categorical one by its
  values, missing values as a bin of their own; the class shares per bin are learned on the
  training part of 3 stratified folds and score the rest. Only counts per bin are kept, so a
  feature costs a few bincounts over its rows (0.03 s for the diabetes data, about 2 s for a
  million rows x 50 features, of which 250,000 are scored).
  A numeric target (regression): each feature's own out-of-fold R² on the target's ranks (the
  mean rank per bin, learned on the training folds), so that a copy of the target, or any
  monotone transform of it (a log price beside the price), scores about 1.
- ``small_class``: a class with fewer than ``MIN_TEST_ROWS`` rows per test fold on average.
- ``date``: a column that looks like dates or times (text that parses as dates, Unix timestamps,
  years, YYYYMM or YYYYMMDD codes), and whether the label's shares drift along it, which under
  shuffled folds trains on the future of the rows it tests.

Each finding is ``{"column", "kind", "score", "message"}``; ``zero_width`` names a metric whose
every fold score is the same, for after the CV.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from trilho.evaluation.splits import grouped_stratified_folds, strata

__all__ = ["LEAK_FOLDS", "MAX_SCORED_ROWS", "MIN_TEST_ROWS", "blocking", "find_leaks", "single_feature_scores", "zero_width"]

LEAK_FOLDS = 3          # folds of the one-feature scores: enough to be out of fold, cheap
MIN_TEST_ROWS = 5       # a class's rows per test fold under which its recall is noise (see _small_classes)
_DRIFT_POINTS = 0.10    # a class share moving this much between the earliest and latest fifth of rows...
_DRIFT_SE = 3.0         # ...and by this many standard errors of that difference, is a drift
_SAMPLE = 200_000       # rows a quantile's edges or a date's drift are read from
_TEXT_SAMPLE = 20_000   # rows of a date written as text whose drift is read
MAX_SCORED_ROWS = 250_000  # rows the one-feature scores are read from on large data
_CLASS_FLOOR = 5_000    # rows of each class kept among them (all of a smaller class)


def blocking(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The findings that stop a run under ``validation.leaks = "reject"`` and keep a model out of
    champion: the one-feature leaks (a small class or a date column is reported, not a leak)."""
    return [f for f in findings if f["kind"] == "leak"]


def _bins(values: pd.Series, categorical: bool, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """One bin per row, 0..B-1, missing values the last bin."""
    if categorical:
        codes = pd.factorize(values, use_na_sentinel=True)[0].astype(np.int64)
        codes[codes < 0] = codes.max() + 1
        return codes
    x = values.to_numpy(dtype="float64", na_value=np.nan)
    finite = np.isfinite(x)
    known = x[finite]
    if len(known) > _SAMPLE:  # the edges are unsupervised: a sample of the values places them
        known = known[rng.choice(len(known), _SAMPLE, replace=False)]
    if not len(known):
        return np.zeros(len(x), dtype=np.int64)
    edges = np.unique(np.quantile(known, np.linspace(0, 1, n_bins + 1)[1:-1]))
    out = np.searchsorted(edges, np.where(finite, x, edges[0]), side="right").astype(np.int64)
    out[~finite] = len(edges) + 1
    return out


def _auc_from_counts(score: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC of a score that is constant within bins: ``pos``/``neg`` rows per bin (ties count half)."""
    P, N = pos.sum(), neg.sum()
    if not P or not N:
        return math.nan
    levels, which = np.unique(score, return_inverse=True)
    p, n = np.bincount(which, pos, len(levels)), np.bincount(which, neg, len(levels))
    below = np.cumsum(n) - n  # negatives with a lower score
    return float((p * below).sum() + 0.5 * (p * n).sum()) / float(P * N)


def _feature_score(bins: np.ndarray, y: np.ndarray, fold: np.ndarray, n_classes: int, n_folds: int) -> float:
    """The lowest over the classes of each class's one-vs-rest AUC (averaged over the folds) of the
    class shares per bin learned on the other folds."""
    n_bins = int(bins.max()) + 1
    counts = np.bincount((fold * n_bins + bins) * n_classes + y,
                         minlength=n_folds * n_bins * n_classes).reshape(n_folds, n_bins, n_classes).astype("float64")
    total = counts.sum(axis=0)
    prior = total.sum(axis=0) / total.sum()
    auc = np.full((n_folds, n_classes), np.nan)
    for f in range(n_folds):
        train, test = total - counts[f], counts[f]
        share = (train + prior) / (train.sum(axis=1, keepdims=True) + 1.0)  # one pseudo-row at the prior
        in_test = test.sum(axis=1)
        for c in range(n_classes):
            auc[f, c] = _auc_from_counts(share[:, c], test[:, c], in_test - test[:, c])
    seen = ~np.isnan(auc).all(axis=0)
    return float(np.nanmean(auc[:, seen], axis=0).min()) if seen.any() else 0.5


def _rank_r2(bins: np.ndarray, rank: np.ndarray, fold: np.ndarray, n_folds: int) -> float:
    """Out-of-fold R² of the mean ``rank`` per bin learned on the other folds (averaged over the folds)."""
    n_bins = int(bins.max()) + 1
    at = fold * n_bins + bins
    size = n_folds * n_bins
    n = np.bincount(at, minlength=size).reshape(n_folds, n_bins).astype("float64")
    s1 = np.bincount(at, rank, minlength=size).reshape(n_folds, n_bins)
    s2 = np.bincount(at, rank * rank, minlength=size).reshape(n_folds, n_bins)
    prior = s1.sum() / n.sum()
    found = []
    for f in range(n_folds):
        train_n, train_s = n.sum(axis=0) - n[f], s1.sum(axis=0) - s1[f]
        m = np.where(train_n > 0, train_s / np.maximum(train_n, 1.0), prior)  # a bin no training row has: the mean
        rows = n[f].sum()
        if rows < 2:
            continue
        sse = float((s2[f] - 2 * m * s1[f] + n[f] * m * m).sum())
        sst = float(s2[f].sum() - s1[f].sum() ** 2 / rows)
        if sst > 0:
            found.append(1.0 - sse / sst)
    return float(np.mean(found)) if found else 0.0


def _scored_rows(y: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray | None:
    """Rows to score on large data: ``max_rows`` at random, every class keeping at least
    ``_CLASS_FLOOR`` of its rows (all of a smaller one; a numeric target's: at random); None when
    every row is scored."""
    if len(y) <= max_rows:
        return None
    if y.dtype.kind == "f":
        return np.sort(rng.choice(len(y), max_rows, replace=False))
    counts = np.bincount(y)
    quota = np.minimum(counts, np.maximum(np.ceil(counts * max_rows / len(y)), _CLASS_FLOOR)).astype(np.int64)
    order = np.lexsort((rng.random(len(y)), y))  # by class, in random order within one
    rank = np.arange(len(y)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[y[order]]
    return np.sort(order[rank < quota[y[order]]])


def single_feature_scores(X: pd.DataFrame, y: np.ndarray, *, categorical: set[str] | frozenset[str] = frozenset(),
                          groups: np.ndarray | None = None, random_state: int = 0,
                          max_rows: int = MAX_SCORED_ROWS) -> dict[str, float]:
    """Each feature's own out-of-fold ROC AUC, from quantile bins or categories: the lowest over the
    classes of its one-vs-rest AUC (the AUC itself for two classes), so that a feature scores high
    only when it tells every class apart (one that only isolates one class of three, as a petal
    length does, stays under a leak's score). Above ``max_rows`` rows, that many are scored.

    ``groups``: rows that copy each other stay in one fold, as in the run's folds.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 600)
    >>> X = pd.DataFrame({"copy": y * 1.0 + rng.normal(0, 0.01, 600), "noise": rng.normal(0, 1, 600)})
    >>> {k: round(v, 1) for k, v in single_feature_scores(X, y).items()}
    {'copy': 1.0, 'noise': 0.5}
    """
    regression = np.asarray(y).dtype.kind == "f"  # a numeric target: R² on its ranks (see the module)
    y = np.asarray(y) if regression else np.asarray(y, dtype=np.int64)
    n_classes = 0 if regression else int(y.max()) + 1 if len(y) else 1
    rng = np.random.default_rng(random_state)
    pick = _scored_rows(y, max_rows, rng)
    if pick is not None:  # an AUC on 250,000 rows is within 0.002 of the whole set's: the rest only cost time
        X, y = X.iloc[pick], y[pick]
        groups = None if groups is None else np.asarray(groups)[pick]
    ids = pd.factorize(groups)[0] if groups is not None else np.arange(len(y))
    fold = grouped_stratified_folds(strata(y, LEAK_FOLDS), ids, LEAK_FOLDS, random_state)  # class codes as they are
    # fine bins (4 training rows each, 10 to 100): a copy of the label mixes classes only in the bin
    # that straddles two of them, which costs a class of share s about 0.5 / (bins² s) of its AUC
    # (35 rows a bin put a class of 4% inside one bin with the rest: 0.969 for a copy); small bins
    # only make an honest feature's shares noisier, so it scores lower, never higher
    n_bins = int(np.clip(len(y) * (LEAK_FOLDS - 1) / LEAK_FOLDS / 4, 10, 100))
    if regression:
        rank = pd.Series(y).rank().to_numpy() / max(len(y), 1)

        def score(bins: np.ndarray) -> float:
            return _rank_r2(bins, rank, fold, LEAK_FOLDS)
    else:
        def score(bins: np.ndarray) -> float:
            return _feature_score(bins, y, fold, n_classes, LEAK_FOLDS)
    return {str(col): score(_bins(X[col], col in categorical, n_bins, rng)) for col in X.columns}


def _leaks(scores: dict[str, float], leak_score: float, regression: bool = False) -> list[dict[str, Any]]:
    found = []
    measure = "R² on the target's ranks" if regression else "ROC AUC"
    for col, score in sorted(scores.items(), key=lambda kv: -kv[1]):
        if score >= leak_score:
            found.append({"column": col, "kind": "leak", "score": round(score, 4), "message": (
                f"column {col!r} alone predicts the {'target' if regression else 'label'} (its own out-of-fold "
                f"{measure} {score:.4f} >= "
                f"validation.leak_score {leak_score:g}): a copy of the target, or known only after the outcome? "
                f"If so, set data.drop = [{col!r}]")})
    return found


def _small_classes(y: np.ndarray, classes: list[str], n_splits: int) -> list[dict[str, Any]]:
    """Classes with fewer than ``MIN_TEST_ROWS`` rows per test fold on average. Below that one row
    moves the class's recall in a fold by more than 20 points (the binomial standard error of a
    recall of 0.8 on 5 rows is already 0.18), so its fold scores, and every macro metric over
    them, are noise; 5 is also the usual floor of expected counts per cell for a count to be trusted."""
    found = []
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
    for code, n in enumerate(counts):
        per_fold = n / n_splits
        if 0 < per_fold < MIN_TEST_ROWS:
            name = classes[code] if code < len(classes) else str(code)
            found.append({"column": name, "kind": "small_class", "score": round(float(per_fold), 2), "message": (
                f"class {name!r} has {n} rows: about {per_fold:.1f} per test fold of {n_splits}, under "
                f"{MIN_TEST_ROWS}, so each fold's recall of it moves in steps of {100 / max(per_fold, 1):.0f} "
                "points and macro metrics swing with one row; add rows of it, merge it into a neighbouring "
                "class (data.labels), or lower cv.n_splits")})
    return found


_TEXT_DATE = re.compile(
    r"^(\d{4}[-/.]\d{1,2}([-/.]\d{1,2})?([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}( \d{1,2}:\d{2}(:\d{2})?)?"
    r"|\d{1,2}[ -][A-Z]{3,9}[ -]\d{2,4}|[A-Z]{3,9} \d{1,2},? \d{4})$", re.IGNORECASE)

_EPOCH = 946_684_800.0, 4_102_444_800.0  # 2000-01-01 .. 2100-01-01 in seconds


def _numeric_time(x: np.ndarray) -> tuple[str, np.ndarray] | None:
    """What kind of time integers ``x`` look like (finite values), and the values in order of time."""
    if len(x) < 2 or not np.all(x == np.round(x)) or len(np.unique(x[: 10_000])) < 2:
        return None
    lo, hi = float(x.min()), float(x.max())
    for unit, scale in (("seconds", 1.0), ("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9)):
        if _EPOCH[0] * scale <= lo and hi <= _EPOCH[1] * scale:
            return f"Unix timestamps in {unit}", x
    month, day = (x // 100) % 100, x % 100
    if lo >= 19_000_101 and hi <= 21_001_231 and np.all((month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)):
        return "dates written as YYYYMMDD numbers", x
    if lo >= 190_001 and hi <= 210_012 and np.all((day >= 1) & (day <= 12)):
        return "year and month codes (YYYYMM)", x
    if lo >= 1900 and hi <= 2100:
        return "years", x
    return None


def _looks_timed(head: pd.Series, categorical: bool) -> bool:
    """Whether the first values of a column could be times (the whole column is checked after)."""
    if not len(head):
        return False
    if not categorical:
        x = head.to_numpy(dtype="float64")
        return _numeric_time(x[np.isfinite(x)]) is not None
    probe = pd.Series(head.astype(str).unique()[:500])
    numbers = pd.to_numeric(probe, errors="coerce")
    if numbers.notna().all():
        return _numeric_time(numbers.to_numpy(dtype="float64")) is not None
    return bool(probe.str.match(_TEXT_DATE).mean() >= 0.9)


def _time_of(values: pd.Series, categorical: bool, rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(what the column looks like, the rows read, their time as numbers) for a time-like column."""
    if not _looks_timed(values.iloc[:2_000].dropna(), categorical):  # most columns end here, cheaply
        return None
    rows = np.flatnonzero(values.notna().to_numpy())
    if len(rows) > _SAMPLE:
        rows = np.sort(rng.choice(rows, _SAMPLE, replace=False))
    if not len(rows):
        return None
    sample = values.iloc[rows]
    if not categorical:
        x = sample.to_numpy(dtype="float64")
        keep = np.isfinite(x)
        found = _numeric_time(x[keep])
        return (found[0], rows[keep], found[1]) if found else None
    text = sample.astype(str)
    distinct = pd.Series(text.unique())
    probe = distinct.iloc[:500]
    numbers = pd.to_numeric(probe, errors="coerce")
    if numbers.notna().all():  # integer codes written as text: the numeric checks
        x = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
        found = _numeric_time(x[np.isfinite(x)])
        return (found[0], rows[np.isfinite(x)], found[1]) if found else None
    if probe.str.match(_TEXT_DATE).mean() < 0.9:
        return None
    if len(text) > _TEXT_SAMPLE:  # parsing text is slow: the drift is read from a sample of the rows
        pick = np.sort(rng.choice(len(text), _TEXT_SAMPLE, replace=False))
        rows, text = rows[pick], text.iloc[pick]
        distinct = pd.Series(text.unique())
    parsed = pd.to_datetime(distinct, errors="coerce", format="mixed", utc=True)
    if parsed.notna().mean() < 0.9:
        return None
    seconds = ((parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()).to_numpy(dtype="float64")
    when = seconds[pd.Index(distinct).get_indexer(pd.Index(text))]
    ok = np.isfinite(when)
    return "dates written as text", rows[ok], when[ok]


def _drift(time: np.ndarray, y: np.ndarray, classes: list[str]) -> tuple[float, str]:
    """The largest change in a class's share between the earliest and the latest fifth of rows, and
    the sentence that says it (or that it stays within noise); for a numeric target (floats), the
    change of its mean in units of its standard deviation."""
    order = np.argsort(time, kind="stable")
    m = max(len(order) // 5, 1)
    early, late = y[order[:m]], y[order[-m:]]
    if y.dtype.kind == "f":
        sd = float(np.std(y)) or 1.0
        shift = float(abs(late.mean() - early.mean())) / sd
        se = math.sqrt(float(early.var()) / len(early) + float(late.var()) / len(late)) / sd
        said = (f"the target's mean is {early.mean():.4g} in the earliest fifth of rows and {late.mean():.4g} in "
                "the latest")
        return shift, said if shift >= 2.5 * _DRIFT_POINTS and shift >= _DRIFT_SE * se else ""
    k = len(classes)
    a = np.bincount(early, minlength=k) / len(early)
    b = np.bincount(late, minlength=k) / len(late)
    c = int(np.argmax(np.abs(b - a)))
    pooled = (a[c] + b[c]) / 2
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / len(early) + 1 / len(late)))
    diff = float(abs(b[c] - a[c]))
    said = f"class {classes[c]!r} is {a[c]:.0%} of the earliest fifth of rows and {b[c]:.0%} of the latest"
    if diff >= _DRIFT_POINTS and diff >= _DRIFT_SE * se:
        return diff, said
    return diff, ""


def _dates(X: pd.DataFrame, y: np.ndarray, classes: list[str], categorical: set[str] | frozenset[str],
           random_state: int) -> list[dict[str, Any]]:
    found = []
    rng = np.random.default_rng(random_state)
    y = np.asarray(y) if np.asarray(y).dtype.kind == "f" else np.asarray(y, dtype=np.int64)
    for col in X.columns:
        seen = _time_of(X[col], col in categorical, rng)
        if seen is None:
            continue
        kind, rows, time = seen
        diff, drifted = _drift(time, y[rows], classes)
        if drifted:
            what = "target" if y.dtype.kind == "f" else "label"
            verdict = (f"the {what} drifts with it ({drifted}), so shuffled folds train on the future of the rows "
                       "they test and the CV scores flatter a model that will predict later rows: set "
                       f"data.drop = [{col!r}] (or keep what it means, such as a month or weekday), and judge the "
                       "model on later rows (registry.reference drawn from the latest period)")
        elif y.dtype.kind == "f":
            verdict = (f"the target's mean moves {diff:.2f} standard deviations from its earliest fifth of rows to "
                       "the latest, so shuffled folds leak little; as a feature it tells the model when a row was "
                       f"written: if rows to predict come later, set data.drop = [{col!r}]")
        else:
            verdict = (f"the label's shares stay within {diff:.0%} of each other from its earliest fifth of rows to "
                       "the latest, so shuffled folds leak little; as a feature it tells the model when a row was "
                       f"written: if rows to predict come later, set data.drop = [{col!r}]")
        found.append({"column": str(col), "kind": "date", "score": round(diff, 4),
                      "message": f"column {col!r} looks like {kind}; {verdict}"})
    return found


def find_leaks(X: pd.DataFrame, y: np.ndarray, classes: list[str], *, categorical: set[str] | frozenset[str] = frozenset(),
               n_splits: int = 5, leak_score: float = 0.99, groups: np.ndarray | None = None,
               random_state: int = 0) -> list[dict[str, Any]]:
    """Every finding on the rows the folds will see: one-feature leaks (strongest first), classes
    too small to score, time-like columns. ``classes`` names the codes of ``y``; a numeric target
    (floats, no classes) has its leaks scored by R² on ranks and no small classes."""
    regression = np.asarray(y).dtype.kind == "f"
    y = np.asarray(y) if regression else np.asarray(y, dtype=np.int64)
    if not len(y) or not len(X.columns):
        return []
    scores = single_feature_scores(X, y, categorical=categorical, groups=groups, random_state=random_state)
    return (_leaks(scores, leak_score, regression) + ([] if regression else _small_classes(y, classes, n_splits))
            + _dates(X, y, classes, categorical, random_state))


def zero_width(metric_summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per metric whose every fold score is the same (an interval of width zero).

    >>> found = zero_width({"accuracy": {"mean": 1.0, "std": 0.0, "low": 1.0, "high": 1.0},
    ...                     "f1_macro": {"mean": 0.8, "std": 0.05, "low": 0.7, "high": 0.9}})
    >>> [line[:60] for line in found]
    ['accuracy is 1.0000 on every fold: its interval [1.0000, 1.00']
    """
    out = []
    for name, summary in metric_summaries.items():
        std, low, high = summary.get("std"), summary.get("low"), summary.get("high")
        if std is None or low is None or high is None or not math.isfinite(float(std)):
            continue
        if float(std) <= 1e-12 and float(high) - float(low) <= 1e-12:
            out.append(f"{name} is {float(summary['mean']):.4f} on every fold: its interval [{float(low):.4f}, "
                       f"{float(high):.4f}] has width zero, which real data almost never gives; look for a leak "
                       "(a feature that copies the label: data.drop) or a task the folds cannot vary")
    return out
