"""The only place where stages meet: ingest -> validate -> clean -> evaluate -> track -> lake."""

from __future__ import annotations

import hashlib
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

from trilho import evaluate, parallel, plots, stats
from trilho.clean import CleanData, clean
from trilho.cluster import open_executor
from trilho.experiment import Experiment
from trilho.ingest import Ingested, ingest, read_table
from trilho.settings import Settings
from trilho.errors import ConfigError, StorageError, TrackingError
from trilho.storage import Lake, open_lake, sha256_file
from trilho.tracking import Tracker, flatten, save_model_files
from trilho.validate import raise_for_errors, validate

__all__ = ["ExperimentResult", "fold_data", "load_clean", "open_tracker", "run_experiment"]

log = logging.getLogger(__name__)
CURATED_ROW_GROUP = 100_000
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
        if digest != ingested.manifest["sha256"]:  # changed in the store: the source writes it again
            log.warning("raw object %s has sha256 %s, its manifest says %s: repairing it from %s",
                        lake.url(ingested.key), digest, ingested.manifest["sha256"], exp.source.uri)
            lake.delete(ingested.manifest_key)
            lake.delete(ingested.key)
            ingested = ingest(exp.source.uri, lake, settings, exp.name, pinned)
            local = lake.download(ingested.key, local)
            digest, _ = sha256_file(local)
            if digest != ingested.manifest["sha256"]:
                raise StorageError(f"raw object {lake.url(ingested.key)} has sha256 {digest} right after it was "
                                   f"written with {ingested.manifest['sha256']}: the store changes what it holds")
        raw = read_table(local)
    report = validate(raw, exp)
    raise_for_errors(report)
    data = clean(raw, exp)
    curated_key = f"curated/{exp.name}/{ingested.manifest['sha256']}/data.parquet"
    if read_curated(lake, curated_key) is None:  # absent, or not what its digest says: rebuilt
        buffer = io.BytesIO()
        # row groups of CURATED_ROW_GROUP rows: the partitions a distributed final fit reads, one per task
        data.curated().to_parquet(buffer, index=False, row_group_size=CURATED_ROW_GROUP)
        lake.put_bytes(curated_key, buffer.getvalue(), overwrite=True)
        lake.put_bytes(curated_key + ".sha256", hashlib.sha256(buffer.getvalue()).hexdigest().encode(), overwrite=True)
    report["curated_key"] = curated_key
    return ingested, raw, report, data


def read_curated(lake: Lake, key: str) -> str | None:
    """The digest of a curated object when the lake holds it intact (its bytes hash to the digest
    recorded beside it), else None: a derived object that cannot be trusted is rebuilt, never used."""
    if not lake.exists(key + ".sha256"):
        return None
    recorded = lake.get_bytes(key + ".sha256").decode().strip()
    held = lake.digest(key)
    if held is None or held[0] != recorded:
        log.warning("curated %s does not match its digest: it is rebuilt", lake.url(key))
        return None
    return recorded


def nested_repeats(exp: Experiment) -> int:
    """How many CV repeats also get nested-CV fits: none unless the nested_cv interval is asked for."""
    ev = exp.evaluation
    return min(ev.nested_repeats, exp.cv.n_repeats) if "nested_cv" in (*ev.intervals, ev.interval) else 0


def nested_bounds(cv: evaluate.CVResult, n_splits: int, level: float = 0.95,
                  seeds: list[int] | None = None) -> dict[str, tuple[float, float]]:
    """The nested-CV interval of the row-decomposable metrics (accuracy from the 0/1 error, log
    loss), from the nested fits of ``seeds`` (default: every seed that has them)."""
    if cv.nested is None or cv.oof is None:
        return {}
    nested = cv.nested if seeds is None else cv.nested[cv.nested["seed"].isin(seeds)]
    oof = cv.oof[cv.oof["seed"].isin(nested["seed"].unique())]
    outer_key = oof["seed"].to_numpy() * n_splits + oof["fold"].to_numpy()
    inner_key = nested["seed"].to_numpy() * n_splits + nested["outer"].to_numpy()
    proba = oof[[c for c in oof.columns if c.startswith("proba_")]].to_numpy()
    outer = {"accuracy": (oof["pred"] != oof["y"]).to_numpy(dtype="float64"),
             "log_loss": evaluate.row_log_loss(proba, oof["y"].to_numpy())}
    inner = {"accuracy": nested["error"].to_numpy(), "log_loss": nested["logloss"].to_numpy()}
    out = {}
    for metric in outer:
        found = stats.nested_cv_interval(outer[metric], outer_key, inner[metric], inner_key, n_splits,
                                         n_rows=int(oof["row"].nunique()), level=level)
        out[metric] = (1 - found["high"], 1 - found["low"]) if metric == "accuracy" else (found["low"], found["high"])
    return out


