"""The promotion gate's decision, pure: fold scores and logged estimates in, a decision out.

The model registry: every good run's model becomes the ``challenger``; a gate decides ``champion``.

On the same data the gate compares the challenger with the current champion on the same folds:
the champion's fold scores are read back from its run when its CV scheme matches too, otherwise
the champion's configuration is re-evaluated on the challenger's folds; the challenger is promoted
when the lower end of the corrected paired t interval for (challenger - champion) on the primary
metric is above -margin (non-inferiority). On other data nothing is re-fitted: the challenger's
estimate and interval are set against the champion's logged ones, beside a drift report between
the two data sets (``trilho.monitoring.drift``); a significant drop or drift keeps it challenger. A
first model with no champion is promoted. A challenger whose run found a feature that alone
predicts the label (``trilho.data.leaks``) is kept challenger whatever its scores, the reason
naming the columns. Each decision, its figures
and its reason are tags on the model version and a JSON report in the lake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trilho.evaluation import stats
from trilho.evaluation.metrics import (
    CONFUSION_METRICS,
    LOWER_IS_BETTER,
    METRIC_RANGE,
    REGRESSION_METRICS,
    probability_metrics,
    regression_scores,
    scores_from_confusion,
)

__all__ = ["BY_HAND", "GateDecision", "judge", "judge_changed_data", "judge_leaks", "judge_on_reference",
           "reference_score"]

BY_HAND = "promote it by hand with `trilho promote VERSION -r REASON` if intended"  # a kept challenger's way out


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    margin: float
    challenger_mean: float
    champion_version: str | None = None
    champion_mean: float | None = None
    comparison: dict[str, float] = field(default_factory=dict)
    basis: str = "first model"
    drift: dict[str, Any] | None = None  # the data drift report, when the data differ from the champion's

    def tags(self) -> dict[str, str]:
        out = {"trilho.gate.decision": "promoted" if self.promote else "kept challenger",
               "trilho.gate.reason": self.reason, "trilho.gate.metric": self.metric,
               "trilho.gate.margin": f"{self.margin:g}", "trilho.gate.basis": self.basis}
        if self.champion_version:
            out["trilho.gate.against_version"] = self.champion_version
        if self.drift is not None:
            out["trilho.gate.drift"] = "; ".join(self.drift.get("reasons", [])) or "none above the thresholds"
        out.update({f"trilho.gate.{k}": f"{v:.6g}" for k, v in self.comparison.items()})
        return out


def judge(challenger: np.ndarray, champion: np.ndarray | None, *, metric: str, margin: float,
           test_fraction: float, level: float = 0.95, champion_version: str | None = None,
           basis: str = "same folds") -> GateDecision:
    """Pure: the gate's decision from paired fold scores (``champion=None``: no champion yet)."""
    challenger = np.asarray(challenger, dtype="float64")
    if champion is None:
        return GateDecision(True, "no champion yet: the first model is promoted", metric, margin,
                            float(challenger.mean()))
    test = stats.paired_corrected_t(challenger, champion, test_fraction, level)
    # a loss (RMSE, log loss): worse is higher, so the interval's upper end must stay under the margin
    promote = bool(test["high"] < margin) if metric in LOWER_IS_BETTER else bool(test["low"] > -margin)
    verdict = "not worse" if promote else "possibly worse"
    reason = (f"{metric}: challenger - champion v{champion_version} = {test['mean_diff']:+.4f}, "
              f"{level:.0%} corrected paired t interval [{test['low']:+.4f}, {test['high']:+.4f}], "
              f"p = {test['p_value']:.3g}; {verdict} than the champion by more than the margin {margin:g}"
              + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    return GateDecision(promote, reason, metric, margin, float(challenger.mean()), champion_version,
                        float(np.mean(champion)), test, basis)


def judge_leaks(leaks: list[str] | tuple[str, ...], challenger: np.ndarray, *, metric: str, margin: float,
                    champion_version: str | None = None) -> GateDecision:
    """Pure: a challenger whose run flagged a leak (``leaks``: one message per column, naming it) is
    not promoted, whatever its fold scores: a model that scores on a copy of the label, or on a value
    known only after the outcome, would fail on the rows it is meant for."""
    listed = "; ".join(leaks[:5]) + (f"; and {len(leaks) - 5} more" if len(leaks) > 5 else "")
    reason = (f"leak check: {listed}; a model that scores on such a column fails where it is not known, so it is "
              f"kept as challenger whatever its {metric}: drop the column (data.drop) and run again, or {BY_HAND}")
    return GateDecision(False, reason, metric, margin, float(np.mean(np.asarray(challenger, dtype="float64"))),
                        champion_version, basis="leak check")


def judge_changed_data(challenger: np.ndarray, champion: dict[str, float], drift: dict[str, Any] | None, *,
                           metric: str, margin: float, test_fraction: float, level: float = 0.95,
                           champion_version: str | None = None) -> GateDecision:
    """Pure: the gate's decision when the challenger was evaluated on other data than the champion.

    Fold scores on two data sets do not pair, and re-fitting the champion's procedure on the new
    data would only measure the same procedure twice. So the challenger's own estimate and
    interval are set against the champion's logged ones (``mean``, ``low``, ``high``): a
    challenger whose whole interval lies more than ``margin`` below the champion's estimate is a
    significant drop. These findings and the drift report (``trilho.monitoring.drift``) are recorded, but
    they cannot tell a better model from an easier data set (a retrain on 1.5% flipped labels and a
    shifted feature passed both), so without a reference set (``judge_on_reference``) the
    challenger is kept out of champion until a person promotes it with a reason.
    """
    scores = np.asarray(challenger, dtype="float64")
    low, high = stats.corrected_t_interval(scores, test_fraction, level)
    bounds = METRIC_RANGE.get(metric, (-np.inf, np.inf))  # as the run's own summary clips it
    low, high, mean = max(low, bounds[0]), min(high, bounds[1]), float(scores.mean())
    # a significant drop: the whole interval worse than the champion's estimate by the margin
    drop = low > champion["mean"] + margin if metric in LOWER_IS_BETTER else high < champion["mean"] - margin
    drifted = bool(drift and drift.get("drifted"))
    findings = [f"{metric}: challenger {mean:.4f} [{low:.4f}, {high:.4f}] on its data, champion v{champion_version} "
                f"{champion['mean']:.4f} [{champion.get('low', float('nan')):.4f}, {champion.get('high', float('nan')):.4f}] "
                f"on its own: " + ("a significant drop" if drop else f"no significant drop beyond the margin {margin:g}")]
    if drift is None:
        findings.append("the champion's data are not in this lake, so drift was not measured")
    else:
        findings.append("data drift: " + ("; ".join(drift["reasons"]) if drifted else "none above the thresholds"))
    # an easier data set scores higher and drift measures miss changes that matter: only rows both
    # models are scored on can tell a better model from changed data
    findings.append("no reference set is pinned (registry.reference), so the gate cannot tell a better model from "
                    f"changed data: kept as challenger; {BY_HAND}, or pin a reference set")
    promote = False
    comparison = {"challenger_low": low, "challenger_high": high, "champion_low": champion.get("low", float("nan")),
                  "champion_high": champion.get("high", float("nan"))}
    return GateDecision(promote, "data changed; " + "; ".join(findings), metric, margin, mean, champion_version,
                        champion["mean"], comparison, "other data: estimates and drift", drift)


def reference_score(metric: str, y: np.ndarray, pred: np.ndarray, proba: np.ndarray, n_classes: int,
                    quantile: float | None = None) -> float:
    """One model's ``metric`` on labelled rows: ``y`` and ``pred`` as class indices, ``proba`` per class
    (a regression's metric: ``y`` and ``pred`` as values; ``quantile``: a quantile decision's, for pinball)."""
    if metric in REGRESSION_METRICS:
        return regression_scores(y, pred, quantile)[metric]
    if metric in CONFUSION_METRICS:
        cm = np.bincount(y * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes)
        return scores_from_confusion(cm)[metric]
    return probability_metrics(y, proba, np.arange(n_classes))[metric]


def judge_on_reference(y: np.ndarray, challenger: tuple[np.ndarray, np.ndarray], champion: tuple[np.ndarray, np.ndarray],
                        *, metric: str, margin: float, level: float = 0.95, champion_version: str | None = None,
                        n_boot: int = 1000, seed: int = 0, before: GateDecision | None = None,
                        drift: dict[str, Any] | None = None, quantile: float | None = None,
                        rows: str = "the reference set") -> GateDecision:
    """Pure: champion and challenger scored on the same pinned reference rows (never trained on),
    ``(pred, proba)`` each, class indices. The challenger is promoted when the lower end of the paired
    bootstrap interval of (challenger - champion) is above -margin (lower is better for log loss),
    and, when ``before`` (the decision on the same data and folds) is given, only if that promoted
    too. On other data the reference decides; ``drift`` (the data's drift report) is recorded.
    ``rows`` names the rows in the reason and the basis (the latest period of dated rows, which
    neither model was fitted on, serves the same way)."""
    y, n_classes = np.asarray(y), challenger[1].shape[1]  # one probability column per class
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # the difference in the direction of "better"

    def both(index: np.ndarray) -> tuple[float, float]:
        return tuple(sign * reference_score(metric, y[index], m[0][index], m[1][index], n_classes, quantile)
                     for m in (challenger, champion))  # type: ignore[return-value]

    test = stats.paired_row_bootstrap(both, len(y), level, n_boot, seed)
    promote = bool(test["low"] > -margin)
    verdict = "not worse" if promote else "worse" if test["high"] < -margin else "possibly worse"
    towards = "challenger - champion" if sign > 0 else "champion - challenger (lower is better)"
    reason = (f"on {rows} ({len(y)} rows never trained on), {metric}: challenger "
              f"{sign * test['challenger']:.4f}, champion v{champion_version} {sign * test['champion']:.4f}; "
              f"{towards} = {test['mean_diff']:+.4f}, {level:.0%} paired bootstrap interval "
              f"[{test['low']:+.4f}, {test['high']:+.4f}]; {verdict} than the champion by more than the margin {margin:g}")
    if before is not None:
        reason = f"{reason}; on the run's data: {before.reason}"
        promote = promote and before.promote
    elif drift is not None:
        reason = f"data changed; {reason}; data drift: " + ("; ".join(drift.get("reasons", [])) or "none above the thresholds")
    if not promote:
        reason += f"; kept as challenger: {BY_HAND}"
    comparison = {"reference_rows": float(len(y)), "reference_diff": test["mean_diff"], "reference_low": test["low"],
                  "reference_high": test["high"]}
    if before is not None:
        comparison = {**before.comparison, **comparison}
    return GateDecision(promote, reason, metric, margin, sign * test["challenger"], champion_version,
                        sign * test["champion"], comparison,
                        rows.removeprefix("the ") + (f" and {before.basis}" if before is not None else ""),
                        before.drift if before is not None else drift)
