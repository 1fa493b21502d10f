"""Batch prediction with a logged or registered model: chunked, validated, idempotent, into the lake.

Input: a CSV or Parquet file, local or in the lake. Each chunk goes through the model's pyfunc,
which checks it against the model's signature (a missing column or a wrong type is an error
naming it). Output: the input's identifier columns, the predicted label and one probability per
class, as Parquet, under ``<output>/<model>/<version>/<input sha256>/`` with a manifest written
last; the same model and input a second time write nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from trilho.encoding import unseen_counts
from trilho.errors import ConfigError, DataValidationError, StorageError, TrackingError
from trilho.ingest import iter_chunks, scan_file
from trilho.settings import Settings
from trilho.storage import Lake, open_lake

__all__ = ["load_model", "predict_batch", "resolve_model"]

log = logging.getLogger(__name__)


def resolve_model(model_uri: str, tracking_uri: str) -> dict[str, str]:
    """Name, version and a path-safe identity for a model URI (aliases resolve to their version)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    found = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if not found:  # runs:/..., models:/m-<id>, a path: identified by the URI itself
        return {"uri": model_uri, "name": "", "version": "",
                "ident": f"model-{hashlib.sha256(model_uri.encode()).hexdigest()[:16]}"}
    name, alias, number = found.groups()
    client = MlflowClient(tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as exc:
        raise TrackingError(f"model {model_uri!r} not found at {tracking_uri!r} ({exc.message}); "
                            "list them with `trilho models`") from None
    return {"uri": f"models:/{name}/{version.version}", "name": name, "version": str(version.version),
            "run_id": version.run_id or "", "ident": f"{_safe(name)}/v{version.version}"}


def load_model(model_uri: str, dst: Path):
    """``mlflow.pyfunc.load_model`` with a cheaper check of the model's requirements and Python.

    MLflow's own check maps every installed distribution to its modules (about a second on every
    load); the logged model pins its few requirements exactly, so comparing those pins with the
    installed versions says the same. A mismatch is a warning, as in MLflow.
    """
    import importlib.metadata

    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    model = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True, dst_path=str(dst))
    requirements = dst / "requirements.txt"
    for line in requirements.read_text().splitlines() if requirements.is_file() else []:
        pinned = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)\s*", line)
        if not pinned:
            continue
        package, wanted = pinned.groups()
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != wanted:
            log.warning("model %s was logged with %s==%s; this environment has %s", model_uri, package, wanted,
                        installed or "no such package")
    logged_python = model.metadata.flavors.get("python_function", {}).get("python_version", "")
    if logged_python.split(".")[:2] != platform.python_version().split(".")[:2]:
        log.warning("model %s was logged with Python %s; this is Python %s", model_uri, logged_python or "?",
                    platform.python_version())
    return model


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _local_input(ref: str, lake: Lake, workdir: Path) -> tuple[Path, str]:
    path = Path(ref.removeprefix("file:")).expanduser()
    if path.is_file():
        return path, path.resolve().as_uri()
    if ref.startswith(("file:", "/", "./")):
        raise StorageError(f"input {ref!r}: no such file")
    key = ref.removeprefix(lake.uri).lstrip("/")
    if not lake.exists(key):
        raise StorageError(f"input {ref!r} is neither a local file nor an object in lake {lake.uri}")
    return lake.download(key, workdir / Path(key).name), lake.url(key)


