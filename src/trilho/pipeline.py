"""The only place where stages meet: ingest -> validate -> clean -> evaluate -> track -> lake.

``run_experiment`` reads as the picture in README: load and curate the data, open the tracking
store, then, inside one MLflow run, evaluate (the params, the dataset and the model reach MLflow
on the tracker's own thread while the fits use the cores), summarise, write the reports to the
lake, and track the results and the gate's decision.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trilho import evaluate, parallel, reports
from trilho.clean import CleanData
from trilho.cluster import open_executor
from trilho.contracts import GateRecord, RunSummary, ValidationReport
from trilho.curate import fold_data, load_clean, read_curated
from trilho.errors import ConfigError, TrackingError
from trilho.experiment import Experiment
from trilho.ingest import Ingested
from trilho.reference import ReferenceSet, load_reference, without_reference
from trilho.settings import Settings
from trilho.storage import Lake, open_lake
from trilho.summary import build_summary, metric_rows, summary_metrics
from trilho.tracking import Tracker, flatten, save_model_files

# load_clean and fold_data stay importable from here, where the notebook and scripts look for them
__all__ = ["ExperimentResult", "cv_key", "fold_data", "load_clean", "open_tracker", "run_experiment"]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass
class ExperimentResult:
    summary: RunSummary
    cv: evaluate.CVResult
    holdout: evaluate.HoldoutResult
    validation: ValidationReport
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.summary["run_id"]


def nested_repeats(exp: Experiment) -> int:
    """How many CV repeats also get nested-CV fits: none unless the nested_cv interval is asked for."""
    ev = exp.evaluation
    return min(ev.nested_repeats, exp.cv.n_repeats) if "nested_cv" in (*ev.intervals, ev.interval) else 0


def open_tracker(settings: Settings, experiment: str) -> Tracker:
    """The tracking store named by settings (checked, bounded wait), its stale runs closed."""
    tracker = Tracker(settings.tracking_uri, experiment, pending_file=settings.cache_dir / "unfinished_runs.json",
                      wait_s=settings.mlflow_wait_s)
    tracker.close_stale_runs()
    return tracker


def cv_key(exp: Experiment, data_sha256: str) -> dict[str, str]:
    """What fixes the folds: the data's digest and the CV params, as the run's params record them."""
    params = flatten(exp.resolved())
    return {"data_sha256": data_sha256, **{k: params[k] for k in ("cv.n_splits", "cv.n_repeats", "cv.first_seed",
                                                                    "cv.duplicates", "data.missing")}}


@dataclass
class _Inputs:
    """What the data stage hands on: the ingest, the raw table, its report, the cleaned data."""

    ingested: Ingested
    raw: pd.DataFrame
    validation: ValidationReport
    data: CleanData
    reference: ReferenceSet | None = None  # registry.reference: the gate's rows, left out of training
    reference_rows_left_out: int = 0


@dataclass
class _Run:
    """One experiment run's surroundings, shared by its stages."""

    exp: Experiment
    settings: Settings
    lake: Lake
    tracker: Tracker
    executor: Any
    progress: Progress | None
    clock: float
    timings: dict[str, float] = field(default_factory=dict)
    run_id: str = ""
    folder: Path = Path()

    @property
    def prefix(self) -> str:
        """Where the run's reports go in the lake."""
        return f"reports/{self.run_id}/"


@dataclass
class _Fitted:
    """What the evaluation stage hands on: the scores, the holdout, the rows the folds saw, and
    the futures of the MLflow work it started."""

    cv: evaluate.CVResult
    held: evaluate.HoldoutResult
    folds: tuple[pd.DataFrame, Any, Any]  # X, y, groups
    duplicates: dict[str, Any]
    inputs_logged: Future
    model_logged: Future | None
    distributed: dict[str, Any] | None = None