def _summary_metrics(cv: evaluate.CVResult, exp: Experiment) -> dict[str, dict[str, Any]]:
    """Mean, std and the percentile spread (the reference's figures), and every interval method."""
    ev = exp.evaluation
    scores = {m: cv.scores(m) for m in ev.metrics}
    out = stats.summarise(scores, ev.interval_low, ev.interval_high)
    rows: dict[str, tuple[float, float]] = {}
    if "row_bootstrap" in ev.intervals and cv.oof is not None:
        seeds = cv.oof["seed"].unique()
        first = cv.oof[cv.oof["seed"] == seeds[0]]
        pred = cv.oof["pred"].to_numpy().reshape(len(seeds), len(first))
        decomposable = [m for m in ev.metrics if m in evaluate.CONFUSION_METRICS]
        rows = stats.row_bootstrap_intervals(first["y"].to_numpy(), pred, len(exp.data.classes),
                                             evaluate.scores_from_confusions, decomposable, ev.level)
    methods = list(dict.fromkeys([*ev.intervals, ev.interval]))  # the headline is always reported
    nested = nested_bounds(cv, exp.cv.n_splits, ev.level) if "nested_cv" in methods else {}
    for metric, entry in out.items():
        found = stats.intervals(scores[metric], methods, test_fraction=1.0 / exp.cv.n_splits, level=ev.level,
                                low=ev.interval_low, high=ev.interval_high, row_offsets=rows.get(metric),
                                nested=nested.get(metric))
        lo, hi = evaluate.METRIC_RANGE[metric]  # a t interval can reach past 1; the metric cannot
        entry["intervals"] = {k: (max(b[0], lo), min(b[1], hi)) if b else None for k, b in found.items()}
        entry["ci_method"] = ev.interval
        entry["ci"] = entry["intervals"][ev.interval]
    return out


def fold_data(data: CleanData, exp: Experiment) -> tuple[pd.DataFrame, Any, Any, dict[str, Any]]:
    """The rows and groups the folds see under the duplicate policy, and what the policy did."""
    groups = evaluate.duplicate_groups(data.X)
    distinct = len(set(groups))
    info = {"policy": exp.cv.duplicates, "rows": int(len(data.y)), "distinct_feature_rows": distinct,
            "rows_copying_another": int(len(groups) - distinct)}
    if exp.cv.duplicates == "drop":
        first = ~pd.Series(groups).duplicated().to_numpy()
        info["rows_used"] = int(first.sum())
        return data.X.loc[first].reset_index(drop=True), data.y[first], None, info
    info["rows_used"] = int(len(data.y))
    return data.X, data.y, (groups if exp.cv.duplicates == "group" else None), info


def _metric_rows(cv: evaluate.CVResult, summary: dict, holdout: evaluate.HoldoutResult,
                 metrics: list[str]) -> list[tuple[str, float, int]]:
    rows = [(f"{m}_fold", v, step) for m in metrics for step, v in enumerate(cv.scores(m))]
    for m, s in summary.items():
        rows += [(f"{m}_mean", s["mean"], 0), (f"{m}_std", s["std"], 0),
                 (f"{m}_pct_low", s["low"], 0), (f"{m}_pct_high", s["high"], 0)]
        if s.get("ci"):
            rows += [(f"{m}_ci_low", s["ci"][0], 0), (f"{m}_ci_high", s["ci"][1], 0)]
        for method, bounds in s.get("intervals", {}).items():
            if bounds and method != "percentile":
                rows += [(f"{m}_{method}_low", bounds[0], 0), (f"{m}_{method}_high", bounds[1], 0)]
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
    summary = result["cv"]["metrics"]
    table = [{"metric": m, "method": method, "low": b[0] if b else None, "high": b[1] if b else None,
              "mean": s["mean"], "headline": method == s["ci_method"]}
             for m, s in summary.items() for method, b in s["intervals"].items()]
    pd.DataFrame(table).to_csv(folder / "intervals.csv", index=False)
    if cv.oof is not None:
        from sklearn.metrics import classification_report

        kwargs = dict(labels=list(range(len(classes))), target_names=classes, zero_division=0)
        (folder / "oof_classification_report.txt").write_text(
            "Out of fold, every repeat pooled\n\n" + classification_report(cv.oof["y"], cv.oof["pred"], **kwargs))
        (folder / "oof_classification_report.json").write_text(json.dumps(
            classification_report(cv.oof["y"], cv.oof["pred"], output_dict=True, **kwargs), indent=2))


