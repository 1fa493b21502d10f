"""``trilho run``, stage by stage: ingest -> validate -> clean (the context) -> evaluate -> track -> lake.

``run_experiment`` reads as the picture in docs/development.md: load and curate the data, open the tracking
store, then, inside one MLflow run, evaluate (the params, the dataset and the model reach MLflow
on the tracker's own thread while the fits use the cores), summarise, write the reports to the
lake, and track the results and the gate's decision.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilho.data import leaks
from trilho.errors import ConfigError, SourceUnreachableError, TrackingError
from trilho.evaluation import baselines, conformal, explain, groups, periods
from trilho.evaluation import cv as evaluate
from trilho.evaluation.metrics import confusion, probability_metrics, regression_scores, scores_from_confusion
from trilho.evaluation.results import CVResult, HoldoutResult
from trilho.execution import background as parallel
from trilho.execution.pool import Apart
from trilho.experiment import Experiment
from trilho.reporting import publish as reports
from trilho.reporting.summary import baseline_rows, build_summary, explained_rows, metric_rows, summary_metrics
from trilho.schemas import RunSummary, ValidationReport
from trilho.serving.artifact import save_model_files
from trilho.settings import Settings
from trilho.storage import Lake
from trilho.tracking import flatten
from trilho.workflows.context import Context, Prepared, Progress, conduct, experiment_task
from trilho.workflows.promote import promote

__all__ = ["ExperimentResult", "offline_experiment", "run_experiment"]

log = logging.getLogger(__name__)
SMALL_BASELINE = 200_000  # rows x fits under which a baseline's fits run apart, in a worker process of their own


@dataclass
class ExperimentResult:
    summary: RunSummary
    cv: CVResult
    holdout: HoldoutResult
    validation: ValidationReport
    timings: dict[str, float] = field(default_factory=dict)
    # set when the experiment's own source could not be reached and ``offline_source`` ran instead:
    # the source that failed, why, and the source and model name used in its place
    offline: dict[str, str] | None = None

    @property
    def run_id(self) -> str:
        return self.summary["run_id"]


def nested_repeats(exp: Experiment) -> int:
    """How many CV repeats also get nested-CV fits: none unless the nested_cv interval is asked for."""
    ev = exp.evaluation
    return min(ev.nested_repeats, exp.cv.n_repeats) if "nested_cv" in (*ev.intervals, ev.interval) else 0


def offline_experiment(exp: Experiment, source: str) -> Experiment:
    """The experiment on ``source`` instead of its own, its model registered apart (``NAME-offline``)."""
    config = exp.resolved()
    config["source"] = {**config["source"], "uri": source, "sha256": ""}
    if exp.registry.model_name:
        config["registry"] = {**config["registry"], "model_name": exp.registry.model_name + "-offline"}
    return Experiment.model_validate(config)


@dataclass
class _Run:
    """One experiment run: its context, the MLflow run and the local folder its files gather in."""

    ctx: Context
    progress: Progress | None
    run_id: str = ""
    folder: Path = Path()
    threshold: float | None = None  # the logged model's own, when a decision rule chose one
    group_table: pd.DataFrame | None = None  # evaluation.groups: per fold and group, every metric
    # a regression's prediction intervals: measured out of fold (conformal.interval_summary), and on the holdout
    intervals: dict[str, Any] | None = None
    holdout_interval: dict[str, Any] | None = None
    fold_widths: pd.DataFrame | None = None  # a regression's interval half-width per seed and fold (conformal)

    @property
    def prefix(self) -> str:
        """Where the run's reports go in the lake."""
        return f"reports/{self.run_id}/"


@dataclass
class _Fitted:
    """What the evaluation stage hands on: the scores, the holdout, and the futures of the MLflow
    work it started."""

    cv: CVResult
    held: HoldoutResult
    inputs_logged: Future
    model_logged: Future | None
    distributed: dict[str, Any] | None = None
    baselines: dict[str, Any] | None = None
    task: evaluate.Task | None = None  # the folds' task, which the baselines share
    beside: dict[str, CVResult] = field(default_factory=dict)  # the default models' folds (_Baselines)


