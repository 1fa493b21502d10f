"""Several candidate procedures on exactly the same folds, compared with a corrected paired t-test.

Every candidate sees the same rows, the same duplicate groups and the same seeds, so the folds
are identical and the fold scores pair up. Each candidate's difference from the baseline (the
first candidate) gets the Nadeau–Bengio corrected paired t interval and p-value. One MLflow
parent run holds the table and the plot; each candidate is a child run with its fold scores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
import tomllib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trilho.errors import ConfigError
from trilho.evaluation import cv as evaluate
from trilho.evaluation import stats
from trilho.evaluation.metrics import metrics_for
from trilho.evaluation.results import CVResult
from trilho.execution.pool import FIT_MODULES, LocalPool, Warm, started_fit_server
from trilho.experiment import Experiment
from trilho.model.catalog import check_estimator, check_names, model_kind, quantile_params
from trilho.reporting import publish as reports
from trilho.settings import Settings
from trilho.tracking import flatten
from trilho.workflows.context import Context, Prepared, Progress, conduct

__all__ = ["CompareResult", "compare", "parse_candidates"]

# NAME or NAME[key=value, ...]: a model or a resampler (a name, or an import path) with parameters set
_PART = re.compile(r"\s*([A-Za-z0-9_.:]+)\s*(?:\[(.*)\])?\s*")


@dataclass
class CompareResult:
    table: pd.DataFrame
    scores: dict[str, Any]
    run_id: str
    summary: dict[str, Any]


def _split_plus(item: str) -> list[str]:
    """``a[x=1]+b``: the parts between the ``+`` signs outside brackets."""
    parts, depth, current = [], 0, ""
    for char in item:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "+" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _value(item: str, text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", text):
            return text  # a bare word, as --set takes it
        raise ConfigError(f"candidate {item!r}: value {text!r} is neither a TOML value nor a word; "
                          "quote it, e.g. key='a b'") from None


def _part(item: str, text: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` or ``NAME[key=value, ...]`` (values as TOML: 100, 0.1, true, 'text')."""
    found = _PART.fullmatch(text)
    if not found:
        raise ConfigError(f"candidate {item!r}: {text!r} is not NAME or NAME[key=value, ...], "
                          "e.g. 'random_forest[n_estimators=100]+smote'")
    name, inner = found[1], found[2]
    params: dict[str, Any] = {}
    for pair in (p for p in re.split(r",(?![^\[]*\])", inner or "") if p.strip()):
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"candidate {item!r}: {pair.strip()!r} must look like key=value")
        params[key.strip()] = _value(item, raw.strip())
    return name, params


def _label(name: str, params: dict[str, Any]) -> str:
    if not params:
        return name
    return name + "[" + ",".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items()) + "]"


def parse_candidates(spec: list[str], exp: Experiment) -> list[dict[str, Any]]:
    """``model+resampler`` names into estimator configs: ``xgboost+smote``, ``random_forest+none``,
    and with parameters ``random_forest[n_estimators=100,max_depth=8]+smote[k_neighbors=3]``.
    Parameters given replace the family's defaults (or the experiment's own, for its model)."""
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for item in spec:
        parts = _split_plus(item)
        if len(parts) > 2:
            raise ConfigError(f"candidate {item!r}: one model and at most one resampler, e.g. xgboost+smote")
        model, given = _part(item, parts[0])
        resampler, rgiven = _part(item, parts[1]) if len(parts) == 2 else ("none", {})
        if exp.regression and resampler != "none":
            raise ConfigError(f"candidate {item!r}: resampler {resampler!r} balances classes; a regression takes "
                              "models alone, e.g. xgboost ridge random_forest")
        try:
            check_names(model, resampler, keys=("model", "resampler"))
        except ConfigError as exc:
            raise ConfigError(f"candidate {item!r}: {exc}") from None
        params = {**(exp.model.params if model == exp.model.name else {}), **given}  # else trilho.model.catalog' defaults
        if exp.decision.quantile is not None:  # a quantile decision: each candidate fits that quantile
            params = {**params, **quantile_params(model, exp.decision.quantile)}
        rparams = {**(exp.resampler.params if resampler == exp.resampler.name else {}), **rgiven}
        try:
            check_estimator({"name": model, "params": params}, {"name": resampler, "params": rparams}, exp.data.missing,
                            exp.task)
        except ConfigError as exc:
            raise ConfigError(f"candidate {item!r}: {exc}") from None
        label = _label(model, given) if exp.regression else f"{_label(model, given)}+{_label(resampler, rgiven)}"
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
    known = metrics_for(exp.task)
    if metric not in known:
        raise ConfigError(f"metric {metric!r} is unknown for {exp.task}; choose from {sorted(known)}")
    warmed: list[Warm] = []

    def early(inputs: Prepared) -> Warm | None:
        """The worker processes of the candidates that hold the GIL, started while the store opens."""
        workers = settings.free_cores()
        gil = [model_kind(c["model"]["name"]).gil_bound for c in candidates]
        if settings.executor == "dask" or workers < 2 or not any(gil) or len(gil) * exp.cv.n_splits < 2:
            return None
        # forked from the fit server where `trilho compare` started it, before its own imports: the
        # fits' modules imported once, not once per worker
        warmed.append(Warm(workers, inputs.X, inputs.y, FIT_MODULES, server=started_fit_server()))
        return warmed[0]

    def end_warmed() -> None:  # on the way out, an error or a stop included
        for warm in warmed:
            warm.close()

    with contextlib.ExitStack() as leaving:
        leaving.callback(end_warmed)
        # the store opens beside the fits (it is needed once they end); its error stops them
        ctx = leaving.enter_context(conduct(exp, settings, early=early, tracker_beside=True))
        return _compared(ctx, candidates, metric, progress)


