"""The experiment's commands: init, ingest, validate, config, run, compare, tune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from trilho.cli import show
from trilho.cli._app import ExperimentOpt, SetOpt, SourceOpt, command, console, load, refuse_too_large, with_bar

SummaryOpt = Annotated[Path | None, typer.Option("--summary-json", help="Write the machine-readable summary here.")]
OfflineOpt = Annotated[str | None, typer.Option(
    "--offline-source", envvar="TRILHO_OFFLINE_SOURCE",
    help="When the experiment's own source cannot be reached (no network), run on this source instead, said in "
    "one line; its model is registered under NAME-offline.")]


def run_with_bar(exp: Any, settings: Any, offline_source: str | None = None, spare: Any = None) -> Any:
    from trilho.workflows.run import run_experiment

    return with_bar("cross-validating", exp.cv.n_splits * exp.cv.n_repeats,
                    lambda progress: run_experiment(exp, settings, progress=progress, offline_source=offline_source,
                                                    spare=spare))


def _run_spared(experiment: str, source: str | None, set_: list[str] | None, offline: str | None,
                spare: Any) -> tuple[Any, Any]:
    from trilho.settings import load_settings

    exp = load(experiment, source, set_)
    settings = load_settings()
    return run_with_bar(exp, settings, None if source else offline, spare), settings  # a source given is the one wanted


@command()
def run(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None,
        summary_json: SummaryOpt = None, offline: OfflineOpt = None) -> None:
    """Ingest, validate, cross-validate, fit, and track the experiment."""
    from trilho.execution.pool import Apart

    if source:  # a source over the size limit is refused before any import or process is paid for
        refuse_too_large(source)
    # a worker process for the default model's baseline, importing while this process does
    # (trilho.workflows.run._Baselines); ended on the way out if nothing needed it
    spare = Apart(("trilho.evaluation.cv",))
    try:
        result, settings = _run_spared(experiment, source, set_, offline, spare)
    finally:
        spare.cancel()
    if result.offline:
        gone = result.offline
        _offline_line(gone["unreachable"], gone["cause"], gone["source"], gone["model_name"])
    if summary_json:
        summary_json.write_text(json.dumps(result.summary, indent=2))
    show.run_summary(result.summary, settings.tracking_uri, settings.ui_url())


@command()
def report(run_id: Annotated[str | None, typer.Argument(
               help="An MLflow run id of `trilho run` (default: the newest run of --experiment).")] = None,
           experiment: ExperimentOpt = "diabetes",
           out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the page (default: "
                                                    "report-RUN.html here).")] = None,
           open_: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False) -> None:
    """Write a run's self-contained HTML page (report.html) from what the lake holds of it, back to the lake,
    to MLflow and here."""
    import logging

    from trilho.errors import ConfigError
    from trilho.reporting.publish import page_from_lake
    from trilho.settings import load_settings
    from trilho.storage import open_lake
    from trilho.tracking.store import latest_run, log_page

    settings = load_settings()
    if run_id is None:
        name = load(experiment, None, None).tracking.experiment
        run_id = latest_run(settings.tracking_uri, name)
        if run_id is None:
            raise ConfigError(f"MLflow experiment {name!r} at {settings.tracking_uri} has no trilho run yet; "
                              "give a run id, or run it first (trilho run)")
    page = out or Path(f"report-{run_id}.html")
    key = page_from_lake(open_lake(settings), run_id, page)
    try:
        log_page(settings.tracking_uri, run_id, page)
    except Exception as exc:  # the page is written and in the lake: MLflow only gets a copy
        logging.getLogger(__name__).warning("report.html not logged to MLflow run %s: %s", run_id, exc)
    console.print(f"{page} (and {key} in the lake)", highlight=False)
    if open_:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())


@command()
def init(data: Annotated[str, typer.Argument(
             help="The data: file:PATH, https://..., kaggle:owner/dataset\\[/file] or a lake key; CSV or Parquet.")],
         target: Annotated[str | None, typer.Option(
             "--target", "-t", help="The label column (guessed when one column clearly is), or the number to predict.")] = None,
         task: Annotated[str | None, typer.Option(
             "--task", help="classification or regression (default: regression for a numeric target with many "
                            "values).")] = None,
         output: Annotated[Path | None, typer.Option(
             "--output", "-o", help="Where to write the experiment file (default: NAME.toml).")] = None,
         name: Annotated[str | None, typer.Option("--name", "-n", help="The experiment's name (default: the file's).")] = None,
         force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False) -> None:
    """Profile the data (in bounded chunks) and write a commented experiment file that `trilho run -e FILE` accepts."""
    refuse_too_large(data)  # before the imports below
    from rich.markup import escape

    from trilho.errors import ConfigError
    from trilho.experiment import load_experiment
    from trilho.init.profile import experiment_name, init_experiment
    from trilho.init.propose import expected_seconds, render
    from trilho.settings import load_settings

    path = output or Path(f"{name or experiment_name(data)}.toml")
    reference = path.with_name(f"{path.stem}.reference.csv")  # rows the gate scores models on, never trained on
    for existing in (path, reference):
        if existing.exists() and not force:
            raise ConfigError(f"{str(existing)!r} exists; choose another --output or pass --force")
    settings = load_settings()
    proposal = init_experiment(data, settings, target, name, reference_to=reference, task=task)
    path.write_text(render(proposal), encoding="utf-8")
    load_experiment(path)  # what was written loads as it is
    for section, lines in proposal.notes.items():
        for line in lines:
            console.print(f"[bold]{section:>9}[/]  {escape(line)}", highlight=False, soft_wrap=True)
    cores = settings.free_cores()
    total = expected_seconds(proposal, cores)[0]
    said = f"{total:.0f} s" if total < 90 else f"{total / 60:.1f} min"
    Console().print(f"wrote {path}; next: trilho run -e {path}   (expected: about {said} on this machine's {cores} "
                    f"core{'s' if cores > 1 else ''})", highlight=False, soft_wrap=True)


def _offline_line(unreachable: str, cause: str, instead: str, model: str | None = None) -> None:
    """The one line that says the experiment's own source was out of reach and what ran instead."""
    what = f" (model {model or 'not registered'})" if model is not None else ""
    console.print(f"[bold yellow]offline:[/] {unreachable!r} cannot be reached ({cause}); running on {instead} "
                  f"instead{what}; give the real data with --source file:PATH (or TRILHO_SOURCE)",
                  highlight=False, soft_wrap=True)