def run_experiment(exp: Experiment, settings: Settings, *, lake: Lake | None = None,
                   progress: Progress | None = None, offline_source: str | None = None,
                   spare: Apart | None = None) -> ExperimentResult:
    """Run the whole experiment; returns the summary that ``--summary-json`` writes.

    ``offline_source``: when the experiment's own source cannot be reached, run on this source
    instead (``offline_experiment``); the result says so in ``offline``. ``spare``: a worker
    process started ahead (``trilho run`` starts it before its own imports) for the small
    baselines' fits; the caller ends it (``cancel``) if it is still free afterwards."""
    try:
        return _run(exp, settings, lake, progress, spare)
    except SourceUnreachableError as exc:
        if not offline_source or offline_source == exp.source.uri:
            raise
        substitute = offline_experiment(exp, offline_source)
        offline = {"unreachable": exp.source.uri, "cause": exc.cause,
                   "source": offline_source, "model_name": substitute.registry.model_name or ""}
        log.info("%r cannot be reached (%s); running on %s instead", exp.source.uri, offline["cause"], offline_source)
        result = _run(substitute, settings, lake, progress, spare)
        result.offline = offline
        return result


def _run(exp: Experiment, settings: Settings, lake: Lake | None, progress: Progress | None,
         spare: Apart | None = None) -> ExperimentResult:
    if exp.model.distributed and settings.executor != "dask":
        raise ConfigError("model.distributed = true fits the final model on a Dask cluster: set "
                          "TRILHO_DASK_SCHEDULER=tcp://host:8786 (an existing cluster) or TRILHO_EXECUTOR=dask "
                          "(a local one), or model.distributed = false")
    started: list[_Baselines] = []

    def early(inputs: Prepared) -> _Baselines:
        started.append(_Baselines(exp, inputs, spare))
        return started[0]

    def end_started() -> None:  # a process left behind (an error, a stop) is ended
        for baseline in started:
            baseline.cancel()

    with contextlib.ExitStack() as leaving:
        leaving.callback(end_started)
        ctx = leaving.enter_context(conduct(exp, settings, lake=lake, reference=True, early=early))
        run = _Run(ctx, progress)
        # left early (an error, or a stop: trilho.execution.background), the figures' children are killed, the
        # tracker's thread ends its call, the run's folder goes, then the run ends FAILED or KILLED
        with ctx.tracker.run(f"{exp.name}-cv", ctx.tags("experiment")) as run.run_id, \
                tempfile.TemporaryDirectory(prefix="trilho-report-") as tmp, ctx.tracker.background(), \
                parallel.scope() as drawing:
            run.folder = Path(tmp)
            fitted = _evaluate(run)
            # the figures draw in forked children while the summary is made, the baselines compared and
            # the reports written: those of the folds at once, those of the summary once it is made
            drawing += _start_figures(run, fitted, None)
            summary = _summarise(run, fitted)
            drawing += _start_figures(run, fitted, summary)
            _add_baselines(run, fitted, summary)
            _write_reports(run, fitted, summary)
            _track_results(run, fitted, summary, drawing)
    return ExperimentResult(summary=summary, cv=fitted.cv, holdout=fitted.held, validation=ctx.inputs.validation,
                            timings=ctx.timings)


