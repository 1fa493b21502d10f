"""The registered model's commands: predict, verify, models, promote."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trilho.cli._app import ModelNameOpt, command
from trilho.errors import ConfigError


@command()
def predict(model: Annotated[str, typer.Option(
                "--model", "-m", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN/model.")],
            input_: Annotated[str, typer.Option(
                "--input", "-i", help="CSV or Parquet: a local path or a key in the lake.")],
            output: Annotated[str, typer.Option("--output", "-o", help="Lake prefix for the predictions.")] = "predictions",
            chunk_rows: Annotated[int, typer.Option(help="Rows per chunk (memory holds one chunk).")] = 250_000,
            explain: Annotated[bool, typer.Option(
                "--explain", help="Add each feature's contribution to each row's answer (contrib_<feature>: "
                                  "TreeSHAP for XGBoost, summing with base_value to the margin).")] = False) -> None:
    """Predict a file in chunks with a registered model; write Parquet and a manifest to the lake."""
    from pathlib import Path

    from trilho.data.tables import check_size
    from trilho.settings import load_settings

    settings = load_settings()
    local = Path(input_.removeprefix("file:")).expanduser()  # a local input, as predict_batch finds it
    if local.is_file():  # over the size limit: refused before trilho.serving.predict's imports (pandas, MLflow)
        check_size(local, input_, settings.max_source_bytes)
    from trilho.serving.predict import predict_batch

    done = predict_batch(model, input_, settings, output=output, chunk_rows=chunk_rows, explain=explain)
    verb = "already there, skipped" if done.get("skipped") else f"written in {done['seconds']:.1f}s"
    Console().print(f"{done['output']}: {done['rows']} rows by {done['model_uri']} ({verb})")


@command()
def verify(model: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION or models:/<model id>.")],
           to: Annotated[str | None, typer.Option(
               "--to", help="Keep the checked files in this folder (serve them from it: mlflow models serve -m DIR).")] = None,
           ) -> None:
    """Check a logged model's files against the digests recorded when it was logged; exit 1 if any differs."""
    import tempfile
    from pathlib import Path

    from trilho.settings import load_settings
    from trilho.tracking.model import download_model, keep_verified

    tracking_uri = load_settings().tracking_uri
    if to:  # checked beside it, moved in only once every file is as logged
        local = keep_verified(model, Path(to).expanduser(), tracking_uri)
        count = sum(1 for p in local.rglob("*") if p.is_file())
        Console().print(f"{model}: {count} files as logged; kept in {local} (mlflow models serve -m {local})")
        return
    with tempfile.TemporaryDirectory(prefix="trilho-verify-") as tmp:
        local = download_model(model, Path(tmp), tracking_uri)
        count = sum(1 for p in local.rglob("*") if p.is_file())
        Console().print(f"{model}: {count} files as logged")


@command()
def models(name: ModelNameOpt = "diabetes-xgboost") -> None:
    """List a registered model's versions, their aliases and the promotion gate's decisions."""
    from trilho.settings import load_settings
    from trilho.tracking.registry import list_versions

    rows = list_versions(load_settings().tracking_uri, name)
    table = Table(title=f"{name}")
    for col in ("version", "aliases", "decision", "reason", "run"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["version"], ", ".join(row["aliases"]), row["decision"], row["reason"], row["run_id"])
    Console().print(table)


@command()
def promote(version: Annotated[str, typer.Argument(help="The version to make champion.")],
            reason: Annotated[str, typer.Option("--reason", "-r", help="Why: recorded on the version.")],
            name: ModelNameOpt = "diabetes-xgboost") -> None:
    """Make a version the champion by hand, overriding the gate; the reason is recorded."""
    import getpass

    from trilho.settings import load_settings
    from trilho.storage import open_lake
    from trilho.tracking.registry import promote_by_hand

    if not reason.strip():
        raise ConfigError("--reason must say why the gate is overridden")
    settings = load_settings()
    record = promote_by_hand(settings.tracking_uri, name, version, reason, getpass.getuser())
    key = f"reports/registry/{name}/{record['decided_at'].replace(':', '')}-v{version}.json"
    open_lake(settings).put_bytes(key, json.dumps(record, indent=2).encode(), overwrite=True)
    before = f" (was v{record['previous_champion']})" if record["previous_champion"] else ""
    Console().print(f"{name} v{version} is now champion{before}: {reason}")
