"""The ``trilho`` command: parse, load settings, call the API, print."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trilho.errors import TrilhoError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="trilho: a tabular classification experiment on rails, from raw data to a registered model.")
console = Console(stderr=True)

ExperimentOpt = Annotated[str, typer.Option("--experiment", "-e", help="Experiment file (.toml/.yaml) or built-in name.")]
SourceOpt = Annotated[str | None, typer.Option("--source", "-s", help="Override the data source: kaggle:..., https://..., file:PATH, synthetic:diabetes?rows=N&seed=S.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override any experiment key, e.g. --set cv.n_repeats=3 (repeatable).")]


def _experiment(ref: str, source: str | None, overrides: list[str] | None):
    from trilho.experiment import load_experiment

    extra = list(overrides or [])
    if source:  # a pin belongs to the experiment's own source, not to a substitute
        extra = [f"source.uri={json.dumps(source)}", 'source.sha256=""', *extra]
    return load_experiment(ref, extra)


def _fail(exc: TrilhoError) -> None:
    console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each stage does.")] = False) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # MLflow sets its own loggers to INFO; its progress notes are noise here
        logging.getLogger("mlflow").setLevel(logging.WARNING)


@app.command()
def run(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None,
        summary_json: Annotated[Path | None, typer.Option("--summary-json", help="Write the machine-readable summary here.")] = None) -> None:
    """Ingest, validate, cross-validate, fit, and track the experiment."""
    from trilho.pipeline import run_experiment
    from trilho.settings import load_settings

    try:
        exp = _experiment(experiment, source, set_)
        settings = load_settings()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("cross-validating", total=exp.cv.n_splits * exp.cv.n_repeats)
            result = run_experiment(exp, settings, progress=lambda _stage, done, total: bar.update(task, completed=done))
    except TrilhoError as exc:
        _fail(exc)
    summary = result.summary
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=2))
    _print_summary(summary, settings.tracking_uri)


def _print_summary(summary: dict, tracking_uri: str) -> None:
    out = Console()
    table = Table(title=f"{summary['experiment']}: {summary['cv']['n_folds']} folds "
                        f"({summary['cv']['n_splits']}-fold × {len(summary['cv']['seeds'])} seeds)")
    for col in ("metric", "mean", "std", "fold spread 2.5–97.5%", "holdout"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for metric, s in summary["cv"]["metrics"].items():
        table.add_row(metric, f"{s['mean']:.4f}", f"{s['std']:.4f}", f"{s['low']:.4f} – {s['high']:.4f}",
                      f"{summary['holdout']['scores'][metric]:.4f}")
    out.print(table)
    if summary["data"]["ingest_skipped"]:
        out.print("raw data already in the lake (same sha256): ingest skipped")
    out.print(f"MLflow run   {summary['run_id']} in experiment {summary['mlflow_experiment']!r} at {tracking_uri}")
    out.print(f"lake results {summary['lake']['uri']}/{summary['lake']['reports']}")
    if tracking_uri.startswith("sqlite:"):
        out.print(f"open the UI  trilho ui   (or: mlflow ui --backend-store-uri {tracking_uri})")
    t = summary["timings"]
    out.print(f"took {t['total_s']:.1f}s: cv {t['cv_s']:.1f}s, tracking {t['tracking_s']:.1f}s")


@app.command()
def ingest(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None) -> None:
    """Fetch the source into the lake's raw zone (skipped when the same bytes are there)."""
    from trilho.ingest import ingest as ingest_source
    from trilho.settings import load_settings
    from trilho.storage import open_lake

    try:
        exp = _experiment(experiment, source, None)
        settings = load_settings()
        lake = open_lake(settings)
        done = ingest_source(exp.source.uri, lake, settings, exp.name, exp.source.sha256 or None)
    except TrilhoError as exc:
        _fail(exc)
    verb = "already there, skipped" if done.skipped else "written"
    Console().print(f"{lake.url(done.key)}: {verb} ({done.manifest['rows']} rows, sha256 {done.manifest['sha256']})")


@app.command()
def validate(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None) -> None:
    """Ingest and validate; print the report as JSON (exit 1 when the data cannot run)."""
    from trilho.pipeline import load_clean
    from trilho.settings import load_settings

    try:
        exp = _experiment(experiment, source, set_)
        _, _, report, _ = load_clean(exp, load_settings())
    except TrilhoError as exc:
        if getattr(exc, "report", None):
            print(json.dumps(exc.report, indent=2))
        _fail(exc)
    print(json.dumps(report, indent=2))


@app.command()
def config(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved experiment configuration."""
    try:
        print(json.dumps(_experiment(experiment, source, set_).resolved(), indent=2))
    except TrilhoError as exc:
        _fail(exc)


@app.command()
def ui(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000) -> None:
    """Open the MLflow UI on the local tracking store (127.0.0.1 only)."""
    from trilho.settings import load_settings

    uri = load_settings().tracking_uri
    Console().print(f"MLflow UI on http://127.0.0.1:{port} for {uri} (Ctrl-C stops it)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd, env=os.environ.copy()))