@command()
def ingest(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, offline: OfflineOpt = None) -> None:
    """Fetch the source into the lake's raw zone (skipped when the same bytes are there)."""
    from trilho.data.ingest import ingest as ingest_source
    from trilho.errors import SourceUnreachableError
    from trilho.settings import load_settings
    from trilho.storage import open_lake

    exp = load(experiment, source, None)
    settings = load_settings()
    lake = open_lake(settings)
    try:
        done = ingest_source(exp.source.uri, lake, settings, exp.name, exp.source.sha256 or None)
    except SourceUnreachableError as exc:
        if source or not offline or offline == exp.source.uri:  # a source given is the one wanted
            raise
        _offline_line(exp.source.uri, exc.cause, offline)
        done = ingest_source(offline, lake, settings, exp.name, None)
    verb = "already there, skipped" if done.skipped else "written"
    Console().print(f"{lake.url(done.key)}: {verb} ({done.manifest['rows']} rows, sha256 {done.manifest['sha256']})")


@command()
def validate(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None) -> None:
    """Ingest and validate; print the report as JSON (exit 1 when the data cannot run)."""
    from trilho.errors import DataValidationError
    from trilho.settings import load_settings

    exp = load(experiment, source, set_)  # a source too large is refused before the imports below
    from trilho.data.curate import load_clean

    try:
        _, _, report, _ = load_clean(exp, load_settings())
    except DataValidationError as exc:
        if exc.report:
            print(json.dumps(exc.report, indent=2))
        raise
    print(json.dumps(report, indent=2))