def predict_batch(model_uri: str, input_ref: str, settings: Settings, *, lake: Lake | None = None,
                  output: str = "predictions", chunk_rows: int = 250_000) -> dict[str, Any]:
    """Predict every row of ``input_ref`` with the model; returns the manifest (``skipped`` if done before)."""
    import mlflow
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow.exceptions import MlflowException

    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows}: must be at least 1")
    start = time.perf_counter()
    lake = lake or open_lake(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    model_info = resolve_model(model_uri, settings.tracking_uri)
    timings = {"resolve_s": time.perf_counter() - start}
    with tempfile.TemporaryDirectory(prefix="trilho-predict-") as tmp:
        workdir = Path(tmp)
        path, source = _local_input(input_ref, lake, workdir)
        digest, size, _ = scan_file(path)
        prefix = f"{output.strip('/')}/{model_info['ident']}/{digest}"
        manifest_key = f"{prefix}/manifest.json"
        if lake.exists(manifest_key):
            done = json.loads(lake.get_bytes(manifest_key))
            log.info("predictions of %s by %s already in %s: skipped", source, model_info["uri"], prefix)
            return {**done, "skipped": True}
        step = time.perf_counter()
        try:
            model = load_model(model_info["uri"], workdir / "model")
        except (MlflowException, OSError) as exc:
            raise TrackingError(f"cannot load model {model_info['uri']!r}: {exc}") from exc
        timings["load_s"] = time.perf_counter() - step
        schema = model.metadata.get_input_schema()
        wanted = schema.input_names() if schema is not None else None
        spec = getattr(model.unwrap_python_model(), "spec_", {})
        identifiers = list(spec.get("identifiers", []))
        out_path = workdir / "predictions.parquet"
        writer, rows, pending = None, 0, None
        unseen: dict[str, int] = {}   # categories the model never saw in training, per column
        absent: dict[str, int] = {}  # missing values the model's policy filled (or left to the model)
        # the Parquet writer works on its own thread (it releases the GIL), so writing chunk i
        # overlaps predicting chunk i + 1; one chunk in flight keeps memory at two chunks at most
        background = ThreadPoolExecutor(1, thread_name_prefix="trilho-write")
        step = time.perf_counter()
        try:
            for chunk in iter_chunks(path, chunk_rows, None if wanted is None else [*wanted, *identifiers]):
                if wanted is not None:
                    missing = [c for c in wanted if c not in chunk.columns]
                    if missing:
                        raise DataValidationError(f"input {source} lacks the model's columns {missing}; "
                                                  f"it needs {wanted}")
                    features = chunk[wanted]
                else:
                    features = chunk
                for col, n in unseen_counts(features, spec).items() if spec else ():
                    unseen[col] = unseen.get(col, 0) + n
                for col, n in features.isna().sum().items():
                    if n:
                        absent[col] = absent.get(col, 0) + int(n)
                try:
                    predicted = model.predict(features)
                except (MlflowException, ValueError, TypeError) as exc:
                    raise DataValidationError(f"input {source}, rows {rows + 1}-{rows + len(chunk)}: the model "
                                              f"refused them: {exc}") from None
                ids = chunk[[c for c in identifiers if c in chunk.columns]].reset_index(drop=True)
                predicted = predicted.reset_index(drop=True)
                if "prediction" in predicted:  # a handful of labels: dictionary-encoded, cheap to write
                    predicted["prediction"] = pd.Categorical(predicted["prediction"], categories=spec.get("classes"))
                table = pa.Table.from_pandas(pd.concat([ids, predicted], axis=1), preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(out_path, table.schema)
                if pending is not None:
                    pending.result()
                pending = background.submit(writer.write_table, table)
                rows += len(chunk)
            if pending is not None:
                pending.result()
        finally:
            background.shutdown(wait=True)
            if writer is not None:
                writer.close()
        timings["stream_s"] = time.perf_counter() - step  # read, check, predict, write: every chunk
        if writer is None:
            raise DataValidationError(f"input {source} has no rows to predict")
        manifest = {
            "model_uri": model_info["uri"], "requested_model": model_uri, "model_name": model_info["name"],
            "model_version": model_info["version"], "model_run_id": model_info.get("run_id", ""),
            "input": source, "input_sha256": digest, "input_bytes": size, "rows": rows,
            "output": lake.url(f"{prefix}/predictions.parquet"), "key": f"{prefix}/predictions.parquet",
            "columns": pq.read_schema(out_path).names,
            "unseen_categories": unseen, "missing_values": absent, "missing_policy": spec.get("missing", ""),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - start, 3),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        lake.put_file(f"{prefix}/predictions.parquet", out_path, overwrite=True)
        lake.put_bytes(manifest_key, json.dumps(manifest, indent=2).encode())  # last: marks completion
    return {**manifest, "skipped": False}
