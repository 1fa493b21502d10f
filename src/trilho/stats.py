"""Summaries of fold scores: pure functions over arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["percentile_spread", "summarise"]


def percentile_spread(scores: np.ndarray, low: float = 2.5, high: float = 97.5) -> tuple[float, float]:
    """The low..high percentile range of the fold scores (numpy's linear interpolation).

    This is the reference's "95% CI": a spread of individual fold scores, not a confidence
    interval for the mean score.
    """
    lo, hi = np.percentile(np.asarray(scores, dtype="float64"), [low, high])
    return float(lo), float(hi)


def summarise(scores: dict[str, np.ndarray], low: float = 2.5, high: float = 97.5) -> dict[str, dict[str, Any]]:
    """Per metric: mean, std (ddof=1), the percentile spread of fold scores, and n."""
    out = {}
    for metric, values in scores.items():
        values = np.asarray(values, dtype="float64")
        lo, hi = percentile_spread(values, low, high)
        out[metric] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "low": lo,
            "high": hi,
            "interval": f"percentile {low:g}-{high:g} of fold scores",
            "n": int(len(values)),
        }
    return out