# the figures, in two groups of about equal drawing time: one forked child draws each
FIGURE_GROUPS = (("cv_boxplot.png", "confusion_matrix_oof.png"),
                 ("roc_pr_curves.png", "intervals.png", "confusion_matrix.png"))


def _draw_figures(folder: Path, exp: Experiment, summary: dict, cv: evaluate.CVResult,
                  holdout: evaluate.HoldoutResult, only: tuple[str, ...] | None = None) -> None:
    classes = exp.data.classes
    focus = exp.registry.primary_metric if exp.registry.primary_metric in summary else next(iter(summary))
    figures = {
        "cv_boxplot.png": lambda: plots.fold_boxplot(cv.folds, exp.evaluation.metrics),
        "intervals.png": lambda: plots.intervals_figure(summary, focus),
        "confusion_matrix.png": lambda: plots.confusion_matrix_figure(holdout.confusion, classes,
                                                                      "Holdout confusion matrix"),
        "confusion_matrix_oof.png": lambda: plots.confusion_matrix_figure(cv.confusion, classes,
                                                                          "Out-of-fold confusion (all folds)"),
    }
    if cv.oof is not None:
        figures["roc_pr_curves.png"] = lambda: plots.curves_figure(cv.oof, classes)
    for name, draw in figures.items():
        if only is None or name in only:
            draw().savefig(folder / name, dpi=110)


def _log_nested(tracker: Tracker, cv: evaluate.CVResult, exp: Experiment) -> None:
    """The reference layout: one child run per repeat, its fold scores as steps."""
    for seed, group in cv.folds.groupby("seed", sort=False):
        with tracker.run(f"seed_{seed}", {"seed": str(seed), "trilho.kind": "repeat"}, nested=True) as child:
            rows = [(m, v, int(f)) for m in exp.evaluation.metrics for f, v in zip(group["fold"], group[m], strict=True)]
            rows += [(f"{m}_mean_seed", float(group[m].mean()), 0) for m in exp.evaluation.metrics]
            tracker.log_values(child, metrics=rows)


def open_tracker(settings: Settings, experiment: str) -> Tracker:
    """The tracking store named by settings (checked, bounded wait), its stale runs closed."""
    tracker = Tracker(settings.tracking_uri, experiment, pending_file=settings.cache_dir / "unfinished_runs.json",
                      wait_s=settings.mlflow_wait_s)
    tracker.close_stale_runs()
    return tracker


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
        return _run_experiment(exp, settings, lake, progress, executor, clock)


