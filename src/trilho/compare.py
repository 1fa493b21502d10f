"""Several candidate procedures on exactly the same folds, compared with a corrected paired t-test.

Every candidate sees the same rows, the same duplicate groups and the same seeds, so the folds
are identical and the fold scores pair up. Each candidate's difference from the baseline (the
first candidate) gets the Nadeau–Bengio corrected paired t interval and p-value. One MLflow
parent run holds the table and the plot; each candidate is a child run with its fold scores.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from trilho import evaluate, plots, reports, stats
from trilho.cluster import open_executor
from trilho.curate import fold_data, load_clean
from trilho.errors import ConfigError
from trilho.experiment import Experiment
from trilho.models import check_estimator, check_names
from trilho.pipeline import Progress, open_tracker
from trilho.settings import Settings
from trilho.storage import Lake, open_lake
from trilho.tracking import flatten

__all__ = ["CompareResult", "compare", "parse_candidates"]

@dataclass
class CompareResult:
    table: pd.DataFrame
    scores: dict[str, Any]
    run_id: str
    summary: dict[str, Any]


def parse_candidates(spec: list[str], exp: Experiment) -> list[dict[str, Any]]:
    """``model+resampler`` names (``xgboost+smote``, ``random_forest+none``) into estimator configs."""
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for item in spec:
        model, _, resampler = item.partition("+")
        resampler = resampler or "none"
        try:
            check_names(model, resampler, keys=("model", "resampler"))
        except ConfigError as exc:
            raise ConfigError(f"candidate {item!r}: {exc}") from None
        params = exp.model.params if model == exp.model.name else {}  # the family's defaults (trilho.models)
        rparams = exp.resampler.params if resampler == exp.resampler.name else {}
        try:
            check_estimator({"name": model, "params": params}, {"name": resampler, "params": rparams}, exp.data.missing)
        except ConfigError as exc:
            raise ConfigError(f"candidate {item!r}: {exc}") from None
        label = f"{model}+{resampler}"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        out.append({"label": label, "model": {"name": model, "params": dict(params)},
                    "resampler": {"name": resampler, "params": dict(rparams)}})
    if len(out) < 2:
        raise ConfigError("compare needs at least two candidates, e.g. xgboost+smote random_forest+none")
    return out


def compare(exp: Experiment, settings: Settings, candidates: list[dict[str, Any]], *, metric: str | None = None,
            progress: Progress | None = None) -> CompareResult:
    """Evaluate every candidate on the experiment's folds; the first candidate is the baseline."""
    metric = metric or exp.registry.primary_metric
    if metric not in evaluate.METRICS:
        raise ConfigError(f"metric {metric!r} is unknown; choose from {sorted(evaluate.METRICS)}")
    lake = open_lake(settings)
    with open_executor(settings) as executor:  # a Dask cluster is checked before anything is read
        return _compare(exp, settings, candidates, metric, progress, lake, executor)


def _compare(exp: Experiment, settings: Settings, candidates: list[dict[str, Any]], metric: str,
             progress: Progress | None, lake: Lake, executor: Any) -> CompareResult:
    ingested, raw, _validation, data = load_clean(exp, settings, lake)
    X, y, groups, duplicates = fold_data(data, exp)
    tracker = open_tracker(settings, exp.tracking.experiment)
    cores = settings.free_cores()
    test_fraction = 1.0 / exp.cv.n_splits
    tags = {"trilho.experiment": exp.name, "trilho.data_sha256": ingested.manifest["sha256"], "trilho.kind": "compare"}
    start = time.perf_counter()
    with tracker.run(f"{exp.name}-compare", tags) as parent:
        tracker.log_values(parent, params=flatten(exp.resolved()) | {
            "compare.candidates": json.dumps([c["label"] for c in candidates]), "compare.metric": metric})
        total = len(candidates) * exp.cv.n_splits * exp.cv.n_repeats
        tasks = [evaluate.Task(model=c["model"], resampler=c["resampler"], random_state=exp.random_state,
                               n_splits=exp.cv.n_splits, seeds=exp.cv.seeds, groups=groups, encoding=data.spec,
                               label=c["label"]) for c in candidates]
        runner = evaluate.Runner(cores, executor, (lambda done, _t: progress("compare", done, total)) if progress else None)
        found = evaluate.cross_validate_many(X, y, tasks, runner)  # every candidate's folds in one batch on one pool
        results = {cand["label"]: cv for cand, cv in zip(candidates, found, strict=True)}
        baseline = candidates[0]["label"]
        base = results[baseline].scores(metric)
        rows = []
        for cand in candidates:
            label, cv = cand["label"], results[cand["label"]]
            scores = cv.scores(metric)
            low, high = stats.corrected_t_interval(scores, test_fraction, exp.evaluation.level)
            test = stats.paired_corrected_t(scores, base, test_fraction, exp.evaluation.level)
            rows.append({"candidate": label, "mean": float(scores.mean()), "ci_low": low, "ci_high": high,
                         "mean_diff": test["mean_diff"], "diff_low": test["low"], "diff_high": test["high"],
                         "p_value": test["p_value"], "t": test["t"]})
            with tracker.run(label, {"trilho.kind": "candidate", "trilho.candidate": label}, parent=parent) as child:
                tracker.log_values(child, params=flatten({"model": cand["model"], "resampler": cand["resampler"]}),
                                   metrics=[(f"{m}_fold", v, i) for m in exp.evaluation.metrics
                                            for i, v in enumerate(cv.scores(m))]
                                   + [(f"{m}_mean", float(cv.scores(m).mean()), 0) for m in exp.evaluation.metrics]
                                   + [("diff_vs_baseline", test["mean_diff"], 0), ("p_value", test["p_value"], 0)])
        table = pd.DataFrame(rows)
        summary = {"experiment": exp.name, "run_id": parent, "metric": metric, "baseline": baseline,
                   "n_folds": len(base), "duplicates": duplicates, "seconds": time.perf_counter() - start,
                   "candidates": rows, "lake": {"uri": lake.uri, "reports": f"reports/{parent}/"}}
        with tempfile.TemporaryDirectory(prefix="trilho-compare-") as tmp:
            folder = Path(tmp)
            table.to_csv(folder / "comparison.csv", index=False)
            (folder / "comparison.json").write_text(json.dumps(summary, indent=2))
            pd.DataFrame({label: cv.scores(metric) for label, cv in results.items()}).to_csv(
                folder / "fold_scores.csv", index_label="fold")
            plots.comparison_figure(table, metric, baseline).savefig(folder / "comparison.png", dpi=110)
            reports.copy_to_lake(lake, folder, f"reports/{parent}/")
            tracker.log_values(parent, metrics=[(f"{r['candidate']}_{metric}_mean".replace("+", "_").replace("#", "_"),
                                                 r["mean"], 0) for r in rows])
            tracker.log_folder(parent, folder)
    return CompareResult(table=table, scores={k: v.scores(metric) for k, v in results.items()}, run_id=parent,
                         summary=summary)
