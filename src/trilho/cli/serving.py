"""The served model's commands: serve, monitor, feedback."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from trilho.cli._app import command
from trilho.errors import ConfigError

ModelArg = Annotated[str, typer.Argument(help="models:/NAME@ALIAS (followed), models:/NAME/VERSION or models:/<model id>.")]


@command()
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
    from trilho.serve import run_server
    from trilho.settings import load_settings

    settings = load_settings()
    typer.echo(f"serving {model} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}); "
               "Ctrl-C stops it", err=True)
    run_server(model, settings, host=host, port=port, workers=workers)