def _evaluate(run: _Run) -> _Fitted:
    """The folds, the holdout fit and the final fit on one pool; MLflow gets the params and the
    dataset, then the model as soon as it is fit, on the tracker's thread while the folds go on."""
    ctx = run.ctx
    exp, inputs, tracker = ctx.exp, ctx.inputs, ctx.tracker
    task = ctx.task(holdout_fraction=exp.evaluation.holdout_fraction, classes=exp.data.classes,
                    nested_repeats=nested_repeats(exp),
                    final_fit=exp.tracking.final_fit == "all" and not exp.model.distributed,
                    explain_repeats=exp.evaluation.explain_repeats)
    tracked = tracker.seconds
    early: _Baselines = ctx.early
    with ctx.timed("cv_s"):  # folds + holdout fit + final fit (+ the larger default models' folds), one pool
        inputs_logged = tracker.submit(_log_inputs, run)  # waits on the server, not on a core
        model_logged = None
        with evaluate.start(inputs.X, inputs.y, task, ctx.runner(run.progress), list(early.pooled.values())) as fitting:
            kind = "final" if exp.tracking.final_fit == "all" else "holdout"  # the reference logged its 70% fit
            if exp.tracking.log_model and not exp.model.distributed and not exp.regression:
                model_logged = _keep_model(run, fitting.model(kind).result(), inputs_logged)
            cv, held, _ = fitting.result()
            pooled = dict(zip(early.pooled, fitting.beside(), strict=True))
            if pooled:  # the larger default models' share of the pool
                ctx.timings["baselines_in_pool_s"] = sum(float(r.folds["fit_s"].sum()) for r in pooled.values()) \
                    / max(cv.workers, 1)
            with ctx.timed("baselines_wait_s"):  # the small ones fit apart: done by now, as a rule
                beside = pooled | early.result()
            if "explain_s" in cv.folds:  # the explanations' share of the pool: their seconds over its workers
                ctx.timings["explain_in_pool_s"] = float(cv.folds["explain_s"].sum()) / max(cv.workers, 1)
            if exp.regression and cv.oof is not None:  # the model's intervals come from every fold's residuals
                run.fold_widths = conformal.coverage_by_fold(cv.oof, exp.prediction.level)
                run.intervals = conformal.interval_summary(cv.oof, exp.prediction.level, run.fold_widths)
                if held is not None:
                    run.holdout_interval = _holdout_interval(cv, held, inputs.y, exp.prediction.level)
                if exp.tracking.log_model and not exp.model.distributed:
                    model_logged = _keep_model(run, fitting.model(kind).result(), inputs_logged)
        distributed = None
        if exp.model.distributed:  # the workers read the curated Parquet from the lake themselves
            started = time.perf_counter()
            pipe, distributed = ctx.executor.fit_distributed(
                ctx.lake.arrow(inputs.validation["curated_key"]), inputs.data.spec, task.model,
                exp.resampler.model_dump(), exp.random_state)
            distributed["fit_s"] = time.perf_counter() - started
            model_logged = _keep_model(run, pipe, inputs_logged) if exp.tracking.log_model else None
        # the tracker's thread ends with its work: with no other thread alive, the figures may be forked
        tracker.close()
    ctx.timings["tracking_during_cv_s"] = tracker.seconds - tracked  # overlapped with the fits
    assert held is not None  # the experiment always asks for a holdout
    return _Fitted(cv, held, inputs_logged, model_logged, distributed, task=task, beside=beside)


class _Baselines:
    """The default models among the baselines, each on the first ``baseline_repeats`` seeds of the
    run's folds. The small ones (under ``SMALL_BASELINE`` rows x fits) start at once, one fit at a
    time in a worker process of their own, while this process opens the tracking store on one
    core: in the run's pool, those fits (histogram boosting: GIL-bound Python) slowed the model's
    fits as much as they took (diabetes: 1.3 s more either way). The larger ones are ``pooled``:
    their folds go in the model's pool, in worker processes."""

    def __init__(self, exp: Experiment, inputs: Prepared, spare: Apart | None = None) -> None:
        task = experiment_task(exp, inputs.data.spec, inputs.groups, inputs.order)
        tasks = {name: baselines.baseline_task(task, name, exp.evaluation.baseline_repeats)
                 for name in exp.evaluation.baselines if name != baselines.MAJORITY and name not in baselines.CONSTANT}
        small = {name: len(inputs.y) * len(base.seeds) * base.n_splits < SMALL_BASELINE for name, base in tasks.items()}
        self.pooled = {name: base for name, base in tasks.items() if not small[name]}
        self._apart = {name: base for name, base in tasks.items() if small[name]}
        self._process = None
        if self._apart:
            self._process = evaluate.start_apart(inputs.X, inputs.y, list(self._apart.values()), spare)
        elif spare is not None and spare.free:  # nothing for it to do
            spare.cancel()

    def result(self) -> dict[str, CVResult]:
        """The small ones' results, once their process has ended."""
        if self._process is None:
            return {}
        return dict(zip(self._apart, self._process.result(), strict=True))

    def cancel(self) -> None:
        if self._process is not None:
            self._process.cancel()


