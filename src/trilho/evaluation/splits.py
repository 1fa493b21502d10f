"""Where the rows go: stratified folds per seed, grouped when rows copy each other, and the holdout;
or, for dated rows (``TimeOrder``), forward folds over time and the latest period held out."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from trilho.errors import EvaluationError

__all__ = ["Plan", "TimeOrder", "day_text", "duplicate_groups", "grouped_stratified_folds", "holdout_split", "later_training",
           "split_plan", "strata"]

# one fold of one seed: (seed, fold index, training rows, test rows)
Plan = list[tuple[int, int, np.ndarray, np.ndarray]]


def duplicate_groups(X: pd.DataFrame) -> np.ndarray:
    """One group id per distinct feature row: copies of a row share a group."""
    hashes = pd.util.hash_pandas_object(X, index=False).to_numpy()
    return pd.factorize(hashes)[0]


# grouped folds are ``grouped_stratified_folds`` at every size (vectorised: 0.001 s a repeat at
# 8,300 groups, 0.16 s at 830,000). scikit-learn's StratifiedGroupKFold, a greedy loop over the groups
# in Python, took 0.2 s a repeat on the diabetes set's 1,000 rows (2 s of a default run's ten repeats,
# before any fit could start) and 20 s at 83,000 groups. BENCHMARKS.md.


def grouped_stratified_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """The fold of each row, so that every copy of a row (one group) is in one fold and each
    class's rows are spread over the folds as evenly as whole groups allow; vectorised.

    Each group is stratified by its majority label: within a label, the groups are put in a
    random order (``seed``) and cut into ``n_splits`` runs of about equal row counts, a group
    going to the fold where its middle row falls. ``groups`` are ids 0..G-1.
    """
    g, y = np.asarray(groups, dtype=np.int64), np.asarray(y, dtype=np.int64)
    n_groups, n_labels = int(g.max()) + 1, int(y.max()) + 1
    sizes = np.bincount(g, minlength=n_groups)
    label = np.bincount(g * n_labels + y, minlength=n_groups * n_labels).reshape(n_groups, n_labels).argmax(axis=1)
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(label[order], kind="stable")]  # by label, in random order within one
    size, lab = sizes[order], label[order]
    per_label = np.bincount(lab, weights=size, minlength=n_labels)
    label_start = np.concatenate([[0.0], np.cumsum(per_label)[:-1]])
    middle = np.cumsum(size) - size / 2 - label_start[lab]  # the group's middle row within its label
    fold = np.empty(n_groups, dtype=np.int64)
    fold[order] = np.minimum((middle * n_splits / per_label[lab]).astype(np.int64), n_splits - 1)
    return fold[g]


STRATA = 10  # a numeric target's folds are stratified on at most this many quantile bins


def strata(y: np.ndarray, n_splits: int) -> np.ndarray:
    """Class codes as they are; a numeric target (floats) cut into quantile bins, so that every
    fold sees its tails: at most ``STRATA`` bins of equal counts, each with at least two rows a
    fold (tied values are ranked in the order of their rows, so that no bin is left with fewer
    rows than the folds need, as a pile of equal values would leave one).

    >>> strata(np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0]), 2).tolist()
    [0, 0, 0, 0, 0, 0]
    >>> strata(np.arange(40, dtype=float)[::-1], 2).tolist()[:12]
    [9, 9, 9, 9, 8, 8, 8, 8, 7, 7, 7, 7]
    """
    y = np.asarray(y)
    if y.dtype.kind != "f":
        return y
    bins = max(1, min(STRATA, len(y) // (2 * n_splits)))
    ranks = pd.Series(y).rank(method="first").to_numpy() - 1
    return np.minimum((ranks * bins / len(y)).astype(np.int64), bins - 1)


_PLANS: OrderedDict[tuple, list[tuple[np.ndarray, np.ndarray]]] = OrderedDict()
_PLANS_BYTES = 256 << 20  # seeds' folds kept, at most this many bytes of row numbers (1M rows: 5 seeds)
_PLANS_LOCK = threading.Lock()


def _seed_folds(y: np.ndarray, n_splits: int, seed: int, groups: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """One seed's (train, test) rows. Kept for the next caller with the same labels, groups and
    seed: scikit-learn's grouped stratified folds take about 0.4 s a seed on 1,000 rows, and the
    baselines and the gate's re-evaluation of the champion ask for the same folds again."""
    digest = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    if groups is not None:
        digest.update(np.ascontiguousarray(groups).tobytes())
    key = (digest.hexdigest(), len(y), str(y.dtype), groups is None, n_splits, seed)
    with _PLANS_LOCK:
        if key in _PLANS:
            _PLANS.move_to_end(key)
            return _PLANS[key]
    dummy = np.zeros(len(y))
    if groups is None:
        splits = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(dummy, y)
    else:
        fold = grouped_stratified_folds(y, groups, n_splits, seed)
        splits = ((np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(n_splits))
    folds = list(splits)
    for train, test in folds:  # shared between callers: nobody may change them
        train.flags.writeable = test.flags.writeable = False
    with _PLANS_LOCK:
        _PLANS[key] = folds
        held = [sum(a.nbytes + b.nbytes for a, b in kept) for kept in _PLANS.values()]
        while len(_PLANS) > 1 and sum(held) > _PLANS_BYTES:
            _PLANS.popitem(last=False)
            held.pop(0)
    return folds


@dataclass(frozen=True, eq=False)
class TimeOrder:
    """Dated rows: ``days`` (each row's time, in days since 1970), the ``gap`` of days left out
    between training and test rows, ``max_train`` days of training rows (0: all earlier ones), and
    the share of the latest rows held out of every fold (``holdout``)."""

    days: np.ndarray
    gap: float = 0.0
    max_train: float = 0.0
    holdout: float = 0.0
    column: str = "the date"
    # cv.group: each row's group (a customer); a fold trains only on groups it does not test
    groups: np.ndarray | None = None
    group_column: str | None = None

    def cut(self, rows: np.ndarray, share: float) -> float:
        """The first time of the latest ``share`` of ``rows``: every row of that time and later is on
        the later side, so rows of one time never straddle the cut."""
        times = np.sort(self.days[rows])
        return float(times[min(len(times) - 1, max(1, int(np.ceil(len(times) * (1 - share)))))])

    def holdout_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows before the latest period (less the gap) and that period, the latest ``holdout``
        share of the rows."""
        rows = np.arange(len(self.days))
        start = self.cut(rows, self.holdout)
        test = rows[self.days >= start]
        train = self._apart(rows[self._window(rows, start)], test)
        if not len(train) or not len(test):
            raise EvaluationError(f"evaluation.holdout_fraction {self.holdout} leaves no rows before or after "
                                  f"{day_text(start)} once cv.gap is left out; lower cv.gap or change the fraction")
        return train, test

    def _apart(self, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """``train`` less the rows of any group ``test`` holds (cv.group), so that groups stay whole."""
        if self.groups is None:
            return train
        return train[~np.isin(self.groups[train], self.groups[test])]

    def _window(self, rows: np.ndarray, start: float) -> np.ndarray:
        """Which of ``rows`` train for a period from ``start``: before it less the gap, and within
        ``max_train`` days of that when a window is set."""
        last = start - self.gap
        days = self.days[rows]
        return (days < last) & (days >= last - self.max_train) if self.max_train else days < last

    def final_rows(self) -> np.ndarray | None:
        """The rows the final model is fitted on: the last ``max_train`` days (None: every row)."""
        if not self.max_train:
            return None
        return np.flatnonzero(self.days >= self.days.max() - self.max_train)

    def folds(self, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Forward folds on the rows before the holdout: those rows in ``n_splits + 1`` periods of
        about equal rows; fold i tests period i + 1 and trains on the rows before it, less the gap
        (and within ``max_train`` days)."""
        rows = np.arange(len(self.days))
        if self.holdout:
            rows = rows[self.days < self.cut(rows, self.holdout)]
        times = np.sort(self.days[rows])
        starts = [float(times[min(len(times) - 1, int(len(times) * k / (n_splits + 1)))])
                  for k in range(1, n_splits + 1)]
        ends = [*starts[1:], np.inf]
        out = []
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            test = rows[(self.days[rows] >= start) & (self.days[rows] < end)]
            before = rows[self._window(rows, start)]
            train = self._apart(before, test)
            if len(before) and len(test) and not len(train):
                raise EvaluationError(f"cv.group {self.group_column!r}: fold {i} ({day_text(start)}) tests every group its "
                                      "earlier rows hold, so it has nothing to train on; cv.group keeps whole groups that "
                                      "come and go (customers), not ones present in every period (stores)")
            if not len(train) or not len(test):
                raise EvaluationError(f"cv.scheme 'time': fold {i} ({day_text(start)}) has no "
                                      f"{'training' if not len(train) else 'test'} rows (the {len(rows)} rows before "
                                      f"the holdout span too few times for {n_splits} folds); lower cv.n_splits"
                                      f"{' or cv.gap' if self.gap else ''}")
            out.append((train, test))
        return out


def day_text(days: float) -> str:
    """A time in days since 1970, as a date (with the time when there is one)."""
    when = pd.Timestamp(0) + pd.Timedelta(days=days)
    return str(when.date()) if when == when.normalize() else str(when)


def later_training(days: np.ndarray, plan: Plan) -> tuple[int, int]:
    """How many folds of ``plan`` train on rows later than some of their test rows, of how many."""
    later = sum(int(len(train) > 0 and len(test) > 0 and days[train].max() > days[test].min())
                for _, _, train, test in plan)
    return later, len(plan)


def split_plan(y: np.ndarray, n_splits: int, seeds: list[int], groups: np.ndarray | None = None,
               order: TimeOrder | None = None) -> Plan:
    """Stratified folds per seed (a numeric target on its quantile bins, ``strata``); with ``groups``,
    rows of one group never straddle train and test. With ``order``: forward folds over time
    (``TimeOrder.folds``), one set, under the first seed."""
    if order is not None:
        return [(seeds[0], i, train, test) for i, (train, test) in enumerate(order.folds(n_splits))]
    y = strata(y, n_splits)
    return [(seed, i, train, test) for seed in seeds
            for i, (train, test) in enumerate(_seed_folds(y, n_splits, seed, groups))]


def holdout_split(y: np.ndarray, fraction: float, random_state: int, groups: np.ndarray | None = None,
                  order: TimeOrder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train/test split; with ``groups``, whole groups go to one side (stratified by
    each group's first label), so that no copy of a test row is trained on. With ``order``: the
    latest ``fraction`` of the rows, and the rows before it less the gap."""
    if order is not None:
        return dataclasses.replace(order, holdout=fraction).holdout_split()
    rows = np.arange(len(y))
    y = strata(y, max(2, round(1 / min(fraction, 1 - fraction))))
    if groups is None:
        train, test = train_test_split(rows, test_size=fraction, random_state=random_state, stratify=y)
        return train, test
    first = pd.Series(rows).groupby(groups).first()
    train_g, _ = train_test_split(first.index.to_numpy(), test_size=fraction, random_state=random_state,
                                  stratify=y[first.to_numpy()])
    in_train = np.isin(groups, train_g)
    return rows[in_train], rows[~in_train]
