"""The ``trilho`` command: parse, load settings, call the API, print."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
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


def _bar() -> Progress:
    """The progress bar of long commands, on stderr; it disappears when done.

    It redraws when told (``refresh=True``), not from a thread of its own: with no other thread
    alive the figures may be drawn in forked children (see trilho.parallel)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True, auto_refresh=False)


def _fail(exc: TrilhoError) -> None:
    console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each stage does.")] = False) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # a tracking server that dies mid-run should cost seconds, not MLflow's default minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # MLflow sets its own loggers to INFO; its progress notes are noise here
        logging.getLogger("mlflow").setLevel(logging.WARNING)


@app.command()
def run(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None,
        summary_json: Annotated[Path | None, typer.Option("--summary-json", help="Write the machine-readable summary here.")] = None,
        offline: Annotated[str | None, typer.Option("--offline-source", help="When the experiment's own source cannot be reached (no network), run on this source instead, said in one line; its model is registered under NAME-offline.")] = None) -> None:
    """Ingest, validate, cross-validate, fit, and track the experiment."""
    from trilho.errors import SourceUnreachableError
    from trilho.pipeline import run_experiment
    from trilho.settings import load_settings

    try:
        exp = _experiment(experiment, source, set_)
        settings = load_settings()
        try:
            result = _run_with_bar(exp, settings, run_experiment)
        except SourceUnreachableError as exc:
            if not offline or source:
                raise
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "no answer"
            unreachable = exp.source.uri
            exp = _experiment(experiment, None, [*(set_ or []), f"source.uri={json.dumps(offline)}", 'source.sha256=""', *(
                [f"registry.model_name={json.dumps(exp.registry.model_name + '-offline')}"] if exp.registry.model_name else [])])
            console.print(f"[bold yellow]offline:[/] {unreachable!r} cannot be reached ({cause}); running on {offline} "
                          f"instead (model {exp.registry.model_name or 'not registered'}); give the real data with "
                          "--source file:PATH", highlight=False, soft_wrap=True)
            result = _run_with_bar(exp, settings, run_experiment)
    except TrilhoError as exc:
        _fail(exc)
    summary = result.summary
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=2))
    _print_summary(summary, settings.tracking_uri)


def _run_with_bar(exp, settings, run_experiment):
    with _bar() as bar:
        task = bar.add_task("cross-validating", total=exp.cv.n_splits * exp.cv.n_repeats)
        return run_experiment(exp, settings, progress=lambda _stage, done, total: bar.update(
            task, completed=done, total=total, refresh=True))


def _print_summary(summary: dict, tracking_uri: str) -> None:
    out = Console()
    cv = summary["cv"]
    dup = cv.get("duplicates", {})
    table = Table(title=f"{summary['experiment']}: {cv['n_folds']} folds ({cv['n_splits']}-fold × {len(cv['seeds'])} seeds, "
                        f"duplicates: {dup.get('policy', 'keep')})")
    level = f"{cv.get('level', 0.95):.0%}"
    for col in ("metric", "mean", "std", f"{level} CI", "fold spread", "holdout"):
        table.add_column(col, justify="right" if col != "metric" else "left", no_wrap=True)
    for metric, s in cv["metrics"].items():
        ci = s.get("ci")
        table.add_row(metric, f"{s['mean']:.4f}", f"{s['std']:.4f}", f"{ci[0]:.4f}–{ci[1]:.4f}" if ci else "-",
                      f"{s['low']:.4f}–{s['high']:.4f}", f"{summary['holdout']['scores'][metric]:.4f}")
    out.print(table)
    out.print(f"CI: {cv.get('interval', '-')} (see STATISTICS.md for its measured coverage); "
              "fold spread: the 2.5–97.5 percentiles of single fold scores, not a CI")
    if summary["data"]["ingest_skipped"]:
        out.print("raw data already in the lake (same sha256): ingest skipped")
    out.print(f"MLflow run   {summary['run_id']} in experiment {summary['mlflow_experiment']!r} at {tracking_uri}")
    out.print(f"lake results {summary['lake']['uri']}/{summary['lake']['reports']}")
    if "registry" in summary:
        reg = summary["registry"]
        out.print(f"model        models:/{reg['name']}/{reg['version']} ({', '.join(reg['aliases'])}): {reg['reason']}")
    if tracking_uri.startswith("sqlite:"):
        out.print(f"open the UI  trilho ui   (or: mlflow ui --backend-store-uri {tracking_uri})")
    t = summary["timings"]
    out.print(f"took {t['total_s']:.1f}s: cv {t['cv_s']:.1f}s, tracking {t['tracking_s']:.1f}s")


