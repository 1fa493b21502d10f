"""The run's report folder: result files and figures written locally, then copied to the lake's
``reports/<run>/`` before MLflow sees them, so that a tracking failure loses nothing."""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from trilho.evaluation.results import CVResult, HoldoutResult
from trilho.execution import background as parallel
from trilho.experiment import Experiment
from trilho.reporting import html as pages
from trilho.reporting import plots
from trilho.schemas import RawManifest, RunSummary, ValidationReport
from trilho.storage import Lake

log = logging.getLogger(__name__)

__all__ = ["EARLY_FIGURES", "LATE_FIGURES", "collect_figures", "copy_to_lake", "page_from_lake", "publish_compare",
           "publish_tune", "start_figures", "write_artifacts", "write_page"]

# the figures drawn from the folds and the holdout alone, started as soon as the fits end; the
# others wait for the run's summary (its intervals, explanations, groups and periods)
EARLY_FIGURES = ("cv_boxplot.png", "confusion_matrix_oof.png", "confusion_matrix.png", "roc_pr_curves.png",
                 "reliability.png", "predicted_actual.png")
LATE_FIGURES = ("intervals.png", "importance.png", "groups.png", "residuals.png", "coverage.png", "periods.png")


def write_artifacts(folder: Path, exp: Experiment, summary: RunSummary, fitted: tuple[CVResult, HoldoutResult],
                    validation: ValidationReport, manifest: RawManifest, group_table: pd.DataFrame | None = None) -> None:
    """Every result file of the run (not the figures) into ``folder``; ``group_table``: the
    per-fold scores by group (trilho.evaluation.groups)."""
    cv, holdout = fitted
    metrics = summary["cv"]["metrics"]
    cv.folds.to_csv(folder / "results.csv", index=False)
    (folder / "results.json").write_text(json.dumps(
        {"summary": metrics, "folds": cv.folds.to_dict(orient="records")}, indent=2))
    if exp.regression:  # the holdout's scores and every interval the run measured
        (folder / "regression_report.json").write_text(json.dumps(
            {"holdout": summary["holdout"], "prediction_interval": summary.get("prediction_interval")}, indent=2))
    else:
        (folder / "classification_report.txt").write_text(holdout.report_text)
        (folder / "classification_report.json").write_text(json.dumps(holdout.report, indent=2))
    (folder / "validation_report.json").write_text(json.dumps(validation, indent=2))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "config.json").write_text(json.dumps(exp.resolved(), indent=2))
    table = [{"metric": m, "method": method, "low": b[0] if b else None, "high": b[1] if b else None,
              "mean": s["mean"], "headline": method == s["ci_method"]}
             for m, s in metrics.items() for method, b in s["intervals"].items()]
    pd.DataFrame(table).to_csv(folder / "intervals.csv", index=False)
    if cv.oof is not None and exp.regression:
        cv.oof.to_csv(folder / "oof_predictions.csv", index=False)
    elif cv.oof is not None:
        _oof_reports(folder, cv, exp.data.classes)
        plots.reliability_table(cv.oof, len(exp.data.classes)).to_csv(folder / "reliability.csv", index=False)
    if "importance" in summary:
        found = summary["importance"]
        pd.DataFrame([{"feature": name, **entry, "method": found["method"]} for name, entry in found["features"].items()]
                     ).to_csv(folder / "importance.csv", index=False)
    if group_table is not None and len(group_table):
        group_table.to_csv(folder / "groups.csv", index=False)


def _oof_reports(folder: Path, cv: CVResult, classes: list[str]) -> None:
    from sklearn.metrics import classification_report

    assert cv.oof is not None
    kwargs: dict[str, Any] = dict(labels=list(range(len(classes))), target_names=classes, zero_division=0)
    (folder / "oof_classification_report.txt").write_text(
        "Out of fold, every repeat pooled\n\n" + classification_report(cv.oof["y"], cv.oof["pred"], **kwargs))
    (folder / "oof_classification_report.json").write_text(json.dumps(
        classification_report(cv.oof["y"], cv.oof["pred"], output_dict=True, **kwargs), indent=2))