def _holdout_interval(cv: CVResult, held: HoldoutResult, y: np.ndarray, level: float) -> dict[str, Any]:
    """The holdout's intervals: the half-width from the first repeat's out-of-fold residuals of the
    holdout's training rows (those a fold tested: forward folds over time test the later ones), its
    coverage of the holdout rows by the holdout model."""
    assert cv.oof is not None and held.test_index is not None and held.pred is not None
    first = cv.oof[cv.oof["seed"] == cv.oof["seed"].iloc[0]].set_index("row")
    train = first.loc[first.index.intersection(held.train_index)]
    return conformal.holdout_coverage(np.abs(train["y"].to_numpy() - train["pred"].to_numpy()), y[held.test_index],
                                      held.pred, level)


def _add_baselines(run: _Run, fitted: _Fitted, summary: RunSummary) -> None:
    """The baselines on the same folds (the default models' folds already fit: _Baselines),
    paired with the model, into the summary and its warnings."""
    ctx = run.ctx
    assert fitted.task is not None
    with ctx.timed("baselines_s"):
        fitted.baselines = _baselines(ctx, fitted.task, fitted.cv, fitted.beside)
    if fitted.baselines is not None:
        summary["baselines"] = fitted.baselines
        summary["data"]["warnings"] = [*summary["data"]["warnings"], *fitted.baselines["said"]]


def _baselines(ctx: Context, task: evaluate.Task, cv: CVResult, models: dict[str, CVResult]
               ) -> dict[str, Any] | None:
    """The majority class (or a constant) on every fold and each default model on the first
    repeats (``models``, already fit: _Baselines), paired with the model."""
    exp, inputs = ctx.exp, ctx.inputs
    names = exp.evaluation.baselines
    if not names:
        return None
    scored = {}
    for name in names:
        if name == baselines.MAJORITY:
            scored[name] = baselines.majority_folds(inputs.y, task.n_splits, task.seeds, task.groups, task.order)
        elif name in baselines.CONSTANT:
            scored[name] = baselines.constant_folds(inputs.y, task.n_splits, task.seeds, task.groups, name, task.quantile,
                                                    task.order)
        else:
            scored[name] = models[name].folds
    metrics = exp.evaluation.metrics
    return baselines.compare(cv.folds, scored, metrics, exp.registry.primary_metric if exp.registry.primary_metric
                             in metrics else metrics[0], 1.0 / exp.cv.n_splits, exp.evaluation.level,
                             forward=inputs.order is not None)


def _log_inputs(run: _Run) -> None:
    ctx = run.ctx
    exp, inputs = ctx.exp, ctx.inputs
    ctx.tracker.log_values(run.run_id, params=flatten(exp.resolved()) | {
        "data.rows": str(len(inputs.data.y)), "data.features": json.dumps(list(inputs.data.X.columns))})
    ctx.tracker.log_dataset(run.run_id, inputs.raw, ctx.lake.url(inputs.ingested.key), exp.name, exp.data.target,
                            inputs.sha256)


