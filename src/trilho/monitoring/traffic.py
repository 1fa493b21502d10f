"""Does the traffic a model answers still look like its training data, and is it still right? Pure.

``training_profile`` describes the training rows compactly enough to travel inside the logged
model (``spec["profile"]``): per numeric feature its deciles and the share of rows in each, per
category the share of each value (the 50 most frequent, the rest as ``(other)``), each feature's
missing rate, and the classes the model itself predicts on those rows. ``compare_traffic``
holds served rows against it; ``live_metrics`` scores the answers whose true labels came back.

Measures, and the thresholds above which a finding is flagged (``THRESHOLDS``):

- ``psi``: per feature, the population stability index of the served rows against the training
  bins (deciles for numbers, values for categories; a missing value is a bin of its own). 0.1 is
  the usual "some shift", 0.25 the usual "major shift": flagged at 0.25.
- ``missing``: a feature's missing rate, served minus training; flagged above 0.05 (5 points).
- ``unseen``: the share of served rows whose category the model never saw in training (it reads
  them as missing); flagged above 0.01.
- ``predicted``: total variation distance between the predicted class shares served and on the
  training rows; flagged above 0.1.
- ``live``: with labels, each confusion metric the run estimated, with a 95% row-bootstrap
  interval; flagged when the whole interval lies below the cross-validated interval's low end.

Fewer than ``MIN_ROWS`` served rows give no verdict: the report says so and flags nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trilho.evaluation.metrics import CONFUSION_METRICS, regression_scores, scores_from_confusion, scores_from_confusions
from trilho.evaluation.stats import row_bootstrap_intervals, row_bootstrap_regression
from trilho.model.encoding import calendar_columns, normalise_text, numeric_column, with_calendar
from trilho.monitoring.drift import psi

__all__ = ["MIN_ROWS", "THRESHOLDS", "compare_traffic", "live_metrics", "training_profile"]

THRESHOLDS = {"psi": 0.25, "missing": 0.05, "unseen": 0.01, "predicted": 0.1}
MIN_ROWS = 100
TOP_VALUES = 50
OTHER = "(other)"


def _numeric_profile(values: np.ndarray) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, 11)[1:-1])) if len(finite) else np.array([])
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    return {"kind": "number", "edges": edges.tolist(), "shares": (counts / max(len(finite), 1)).tolist(),
            "missing": float(1 - len(finite) / max(len(values), 1))}


def _category_profile(values: pd.Series) -> dict[str, Any]:
    normal = normalise_text(values)
    present = normal.dropna()
    shares = present.value_counts(normalize=True)
    top = shares.head(TOP_VALUES)
    out = {str(k): float(v) for k, v in top.items()}
    if len(shares) > TOP_VALUES:
        out[OTHER] = float(shares.iloc[TOP_VALUES:].sum())
    return {"kind": "category", "shares": out, "missing": float(1 - len(present) / max(len(values), 1))}


def training_profile(X: pd.DataFrame, spec: dict[str, Any], predicted: np.ndarray | None = None) -> dict[str, Any]:
    """The profile of the training rows ``X`` (raw feature columns); ``predicted``: the model's
    class codes for those rows (a regression's predicted values: profiled as a number). A date
    column is profiled as its calendar parts, as the model reads it (and as the log keeps it)."""
    X = with_calendar(X, spec)
    features = {}
    for col in spec["features"]:
        if spec["categorical"].get(col, False) is False:
            features[col] = _numeric_profile(numeric_column(col, X[col]).to_numpy(dtype="float64", na_value=np.nan))
        else:
            features[col] = _category_profile(X[col])
    out: dict[str, Any] = {"rows": int(len(X)), "features": features}
    if predicted is not None and len(predicted) and spec.get("task") == "regression":
        out["prediction"] = _numeric_profile(np.asarray(predicted, dtype="float64"))
    elif predicted is not None and len(predicted):
        counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=len(spec["classes"]))
        out["predicted"] = {c: float(n / counts.sum()) for c, n in zip(spec["classes"], counts, strict=True)}
    return out


def _feature_finding(col: str, profile: dict[str, Any], served: pd.Series, mapping: Any) -> dict[str, Any]:
    n = len(served)
    if profile["kind"] == "number":
        values = pd.to_numeric(served, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        finite = values[np.isfinite(values)]
        edges = np.asarray(profile["edges"], dtype="float64")
        counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1).astype(float)
        expected = np.asarray(profile["shares"], dtype="float64") * (1 - profile["missing"])
        found = {"missing": float(1 - len(finite) / n), "unseen": 0.0}
        shown: dict[str, Any] = {"served_median": float(np.median(finite)) if len(finite) else None}
        actual = np.append(counts, n - len(finite))
    else:
        normal = normalise_text(served.astype(object))
        present = normal.dropna()
        known = set(mapping or {})
        unseen = int((~present.isin(known)).sum()) if known else 0
        binned = present.where(present.isin(list(profile["shares"])), OTHER) if OTHER in profile["shares"] else present
        shares = profile["shares"]
        names = list(shares)
        counted = binned.value_counts()
        # values never seen in the training profile's list (nor folded into its other): their own bin
        actual = np.array([float(counted.get(k, 0)) for k in names] + [float(counted[~counted.index.isin(names)].sum()),
                                                                         float(n - len(present))])
        expected = np.array([shares[k] * (1 - profile["missing"]) for k in names] + [0.0])
        found = {"missing": float(1 - len(present) / n), "unseen": unseen / n}
        shown = {"served_top": counted.head(3).index.tolist()}
    expected = np.append(expected, profile["missing"])  # a missing value is a bin of its own
    value = psi(expected * n, actual)
    return {"feature": col, "kind": profile["kind"], "psi": round(value, 4), "missing_training": round(profile["missing"], 4),
            "missing_served": round(found["missing"], 4), "unseen_share": round(found["unseen"], 4), **shown}


def _predicted(profile: dict[str, Any], served: pd.Series) -> dict[str, Any] | None:
    """The served predictions against the training rows': a regression's values by PSI, a
    classification's class shares by total variation."""
    if "prediction" in profile:  # a regression: its predicted values' PSI
        found = _feature_finding("prediction", profile["prediction"], served, None)
        return {"psi": found["psi"], "served_median": found.get("served_median")}
    if "predicted" not in profile:
        return None
    classes = list(profile["predicted"])
    shares = served.astype(str).value_counts(normalize=True).reindex(classes, fill_value=0.0)
    tv = 0.5 * float(np.abs(shares.to_numpy() - np.array([profile["predicted"][c] for c in classes])).sum())
    return {"training": profile["predicted"], "served": {c: round(float(v), 4) for c, v in shares.items()},
            "total_variation": round(tv, 4)}


def _flags(report: dict[str, Any], limits: dict[str, float], calendar: frozenset[str] = frozenset()
           ) -> list[dict[str, Any]]:
    """What crossed a threshold: drift, missing values, unseen categories, moved predictions. A date's
    calendar parts (``calendar``) are reported, never flagged as drift: served rows come later than
    the training rows by nature, and a short window covers a few months of the year."""
    flags: list[dict[str, Any]] = []
    for f in report["features"]:
        if f["psi"] >= limits["psi"] and f["feature"] not in calendar:
            flags.append({"kind": "drift", "feature": f["feature"], "value": f["psi"],
                          "reason": f"{f['feature']}: PSI {f['psi']:.3f} ≥ {limits['psi']}"})
        if f["missing_served"] - f["missing_training"] > limits["missing"]:
            flags.append({"kind": "missing", "feature": f["feature"], "value": f["missing_served"],
                          "reason": f"{f['feature']}: {f['missing_served']:.1%} missing, "
                                    f"{f['missing_training']:.1%} in training"})
        if f["unseen_share"] > limits["unseen"]:
            flags.append({"kind": "unseen", "feature": f["feature"], "value": f["unseen_share"],
                          "reason": f"{f['feature']}: {f['unseen_share']:.1%} of rows hold categories never seen in training"})
    if report.get("predicted", {}).get("psi", 0) >= limits["psi"]:
        value = report["predicted"]["psi"]
        flags.append({"kind": "predicted", "feature": None, "value": value,
                      "reason": f"predicted values: PSI {value:.3f} ≥ {limits['psi']} against the training rows' predictions"})
    if report.get("predicted", {}).get("total_variation", 0) > limits["predicted"]:
        tv = report["predicted"]["total_variation"]
        flags.append({"kind": "predicted", "feature": None, "value": tv,
                      "reason": f"predicted class shares moved by {tv:.3f} (total variation) from the training rows'"})
    return flags


def compare_traffic(profile: dict[str, Any], served: pd.DataFrame, spec: dict[str, Any],
                    thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Every feature of the served rows (the prediction log's columns) against the training
    profile, the predicted class shares against the training rows', and what crossed a threshold."""
    limits = {**THRESHOLDS, **(thresholds or {})}
    n = len(served)
    report: dict[str, Any] = {"rows": n, "training_rows": profile["rows"], "thresholds": limits, "flags": [],
                              "features": [], "enough_rows": n >= MIN_ROWS}
    if not n:
        report["note"] = "no served rows in this window"
        return report
    for col in spec["features"]:
        if col not in served.columns:
            continue
        finding = _feature_finding(col, profile["features"][col], served[col], spec["categorical"].get(col))
        report["features"].append(finding)
    report["features"].sort(key=lambda f: -f["psi"])
    if "prediction" in served.columns:
        predicted = _predicted(profile, served["prediction"])
        if predicted is not None:
            report["predicted"] = predicted
    if not report["enough_rows"]:
        report["note"] = f"{n} served rows: fewer than {MIN_ROWS}, too few for a verdict; nothing is flagged"
        return report
    report["flags"] = _flags(report, limits, calendar_columns(spec))
    return report


def live_metrics(labels: np.ndarray, predicted: np.ndarray, classes: list[str], estimates: dict[str, dict[str, float]],
                 level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Confusion metrics of the answers whose labels came back (class names), each with a
    row-bootstrap interval, beside the cross-validated estimate; flagged when the interval lies
    wholly below the estimate's interval."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels], dtype=np.int64)
    p = np.array([index[c] for c in predicted], dtype=np.int64)
    k = len(classes)
    cm = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
    point = scores_from_confusion(cm)
    metrics = [m for m in CONFUSION_METRICS if m in estimates] or ["accuracy"]
    spread = row_bootstrap_intervals(y, p[None, :], k, scores_from_confusions, metrics, level=level, seed=seed) \
        if len(y) > 1 else {m: (float("nan"), float("nan")) for m in metrics}
    out: dict[str, Any] = {"rows": int(len(y)), "metrics": {}, "flags": []}
    for m in metrics:
        low, high = point[m] + spread[m][0], point[m] + spread[m][1]
        cv = estimates.get(m)
        entry = {"live": round(point[m], 4), "low": round(low, 4), "high": round(high, 4), "cv": cv}
        out["metrics"][m] = entry
        if cv and len(y) >= MIN_ROWS and np.isfinite(cv.get("low", np.nan)) and high < cv["low"]:
            out["flags"].append({"kind": "live", "feature": None, "value": round(point[m], 4),
                                 "reason": f"{m} on {len(y)} labelled rows is {point[m]:.3f} [{low:.3f}, {high:.3f}], "
                                           f"below the cross-validated {cv['mean']:.3f} [{cv['low']:.3f}, {cv['high']:.3f}]"})
    return out


def live_regression(truth: np.ndarray, predicted: np.ndarray, estimates: dict[str, dict[str, float]],
                    interval: dict[str, float] | None, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """A regression's errors on the answers whose true values came back: RMSE and MAE with a
    row-bootstrap interval beside the cross-validated estimate (flagged when the live interval lies
    wholly above it: worse), and the prediction interval's coverage (``interval``: the logged
    model's level and half-width) with a Wilson interval, flagged when it lies wholly below the level."""
    truth = np.asarray(truth, dtype="float64")
    predicted = np.asarray(predicted, dtype="float64")
    error = truth - predicted
    n = len(error)
    point = regression_scores(truth, predicted) if n else {"rmse": float("nan"), "mae": float("nan")}
    spread = row_bootstrap_regression(truth, predicted[None, :], ["rmse", "mae"], level=level, seed=seed)
    out: dict[str, Any] = {"rows": int(n), "metrics": {}, "flags": []}
    for m in ("rmse", "mae"):
        offsets = spread.get(m, (float("nan"), float("nan")))
        low, high = point[m] + offsets[0], point[m] + offsets[1]
        cv = estimates.get(m)
        out["metrics"][m] = {"live": round(point[m], 6), "low": round(low, 6), "high": round(high, 6), "cv": cv}
        if cv and n >= MIN_ROWS and np.isfinite(cv.get("high", np.nan)) and low > cv["high"]:
            out["flags"].append({"kind": "live", "feature": None, "value": round(point[m], 6),
                                 "reason": f"{m} on {n} rows with true values is {point[m]:.4g} [{low:.4g}, {high:.4g}], "
                                           f"above the cross-validated {cv['mean']:.4g} [{cv['low']:.4g}, {cv['high']:.4g}]"})
    if interval and n:
        inside = float((np.abs(error) <= interval["half_width"]).mean())
        z = 1.959963984540054
        centre = (inside + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(inside * (1 - inside) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        low, high = max(0.0, centre - half), min(1.0, centre + half)
        out["coverage"] = {"live": round(inside, 4), "low": round(low, 4), "high": round(high, 4),
                           "level": interval["level"]}
        if n >= MIN_ROWS and high < interval["level"]:
            out["flags"].append({"kind": "coverage", "feature": None, "value": round(inside, 4),
                                 "reason": f"the {interval['level']:.0%} prediction interval covers {inside:.1%} "
                                           f"[{low:.1%}, {high:.1%}] of {n} rows with true values"})
    return out
