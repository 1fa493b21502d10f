"""The served model's commands: serve, monitor, feedback."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from trilho.cli._app import command
from trilho.errors import ConfigError

ModelArg = Annotated[str, typer.Argument(help="models:/NAME@ALIAS (followed), models:/NAME/VERSION or models:/<model id>.")]


@command(serves=True)
def serve(model: ModelArg,
          host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on.")] = 5001,
          workers: Annotated[int, typer.Option(help="Processes, each with its own model (about one per core).")] = 1,
          token: Annotated[str | None, typer.Option(
              help="Require 'Authorization: Bearer TOKEN' (or set TRILHO_SERVE_TOKEN).")] = None,
          log_predictions: Annotated[bool, typer.Option(
              "--log/--no-log", help="Keep every answered row in the lake (predictions/served/...).")] = True) -> None:
    """Serve a logged model over HTTP: MLflow's scoring protocol, metrics, a prediction log, its alias followed."""
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: must be between 1 and 65535")
    if token:  # through the environment: every worker reads it from there
        os.environ["TRILHO_SERVE_TOKEN"] = token
    if not log_predictions:
        os.environ["TRILHO_SERVE_LOG"] = "false"
    from trilho.serving.server import run_server
    from trilho.settings import load_settings

    settings = load_settings()
    typer.echo(f"serving {model} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}); "
               "Ctrl-C stops it", err=True)
    run_server(model, settings, host=host, port=port, workers=workers)


@command()
def monitor(model: ModelArg,
            since: Annotated[str | None, typer.Option(
                help="From when: an ISO date or time, or back from now: 30m, 24h, 7d.")] = None,
            until: Annotated[str | None, typer.Option(help="Until when (same forms).")] = None,
            batch: Annotated[bool, typer.Option(
                "--batch/--no-batch", help="Also the rows trilho predict predicted with this version.")] = True,
            json_out: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False) -> None:
    """Hold what a model served against its training data (and labels that came back); exit 3 if anything is flagged."""
    import json

    from trilho.settings import load_settings
    from trilho.workflows.monitor import FLAGGED_EXIT, monitor_model, parse_when

    report = monitor_model(model, load_settings(), since=parse_when(since), until=parse_when(until), batch=batch)
    if json_out:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        t = report["traffic"]
        typer.echo(f"{report['model']['uri']}: {t['sources']['served']} served and {t['sources']['batch']} batch-predicted "
                   f"rows against {t['training_rows']} training rows"
                   + (f"; {report['live']['rows']} with labels" if report.get("live") else ""))
        for f in t["features"][:5]:
            typer.echo(f"  {f['feature']:<24} PSI {f['psi']:.3f}  missing {f['missing_served']:.1%}  "
                       f"unseen {f['unseen_share']:.1%}")
        for m, e in ((report.get("live") or {}).get("metrics") or {}).items():
            cv = e["cv"]
            f = ".4g" if m in ("rmse", "mae") else ".3f"  # a regression's errors are in the target's units
            typer.echo(f"  live {m:<19} {e['live']:{f}} [{e['low']:{f}}, {e['high']:{f}}]"
                       + (f"  cross-validated {cv['mean']:{f}}" if cv else "")
                       + (f" [{cv['low']:{f}}, {cv['high']:{f}}]" if cv and "low" in cv else ""))
        covered = (report.get("live") or {}).get("coverage")
        if covered:
            typer.echo(f"  live interval coverage {covered['live']:.1%} [{covered['low']:.1%}, {covered['high']:.1%}] "
                       f"of the {covered['level']:.0%} promised")
        over_time = report.get("by_period")
        if over_time and len(over_time["periods"]) > 1:
            typer.echo(f"  by {over_time['length']}:")
            for period in over_time["periods"]:
                live = (f"  rmse {period['rmse']:.4g}" if "rmse" in period else
                        f"  accuracy {period['accuracy']:.3f}" if "accuracy" in period else "")
                drift = (f"  most drift {period['top_feature']} PSI {period['top_psi']:.3f}"
                         if period.get("top_feature") else "  (too few rows to judge)")
                typer.echo(f"    {period['period']:<20} {period['rows']:>7} rows{drift}{live}")
        typer.echo(t.get("note") or "")
        for flag in report["flags"]:
            typer.echo(f"FLAGGED {flag['reason']}")
        typer.echo(f"report {report['report']}")
    if report["flagged"]:
        raise typer.Exit(FLAGGED_EXIT)


@command()
def feedback(file: Annotated[str, typer.Argument(
                 help="CSV or Parquet: label, and request_id (+ row) or an identifier column.")],
             model: Annotated[str, typer.Option("--model", "-m", help="The model whose answers these label.")],
             label: Annotated[str, typer.Option(help="The column holding the true label.")] = "label") -> None:
    """Keep labels that arrived after the answers, for trilho monitor's live metrics."""
    from trilho.settings import load_settings
    from trilho.workflows.monitor import record_feedback

    done = record_feedback(file, model, load_settings(), label_column=label)
    verb = "already kept" if done["skipped"] else "kept"
    typer.echo(f"{done['url']}: {done['rows']} labels {verb}, joined on {done['joined_on']}")