def _draw_figures(folder: Path, exp: Experiment, run: RunSummary | None, cv: CVResult, holdout: HoldoutResult,
                  only: tuple[str, ...]) -> None:
    """The figures named in ``only`` into ``folder``; without the run's summary (``run``), those
    that need none (EARLY_FIGURES)."""
    classes = exp.data.classes
    given: Mapping[str, Any] = run or {}
    summary = given.get("cv", {}).get("metrics", {})
    focus = exp.registry.primary_metric if exp.registry.primary_metric in summary else next(iter(summary), "")
    figures: dict[str, Any] = {
        "cv_boxplot.png": lambda: plots.fold_boxplot(cv.folds, exp.evaluation.metrics),
    }
    if exp.cv.scheme != "time":  # forward folds claim no interval: nothing to set side by side
        figures["intervals.png"] = lambda: plots.intervals_figure(summary, focus)
    held_confusion, oof_confusion, oof = holdout.confusion, cv.confusion, cv.oof
    if held_confusion is not None and oof_confusion is not None:
        figures["confusion_matrix.png"] = lambda: plots.confusion_matrix_figure(held_confusion, classes,
                                                                                "Holdout confusion matrix")
        figures["confusion_matrix_oof.png"] = lambda: plots.confusion_matrix_figure(
            oof_confusion, classes, "Out-of-fold confusion (all folds)")
    if oof is not None and exp.regression:
        found = given.get("prediction_interval")
        figures["predicted_actual.png"] = lambda: plots.predicted_actual_figure(oof, exp.data.target)
        figures["residuals.png"] = lambda: plots.residuals_figure(oof, found["half_width"] if found else None)
        if found and found.get("by_decile"):
            figures["coverage.png"] = lambda: plots.coverage_figure(found)
    elif oof is not None:
        figures["roc_pr_curves.png"] = lambda: plots.curves_figure(oof, classes)
        figures["reliability.png"] = lambda: plots.reliability_figure(plots.reliability_table(oof, len(classes)),
                                                                      classes)
    if given.get("time"):
        figures["periods.png"] = lambda: plots.periods_figure(given["time"])
    if given.get("importance"):
        figures["importance.png"] = lambda: plots.importance_figure(given["importance"])
    if given.get("groups"):
        figures["groups.png"] = lambda: plots.groups_figure(given["groups"], focus)
    for name, draw in figures.items():
        if name in only:
            draw().savefig(folder / name, dpi=110)


def start_figures(folder: Path, exp: Experiment, summary: RunSummary | None, cv: CVResult,
                  holdout: HoldoutResult) -> list[parallel.Background]:
    """The figures, drawn into ``folder`` in a forked child (when that is safe) while this process
    goes on; wait on it before reading them. Without the run's ``summary``, the EARLY_FIGURES
    (the folds and the holdout are enough), with it the LATE_FIGURES."""
    return [parallel.start(functools.partial(_draw_figures, folder, exp, summary, cv, holdout,
                                             LATE_FIGURES if summary is not None else EARLY_FIGURES))]


def collect_figures(drawing: list[parallel.Background], figures: Path, folder: Path, lake: Lake, prefix: str) -> float:
    """Wait for the figures being drawn into ``figures``, then move them into the report ``folder``
    and the lake; returns the seconds spent waiting."""
    step = time.perf_counter()
    pages.prepare("run.html")  # the page's template compiles while the children draw
    for child in drawing:
        child.wait()
    waited = time.perf_counter() - step
    for path in sorted(figures.glob("*.png")):
        lake.put_file(prefix + path.name, path.rename(folder / path.name), overwrite=True)
    return waited


def _pngs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.png"))}


