"""How two versions of a data set differ: pure, two curated tables in, a report out.

The registry gate reads it when a challenger was trained on other data than the champion: the
two runs' scores are then estimates on different data and cannot be paired, so the gate also
asks whether the data moved. Measures, and the thresholds above which the data count as drifted:

- ``relabelled``: when at least half the new rows also appear in the old set (a new version of
  the same data), the share of those whose label differs from the old label of the same feature
  row (a corrupted or re-annotated label column). Drift when it exceeds, by more than 1 point, the
  disagreement the old set already has between copies of one feature row.
- ``label_shift``: total variation distance between the two label distributions (half the sum
  of the absolute differences of the class shares). Drift above 0.05.
- ``conflict_rate``: the share of rows whose identical-feature copies carry different labels,
  in each set, reported only: on data with chance duplicates and noisy labels it moves by a few
  points between two samples of one population, so it is no verdict on its own.
- ``features``: per feature, the population stability index of the new set against the old one
  (deciles of the old set for numbers, categories for text; 0.25 and above is the usual "major
  shift"). Drift when any feature reaches 0.25.
- ``duplicate_rate`` of each set, reported only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["THRESHOLDS", "compare_data", "psi"]

THRESHOLDS = {"relabelled": 0.01, "label_shift": 0.05, "psi": 0.25}
_TARGET = "__target__"


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """The population stability index of counts (or shares) ``actual`` against ``expected``, bin by
    bin; an empty bin counts as a share of 1e-4.

    >>> psi(np.array([50, 30, 20]), np.array([50, 30, 20]))
    0.0
    >>> round(psi(np.array([50, 30, 20]), np.array([20, 30, 50])), 4)
    0.5498
    """
    e = np.clip(expected / max(expected.sum(), 1), 1e-4, None)
    a = np.clip(actual / max(actual.sum(), 1), 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _feature_psi(old: pd.Series, new: pd.Series) -> float:
    if pd.api.types.is_numeric_dtype(old) and pd.api.types.is_numeric_dtype(new):
        values = old.dropna().to_numpy(dtype="float64")
        if not len(values):
            return 0.0
        edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)[1:-1]))
        bins = lambda s: np.bincount(np.searchsorted(edges, s.dropna().to_numpy(dtype="float64"), side="right"),  # noqa: E731
                                     minlength=len(edges) + 1)
        expected, actual = bins(old), bins(new)
        expected = np.append(expected, old.isna().sum())
        actual = np.append(actual, new.isna().sum())
        return psi(expected.astype(float), actual.astype(float))
    shares = pd.concat([old.astype("string").fillna("<missing>").value_counts().rename("old"),
                        new.astype("string").fillna("<missing>").value_counts().rename("new")], axis=1).fillna(0)
    return psi(shares["old"].to_numpy(float), shares["new"].to_numpy(float))


def _conflict_rate(X: pd.DataFrame, y: pd.Series, keys: np.ndarray) -> tuple[float, float]:
    dup = pd.Series(keys).duplicated(keep=False).to_numpy()
    labels_per_key = pd.Series(y.to_numpy()).groupby(keys).nunique()
    conflicting = np.isin(keys, labels_per_key.index[labels_per_key > 1].to_numpy())
    return float(dup.mean()) if len(keys) else 0.0, float(conflicting.mean()) if len(keys) else 0.0


def _compare_values(old: pd.DataFrame, new: pd.DataFrame, features: list[str]) -> dict[str, Any]:
    """The drift report of a numeric target: each feature's PSI and the target's own."""
    by_feature = {c: round(_feature_psi(old[c], new[c]), 4) for c in features}
    target = round(_feature_psi(old[_TARGET], new[_TARGET]), 4)
    report: dict[str, Any] = {
        "rows": {"champion": int(len(old)), "challenger": int(len(new))}, "target_psi": target,
        "target_mean": {"champion": float(old[_TARGET].mean()), "challenger": float(new[_TARGET].mean())},
        "features": by_feature, "missing_features": sorted((set(old.columns) ^ set(new.columns)) - {_TARGET}),
        "thresholds": dict(THRESHOLDS)}
    reasons = []
    if target >= THRESHOLDS["psi"]:
        reasons.append(f"the target's distribution shifted (PSI {target:.3f} ≥ {THRESHOLDS['psi']})")
    reasons += _feature_reasons(by_feature, report["missing_features"])
    return {**report, "drifted": bool(reasons), "reasons": reasons}


def _feature_reasons(by_feature: dict[str, float], missing: list[str]) -> list[str]:
    """The features whose PSI crossed the threshold, and those only one set has."""
    shifted = {c: v for c, v in by_feature.items() if v >= THRESHOLDS["psi"]}
    return ([f"features shifted (PSI ≥ {THRESHOLDS['psi']}): {shifted}"] if shifted else []) + (
        [f"features differ between the sets: {missing}"] if missing else [])


def compare_data(old: pd.DataFrame, new: pd.DataFrame, old_classes: list[str], new_classes: list[str],
                 regression: bool = False) -> dict[str, Any]:
    """The drift report between two curated tables (features plus ``__target__`` codes, or values)."""
    features = [c for c in new.columns if c != _TARGET and c in old.columns]
    if regression:
        return _compare_values(old, new, features)
    # labels compared case aside: a champion's configuration may spell them otherwise (BENIGN, Benign)
    spelled = {c.casefold(): c for c in new_classes}
    old_classes = [spelled.get(c.casefold(), c) for c in old_classes]
    old_y = pd.Series(np.asarray(old_classes, dtype=object)[old[_TARGET].to_numpy()])
    new_y = pd.Series(np.asarray(new_classes, dtype=object)[new[_TARGET].to_numpy()])
    old_keys = pd.util.hash_pandas_object(old[features], index=False).to_numpy()
    new_keys = pd.util.hash_pandas_object(new[features], index=False).to_numpy()

    # rows present in both: the old label of each feature row (its most frequent one) against the new
    old_label = old_y.groupby(old_keys).agg(lambda s: s.value_counts().index[0])
    shared = np.isin(new_keys, old_label.index.to_numpy())
    matched = int(shared.sum())
    changed = int((old_label.reindex(new_keys[shared]).to_numpy() != new_y.to_numpy()[shared]).sum()) if matched else 0
    # the disagreement the old set already has: its rows whose label differs from their feature row's majority
    natural = float((old_label.reindex(old_keys).to_numpy() != old_y.to_numpy()).mean()) if len(old) else 0.0
    classes = sorted(set(old_classes) | set(new_classes))
    old_share = old_y.value_counts(normalize=True).reindex(classes, fill_value=0.0)
    new_share = new_y.value_counts(normalize=True).reindex(classes, fill_value=0.0)
    old_dup, old_conflict = _conflict_rate(old[features], old_y, old_keys)
    new_dup, new_conflict = _conflict_rate(new[features], new_y, new_keys)
    by_feature = {c: round(_feature_psi(old[c], new[c]), 4) for c in features}
    report: dict[str, Any] = {
        "rows": {"champion": int(len(old)), "challenger": int(len(new))},
        "rows_in_both": matched,
        "relabelled": round(changed / matched, 4) if matched else 0.0,
        "relabelled_rows": changed,
        "disagreement_between_copies": round(natural, 4),
        "label_shares": {"champion": old_share.round(4).to_dict(), "challenger": new_share.round(4).to_dict()},
        "label_shift": round(float((old_share - new_share).abs().sum() / 2), 4),
        "duplicate_rate": {"champion": round(old_dup, 4), "challenger": round(new_dup, 4)},
        "conflict_rate": {"champion": round(old_conflict, 4), "challenger": round(new_conflict, 4)},
        "features": by_feature,
        "missing_features": sorted((set(old.columns) ^ set(new.columns)) - {_TARGET}),
        "thresholds": dict(THRESHOLDS),
    }
    reasons = []
    if matched >= len(new) / 2 and report["relabelled"] > natural + THRESHOLDS["relabelled"]:
        reasons.append(f"{changed} of {matched} rows present in both sets ({report['relabelled']:.1%}) changed label "
                       f"(copies within the old set disagree on {natural:.1%})")
    if report["label_shift"] > THRESHOLDS["label_shift"]:
        reasons.append(f"label shares moved by {report['label_shift']:.3f} (total variation)")
    reasons += _feature_reasons(by_feature, report["missing_features"])
    report["drifted"] = bool(reasons)
    report["reasons"] = reasons
    return report
