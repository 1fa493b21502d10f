"""The only place where stages meet: ingest -> validate -> clean -> evaluate -> track -> lake."""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trilho import evaluate, plots, stats
from trilho.clean import CleanData, clean
from trilho.experiment import Experiment
from trilho.ingest import Ingested, ingest, read_table
from trilho.settings import Settings
from trilho.errors import StorageError, TrackingError
from trilho.storage import Lake, open_lake, sha256_file
from trilho.tracking import Tracker, flatten, save_model_files
from trilho.validate import raise_for_errors, validate

__all__ = ["ExperimentResult", "load_clean", "run_experiment"]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass
class ExperimentResult:
    summary: dict[str, Any]
    cv: evaluate.CVResult
    holdout: evaluate.HoldoutResult
    validation: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.summary["run_id"]


def load_clean(exp: Experiment, settings: Settings, lake: Lake | None = None
               ) -> tuple[Ingested, pd.DataFrame, dict[str, Any], CleanData]:
    """Ingest (idempotent), read the raw object back from the lake, validate, clean, curate."""
    lake = lake or open_lake(settings)
    pinned = exp.source.sha256 or None
    ingested = ingest(exp.source.uri, lake, settings, exp.name, pinned)
    with tempfile.TemporaryDirectory(prefix="trilho-raw-") as tmp:
        local = lake.download(ingested.key, Path(tmp) / ingested.manifest["file_name"])
        digest, _ = sha256_file(local)  # the round trip: what comes back is what went in
        if digest != ingested.manifest["sha256"]:
            raise StorageError(f"raw object {lake.url(ingested.key)} has sha256 {digest}, but its manifest says "
                               f"{ingested.manifest['sha256']}: the object was changed in the store; "
                               "delete that raw/ folder and ingest again")
        raw = read_table(local)
    report = validate(raw, exp)
    raise_for_errors(report)
    data = clean(raw, exp)
    curated_key = f"curated/{exp.name}/{ingested.manifest['sha256']}/data.parquet"
    if not lake.exists(curated_key):
        buffer = io.BytesIO()
        data.curated().to_parquet(buffer, index=False)
        lake.put_bytes(curated_key, buffer.getvalue())
    report["curated_key"] = curated_key
    return ingested, raw, report, data


def _summary_metrics(cv: evaluate.CVResult, exp: Experiment) -> dict[str, dict[str, Any]]:
    scores = {m: cv.scores(m) for m in exp.evaluation.metrics}
    return stats.summarise(scores, exp.evaluation.interval_low, exp.evaluation.interval_high)


def _metric_rows(cv: evaluate.CVResult, summary: dict, holdout: evaluate.HoldoutResult,
                 metrics: list[str]) -> list[tuple[str, float, int]]:
    rows = [(f"{m}_fold", v, step) for m in metrics for step, v in enumerate(cv.scores(m))]
    for m, s in summary.items():
        rows += [(f"{m}_mean", s["mean"], 0), (f"{m}_std", s["std"], 0),
                 (f"{m}_pct_low", s["low"], 0), (f"{m}_pct_high", s["high"], 0)]
    rows += [(f"holdout_{m}", holdout.scores[m], 0) for m in metrics]
    return rows


def _write_artifacts(folder: Path, exp: Experiment, result: dict, cv: evaluate.CVResult,
                     holdout: evaluate.HoldoutResult, validation: dict, manifest: dict) -> None:
    classes = exp.data.classes
    cv.folds.to_csv(folder / "results.csv", index=False)
    (folder / "results.json").write_text(json.dumps(
        {"summary": result["cv"]["metrics"], "folds": cv.folds.to_dict(orient="records")}, indent=2))
    (folder / "classification_report.txt").write_text(holdout.report_text)
    (folder / "classification_report.json").write_text(json.dumps(holdout.report, indent=2))
    (folder / "validation_report.json").write_text(json.dumps(validation, indent=2))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "config.json").write_text(json.dumps(exp.resolved(), indent=2))
    figures = {
        "cv_boxplot.png": plots.fold_boxplot(cv.folds, exp.evaluation.metrics),
        "confusion_matrix.png": plots.confusion_matrix_figure(holdout.confusion, classes, "Holdout confusion matrix"),
        "confusion_matrix_oof.png": plots.confusion_matrix_figure(cv.confusion, classes, "Out-of-fold confusion (all folds)"),
    }
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=110)


