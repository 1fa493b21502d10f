"""Batch prediction with a logged or registered model: chunked, validated, idempotent, into the lake.

Input: a CSV or Parquet file, local or in the lake. Each chunk goes through the model's pyfunc,
which checks it against the model's signature (a missing column or a wrong type is an error
naming it). Output: the input's identifier columns, the predicted label and one probability per
class, as Parquet, under ``<output>/<model>/<version>/<input sha256>/`` with a manifest written
last; the same model and input a second time write nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from trilho.data.tables import check_lines, check_size, is_parquet, iter_chunks, read_head, scan_file
from trilho.errors import ConfigError, DataValidationError, StorageError
from trilho.model.encoding import WRITTEN_MISSING, unmark, unseen_counts
from trilho.schemas import PredictionManifest
from trilho.settings import Settings
from trilho.storage import Lake, open_lake
from trilho.tracking.model import load_model, model_refusals, resolve_model

__all__ = ["predict_batch"]

log = logging.getLogger(__name__)


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
                  output: str = "predictions", chunk_rows: int = 250_000, explain: bool = False) -> PredictionManifest:
    """Predict every row of ``input_ref`` with the model; returns the manifest (``skipped`` if done
    before). ``explain``: each row also gets each feature's contribution to its answer
    (``contrib_<feature>``; the logged model's ``load_explainer`` says how), written apart from the
    plain predictions of the same model and input."""
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows}: must be at least 1")
    start = time.perf_counter()
    lake = lake or open_lake(settings)
    with tempfile.TemporaryDirectory(prefix="trilho-predict-") as tmp:
        workdir = Path(tmp)
        path, source = _local_input(input_ref, lake, workdir)
        _check_input(path, input_ref, settings)
        step = time.perf_counter()
        model_info = resolve_model(model_uri, settings.tracking_uri)
        timings = {"resolve_s": time.perf_counter() - step}
        scanned = scan_file(path)
        check_lines(path, scanned, Path(source).name)
        digest, size = scanned.sha256, scanned.bytes
        prefix = f"{output.strip('/')}/{model_info['ident']}/{digest}{'/explained' if explain else ''}"
        manifest_key = f"{prefix}/manifest.json"
        if lake.exists(manifest_key):
            done: PredictionManifest = json.loads(lake.get_bytes(manifest_key))
            log.info("predictions of %s by %s already in %s: skipped", source, model_info["uri"], prefix)
            return {**done, "skipped": True}
        step = time.perf_counter()
        model = load_model(model_info["uri"], workdir / "model", settings.tracking_uri)
        timings["load_s"] = time.perf_counter() - step
        step = time.perf_counter()
        if explain:
            _check_explains(model, model_info["uri"])
        streamed = _stream(model, path, source, workdir / "predictions.parquet", chunk_rows,
                           {"explain": True} if explain else None)
        timings["stream_s"] = time.perf_counter() - step  # read, check, predict, write: every chunk
        manifest: PredictionManifest = {
            "model_uri": model_info["uri"], "requested_model": model_uri, "model_name": model_info["name"],
            "model_version": model_info["version"], "model_run_id": model_info.get("run_id", ""),
            "input": source, "input_sha256": digest, "input_bytes": size, "rows": streamed.rows,
            "output": lake.url(f"{prefix}/predictions.parquet"), "key": f"{prefix}/predictions.parquet",
            "columns": streamed.columns, "unseen_categories": streamed.unseen, "missing_values": streamed.absent,
            "missing_policy": streamed.spec.get("missing", ""),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - start, 3),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        lake.put_file(f"{prefix}/predictions.parquet", workdir / "predictions.parquet", overwrite=True)
        lake.put_bytes(manifest_key, json.dumps(manifest, indent=2).encode())  # last: marks completion
    return {**manifest, "skipped": False}


def _check_input(path: Path, ref: str, settings: Settings) -> None:
    """Refuse an input over the size limit, or a CSV whose first line does not end within
    ``HEAD_BYTES`` (not table data), before the model is resolved or a row is parsed: the CSV
    reader would hold such a line whole in memory."""
    check_size(path, ref, settings.max_source_bytes)
    if not is_parquet(path):
        read_head(path, rows=1)


@dataclass
class _Streamed:
    spec: dict[str, Any]
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    unseen: dict[str, int] = field(default_factory=dict)  # categories the model never saw in training, per column
    absent: dict[str, int] = field(default_factory=dict)  # missing values the model's policy filled (or left)


def _check_explains(model: Any, uri: str) -> None:
    """Refuse ``explain`` for a model logged before trilho could explain its answers."""
    schema = model.metadata.get_params_schema()
    names = [p.name for p in schema.params] if schema is not None else []
    if "explain" not in names:
        raise ConfigError(f"model {uri} was logged before trilho could explain its answers (its signature has "
                          f"no 'explain' parameter); run its experiment again to log one that can, or predict "
                          "without --explain")


def _stream(model: Any, path: Path, source: str, out_path: Path, chunk_rows: int,
            params: dict[str, Any] | None = None) -> _Streamed:
    """Read, check, predict and write every chunk. The Parquet writer works on its own thread (it
    releases the GIL), so writing chunk i overlaps predicting chunk i + 1; one chunk in flight
    keeps memory at two chunks at most."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = model.metadata.get_input_schema()
    wanted = schema.input_names() if schema is not None else None
    done = _Streamed(spec=getattr(model.unwrap_python_model(), "spec_", {}))
    identifiers = list(done.spec.get("identifiers", []))
    writer, pending = None, None
    background = ThreadPoolExecutor(1, thread_name_prefix="trilho-write")
    try:
        for chunk in iter_chunks(path, chunk_rows, None if wanted is None else [*wanted, *identifiers]):
            if chunk.empty:  # a header line only: nothing to predict (the model would not be asked)
                continue
            features = _features(chunk, wanted, source, done)
            try:
                predicted = model.predict(features, params=params).reset_index(drop=True)
            except (*model_refusals(), ValueError, TypeError) as exc:  # type: ignore[misc]
                raise DataValidationError(f"input {source}, rows {done.rows + 1}-{done.rows + len(chunk)}: the model "
                                          f"refused them: {exc}") from None
            ids = chunk[[c for c in identifiers if c in chunk.columns]].reset_index(drop=True)
            if "prediction" in predicted and done.spec.get("classes"):  # a handful of labels: dictionary-encoded, cheap to write
                predicted["prediction"] = pd.Categorical(predicted["prediction"], categories=done.spec.get("classes"))
            table = pa.Table.from_pandas(pd.concat([ids, predicted], axis=1), preserve_index=False)
            writer = writer or pq.ParquetWriter(out_path, table.schema)
            if pending is not None:
                pending.result()
            pending = background.submit(writer.write_table, table)
            done.rows += len(chunk)
        if pending is not None:
            pending.result()
    finally:
        background.shutdown(wait=True)
        if writer is not None:
            writer.close()
    if writer is None:
        raise DataValidationError(f"no data rows: input {source} holds a header line only; nothing to predict")
    done.columns = pq.read_schema(out_path).names
    return done


def _features(chunk: pd.DataFrame, wanted: list[str] | None, source: str, done: _Streamed) -> pd.DataFrame:
    """The model's columns of a chunk (a missing one is an error naming it); counts what the model
    never saw and what is missing."""
    if wanted is not None:
        missing = [c for c in wanted if c not in chunk.columns]
        if missing:
            raise DataValidationError(f"input {source} lacks the model's columns {missing}; it needs {wanted}")
    features = chunk[wanted] if wanted is not None else chunk
    if done.spec:  # "?" and the like count as missing, not as unseen
        features = unmark(features, list(features.columns), done.spec.get("markers"),
                          done.spec.get("written", WRITTEN_MISSING))
    for col, n in unseen_counts(features, done.spec).items() if done.spec else ():
        done.unseen[col] = done.unseen.get(col, 0) + n
    for name, n in features.isna().sum().items():
        if n:
            done.absent[str(name)] = done.absent.get(str(name), 0) + int(n)
    return features