@command()
def config(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved experiment configuration."""
    print(json.dumps(load(experiment, source, set_, fetches=False).resolved(), indent=2))


DEFAULT_CANDIDATES = ["xgboost+smote", "xgboost+none", "random_forest+smote", "random_forest+none",
                      "logistic_regression+smote", "logistic_regression+none"]
# a regression's: the experiment's model first (the baseline), then the other families
DEFAULT_REGRESSORS = ["xgboost", "hist_gradient_boosting", "random_forest", "extra_trees", "ridge"]


@command()
def compare(candidates: Annotated[list[str] | None, typer.Argument(
                help="model+resampler, e.g. xgboost+smote random_forest+none (a regression: models alone, e.g. xgboost ridge); "
                "parameters in brackets, quoted for the shell: 'random_forest[n_estimators=100]+smote'; the first is "
                "the baseline.")] = None,
            experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None,
            metric: Annotated[str | None, typer.Option(
                help="Metric to compare (default: registry.primary_metric).")] = None) -> None:
    """Evaluate candidates on identical folds; corrected paired t-test against the first."""
    from trilho.settings import load_settings

    if source:  # a source over the size limit is refused before any import or process is paid for
        refuse_too_large(source)
    settings = load_settings()
    if settings.executor != "dask" and settings.free_cores() >= 2:
        from trilho.execution.pool import FIT_MODULES, fit_server

        # the forests' worker processes' imports, on the core this process's own leave idle (and
        # the CLI, which a worker's re-run of the main script imports)
        fit_server((*FIT_MODULES, "trilho.cli"))
    exp = load(experiment, source, set_, fetches=False)
    from trilho.model.catalog import QUANTILE_MODELS
    from trilho.workflows.compare import compare as run_compare
    from trilho.workflows.compare import parse_candidates

    # a quantile decision: only the families that fit a quantile
    regressors = [m for m in DEFAULT_REGRESSORS if exp.decision.quantile is None or m in QUANTILE_MODELS]
    default = ([exp.model.name, *(m for m in regressors if m != exp.model.name)] if exp.regression
               else DEFAULT_CANDIDATES)
    chosen = parse_candidates(candidates or default, exp)
    result = with_bar("comparing", len(chosen) * exp.cv.n_splits * exp.cv.n_repeats,
                      lambda progress: run_compare(exp, settings, chosen, metric=metric, progress=progress))
    show.compare_summary(result.summary)


@command()
def tune(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None,
         trials: Annotated[int | None, typer.Option(
             help="Trials this time (default: tune.trials); a resumed study adds them.")] = None,
         timeout: Annotated[float | None, typer.Option(help="Start no trial after this many seconds.")] = None,
         study: Annotated[str | None, typer.Option(
             help="The Optuna study's name (default: from the experiment, data, model and metric).")] = None,
         out: Annotated[Path | None, typer.Option(
             "--out", "-o", help="Write the tuned experiment file here (default: NAME-tuned.toml).")] = None,
         then_run: Annotated[bool, typer.Option(
             "--run", help="Then `trilho run` the tuned file: the promotion gate decides.")] = False,
         summary_json: SummaryOpt = None) -> None:
    """Search hyperparameters on the experiment's folds; report the best trial beside a score it never saw."""
    from trilho.settings import load_settings

    exp = load(experiment, source, set_)  # a source too large is refused before the imports below
    from trilho.experiment import load_experiment
    from trilho.workflows.tune import tune as run_tune

    settings = load_settings()
    result = with_bar("tuning", trials or exp.tune.trials, lambda progress: run_tune(
        exp, settings, trials=trials, timeout_s=timeout, study_name=study, out=out, progress=progress))
    if summary_json:
        summary_json.write_text(json.dumps(result.summary, indent=2, default=str))
    show.tune_summary(result.summary)
    if then_run:
        tuned = load_experiment(str(result.experiment_file))
        show.run_summary(run_with_bar(tuned, settings).summary, settings.tracking_uri, settings.ui_url())