@app.command()
def init(data: Annotated[str, typer.Argument(help="The data: file:PATH, https://..., kaggle:owner/dataset[/file] or a lake key; CSV or Parquet.")],
         target: Annotated[str | None, typer.Option("--target", "-t", help="The label column (guessed when one column clearly is).")] = None,
         output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the experiment file (default: NAME.toml).")] = None,
         name: Annotated[str | None, typer.Option("--name", "-n", help="The experiment's name (default: the file's).")] = None,
         force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False) -> None:
    """Read the data once and write a commented experiment file that `trilho run -e FILE` accepts."""
    from trilho.errors import ConfigError
    from trilho.experiment import load_experiment
    from trilho.profile import init_experiment, render
    from trilho.settings import load_settings

    try:
        proposal = init_experiment(data, load_settings(), target, name)
        path = output or Path(f"{proposal.config['name']}.toml")
        if path.exists() and not force:
            raise ConfigError(f"{str(path)!r} exists; choose another --output or pass --force")
        text = render(proposal)
        path.write_text(text, encoding="utf-8")
        load_experiment(path)  # what was written loads as it is
    except TrilhoError as exc:
        _fail(exc)
    for section, lines in proposal.notes.items():
        for line in lines:
            console.print(f"[bold]{section:>9}[/]  {line}", highlight=False, soft_wrap=True)
    Console().print(f"wrote {path}; next: trilho run -e {path}")


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
    raise typer.Exit(_supervise(cmd, os.environ.copy()))


def _supervise(cmd: list[str], env: dict[str, str], grace_s: float = 10.0) -> int:
    """Run a long-lived service (MLflow and the workers it starts) in a process group of its own and
    take it down whole when this process is told to stop (SIGTERM, SIGINT, SIGHUP): nothing is left
    listening after ``trilho server`` or ``trilho ui`` ends."""
    import signal

    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum, _frame) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:  # the group's stragglers (uvicorn workers) get the grace period, then SIGKILL
            os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                os.killpg(proc.pid, 0)
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code


@app.command("init-store")
def init_store() -> None:
    """Wait for the S3 store (bounded), check the keys, create the data and MLflow buckets (idempotent)."""
    from trilho.settings import load_settings
    from trilho.storage import S3Lake

    try:
        settings = load_settings()
        uris = [settings.lake] + ([f"s3://{settings.bucket_mlflow}"] if settings.bucket_mlflow else [])
        for uri in uris:
            if not uri.startswith("s3://"):
                Console().print(f"{uri}: a local folder, nothing to create")
                continue
            S3Lake(uri, settings).prepare(create=True, wait_s=settings.s3_wait_s)
            Console().print(f"{uri}: ready on {settings.s3_endpoint_url or 'AWS S3'}")
    except TrilhoError as exc:
        _fail(exc)


@app.command()
def server(port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
           host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it private to this machine.")] = "127.0.0.1",
           artifacts: Annotated[str | None, typer.Option(help="Where the server keeps artifacts: a folder or s3://bucket/ (default: s3://$BUCKET_MLFLOW/ when set, else ./mlartifacts).")] = None,
           allowed_hosts: Annotated[str | None, typer.Option(help="Extra Host headers to accept, comma-separated (e.g. the service name in a container network).")] = None) -> None:
    """Run an MLflow tracking server with its UI: SQLite store, artifacts proxied (clients need no S3 keys)."""
    from trilho.settings import load_settings

    settings = load_settings()
    store = settings.tracking_uri if settings.tracking_uri.startswith("sqlite:") else "sqlite:///mlflow.db"
    destination = artifacts or (f"s3://{settings.bucket_mlflow}/" if settings.bucket_mlflow
                                else Path("mlartifacts").resolve().as_uri())
    env = os.environ.copy()
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # background GenAI job workers: not needed here
    if destination.startswith("s3://"):  # the server, not the clients, talks to the store
        if settings.s3_endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
        for name, secret in (("AWS_ACCESS_KEY_ID", settings.aws_access_key_id),
                             ("AWS_SECRET_ACCESS_KEY", settings.aws_secret_access_key)):
            if secret:
                env[name] = secret.get_secret_value()
        env.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
        env.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--serve-artifacts",
           "--artifacts-destination", destination, "--host", host, "--port", str(port), "--workers", "1"]
    if allowed_hosts:
        cmd += ["--allowed-hosts", ",".join([allowed_hosts, f"localhost:{port}", f"127.0.0.1:{port}"])]
    Console().print(f"MLflow server on http://{host}:{port} (store {store}, artifacts {destination}); "
                    f"point trilho at it with MLFLOW_TRACKING_URI=http://{host}:{port}. Ctrl-C stops it.")
    raise typer.Exit(_supervise(cmd, env))


ModelNameOpt = Annotated[str, typer.Option("--name", "-n", help="Registered model name.")]


