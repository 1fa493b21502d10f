"""What forward folds over time say, and what they do not: one score per period in time order, the
trend across the periods, and the latest period (the holdout, scored once) with a row-bootstrap
interval. Folds over time are not exchangeable (each trains on more rows than the one before, and
the world moves between them), so no pooled interval of their mean is claimed. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from trilho.evaluation.metrics import LOWER_IS_BETTER
from trilho.evaluation.splits import TimeOrder, day_text

__all__ = ["BOOTSTRAP_DRAWS", "period_scores", "time_summary"]

BOOTSTRAP_DRAWS = 500  # replicates of the latest period's rows


def period_scores(folds: pd.DataFrame, oof: pd.DataFrame, order: TimeOrder, metrics: list[str]) -> list[dict[str, Any]]:
    """Per fold, in time order: the first and last day it tests, its rows, its training rows and
    last training day, and its score on every metric."""
    out = []
    for _, fold in folds.sort_values("fold").iterrows():
        rows = oof.loc[oof["fold"] == fold["fold"], "row"].to_numpy()
        days = order.days[rows]
        out.append({"fold": int(fold["fold"]), "start": day_text(days.min()), "end": day_text(days.max()),
                    "rows": int(fold["n_test"]), "training_rows": int(fold["n_train"]),
                    "scores": {m: float(fold[m]) for m in metrics if m in fold}})
    return out


def _trend(values: list[float]) -> float:
    """The least-squares change of a score from one period to the next."""
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), np.asarray(values, dtype="float64"), 1)[0])


def _bootstrap(score: Callable[[np.ndarray], dict[str, float]], n: int, metric: str, level: float,
               seed: int) -> tuple[float, float] | None:
    """The percentile interval of ``metric`` over row-bootstrap replicates of ``n`` rows."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(BOOTSTRAP_DRAWS):
        value = score(rng.integers(0, n, n)).get(metric, float("nan"))
        if np.isfinite(value):
            found.append(value)
    if len(found) < BOOTSTRAP_DRAWS // 2:
        return None
    lo, hi = np.quantile(found, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def time_summary(folds: pd.DataFrame, oof: pd.DataFrame, order: TimeOrder, metrics: list[str], primary: str,
                 latest: np.ndarray, score_latest: Callable[[np.ndarray], dict[str, float]], level: float = 0.95,
                 seed: int = 0) -> dict[str, Any]:
    """The run's estimates over time: ``periods`` (``period_scores``), the ``trend`` of each metric
    per period, the ``latest`` period (rows ``latest``, scored by ``score_latest(positions)`` on any
    subset of them) with its row-bootstrap interval on ``primary``, and the ``statement`` of which
    estimate the headline is."""
    periods = period_scores(folds, oof, order, metrics)
    trend = {m: _trend([p["scores"][m] for p in periods]) for m in metrics}
    scores = score_latest(np.arange(len(latest)))
    bounds = _bootstrap(score_latest, len(latest), primary, level, seed)
    days = order.days[latest]
    better = "lower" if primary in LOWER_IS_BETTER else "higher"
    worsening = (trend[primary] > 0) == (primary in LOWER_IS_BETTER) and trend[primary] != 0
    ci = f" [{bounds[0]:.4g}, {bounds[1]:.4g}]" if bounds else ""
    statement = (f"the headline is the mean of {len(periods)} forward folds, each trained only on rows before the "
                 f"period it tests ({periods[0]['start']} to {periods[-1]['end']}); folds over time are not "
                 "exchangeable, so no interval of that mean is claimed. The latest period, held out of every fold "
                 f"({day_text(days.min())} to {day_text(days.max())}, {len(latest)} rows), scores {primary} "
                 f"{scores[primary]:.4g}{ci} ({level:.0%} row bootstrap); across the periods {primary} moves "
                 f"{trend[primary]:+.3g} a period ({'worse' if worsening else 'better or level'}: {better} is better)")
    return {"scheme": "time", "column": order.column, "gap_days": order.gap, "max_train_days": order.max_train,
            "periods": periods, "trend": trend,
            "latest": {"start": day_text(days.min()), "end": day_text(days.max()), "rows": int(len(latest)),
                       "scores": scores, "metric": primary, "interval": list(bounds) if bounds else None,
                       "level": level, "method": "row_bootstrap"},
            "statement": statement}