def _compared(ctx: Context, candidates: list[dict[str, Any]], metric: str, progress: Progress | None) -> CompareResult:
    exp = ctx.exp
    begun = time.time()
    with ctx.timed("compare_s"):
        results = _evaluate(ctx, candidates, progress)
        rows = _rows(ctx, candidates, results, metric)
    with ctx.tracker.run(f"{exp.name}-compare", ctx.tags("compare"), started=begun) as parent:
        ctx.tracker.log_values(parent, params=flatten(exp.resolved()) | {
            "compare.candidates": json.dumps([c["label"] for c in candidates]), "compare.metric": metric})
        with ctx.timed("compare_s"):
            for cand, row in zip(candidates, rows, strict=True):
                _log_candidate(ctx, parent, cand, results[cand["label"]], row)
        table = pd.DataFrame(rows)
        baseline = candidates[0]["label"]
        summary = {"experiment": exp.name, "run_id": parent, "metric": metric, "baseline": baseline,
                   "n_folds": len(results[baseline].scores(metric)), "duplicates": ctx.inputs.duplicates,
                   "seconds": ctx.timings["compare_s"], "candidates": rows,
                   "lake": {"uri": ctx.lake.uri, "reports": f"reports/{parent}/"}}
        scores = {label: cv.scores(metric) for label, cv in results.items()}
        ctx.tracker.log_values(parent, metrics=[(_metric_name(f"{r['candidate']}_{metric}_mean"), r["mean"], 0)
                                                for r in rows])
        reports.publish_compare(ctx.tracker, ctx.lake, table, summary, scores)
    return CompareResult(table=table, scores=scores, run_id=parent, summary=summary)


def _metric_name(text: str) -> str:
    """An MLflow metric name: letters, digits and ``_-./`` only."""
    return re.sub(r"[^A-Za-z0-9_.\-/]", "_", text)


def _evaluate(ctx: Context, candidates: list[dict[str, Any]], progress: Progress | None) -> dict[str, CVResult]:
    """Every candidate's folds in one batch on one pool."""
    exp = ctx.exp
    total = len(candidates) * exp.cv.n_splits * exp.cv.n_repeats
    tasks = [ctx.task(model=c["model"], resampler=c["resampler"], label=c["label"]) for c in candidates]
    runner = ctx.runner(progress, "compare", total)
    if ctx.early is not None and runner.executor is None:  # the worker processes started while the store opened
        runner = dataclasses.replace(runner, executor=LocalPool(runner.n_jobs, ctx.early))
    try:
        found = evaluate.cross_validate_many(ctx.inputs.X, ctx.inputs.y, tasks, runner)
    finally:
        if ctx.early is not None:  # no thread of theirs outlives the fits (the figures may fork)
            ctx.early.close()
    return {cand["label"]: cv for cand, cv in zip(candidates, found, strict=True)}


def _rows(ctx: Context, candidates: list[dict[str, Any]], results: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Each candidate's mean and corrected interval, and its paired difference from the first."""
    test_fraction, level = 1.0 / ctx.exp.cv.n_splits, ctx.exp.evaluation.level
    base = results[candidates[0]["label"]].scores(metric)
    rows = []
    for cand in candidates:
        scores: np.ndarray = results[cand["label"]].scores(metric)
        low, high = stats.corrected_t_interval(scores, test_fraction, level)
        test = stats.paired_corrected_t(scores, base, test_fraction, level)
        rows.append({"candidate": cand["label"], "mean": float(scores.mean()), "ci_low": low, "ci_high": high,
                     "mean_diff": test["mean_diff"], "diff_low": test["low"], "diff_high": test["high"],
                     "p_value": test["p_value"], "t": test["t"]})
    return rows


def _log_candidate(ctx: Context, parent: str, cand: dict[str, Any], cv: Any, row: dict[str, Any]) -> None:
    """One child run per candidate: its params and fold scores, and its difference from the baseline."""
    metrics = ctx.exp.evaluation.metrics
    with ctx.tracker.run(cand["label"], {"trilho.kind": "candidate", "trilho.candidate": cand["label"]},
                         parent=parent) as child:
        ctx.tracker.log_values(child, params=flatten({"model": cand["model"], "resampler": cand["resampler"]}),
                               metrics=[(f"{m}_fold", v, i) for m in metrics for i, v in enumerate(cv.scores(m))]
                               + [(f"{m}_mean", float(cv.scores(m).mean()), 0) for m in metrics]
                               + [("diff_vs_baseline", row["mean_diff"], 0), ("p_value", row["p_value"], 0)])