def _run_experiment(exp: Experiment, settings: Settings, lake: Lake, progress: Progress | None,
                    executor: Any, clock: float) -> ExperimentResult:
    timings: dict[str, float] = {}
    ingested, raw, validation, data = load_clean(exp, settings, lake)
    timings["data_s"] = time.perf_counter() - clock
    cores = settings.free_cores()
    tracker = open_tracker(settings, exp.tracking.experiment)  # fails before any training
    manifest = ingested.manifest
    estimator = dict(model=exp.model.model_dump(), resampler=exp.resampler.model_dump(), random_state=exp.random_state,
                     encoding=data.spec)
    tags = {"trilho.experiment": exp.name, "trilho.data_sha256": manifest["sha256"], "trilho.kind": "experiment"}
    with tracker.run(f"{exp.name}-cv", tags) as run_id, tempfile.TemporaryDirectory(prefix="trilho-report-") as tmp:
        reports_prefix = f"reports/{run_id}/"
        folder, model_dir, figures = Path(tmp) / "report", Path(tmp) / "model", Path(tmp) / "figures"
        folder.mkdir(), figures.mkdir()
        model_fit = "final" if exp.tracking.final_fit == "all" else "holdout"  # the reference logged its 70% fit
        example = raw.drop(columns=[exp.data.target, *exp.data.drop]).head(5)
        early: dict[str, Any] = {}  # what MLflow was given while the fits ran, or the error it raised

        def while_fitting() -> None:  # MLflow calls wait on the server, not on a core
            try:
                tracker.log_values(run_id, params=flatten(exp.resolved()) | {
                    "data.rows": str(len(data.y)), "data.features": json.dumps(list(data.X.columns))})
                tracker.log_dataset(run_id, raw, lake.url(ingested.key), exp.name, exp.data.target, manifest["sha256"])
            except TrackingError as exc:
                early.setdefault("error", exc)

        def fitted(kind: str, pipe) -> None:
            if kind != model_fit or not exp.tracking.log_model:
                return
            save_model_files(pipe, data.spec, model_dir)
            _copy_to_lake(lake, model_dir, reports_prefix + "model/")  # the lake has it before MLflow
            if "error" not in early:
                try:  # before the metrics: MLflow copies existing run metrics to the model
                    early["model_uri"] = tracker.log_model(model_dir, example)
                except TrackingError as exc:
                    early["error"] = exc

        step = time.perf_counter()
        tracked = tracker.seconds
        X, y, groups, duplicates = fold_data(data, exp)
        cv, held, _ = evaluate.evaluate_all(  # the model to log reaches `fitted` as soon as it is fit
            X, y, **estimator, n_splits=exp.cv.n_splits, seeds=exp.cv.seeds, n_jobs=cores, groups=groups,
            progress=(lambda done, total: progress("cv", done, total)) if progress else None,
            holdout_fraction=exp.evaluation.holdout_fraction, classes=exp.data.classes,
            final_fit=exp.tracking.final_fit == "all" and not exp.model.distributed,
            nested_repeats=nested_repeats(exp), meanwhile=while_fitting, on_fit=fitted, executor=executor)
        distributed = None
        if exp.model.distributed:  # the workers read the curated Parquet from the lake themselves
            started = time.perf_counter()
            pipe, distributed = executor.fit_distributed(lake.arrow(validation["curated_key"]), data.spec,
                                                         exp.model.model_dump(), exp.resampler.model_dump(),
                                                         exp.random_state)
            distributed["fit_s"] = time.perf_counter() - started
            fitted("final", pipe)
        timings["cv_s"] = time.perf_counter() - step  # folds + holdout fit + final fit, one pool
        timings["tracking_during_cv_s"] = tracker.seconds - tracked  # overlapped with the fits

        step = time.perf_counter()
        metrics = _summary_metrics(cv, exp)
        timings["stats_s"] = time.perf_counter() - step
        summary: dict[str, Any] = {
            "experiment": exp.name, "run_id": run_id, "tracking_uri": settings.tracking_uri,
            "mlflow_experiment": exp.tracking.experiment, "mlflow_experiment_id": tracker.experiment_id,
            "data": {"source": manifest["source"], "sha256": manifest["sha256"], "rows": len(data.y),
                     "features": list(data.X.columns), "ingest_skipped": ingested.skipped,
                     "warnings": validation["warnings"]},
            "cv": {"n_splits": exp.cv.n_splits, "seeds": exp.cv.seeds, "n_folds": len(cv.folds),
                   "duplicates": duplicates, "interval": exp.evaluation.interval, "level": exp.evaluation.level,
                   "workers": cv.workers, "pool": cv.pool, "metrics": metrics,
                   "fit_s": {"mean": float(cv.folds["fit_s"].mean()), "max": float(cv.folds["fit_s"].max())}},
            "holdout": {"labels": exp.data.classes, "label_codes": list(range(len(exp.data.classes))),
                        "confusion_matrix": held.confusion.tolist(), "report": held.report, "scores": held.scores},
            "lake": {"uri": lake.uri, "raw": ingested.key, "manifest": ingested.manifest_key,
                     "curated": validation["curated_key"], "reports": reports_prefix},
        }
        if distributed is not None:
            summary["final_fit"] = {**distributed, "where": "xgboost.dask"}
        step = time.perf_counter()
        _write_artifacts(folder, exp, summary, cv, held, validation, manifest)
        # the figures are drawn in forked children (when that is safe) while this process talks to MLflow
        drawing = [parallel.start(lambda group=group: _draw_figures(figures, exp, metrics, cv, held, group))
                   for group in FIGURE_GROUPS]
        timings["artifacts_s"] = time.perf_counter() - step
        step = time.perf_counter()
        # the results reach the lake before MLflow sees them: a tracking failure loses nothing
        _copy_to_lake(lake, folder, reports_prefix)
        timings["lake_copy_s"] = time.perf_counter() - step

        def figures_to_lake() -> None:
            step = time.perf_counter()
            for child in drawing:
                child.wait()
            timings["figures_wait_s"] = time.perf_counter() - step
            for path in sorted(figures.glob("*.png")):
                lake.put_file(reports_prefix + path.name, path.rename(folder / path.name), overwrite=True)

        try:
            if "error" in early:
                raise early["error"]
            if "model_uri" in early:
                summary["model_uri"] = early["model_uri"]
            if exp.tracking.layout == "nested":
                _log_nested(tracker, cv, exp)
            tracker.log_values(run_id, metrics=_metric_rows(cv, metrics, held, exp.evaluation.metrics))
            if exp.registry.model_name and exp.tracking.log_model:  # needs no figure: while they are drawn
                with tracker.timed("register and gate the model"):
                    reg = summary["registry"] = _register(exp, settings, summary, cv, (X, y, groups, data.spec),
                                                          run_id, (cores, executor), lake, data.curated())
                    tracker.client.set_tag(run_id, "trilho.registry",
                                           f"{reg['name']} v{reg['version']}: {reg['reason']}")
                lake.put_bytes(reports_prefix + "promotion.json", json.dumps(reg, indent=2).encode(), overwrite=True)
            figures_to_lake()
            tracker.log_folder(run_id, folder)
        except TrackingError as exc:
            if "figures_wait_s" not in timings:
                figures_to_lake()
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
                                                                    "cv.duplicates", "data.missing")}}


