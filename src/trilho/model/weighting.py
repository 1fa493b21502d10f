"""Class weights as the answer to imbalance at scale: no synthetic rows, each row weighted by the
inverse of its class's share in the training fold (scikit-learn's "balanced").

Models that take ``class_weight`` get ``"balanced"``; XGBoost, which has no such parameter, is
fitted through ``BalancedXGBClassifier`` with the same weights as ``sample_weight``.
"""

from __future__ import annotations

from typing import Any

from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier

__all__ = ["BalancedXGBClassifier"]


class BalancedXGBClassifier(XGBClassifier):
    """XGBClassifier whose fit weights each row by the inverse of its class's share."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> BalancedXGBClassifier:
        kwargs.setdefault("sample_weight", compute_sample_weight("balanced", y))
        return super().fit(X, y, **kwargs)
