"""Prediction intervals for a numeric target, from the residuals cross-validation already has.

Split-conformal in its cross-validated form: each row's absolute out-of-fold residual (of the
first repeat, where every row is a test row once) is a draw of how far a prediction lands from
the truth; the interval of a new row is its prediction plus or minus the ``ceil((n + 1) * level)``-th
smallest of the n residuals. That rank, not the plain ``level`` quantile, is the finite-sample
correction: a new row's residual is equally likely to fall at any of the n + 1 places among
them, so the interval holds it with probability at least ``level`` (Vovk et al. 2005; Barber et
al. 2021 for the cross-validated form, whose fold models are fitted on fewer rows than the
final one, so the final model's intervals err on the wide side).

The run measures what the intervals cover without trusting that argument: within each repeat,
the rows of a fold get the half-width taken from the other folds' residuals alone, and the share
of them inside is the out-of-fold coverage. Pure: arrays in, numbers out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["coverage_by_fold", "half_width", "holdout_coverage", "interval_summary"]


def half_width(residuals: np.ndarray, level: float) -> float:
    """The conformal half-width of ``level`` from absolute residuals: their ``ceil((n + 1) * level)``-th
    smallest; infinite when there are too few residuals for that rank (fewer than ``level / (1 - level)``).

    >>> half_width(np.arange(1.0, 20.0), 0.9)   # 19 residuals: the 18th smallest
    18.0
    >>> half_width(np.arange(1.0, 6.0), 0.9)    # 5: too few to promise 90%
    inf
    """
    r = np.sort(np.abs(np.asarray(residuals, dtype="float64")))
    rank = math.ceil((len(r) + 1) * level)
    return float(r[rank - 1]) if 0 < rank <= len(r) else float("inf")


def coverage_by_fold(oof: pd.DataFrame, level: float) -> pd.DataFrame:
    """Per seed and fold of the out-of-fold table (seed, fold, row, y, pred): the half-width from
    the other folds' residuals of that seed, the share of the fold's rows inside it and its width."""
    out = []
    seed: Any
    for seed, one in oof.groupby("seed", sort=False):
        residual = np.abs(one["y"].to_numpy() - one["pred"].to_numpy())
        fold = one["fold"].to_numpy()
        for i in np.unique(fold):
            inside = fold == i
            q = half_width(residual[~inside], level)
            out.append({"seed": int(seed), "fold": int(i), "half_width": q, "rows": int(inside.sum()),
                        "coverage": float((residual[inside] <= q).mean())})
    return pd.DataFrame(out)


def holdout_coverage(residuals_train: np.ndarray, y: np.ndarray, pred: np.ndarray, level: float) -> dict[str, float]:
    """The holdout's intervals: the half-width from the out-of-fold residuals of its training rows,
    the share of its rows inside and the width."""
    q = half_width(residuals_train, level)
    return {"half_width": q, "width": 2 * q, "coverage": float((np.abs(y - pred) <= q).mean()), "rows": int(len(y))}


def interval_summary(oof: pd.DataFrame, level: float, by_fold: pd.DataFrame) -> dict[str, Any]:
    """What the run reports of its intervals: the level, the logged model's half-width (from the
    first repeat's residuals), the out-of-fold coverage (mean over folds, their spread, and pooled
    over rows) and width, and coverage by decile of the prediction."""
    first = oof[oof["seed"] == oof["seed"].iloc[0]]
    residual = np.abs(first["y"].to_numpy() - first["pred"].to_numpy())
    q = half_width(residual, level)
    pooled = (by_fold["coverage"] * by_fold["rows"]).sum() / by_fold["rows"].sum()
    all_res = np.abs(oof["y"].to_numpy() - oof["pred"].to_numpy())
    # each row's half-width is its fold's (from the other folds): coverage by decile of the prediction
    q_row = oof[["seed", "fold"]].merge(by_fold[["seed", "fold", "half_width"]], on=["seed", "fold"],
                                        how="left")["half_width"].to_numpy()
    inside = all_res <= q_row
    deciles = pd.qcut(pd.Series(oof["pred"].to_numpy()).rank(method="first"), 10, labels=False)
    by_decile = [{"decile": int(d) + 1, "low": float(oof["pred"].to_numpy()[deciles == d].min()),
                  "high": float(oof["pred"].to_numpy()[deciles == d].max()),
                  "coverage": float(inside[deciles.to_numpy() == d].mean())}
                 for d in range(10) if (deciles == d).any()] if len(oof) >= 10 else []
    finite = np.isfinite(by_fold["half_width"].to_numpy())
    return {"level": level, "half_width": q, "width": 2 * q, "rows": int(len(first)),
            "coverage": {"mean": float(by_fold["coverage"].mean()), "pooled": float(pooled),
                         "low": float(by_fold["coverage"].min()), "high": float(by_fold["coverage"].max()),
                         "folds": int(len(by_fold))},
            "fold_width": float(2 * by_fold["half_width"][finite].mean()) if finite.any() else float("inf"),
            "by_decile": by_decile}