def run_experiment(exp: Experiment, settings: Settings, *, lake: Lake | None = None,
                   progress: Progress | None = None) -> ExperimentResult:
    """Run the whole experiment; returns the summary that ``--summary-json`` writes."""
    clock = time.perf_counter()
    lake = lake or open_lake(settings)
    if exp.model.distributed and settings.executor != "dask":
        raise ConfigError("model.distributed = true fits the final model on a Dask cluster: set "
                          "TRILHO_DASK_SCHEDULER=tcp://host:8786 (an existing cluster) or TRILHO_EXECUTOR=dask "
                          "(a local one), or model.distributed = false")
    with open_executor(settings) as executor:  # a Dask cluster is checked before anything is read
        inputs = _with_reference(_Inputs(*load_clean(exp, settings, lake)), exp, settings, lake)
        data_s = time.perf_counter() - clock
        tracker = open_tracker(settings, exp.tracking.experiment)  # fails before any training
        run = _Run(exp, settings, lake, tracker, executor, progress, clock, {"data_s": data_s})
        tags = {"trilho.experiment": exp.name, "trilho.data_sha256": inputs.ingested.manifest["sha256"],
                "trilho.kind": "experiment"}
        # left early (an error, or a stop: trilho.parallel), the figures' children are killed, the
        # tracker's thread ends its call, the run's folder goes, then the run ends FAILED or KILLED
        with tracker.run(f"{exp.name}-cv", tags) as run.run_id, \
                tempfile.TemporaryDirectory(prefix="trilho-report-") as tmp, tracker.background(), \
                parallel.scope() as drawing:
            run.folder = Path(tmp)
            fitted = _evaluate(run, inputs)
            summary = _summarise(run, inputs, fitted)
            _write_reports(run, inputs, fitted, summary, drawing)
            _track_results(run, inputs, fitted, summary, drawing)
    return ExperimentResult(summary=summary, cv=fitted.cv, holdout=fitted.held, validation=inputs.validation,
                            timings=run.timings)


def _with_reference(inputs: _Inputs, exp: Experiment, settings: Settings, lake: Lake) -> _Inputs:
    """The reference set in the lake, and the training data less its rows (never trained on)."""
    reference = load_reference(exp, settings, lake)
    data, left_out = without_reference(inputs.data, reference)
    return _Inputs(inputs.ingested, inputs.raw, inputs.validation, data, reference, left_out)


def _evaluate(run: _Run, inputs: _Inputs) -> _Fitted:
    """The folds, the holdout fit and the final fit on one pool; MLflow gets the params and the
    dataset, then the model as soon as it is fit, on the tracker's thread while the folds go on."""
    exp, data = run.exp, inputs.data
    X, y, groups, duplicates = fold_data(data, exp)
    task = evaluate.Task(model=exp.model.model_dump(), resampler=exp.resampler.model_dump(),
                         random_state=exp.random_state, n_splits=exp.cv.n_splits, seeds=exp.cv.seeds,
                         encoding=data.spec, groups=groups, holdout_fraction=exp.evaluation.holdout_fraction,
                         classes=exp.data.classes, nested_repeats=nested_repeats(exp),
                         final_fit=exp.tracking.final_fit == "all" and not exp.model.distributed)
    progress = run.progress
    runner = evaluate.Runner(run.settings.free_cores(), run.executor,
                             (lambda done, total: progress("cv", done, total)) if progress else None)
    step, tracked = time.perf_counter(), run.tracker.seconds
    inputs_logged = run.tracker.submit(_log_inputs, run, inputs)  # waits on the server, not on a core
    model_logged = None
    with evaluate.start(X, y, task, runner) as fitting:
        if exp.tracking.log_model and not exp.model.distributed:
            kind = "final" if exp.tracking.final_fit == "all" else "holdout"  # the reference logged its 70% fit
            model_logged = _keep_model(run, inputs, fitting.model(kind).result(), inputs_logged)
        cv, held, _ = fitting.result()
    distributed = None
    if exp.model.distributed:  # the workers read the curated Parquet from the lake themselves
        started = time.perf_counter()
        pipe, distributed = run.executor.fit_distributed(
            run.lake.arrow(inputs.validation["curated_key"]), data.spec, exp.model.model_dump(),
            exp.resampler.model_dump(), exp.random_state)
        distributed["fit_s"] = time.perf_counter() - started
        model_logged = _keep_model(run, inputs, pipe, inputs_logged) if exp.tracking.log_model else None
    # the tracker's thread ends with its work: with no other thread alive, the figures may be forked
    run.tracker.close()
    run.timings["cv_s"] = time.perf_counter() - step  # folds + holdout fit + final fit, one pool
    run.timings["tracking_during_cv_s"] = run.tracker.seconds - tracked  # overlapped with the fits
    assert held is not None  # the experiment always asks for a holdout
    return _Fitted(cv, held, (X, y, groups), duplicates, inputs_logged, model_logged, distributed)