def _log_nested(tracker: Tracker, cv: evaluate.CVResult, exp: Experiment) -> None:
    """The reference layout: one child run per repeat, its fold scores as steps."""
    for seed, group in cv.folds.groupby("seed", sort=False):
        with tracker.run(f"seed_{seed}", {"seed": str(seed), "trilho.kind": "repeat"}, nested=True) as child:
            rows = [(m, v, int(f)) for m in exp.evaluation.metrics for f, v in zip(group["fold"], group[m])]
            rows += [(f"{m}_mean_seed", float(group[m].mean()), 0) for m in exp.evaluation.metrics]
            tracker.log_values(child, metrics=rows)


def run_experiment(exp: Experiment, settings: Settings, *, lake: Lake | None = None,
                   progress: Progress | None = None) -> ExperimentResult:
    """Run the whole experiment; returns the summary that ``--summary-json`` writes."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    lake = lake or open_lake(settings)
    ingested, raw, validation, data = load_clean(exp, settings, lake)
    timings["data_s"] = time.perf_counter() - clock
    cores = settings.free_cores()
    tracker = Tracker(settings.tracking_uri, exp.tracking.experiment,  # fails before any training
                      pending_file=settings.cache_dir / "unfinished_runs.json", wait_s=settings.mlflow_wait_s)
    tracker.close_stale_runs()
    manifest = ingested.manifest
    estimator = dict(model=exp.model.model_dump(), resampler=exp.resampler.model_dump(), random_state=exp.random_state)
    tags = {"trilho.experiment": exp.name, "trilho.data_sha256": manifest["sha256"], "trilho.kind": "experiment"}
    with tracker.run(f"{exp.name}-cv", tags) as run_id:
        tracker.log_values(run_id, params=flatten(exp.resolved()) | {
            "data.rows": str(len(data.y)), "data.features": json.dumps(list(data.X.columns))})
        tracker.log_dataset(raw, lake.url(ingested.key), exp.name, exp.data.target)

        step = time.perf_counter()
        cv, held, final = evaluate.evaluate_all(
            data.X, data.y, **estimator, n_splits=exp.cv.n_splits, seeds=exp.cv.seeds, n_jobs=cores,
            progress=(lambda done, total: progress("cv", done, total)) if progress else None,
            holdout_fraction=exp.evaluation.holdout_fraction, classes=exp.data.classes,
            final_fit=exp.tracking.final_fit == "all")
        if final is None:  # tracking.final_fit = "holdout": the reference logged its 70% fit
            final = held.pipeline
        timings["cv_s"] = time.perf_counter() - step  # folds + holdout fit + final fit, one pool

        metrics = _summary_metrics(cv, exp)
        reports_prefix = f"reports/{run_id}/"
        summary: dict[str, Any] = {
            "experiment": exp.name, "run_id": run_id, "tracking_uri": settings.tracking_uri,
            "mlflow_experiment": exp.tracking.experiment, "mlflow_experiment_id": tracker.experiment_id,
            "data": {"source": manifest["source"], "sha256": manifest["sha256"], "rows": len(data.y),
                     "features": list(data.X.columns), "ingest_skipped": ingested.skipped,
                     "warnings": validation["warnings"]},
            "cv": {"n_splits": exp.cv.n_splits, "seeds": exp.cv.seeds, "n_folds": len(cv.folds),
                   "workers": cv.workers, "metrics": metrics},
            "holdout": {"labels": exp.data.classes, "label_codes": list(range(len(exp.data.classes))),
                        "confusion_matrix": held.confusion.tolist(), "report": held.report, "scores": held.scores},
            "lake": {"uri": lake.uri, "raw": ingested.key, "manifest": ingested.manifest_key,
                     "curated": validation["curated_key"], "reports": reports_prefix},
        }
        with tempfile.TemporaryDirectory(prefix="trilho-report-") as tmp:
            folder, model_dir = Path(tmp) / "report", Path(tmp) / "model"
            folder.mkdir()
            _write_artifacts(folder, exp, summary, cv, held, validation, manifest)
            if exp.tracking.log_model:
                save_model_files(final, data.spec, model_dir)
                _copy_to_lake(lake, model_dir, reports_prefix + "model/")
            # the results reach the lake before MLflow sees them: a tracking failure loses nothing
            _copy_to_lake(lake, folder, reports_prefix)
            try:
                if exp.tracking.log_model:  # before the metrics: MLflow copies existing run metrics to the model
                    example = raw.drop(columns=[exp.data.target, *exp.data.drop]).head(5)
                    summary["model_uri"] = tracker.log_model(model_dir, example)
                if exp.tracking.layout == "nested":
                    _log_nested(tracker, cv, exp)
                tracker.log_values(run_id, metrics=_metric_rows(cv, metrics, held, exp.evaluation.metrics))
                tracker.log_folder(run_id, folder)
                if exp.registry.model_name:
                    with tracker.timed("register and gate the model"):
                        summary["registry"] = _register(exp, settings, summary, cv, data, run_id, cores)
                    lake.put_bytes(reports_prefix + "promotion.json",
                                   json.dumps(summary["registry"], indent=2).encode(), overwrite=True)
                    tracker.client.set_tag(run_id, "trilho.registry", f"{exp.registry.model_name} "
                                           f"v{summary['registry']['version']}: {summary['registry']['reason']}")
            except TrackingError as exc:
                summary["tracking_error"] = str(exc)
                lake.put_bytes(reports_prefix + "summary.json", json.dumps(summary, indent=2).encode(), overwrite=True)
                raise TrackingError(f"{exc}; nothing is lost: the results and the model are in "
                                    f"{lake.uri}/{reports_prefix}") from exc
            timings["tracking_s"] = tracker.seconds
            timings["mlflow_import_s"] = tracker.import_seconds
            timings.update({f"tracking.{k}_s": v for k, v in tracker.breakdown.items()})
            timings["total_s"] = time.perf_counter() - clock
            summary["timings"] = timings
            lake.put_bytes(reports_prefix + "summary.json", json.dumps(summary, indent=2).encode(), overwrite=True)
    return ExperimentResult(summary=summary, cv=cv, holdout=held, validation=validation, timings=timings)


def cv_key(exp: Experiment, data_sha256: str) -> dict[str, str]:
    """What fixes the folds: the data's digest and the CV params, as the run's params record them."""
    params = flatten(exp.resolved())
    return {"data_sha256": data_sha256, **{k: params[k] for k in ("cv.n_splits", "cv.n_repeats", "cv.first_seed",
                                                                    "data.nonfinite")}}


def _register(exp: Experiment, settings: Settings, summary: dict, cv: evaluate.CVResult, data: CleanData,
              run_id: str, cores: int) -> dict[str, Any]:
    from trilho import registry

    metric = exp.registry.primary_metric

    def reevaluate(config: dict[str, Any]):
        champion = Experiment.model_validate(config)
        return evaluate.cross_validate(
            data.X, data.y, model=champion.model.model_dump(), resampler=champion.resampler.model_dump(),
            random_state=champion.random_state, n_splits=exp.cv.n_splits, seeds=exp.cv.seeds, n_jobs=cores,
        ).scores(metric)

    return registry.register_and_gate(
        tracking_uri=settings.tracking_uri, name=exp.registry.model_name, model_uri=summary["model_uri"],
        run_id=run_id, fold_scores=cv.scores(metric), cv_key=cv_key(exp, summary["data"]["sha256"]), metric=metric,
        margin=exp.registry.margin, test_fraction=1.0 / exp.cv.n_splits, level=exp.registry.level,
        reevaluate=reevaluate)


def _copy_to_lake(lake: Lake, folder: Path, prefix: str) -> None:
    for path in sorted(folder.iterdir()):
        lake.put_file(prefix + path.name, path, overwrite=True)