def _keep_model(run: _Run, pipe: Any, inputs_logged: Future) -> Future:
    """The model's files to the lake at once, then to MLflow on the tracker's thread (unless the
    run's first MLflow calls failed: that error is raised once, later, from their future)."""
    ctx = run.ctx
    model_dir = run.folder / "model"
    run.threshold = getattr(pipe, "threshold_", None)
    spec = ctx.inputs.data.spec
    if run.intervals is not None:
        spec = {**spec, "interval": {"level": run.intervals["level"], "half_width": run.intervals["half_width"]}}
    save_model_files(pipe, spec, model_dir, ctx.inputs.X)
    reports.copy_to_lake(ctx.lake, model_dir, run.prefix + "model/")  # the lake has it before MLflow
    example = ctx.inputs.raw.drop(columns=[ctx.exp.data.target, *ctx.exp.data.drop]).head(5)

    def log_model() -> str | None:
        if inputs_logged.exception() is not None:
            return None
        uri = ctx.tracker.log_model(run.run_id, model_dir, example)
        # the digests of the logged model's files, beside the lake's copy of the model
        ctx.lake.put_file(run.prefix + "model/logged-files.json", model_dir / "logged-files.json", overwrite=True)
        return uri

    return ctx.tracker.submit(log_model)


def _summarise(run: _Run, fitted: _Fitted) -> RunSummary:
    ctx = run.ctx
    with ctx.timed("stats_s"):
        metrics = summary_metrics(fitted.cv, ctx.exp)
    inputs, lake = ctx.inputs, ctx.lake
    ingested = inputs.ingested
    summary = build_summary(
        ctx.exp, {"run_id": run.run_id, "tracking_uri": ctx.settings.tracking_uri,
                  "mlflow_experiment_id": ctx.tracker.experiment_id}, fitted.cv, fitted.held, metrics,
        {"manifest": ingested.manifest, "validation": inputs.validation, "skipped": ingested.skipped,
         "rows": len(inputs.data.y), "features": list(inputs.data.X.columns), "duplicates": inputs.duplicates,
         "lake": {"uri": lake.uri, "raw": ingested.key, "manifest": ingested.manifest_key,
                  "curated": inputs.validation["curated_key"], "reports": run.prefix}})
    if fitted.distributed is not None:
        summary["final_fit"] = {**fitted.distributed, "where": "xgboost.dask"}
    if run.intervals is not None:
        summary["prediction_interval"] = run.intervals
        if run.holdout_interval is not None:
            summary["holdout"]["interval"] = run.holdout_interval
    if ctx.exp.regression and ctx.exp.decision.quantile is not None:
        summary["decision"] = {"objective": "quantile", "costs": ctx.exp.decision.costs,
                               "quantile": ctx.exp.decision.quantile}
    elif ctx.exp.decision.objective != "argmax":
        summary["decision"] = _decision_summary(ctx.exp, fitted.cv, run.threshold)
    if inputs.order is not None:
        summary["time"] = _over_time(ctx, fitted)
    _explained(run, fitted.cv, summary)
    said = leaks.zero_width(metrics)
    summary["data"]["warnings"] = [*summary["data"]["warnings"], *said]
    if inputs.reference is not None:
        summary["data"]["reference"] = {**inputs.reference.info(), "training_rows_left_out": inputs.reference_rows_left_out}
    return summary


def _over_time(ctx: Context, fitted: _Fitted) -> dict[str, Any]:
    """Forward folds' estimates over time (trilho.evaluation.periods): each period's scores, their
    trend, and the latest period (the holdout) with a row-bootstrap interval of the primary metric."""
    exp, inputs, held = ctx.exp, ctx.inputs, fitted.held
    assert inputs.order is not None and fitted.cv.oof is not None and held.pipeline is not None
    assert held.test_index is not None
    test = held.test_index
    truth = inputs.y[test]
    if exp.regression:
        assert held.pred is not None  # a regression's holdout keeps its predictions
        pred, quantile = held.pred, exp.decision.quantile

        def score(rows: np.ndarray) -> dict[str, float]:
            return regression_scores(truth[rows], pred[rows], quantile)
    else:
        codes, proba = evaluate.answers(held.pipeline, inputs.X, inputs.y, test, regression=False)
        labels = np.arange(proba.shape[1])

        def score(rows: np.ndarray) -> dict[str, float]:
            cm = confusion(truth[rows], codes[rows], labels)
            try:
                return {**scores_from_confusion(cm), **probability_metrics(truth[rows], proba[rows], labels)}
            except ValueError:  # a replicate without one of the classes
                return scores_from_confusion(cm)
    primary = exp.registry.primary_metric if exp.registry.primary_metric in exp.evaluation.metrics \
        else exp.evaluation.metrics[0]
    return periods.time_summary(fitted.cv.folds, fitted.cv.oof, inputs.order, exp.evaluation.metrics, primary, test,
                                score, exp.evaluation.level, exp.random_state)