def _register(exp: Experiment, settings: Settings, summary: dict, cv: evaluate.CVResult,
              folds_data: tuple[pd.DataFrame, Any, Any, dict], run_id: str, run_on: tuple[int, Any],
              lake: Lake, curated: pd.DataFrame) -> dict[str, Any]:
    from trilho import drift, registry

    metric = exp.registry.primary_metric

    X, y, groups, spec = folds_data
    cores, executor = run_on

    def reevaluate(config: dict[str, Any]):  # the champion's procedure on exactly the challenger's folds
        champion = Experiment.model_validate(config)
        return evaluate.cross_validate(
            X, y, model=champion.model.model_dump(), resampler=champion.resampler.model_dump(),
            random_state=champion.random_state, n_splits=exp.cv.n_splits, seeds=exp.cv.seeds, n_jobs=cores,
            groups=groups, encoding={**spec, "missing": champion.data.missing}, executor=executor).scores(metric)

    def drift_report(champion_run) -> dict[str, Any] | None:  # the champion's curated data, from this lake
        import mlflow

        tags = champion_run.data.tags
        key = f"curated/{tags.get('trilho.experiment', '')}/{tags.get('trilho.data_sha256', '')}/data.parquet"
        if read_curated(lake, key) is None:
            log.warning("champion's data %s is not in lake %s (or not intact): drift not measured", key, lake.uri)
            return None
        config = json.loads(mlflow.artifacts.load_text(f"runs:/{champion_run.info.run_id}/config.json"))
        old = pd.read_parquet(io.BytesIO(lake.get_bytes(key)))
        return drift.compare_data(old, curated, Experiment.model_validate(config).data.classes, exp.data.classes)

    return registry.register_and_gate(
        tracking_uri=settings.tracking_uri, name=exp.registry.model_name, model_uri=summary["model_uri"],
        run_id=run_id, fold_scores=cv.scores(metric), cv_key=cv_key(exp, summary["data"]["sha256"]), metric=metric,
        margin=exp.registry.margin, test_fraction=1.0 / exp.cv.n_splits, level=exp.registry.level,
        reevaluate=reevaluate, drift_report=drift_report)


def _copy_to_lake(lake: Lake, folder: Path, prefix: str) -> None:
    for path in sorted(folder.iterdir()):
        lake.put_file(prefix + path.name, path, overwrite=True)