def write_page(folder: Path, summary: RunSummary) -> Path:
    """The run's HTML page (``report.html``) from the files of its report ``folder``."""
    validation = json.loads((folder / "validation_report.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    page = folder / "report.html"
    page.write_text(pages.render_run(dict(summary), validation, config, _pngs(folder)), encoding="utf-8")
    return page


def page_from_lake(lake: Lake, run_id: str, out: Path) -> str:
    """A run's page rendered again from what the lake holds of it (its summary, reports and
    figures), written back to the lake and to ``out``; returns its lake key."""
    from trilho.errors import StorageError

    prefix = f"reports/{run_id}/"
    if not lake.exists(prefix + "summary.json"):
        raise StorageError(f"run {run_id!r} has no summary in lake {lake.uri} ({prefix}summary.json): it is not a "
                           "trilho run, it failed before its results were written, or the lake is another one "
                           "(TRILHO_LAKE)")
    with tempfile.TemporaryDirectory(prefix="trilho-page-") as tmp:
        folder = Path(tmp)
        for key in lake.list(prefix):
            name = key[len(prefix):]
            if "/" not in name and (name.endswith(".png") or name in {"summary.json", "validation_report.json",
                                                                       "config.json"}):
                (folder / name).write_bytes(lake.get_bytes(key))
        page = write_page(folder, json.loads((folder / "summary.json").read_text()))
        lake.put_file(prefix + "report.html", page, overwrite=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(page.read_bytes())
    return prefix + "report.html"


def copy_to_lake(lake: Lake, folder: Path, prefix: str) -> None:
    for path in sorted(folder.iterdir()):
        lake.put_file(prefix + path.name, path, overwrite=True)


def publish_compare(tracker: Any, lake: Lake, table: pd.DataFrame, summary: dict[str, Any],
                    scores: dict[str, Any]) -> None:
    """A comparison's table, summary, fold scores and figure: to the lake first, then MLflow."""
    with tempfile.TemporaryDirectory(prefix="trilho-compare-") as tmp:
        folder = Path(tmp)
        table.to_csv(folder / "comparison.csv", index=False)
        (folder / "comparison.json").write_text(json.dumps(summary, indent=2))
        pd.DataFrame(scores).to_csv(folder / "fold_scores.csv", index_label="fold")
        plots.comparison_figure(table, summary["metric"], summary["baseline"]).savefig(folder / "comparison.png", dpi=110)
        (folder / "report.html").write_text(pages.render_compare(
            summary, [{str(k): v for k, v in row.items()} for row in table.to_dict(orient="records")], _pngs(folder)),
            encoding="utf-8")
        copy_to_lake(lake, folder, summary["lake"]["reports"])
        tracker.log_folder(summary["run_id"], folder)


def publish_tune(tracker: Any, lake: Any, run_id: str, study: Any, summary: dict[str, Any], out: Path) -> None:
    """The summary, the tuned experiment file and Optuna's figures: to the lake first, then MLflow."""
    with tempfile.TemporaryDirectory(prefix="trilho-tune-") as tmp:
        folder = Path(tmp)
        (folder / "tune.json").write_text(json.dumps(summary, indent=2, default=str))
        (folder / out.name).write_text(out.read_text())
        try:
            _figures(study, folder)
        except Exception as exc:  # a figure that cannot be drawn loses no result
            log.warning("Optuna's figures were not drawn: %s: %s", type(exc).__name__, exc)
        (folder / "report.html").write_text(pages.render_tune(json.loads(json.dumps(summary, default=str)),
                                                              _pngs(folder)), encoding="utf-8")
        copy_to_lake(lake, folder, summary["lake"]["reports"])
        tracker.log_folder(run_id, folder)


def _figures(study: Any, folder: Path) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():  # Optuna marks its matplotlib figures experimental; they are what we need
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # e.g. "importances will be equal" on a handful of trials
        _draw(study, folder, ovm, plt)


def _draw(study: Any, folder: Path, ovm: Any, plt: Any) -> None:
    ax = ovm.plot_optimization_history(study)
    ax.figure.savefig(folder / "optimization_history.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) >= 2 and len(study.best_trial.params) >= 1:
        ax = ovm.plot_param_importances(study)
        ax.figure.savefig(folder / "param_importances.png", dpi=110, bbox_inches="tight")
        plt.close(ax.figure)