def _explained(run: _Run, cv: CVResult, summary: RunSummary) -> None:
    """The folds' feature importance and the metrics by group, into the summary."""
    ctx = run.ctx
    exp, inputs = ctx.exp, ctx.inputs
    with ctx.timed("explain_s"):
        if cv.importance is not None:
            # TreeSHAP explains the columns the model reads (a date's calendar parts), permutation the data's
            names = inputs.data.spec["features"] if cv.importance_method.startswith("tree_shap") else list(inputs.X.columns)
            summary["importance"] = explain.summarise_importance(cv.importance, names,
                                                                 cv.importance_method, 1.0 / exp.cv.n_splits,
                                                                 exp.evaluation.level)
        if inputs.group_columns is not None and cv.oof is not None:
            oof = cv.oof if run.fold_widths is None else cv.oof.merge(
                run.fold_widths[["seed", "fold", "half_width"]], on=["seed", "fold"], how="left")
            summary["groups"], run.group_table = groups.group_metrics(
                oof, inputs.group_columns, exp.evaluation.metrics, len(exp.data.classes), 1.0 / exp.cv.n_splits,
                exp.evaluation.level, exp.decision.quantile)


def _decision_summary(exp: Experiment, cv: CVResult, final: float | None) -> dict[str, Any]:
    """The decision rule, each fold's threshold (chosen on its own training rows) and their spread,
    and the logged model's threshold (chosen on the inner folds of every row)."""
    out: dict[str, Any] = {"objective": exp.decision.objective, **exp.decision.model_dump(exclude={"objective"})}
    if "threshold" in cv.folds and cv.folds["threshold"].notna().any():
        t = cv.folds["threshold"].to_numpy()
        out["threshold"] = {"mean": float(t.mean()), "std": float(t.std(ddof=1)) if len(t) > 1 else 0.0,
                            "low": float(t.min()), "high": float(t.max()), "folds": t.round(6).tolist(),
                            "model": final}
    return out


def _threshold_rows(decision: dict[str, Any] | None) -> list[tuple[str, float, int]]:
    found = (decision or {}).get("threshold")
    if not found:
        return []
    rows = [(f"decision_threshold_{k}", found[k], 0) for k in ("mean", "std", "low", "high")]
    rows += [("decision_threshold_fold", v, step) for step, v in enumerate(found["folds"])]
    return rows + ([("decision_threshold_model", found["model"], 0)] if found["model"] is not None else [])


def _start_figures(run: _Run, fitted: _Fitted, summary: RunSummary | None) -> list[parallel.Background]:
    """The figures, drawing in the background into the run's ``figures`` folder: without the
    ``summary``, those drawn from the folds alone (reports.EARLY_FIGURES)."""
    with run.ctx.timed("figures_start_s"):
        figures = run.folder / "figures"
        figures.mkdir(exist_ok=True)
        return reports.start_figures(figures, run.ctx.exp, summary, fitted.cv, fitted.held)


def _write_reports(run: _Run, fitted: _Fitted, summary: RunSummary) -> None:
    """The result files to the lake (before MLflow sees them: a tracking failure loses nothing)."""
    ctx = run.ctx
    with ctx.timed("artifacts_s"):
        folder = run.folder / "report"
        folder.mkdir()
        reports.write_artifacts(folder, ctx.exp, summary, (fitted.cv, fitted.held), ctx.inputs.validation,
                                ctx.inputs.ingested.manifest, run.group_table)
    with ctx.timed("lake_copy_s"):
        reports.copy_to_lake(ctx.lake, folder, run.prefix)


