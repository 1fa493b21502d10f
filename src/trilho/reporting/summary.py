"""The run's figures and its summary, pure: a CV result and an experiment in, plain data out.

``summary_metrics`` gives every metric its mean, spread and intervals (``trilho.evaluation.stats`` does the
arithmetic); ``build_summary`` assembles what ``--summary-json`` writes; ``metric_rows`` what the
run logs as metrics.
"""

from __future__ import annotations

from typing import Any

from trilho.evaluation import stats
from trilho.evaluation.metrics import CONFUSION_METRICS, METRIC_RANGE, scores_from_confusions
from trilho.evaluation.results import CVResult, HoldoutResult
from trilho.experiment import Experiment
from trilho.schemas import MetricSummary, RunSummary

__all__ = ["baseline_rows", "build_summary", "explained_rows", "metric_rows", "primary_metric", "summary_metrics"]


def _row_bootstrap(cv: CVResult, exp: Experiment) -> dict[str, tuple[float, float]]:
    """The row bootstrap's offsets of the confusion-matrix metrics, from the pooled out-of-fold predictions."""
    ev = exp.evaluation
    if "row_bootstrap" not in ev.intervals or cv.oof is None:
        return {}
    seeds = cv.oof["seed"].unique()
    first = cv.oof[cv.oof["seed"] == seeds[0]]
    pred = cv.oof["pred"].to_numpy().reshape(len(seeds), len(first))
    if exp.regression:
        return stats.row_bootstrap_regression(first["y"].to_numpy(), pred, ev.metrics, ev.level, exp.decision.quantile)
    decomposable = [m for m in ev.metrics if m in CONFUSION_METRICS]
    return stats.row_bootstrap_intervals(first["y"].to_numpy(), pred, len(exp.data.classes),
                                         scores_from_confusions, decomposable, ev.level)


def summary_metrics(cv: CVResult, exp: Experiment) -> dict[str, MetricSummary]:
    """Mean, std and the percentile spread (the reference's figures), and every interval method."""
    ev = exp.evaluation
    scores = {m: cv.scores(m) for m in ev.metrics}
    out = stats.summarise(scores, ev.interval_low, ev.interval_high)
    if exp.cv.scheme == "time":  # folds over time are not exchangeable: no interval of their mean is claimed
        for entry in out.values():
            entry.update(intervals={}, ci_method="none (folds over time)", ci=None)
        return out  # type: ignore[return-value]
    rows = _row_bootstrap(cv, exp)
    methods = list(dict.fromkeys([*ev.intervals, ev.interval]))  # the headline is always reported
    nested = {}
    if "nested_cv" in methods and cv.nested is not None and cv.oof is not None:
        nested = stats.nested_bounds(cv.oof, cv.nested, exp.cv.n_splits, ev.level)
    for metric, entry in out.items():
        found = stats.intervals(scores[metric], methods, test_fraction=1.0 / exp.cv.n_splits, level=ev.level,
                                low=ev.interval_low, high=ev.interval_high, row_offsets=rows.get(metric),
                                nested=nested.get(metric))
        lo, hi = METRIC_RANGE[metric]  # a t interval can reach past 1; the metric cannot
        entry["intervals"] = {k: (max(b[0], lo), min(b[1], hi)) if b else None for k, b in found.items()}
        entry["ci_method"] = ev.interval
        entry["ci"] = entry["intervals"][ev.interval]
    return out  # type: ignore[return-value]


