"""The services' commands: the MLflow UI and server, the S3 store's buckets, notebooks."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from trilho.cli._app import command, supervise


@command(serves=True)
def ui(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000) -> None:
    """Open the MLflow UI on the local tracking store (127.0.0.1 only)."""
    from trilho.settings import load_settings

    uri = load_settings().tracking_uri
    Console().print(f"MLflow UI on http://127.0.0.1:{port} for {uri} (Ctrl-C stops it)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    raise typer.Exit(supervise(cmd, os.environ.copy()))


@command("init-store")
def init_store() -> None:
    """Wait for the S3 store (bounded), check the keys, create the data and MLflow buckets (idempotent)."""
    from trilho.settings import load_settings
    from trilho.storage import S3Lake

    settings = load_settings()
    uris = [settings.lake] + ([f"s3://{settings.bucket_mlflow}"] if settings.bucket_mlflow else [])
    for uri in uris:
        if not uri.startswith("s3://"):
            Console().print(f"{uri}: a local folder, nothing to create")
            continue
        S3Lake(uri, settings).prepare(create=True, wait_s=settings.s3_wait_s)
        Console().print(f"{uri}: ready on {settings.s3_endpoint_url or 'AWS S3'}")


@command(serves=True)
def server(port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
           host: Annotated[str, typer.Option(
               help="Address to bind; 127.0.0.1 keeps it private to this machine.")] = "127.0.0.1",
           artifacts: Annotated[str | None, typer.Option(
               help="Where the server keeps artifacts: a folder or s3://bucket/ "
                    "(default: s3://$BUCKET_MLFLOW/ when set, else ./mlartifacts).")] = None,
           allowed_hosts: Annotated[str | None, typer.Option(
               help="Extra Host headers to accept, comma-separated (e.g. the service name in a container network).")
           ] = None) -> None:
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
    raise typer.Exit(supervise(cmd, env))


@command()
def notebook(path: Annotated[Path, typer.Argument(help="The notebook to run.")] = Path("notebooks/diabetes.ipynb"),
             param: Annotated[list[str] | None, typer.Option(
                 "--param", "-p", help="NAME=VALUE for the parameters cell (value parsed as TOML), "
                 "e.g. -p 'OVERRIDES=[\"cv.n_repeats=2\"]'.")] = None,
             out: Annotated[Path, typer.Option(help="Folder for the executed notebook and its HTML.")] = Path("notebook-out"),
             lab: Annotated[bool, typer.Option(
                 "--lab", help="Open JupyterLab on the notebook's folder instead (127.0.0.1, token printed).")] = False) -> None:
    """Run a notebook top to bottom with parameters, then publish it to the lake and its MLflow run."""
    from trilho.experiment import apply_overrides
    from trilho.reporting.notebooks import execute_notebook, publish
    from trilho.settings import load_settings

    if lab:
        cmd = [sys.executable, "-m", "jupyter", "lab", "--ServerApp.ip=127.0.0.1", "--no-browser",
               f"--ServerApp.root_dir={path.parent if path.suffix else path}"]
        raise typer.Exit(supervise(cmd, os.environ.copy()))
    params = apply_overrides({}, param or [])
    run_ = execute_notebook(path, params, out, cwd=Path.cwd())
    settings = load_settings(**{k: v for k, v in {"tracking_uri": params.get("TRACKING_URI"),
                                                   "lake": params.get("LAKE")}.items() if v})
    keys = publish(run_, settings) if run_.summary else []
    Console().print(f"executed {run_.executed}, rendered {run_.html}" + (f"; published to {', '.join(keys)}" if keys else ""))
