"""The promotion of a run's model: registered as the challenger, then judged against the champion
by the gate (``trilho.evaluation.gate``) under the registry's lock (``trilho.tracking.registry``).
The champion's procedure is re-evaluated on exactly the challenger's folds when the data is the
same; on other data, the drift between the two curated tables informs the judgment.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from trilho.data.curate import read_curated
from trilho.evaluation import cv as evaluate
from trilho.evaluation.results import CVResult, HoldoutResult
from trilho.experiment import Experiment
from trilho.schemas import GateRecord, RunSummary
from trilho.tracking import flatten
from trilho.workflows.context import Context

__all__ = ["cv_key", "promote"]

log = logging.getLogger(__name__)


def cv_key(exp: Experiment, data_sha256: str) -> dict[str, str]:
    """What fixes the folds: the data's digest and the CV params, as the run's params record them."""
    params = flatten(exp.resolved())
    keys = ["cv.scheme", "cv.n_splits", "cv.n_repeats", "cv.first_seed", "cv.duplicates", "data.missing"]
    if exp.cv.scheme != "stratified":  # forward folds: their column, gap, window and the latest period held out
        keys += ["cv.time", "cv.gap", "cv.max_train", "cv.group", "evaluation.holdout_fraction"]
    return {"data_sha256": data_sha256, **{k: params[k] for k in keys}}



def gate_margin(exp: Experiment, y: np.ndarray) -> float:
    """The gate's margin: ``registry.margin`` as the file gives it; a regression whose file is silent
    takes 1% of its target's standard deviation (0.01 of a price in its own units would ask any
    changed model to be significantly better)."""
    if not exp.regression or "margin" in exp.registry.model_fields_set:
        return exp.registry.margin
    return float(0.01 * np.std(np.asarray(y, dtype="float64"))) or exp.registry.margin


def promote(ctx: Context, run_id: str, prefix: str, summary: RunSummary, cv: CVResult,
            held: HoldoutResult | None = None) -> GateRecord:
    """Register the run's model and let the gate decide its aliases; the decision goes to the run (a
    tag) and to the lake (``prefix``promotion.json). On dated rows (``held``: the latest period and
    the fit on the rows before it) the gate compares the two models on that period, row by row."""
    from trilho.tracking.registry import Challenger, register_and_gate

    exp, inputs = ctx.exp, ctx.inputs
    metric = exp.registry.primary_metric
    reference = inputs.reference
    latest, judge = None, lambda config: _reevaluate(ctx, config, metric)
    if inputs.order is not None and held is not None and held.pipeline is not None and held.test_index is not None:
        test = held.test_index
        latest = (inputs.y[test], evaluate.answers(held.pipeline, inputs.X, inputs.y, test, exp.regression))
        judge = lambda config: _latest_answers(ctx, config, test)  # noqa: E731
    who = Challenger(name=exp.registry.model_name, model_uri=summary["model_uri"], run_id=run_id,
                     fold_scores=cv.scores(metric), cv_key=cv_key(exp, summary["data"]["sha256"]),
                     metric=metric, margin=gate_margin(exp, inputs.y), test_fraction=1.0 / exp.cv.n_splits,
                     level=exp.registry.level, reference=None if reference is None else (reference.X, reference.y),
                     leaks=inputs.leaks, task=exp.task, quantile=exp.decision.quantile if exp.regression else None,
                     latest=latest)
    with ctx.tracker.timed("register and gate the model"):
        record = register_and_gate(ctx.settings.tracking_uri, who, judge,
                                   lambda tags, config: _drift_report(ctx, tags, config))
    ctx.tracker.set_tag(run_id, "trilho.registry", f"{record['name']} v{record['version']}: {record['reason']}")
    ctx.lake.put_bytes(prefix + "promotion.json", json.dumps(record, indent=2).encode(), overwrite=True)
    return record


def _champion_task(ctx: Context, config: dict[str, Any]) -> evaluate.Task:
    """The champion's procedure (its model, resampler, seed and missing-value policy) on the challenger's rows."""
    champion = Experiment.model_validate(config)
    return ctx.task(model=champion.model.model_dump(), resampler=champion.resampler.model_dump(),
                    random_state=champion.random_state,
                    quantile=champion.decision.quantile if champion.regression else None,  # its own, not the challenger's
                    encoding={**ctx.inputs.data.spec, "missing": champion.data.missing,
                              **({"target_scale": champion.data.target_scale} if champion.regression else {})})


def _latest_answers(ctx: Context, config: dict[str, Any], test: np.ndarray) -> Any:
    """The champion's procedure fitted on the rows before the latest period (less its own gap, within
    its own window), its answers on that period."""
    champion, order = Experiment.model_validate(config), ctx.inputs.order
    assert order is not None
    train, _ = dataclasses.replace(order, gap=champion.cv.gap, max_train=champion.cv.max_train).holdout_split()
    task = _champion_task(ctx, config)
    return evaluate.answers_on(ctx.inputs.X, ctx.inputs.y, task, train, test, ctx.settings.free_cores())


def _reevaluate(ctx: Context, config: dict[str, Any], metric: str) -> Any:
    """The champion's procedure on exactly the challenger's folds."""
    return evaluate.cross_validate(ctx.inputs.X, ctx.inputs.y, _champion_task(ctx, config), ctx.runner()).scores(metric)


def _drift_report(ctx: Context, tags: dict[str, str], config: dict[str, Any]) -> dict[str, Any] | None:
    """How the champion's curated data (from this lake) differs from the challenger's."""
    from trilho.monitoring import drift

    key = f"curated/{tags.get('trilho.experiment', '')}/{tags.get('trilho.data_sha256', '')}/data.parquet"
    if read_curated(ctx.lake, key) is None:
        log.warning("champion's data %s is not in lake %s (or not intact): drift not measured", key, ctx.lake.uri)
        return None
    old = pd.read_parquet(io.BytesIO(ctx.lake.get_bytes(key)))
    return drift.compare_data(old, ctx.inputs.data.curated(), Experiment.model_validate(config).data.classes,
                              ctx.exp.data.classes, regression=ctx.exp.regression)