def build_summary(exp: Experiment, run: dict[str, str], cv: CVResult, held: HoldoutResult,
                  metrics: dict[str, MetricSummary], inputs: dict[str, Any]) -> RunSummary:
    """The summary of one run. ``run``: its ``run_id``, ``tracking_uri`` and ``mlflow_experiment_id``;
    ``inputs``: the raw ``manifest``, the ``validation`` report, whether the ingest was ``skipped``,
    the ``rows``/``features`` trained on, the ``duplicates`` policy's record and the ``lake`` keys."""
    manifest, validation = inputs["manifest"], inputs["validation"]
    return {
        "experiment": exp.name, "task": exp.task, "run_id": run["run_id"], "tracking_uri": run["tracking_uri"],
        "mlflow_experiment": exp.tracking.experiment, "mlflow_experiment_id": run["mlflow_experiment_id"],
        "data": {"source": manifest["source"], "sha256": manifest["sha256"], "rows": inputs["rows"],
                 "features": inputs["features"], "ingest_skipped": inputs["skipped"],
                 "warnings": validation["warnings"]},
        "cv": {"n_splits": exp.cv.n_splits, "seeds": exp.cv.seeds, "n_folds": len(cv.folds),
               "duplicates": inputs["duplicates"], "level": exp.evaluation.level,
               # forward folds are not exchangeable: no interval of their mean is claimed
               "interval": exp.evaluation.interval if exp.cv.scheme != "time" else "none: folds over time",
               "workers": cv.workers, "pool": cv.pool, "metrics": metrics,
               "fit_s": {"mean": float(cv.folds["fit_s"].mean()), "max": float(cv.folds["fit_s"].max())}},
        "holdout": ({"rows": int(len(held.test_index)) if held.test_index is not None else 0, "scores": held.scores}
                    if held.confusion is None else
                    {"labels": exp.data.classes, "label_codes": list(range(len(exp.data.classes))),
                     "confusion_matrix": held.confusion.tolist(), "report": held.report, "scores": held.scores}),
        "lake": inputs["lake"],
    }


def metric_rows(cv: CVResult, summary: dict[str, MetricSummary], holdout: HoldoutResult,
                metrics: list[str]) -> list[tuple[str, float, int]]:
    """(key, value, step) of every metric the run logs: fold scores as steps, then the summary's."""
    rows = [(f"{m}_fold", v, step) for m in metrics for step, v in enumerate(cv.scores(m))]
    for m, s in summary.items():
        rows += [(f"{m}_mean", s["mean"], 0), (f"{m}_std", s["std"], 0),
                 (f"{m}_pct_low", s["low"], 0), (f"{m}_pct_high", s["high"], 0)]
        if s.get("ci"):
            rows += [(f"{m}_ci_low", s["ci"][0], 0), (f"{m}_ci_high", s["ci"][1], 0)]  # type: ignore[index]
        for method, bounds in s.get("intervals", {}).items():
            if bounds and method != "percentile":
                rows += [(f"{m}_{method}_low", bounds[0], 0), (f"{m}_{method}_high", bounds[1], 0)]
    rows += [(f"holdout_{m}", holdout.scores[m], 0) for m in metrics]
    return rows


def baseline_rows(found: dict[str, Any] | None) -> list[tuple[str, float, int]]:
    """(key, value, step) of the baselines' means and the model's paired differences from them."""
    rows: list[tuple[str, float, int]] = []
    for name, entry in (found or {}).get("models", {}).items():
        for metric, s in entry["metrics"].items():
            rows.append((f"baseline_{name}_{metric}_mean", s["mean"], 0))
            if "diff" in s:
                rows += [(f"vs_{name}_{metric}_diff", s["diff"], 0), (f"vs_{name}_{metric}_diff_low", s["low"], 0),
                         (f"vs_{name}_{metric}_diff_high", s["high"], 0)]
    return rows


def explained_rows(summary: RunSummary) -> list[tuple[str, float, int]]:
    """(key, value, step) of each feature's importance and, per group column, each group's metric
    means and the largest gaps with their intervals."""
    rows: list[tuple[str, float, int]] = []
    for name, entry in (summary.get("importance") or {}).get("features", {}).items():
        rows.append((f"importance_{name}", entry["mean"], 0))
    for column, found in (summary.get("groups") or {}).items():
        for group, entry in found["groups"].items():
            rows += [(f"group_{column}_{group}_{metric}", s["mean"], 0) for metric, s in entry["metrics"].items() if s]
        for metric, gap in found["gap"].items():
            rows.append((f"group_{column}_gap_{metric}", gap["diff"], 0))
            if "low" in gap:
                rows += [(f"group_{column}_gap_{metric}_low", gap["low"], 0),
                         (f"group_{column}_gap_{metric}_high", gap["high"], 0)]
    return rows


def primary_metric(summary: RunSummary | dict[str, Any]) -> str:
    """The metric a run is judged on: the gate's, else the baselines', else its first metric."""
    metrics = summary["cv"]["metrics"]
    registry: dict[str, Any] = dict(summary.get("registry") or {})
    found = registry.get("metric") or (summary.get("baselines") or {}).get("primary_metric")
    return str(found) if found in metrics else next(iter(metrics))