def _log_inputs(run: _Run, inputs: _Inputs) -> None:
    exp, data = run.exp, inputs.data
    run.tracker.log_values(run.run_id, params=flatten(exp.resolved()) | {
        "data.rows": str(len(data.y)), "data.features": json.dumps(list(data.X.columns))})
    run.tracker.log_dataset(run.run_id, inputs.raw, run.lake.url(inputs.ingested.key), exp.name, exp.data.target,
                            inputs.ingested.manifest["sha256"])


def _keep_model(run: _Run, inputs: _Inputs, pipe: Any, inputs_logged: Future) -> Future:
    """The model's files to the lake at once, then to MLflow on the tracker's thread (unless the
    run's first MLflow calls failed: that error is raised once, later, from their future)."""
    model_dir = run.folder / "model"
    save_model_files(pipe, inputs.data.spec, model_dir)
    reports.copy_to_lake(run.lake, model_dir, run.prefix + "model/")  # the lake has it before MLflow
    example = inputs.raw.drop(columns=[run.exp.data.target, *run.exp.data.drop]).head(5)

    def log_model() -> str | None:
        if inputs_logged.exception() is not None:
            return None
        uri = run.tracker.log_model(run.run_id, model_dir, example)
        # the digests of the logged model's files, beside the lake's copy of the model
        run.lake.put_file(run.prefix + "model/logged-files.json", model_dir / "logged-files.json", overwrite=True)
        return uri

    return run.tracker.submit(log_model)


def _summarise(run: _Run, inputs: _Inputs, fitted: _Fitted) -> RunSummary:
    step = time.perf_counter()
    metrics = summary_metrics(fitted.cv, run.exp)
    run.timings["stats_s"] = time.perf_counter() - step
    ingested, lake = inputs.ingested, run.lake
    summary = build_summary(
        run.exp, {"run_id": run.run_id, "tracking_uri": run.settings.tracking_uri,
                  "mlflow_experiment_id": run.tracker.experiment_id}, fitted.cv, fitted.held, metrics,
        {"manifest": ingested.manifest, "validation": inputs.validation, "skipped": ingested.skipped,
         "rows": len(inputs.data.y), "features": list(inputs.data.X.columns), "duplicates": fitted.duplicates,
         "lake": {"uri": lake.uri, "raw": ingested.key, "manifest": ingested.manifest_key,
                  "curated": inputs.validation["curated_key"], "reports": run.prefix}})
    if fitted.distributed is not None:
        summary["final_fit"] = {**fitted.distributed, "where": "xgboost.dask"}
    if inputs.reference is not None:
        summary["data"]["reference"] = {**inputs.reference.info(), "training_rows_left_out": inputs.reference_rows_left_out}
    return summary


def _write_reports(run: _Run, inputs: _Inputs, fitted: _Fitted, summary: RunSummary,
                   drawing: list[parallel.Background]) -> None:
    """The result files to the lake (before MLflow sees them: a tracking failure loses nothing);
    the figures start drawing in the background, into ``drawing``."""
    step = time.perf_counter()
    folder, figures = run.folder / "report", run.folder / "figures"
    folder.mkdir()
    figures.mkdir()
    reports.write_artifacts(folder, run.exp, summary, (fitted.cv, fitted.held), inputs.validation,
                            inputs.ingested.manifest)
    drawing += reports.start_figures(figures, run.exp, summary["cv"]["metrics"], fitted.cv, fitted.held)
    run.timings["artifacts_s"] = time.perf_counter() - step
    step = time.perf_counter()
    reports.copy_to_lake(run.lake, folder, run.prefix)
    run.timings["lake_copy_s"] = time.perf_counter() - step


def _figures_to_lake(run: _Run, drawing: list[parallel.Background]) -> None:
    """Wait for the figures; into the lake and the report folder (once)."""
    if "figures_wait_s" not in run.timings:
        run.timings["figures_wait_s"] = reports.collect_figures(drawing, run.folder / "figures", run.folder / "report",
                                                                run.lake, run.prefix)