def _figures_to_lake(run: _Run, drawing: list[parallel.Background]) -> None:
    """Wait for the figures; into the lake and the report folder (once)."""
    ctx = run.ctx
    if "figures_wait_s" not in ctx.timings:
        ctx.timings["figures_wait_s"] = reports.collect_figures(drawing, run.folder / "figures", run.folder / "report",
                                                                ctx.lake, run.prefix)


def _track_results(run: _Run, fitted: _Fitted, summary: RunSummary, drawing: list[parallel.Background]) -> None:
    """The metrics, the gate's decision and the report folder to MLflow; on a tracking failure
    the summary is still written to the lake and the error says where everything is."""
    ctx = run.ctx
    exp, tracker = ctx.exp, ctx.tracker
    try:
        fitted.inputs_logged.result()
        model_uri = fitted.model_logged.result() if fitted.model_logged else None
        if model_uri:
            summary["model_uri"] = model_uri
        if exp.tracking.layout == "nested":
            tracker.log_repeats(run.run_id, fitted.cv.folds, exp.evaluation.metrics)
        tracker.log_values(run.run_id, metrics=metric_rows(fitted.cv, summary["cv"]["metrics"], fitted.held,
                                                           exp.evaluation.metrics) + baseline_rows(fitted.baselines)
                           + _threshold_rows(summary.get("decision")) + explained_rows(summary))
        if summary.get("importance"):
            tracker.set_tag(run.run_id, "trilho.top_features", ", ".join(explain.top_features(summary["importance"]))[:4000])
        if fitted.baselines is not None:
            tracker.set_tag(run.run_id, "trilho.baselines", "; ".join(fitted.baselines["said"]) or
                            f"beats every baseline on {fitted.baselines['primary_metric']}")
        if exp.registry.model_name and exp.tracking.log_model:  # needs no figure: while they are drawn
            summary["registry"] = promote(run.ctx, run.run_id, run.prefix, summary, fitted.cv, fitted.held)
        _figures_to_lake(run, drawing)
        _page(run, summary)
        tracker.log_folder(run.run_id, run.folder / "report")
    except TrackingError as exc:
        try:  # what can still be kept is; a second failure (the same full disk) does not hide the first
            _figures_to_lake(run, drawing)
        except (OSError, RuntimeError) as figures:
            log.warning("the run's figures were not kept (%s)", figures)
        _page(run, summary)
        summary["tracking_error"] = str(exc)
        _save_summary(run, summary)
        raise TrackingError(f"{exc}; nothing is lost: the results and the model are in "
                            f"{ctx.lake.uri}/{run.prefix}") from exc
    timings = ctx.timings
    timings["tracking_s"] = tracker.seconds
    timings["mlflow_import_s"] = tracker.import_seconds
    timings.update({f"tracking.{k}_s": v for k, v in tracker.breakdown.items()})
    timings["total_s"] = ctx.elapsed()
    summary["timings"] = timings
    _save_summary(run, summary)


def _page(run: _Run, summary: RunSummary) -> None:
    """The run's HTML page, once, into its report folder and the lake."""
    ctx = run.ctx
    if "page_s" in ctx.timings:
        return
    with ctx.timed("page_s"):
        try:
            page = reports.write_page(run.folder / "report", {**summary, "report_html": "",
                                                              "timings": {**ctx.timings, "total_s": ctx.elapsed()}})
        except Exception as exc:  # a page that cannot be drawn loses no result: everything else is written
            log.warning("the run's report.html was not written (%s: %s); every other result is; try `trilho "
                        "report %s` once fixed", type(exc).__name__, exc, run.run_id)
            return
        ctx.lake.put_file(run.prefix + "report.html", page, overwrite=True)
        summary["report_html"] = ctx.lake.url(run.prefix + "report.html")


def _save_summary(run: _Run, summary: RunSummary) -> None:
    run.ctx.lake.put_bytes(run.prefix + "summary.json", json.dumps(summary, indent=2).encode(), overwrite=True)