@app.command()
def predict(model: Annotated[str, typer.Option("--model", "-m", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN/model.")],
            input_: Annotated[str, typer.Option("--input", "-i", help="CSV or Parquet: a local path or a key in the lake.")],
            output: Annotated[str, typer.Option("--output", "-o", help="Lake prefix for the predictions.")] = "predictions",
            chunk_rows: Annotated[int, typer.Option(help="Rows per chunk (memory holds one chunk).")] = 250_000) -> None:
    """Predict a file in chunks with a registered model; write Parquet and a manifest to the lake."""
    from trilho.predict import predict_batch
    from trilho.settings import load_settings

    try:
        done = predict_batch(model, input_, load_settings(), output=output, chunk_rows=chunk_rows)
    except TrilhoError as exc:
        _fail(exc)
    verb = "already there, skipped" if done["skipped"] else f"written in {done['seconds']:.1f}s"
    Console().print(f"{done['output']}: {done['rows']} rows by {done['model_uri']} ({verb})")


@app.command()
def models(name: ModelNameOpt = "diabetes-xgboost") -> None:
    """List a registered model's versions, their aliases and the promotion gate's decisions."""
    from trilho.tracking.registry import list_versions
    from trilho.settings import load_settings

    try:
        rows = list_versions(load_settings().tracking_uri, name)
    except TrilhoError as exc:
        _fail(exc)
    table = Table(title=f"{name}")
    for col in ("version", "aliases", "decision", "reason", "run"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["version"], ", ".join(row["aliases"]), row["decision"], row["reason"], row["run_id"])
    Console().print(table)


@app.command()
def promote(version: Annotated[str, typer.Argument(help="The version to make champion.")],
            reason: Annotated[str, typer.Option("--reason", "-r", help="Why: recorded on the version.")],
            name: ModelNameOpt = "diabetes-xgboost") -> None:
    """Make a version the champion by hand, overriding the gate; the reason is recorded."""
    import getpass

    from trilho.tracking.registry import promote_by_hand
    from trilho.settings import load_settings

    if not reason.strip():
        _fail(TrilhoError("--reason must say why the gate is overridden"))
    from trilho.storage import open_lake

    try:
        settings = load_settings()
        record = promote_by_hand(settings.tracking_uri, name, version, reason, getpass.getuser())
        key = f"reports/registry/{name}/{record['decided_at'].replace(':', '')}-v{version}.json"
        open_lake(settings).put_bytes(key, json.dumps(record, indent=2).encode(), overwrite=True)
    except TrilhoError as exc:
        _fail(exc)
    before = f" (was v{record['previous_champion']})" if record["previous_champion"] else ""
    Console().print(f"{name} v{version} is now champion{before}: {reason}")


@app.command()
def compare(candidates: Annotated[list[str] | None, typer.Argument(help="model+resampler, e.g. xgboost+smote random_forest+none; the first is the baseline.")] = None,
            experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None,
            metric: Annotated[str | None, typer.Option(help="Metric to compare (default: registry.primary_metric).")] = None) -> None:
    """Evaluate candidates on identical folds; corrected paired t-test against the first."""
    from trilho.compare import compare as run_compare
    from trilho.compare import parse_candidates
    from trilho.settings import load_settings

    default = ["xgboost+smote", "xgboost+none", "random_forest+smote", "random_forest+none",
               "logistic_regression+smote", "logistic_regression+none"]
    try:
        exp = _experiment(experiment, source, set_)
        chosen = parse_candidates(candidates or default, exp)
        with _bar() as bar:
            task = bar.add_task("comparing", total=len(chosen) * exp.cv.n_splits * exp.cv.n_repeats)
            result = run_compare(exp, load_settings(), chosen, metric=metric,
                                 progress=lambda _s, done, total: bar.update(task, completed=done, total=total, refresh=True))
    except TrilhoError as exc:
        _fail(exc)
    s = result.summary
    table = Table(title=f"{s['metric']} on {s['n_folds']} identical folds (duplicates: {s['duplicates']['policy']}); "
                        f"baseline {s['baseline']}")
    for col in ("candidate", "mean", "95% CI", "diff vs baseline", "diff CI", "p"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for r in s["candidates"]:
        table.add_row(r["candidate"], f"{r['mean']:.4f}", f"{r['ci_low']:.4f} – {r['ci_high']:.4f}",
                      f"{r['mean_diff']:+.4f}", f"{r['diff_low']:+.4f} – {r['diff_high']:+.4f}", f"{r['p_value']:.3g}")
    out = Console()
    out.print(table)
    out.print(f"MLflow run {s['run_id']} (one child per candidate); lake {s['lake']['uri']}/{s['lake']['reports']}")


@app.command()
def tune(experiment: ExperimentOpt = "diabetes", source: SourceOpt = None, set_: SetOpt = None,
         trials: Annotated[int | None, typer.Option(help="Trials this time (default: tune.trials); a resumed study adds them.")] = None,
         timeout: Annotated[float | None, typer.Option(help="Start no trial after this many seconds.")] = None,
         study: Annotated[str | None, typer.Option(help="The Optuna study's name (default: from the experiment, data, model and metric).")] = None,
         out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the tuned experiment file here (default: NAME-tuned.toml).")] = None,
         then_run: Annotated[bool, typer.Option("--run", help="Then `trilho run` the tuned file: the promotion gate decides.")] = False,
         summary_json: Annotated[Path | None, typer.Option("--summary-json", help="Write the machine-readable summary here.")] = None) -> None:
    """Search hyperparameters on the experiment's folds; report the best trial beside a score it never saw."""
    from trilho.experiment import load_experiment
    from trilho.pipeline import run_experiment
    from trilho.settings import load_settings
    from trilho.tune import tune as run_tune

    try:
        exp = _experiment(experiment, source, set_)
        settings = load_settings()
        with _bar() as bar:
            task = bar.add_task("tuning", total=trials or exp.tune.trials)
            result = run_tune(exp, settings, trials=trials, timeout_s=timeout, study_name=study, out=out,
                              progress=lambda _s, done, total: bar.update(task, completed=done, total=total, refresh=True))
        s = result.summary
        if summary_json:
            summary_json.write_text(json.dumps(s, indent=2, default=str))
        out_ = Console()
        t = s["trials"]
        out_.print(f"study {s['study']}: {t['this_command']} trials now, {t['in_study']} in all "
                   f"({t['complete']} complete, {t['pruned']} pruned, {t['failed']} failed); storage {s['storage']}")
        table = Table(title=f"{s['metric']}: the best trial's own CV score against rows the search never saw")
        for col in ("score", "value", f"{s['honest']['level']:.0%} interval"):
            table.add_column(col, justify="left" if col == "score" else "right")
        table.add_row(f"best trial #{s['best']['trial']}, its CV on {s['search_rows']} search rows",
                      f"{s['best']['cv_score']:.4f}", "(optimistic: it chose itself)")
        for key, label in (("honest", "tuned, on the held-out rows"), ("untuned", "untuned, on the same rows")):
            table.add_row(f"{label} ({s['held_out_rows']})", f"{s[key]['score']:.4f}",
                          f"{s[key]['low']:.4f} – {s[key]['high']:.4f}")
        out_.print(table)
        out_.print(f"optimism of the best trial's score: {s['optimism']:+.4f}; best params {json.dumps(s['best']['params'])}")
        out_.print(f"tuned experiment: {s['experiment_file']} (trilho run -e {s['experiment_file']}); MLflow run {s['run_id']}")
        if then_run:
            tuned = load_experiment(str(result.experiment_file))
            _print_summary(_run_with_bar(tuned, settings, run_experiment).summary, settings.tracking_uri)
    except TrilhoError as exc:
        _fail(exc)


@app.command()
def notebook(path: Annotated[Path, typer.Argument(help="The notebook to run.")] = Path("notebooks/diabetes.ipynb"),
             param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE for the parameters cell (value parsed as TOML), e.g. -p 'OVERRIDES=[\"cv.n_repeats=2\"]'.")] = None,
             out: Annotated[Path, typer.Option(help="Folder for the executed notebook and its HTML.")] = Path("notebook-out"),
             lab: Annotated[bool, typer.Option("--lab", help="Open JupyterLab on the notebook's folder instead (127.0.0.1, token printed).")] = False) -> None:
    """Run a notebook top to bottom with parameters, then publish it to the lake and its MLflow run."""
    from trilho.experiment import apply_overrides
    from trilho.notebooks import execute_notebook, publish
    from trilho.settings import load_settings

    if lab:
        cmd = [sys.executable, "-m", "jupyter", "lab", "--ServerApp.ip=127.0.0.1", "--no-browser",
               f"--ServerApp.root_dir={path.parent if path.suffix else path}"]
        raise typer.Exit(_supervise(cmd, os.environ.copy()))
    try:
        params = apply_overrides({}, param or [])
        run_ = execute_notebook(path, params, out, cwd=Path.cwd())
        settings = load_settings(**{k: v for k, v in {"tracking_uri": params.get("TRACKING_URI"),
                                                       "lake": params.get("LAKE")}.items() if v})
        keys = publish(run_, settings) if run_.summary else []
    except TrilhoError as exc:
        _fail(exc)
    Console().print(f"executed {run_.executed}, rendered {run_.html}" + (f"; published to {', '.join(keys)}" if keys else ""))