def _track_results(run: _Run, inputs: _Inputs, fitted: _Fitted, summary: RunSummary, drawing: list[parallel.Background]) -> None:
    """The metrics, the gate's decision and the report folder to MLflow; on a tracking failure
    the summary is still written to the lake and the error says where everything is."""
    exp, tracker = run.exp, run.tracker
    try:
        fitted.inputs_logged.result()
        model_uri = fitted.model_logged.result() if fitted.model_logged else None
        if model_uri:
            summary["model_uri"] = model_uri
        if exp.tracking.layout == "nested":
            tracker.log_repeats(run.run_id, fitted.cv.folds, exp.evaluation.metrics)
        tracker.log_values(run.run_id, metrics=metric_rows(fitted.cv, summary["cv"]["metrics"], fitted.held,
                                                           exp.evaluation.metrics))
        if exp.registry.model_name and exp.tracking.log_model:  # needs no figure: while they are drawn
            summary["registry"] = _gate(run, inputs, fitted, summary)
        _figures_to_lake(run, drawing)
        tracker.log_folder(run.run_id, run.folder / "report")
    except TrackingError as exc:
        _figures_to_lake(run, drawing)
        summary["tracking_error"] = str(exc)
        _save_summary(run, summary)
        raise TrackingError(f"{exc}; nothing is lost: the results and the model are in "
                            f"{run.lake.uri}/{run.prefix}") from exc
    timings = run.timings
    timings["tracking_s"] = tracker.seconds
    timings["mlflow_import_s"] = tracker.import_seconds
    timings.update({f"tracking.{k}_s": v for k, v in tracker.breakdown.items()})
    timings["total_s"] = time.perf_counter() - run.clock
    summary["timings"] = timings
    _save_summary(run, summary)


def _save_summary(run: _Run, summary: RunSummary) -> None:
    run.lake.put_bytes(run.prefix + "summary.json", json.dumps(summary, indent=2).encode(), overwrite=True)


def _gate(run: _Run, inputs: _Inputs, fitted: _Fitted, summary: RunSummary) -> GateRecord:
    """Register the model and let the gate decide its aliases; the decision goes to the run and the lake."""
    from trilho import drift
    from trilho.tracking.registry import Challenger, register_and_gate

    exp, (X, y, groups) = run.exp, fitted.folds
    metric = exp.registry.primary_metric
    runner = evaluate.Runner(run.settings.free_cores(), run.executor)

    def reevaluate(config: dict[str, Any]) -> Any:  # the champion's procedure on exactly the challenger's folds
        champion = Experiment.model_validate(config)
        task = evaluate.Task(model=champion.model.model_dump(), resampler=champion.resampler.model_dump(),
                             random_state=champion.random_state, n_splits=exp.cv.n_splits, seeds=exp.cv.seeds,
                             groups=groups, encoding={**inputs.data.spec, "missing": champion.data.missing})
        return evaluate.cross_validate(X, y, task, runner).scores(metric)

    def drift_report(tags: dict[str, str], config: dict[str, Any]) -> dict[str, Any] | None:
        key = f"curated/{tags.get('trilho.experiment', '')}/{tags.get('trilho.data_sha256', '')}/data.parquet"
        if read_curated(run.lake, key) is None:  # the champion's curated data, from this lake
            log.warning("champion's data %s is not in lake %s (or not intact): drift not measured", key, run.lake.uri)
            return None
        old = pd.read_parquet(io.BytesIO(run.lake.get_bytes(key)))
        return drift.compare_data(old, inputs.data.curated(), Experiment.model_validate(config).data.classes, exp.data.classes)

    who = Challenger(name=exp.registry.model_name, model_uri=summary["model_uri"], run_id=run.run_id,
                     fold_scores=fitted.cv.scores(metric), cv_key=cv_key(exp, summary["data"]["sha256"]), metric=metric,
                     margin=exp.registry.margin, test_fraction=1.0 / exp.cv.n_splits, level=exp.registry.level,
                     reference=None if inputs.reference is None else (inputs.reference.X, inputs.reference.y))
    with run.tracker.timed("register and gate the model"):
        record = register_and_gate(run.settings.tracking_uri, who, reevaluate, drift_report)
    run.tracker.set_tag(run.run_id, "trilho.registry", f"{record['name']} v{record['version']}: {record['reason']}")
    run.lake.put_bytes(run.prefix + "promotion.json", json.dumps(record, indent=2).encode(), overwrite=True)
    return record
