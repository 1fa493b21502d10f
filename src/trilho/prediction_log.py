"""The served model's prediction log: every request's rows and answers, to the lake, off the request path.

A request hands its record to ``PredictionLog.offer``, which only appends it to a bounded queue
(counted in rows): when the queue is full the record is dropped and counted, so a slow or failing
lake never slows or fails a request. One thread writes the queue out as Parquet every ``flush_s``
seconds (sooner once ``flush_rows`` rows wait), one file per write, under
``<prefix>/<model>/<version>/<YYYY-MM-DD>/<time>-<process>-<n>.parquet``; a write that fails
counts its rows as dropped. ``close`` writes what is left.

Each row of the log: ``request_id``, ``row`` (its place in the request), ``served_at`` (UTC),
``model_name``, ``model_version``, ``latency_ms`` (the request's), the model's features (numbers
as the model read them, missing ones as NaN; categories as text, as they were sent), the
identifier columns the request carried,
``prediction`` and one ``proba_<class>`` per class.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from trilho.storage import Lake

__all__ = ["PredictionLog", "Served", "log_key", "read_log"]

log = logging.getLogger(__name__)


@dataclass
class Served:
    """One answered request, as the log keeps it."""

    request_id: str
    served_at: float  # seconds since the epoch
    model_name: str
    model_version: str
    latency_ms: float
    numbers: np.ndarray             # the numeric features as the model read them (NaN: missing), a column each
    numeric: tuple[str, ...]        # their names
    texts: dict[str, list[Any]]     # the categorical features and identifiers, as they were sent
    labels: list[Any]
    proba: np.ndarray
    classes: list[str]


def log_key(prefix: str, name: str, version: str, when: float, n: int) -> str:
    stamp = datetime.fromtimestamp(when, UTC)
    return (f"{prefix.strip('/')}/{name or 'model'}/{version or 'unversioned'}/{stamp:%Y-%m-%d}/"
            f"{stamp:%H%M%S%f}-{os.getpid()}-{n:06d}.parquet")


def _column(values: list[Any], numeric: bool):
    """One column of the log as Arrow builds it from Python values (in C, where the values allow)."""
    import pyarrow as pa

    try:
        return pa.array(values, type=pa.float64() if numeric else pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # text in a numeric column, numbers in a text one
        if numeric:
            return pa.array(pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype("float64"))
        return pa.array([None if v is None or (isinstance(v, float) and v != v) else str(v) for v in values],
                        type=pa.string())


def _table(records: list[Served]):
    """The records as one Arrow table, a row per predicted row."""
    import pyarrow as pa

    n = np.fromiter((len(r.labels) for r in records), dtype=np.int64, count=len(records))
    out: dict[str, Any] = {
        "request_id": pa.array(np.repeat(np.array([r.request_id for r in records], dtype=object), n), type=pa.string()),
        "row": pa.array(np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)),
        "served_at": pa.array(np.repeat(np.array([r.served_at for r in records]) * 1e6, n).astype("int64"),
                              type=pa.timestamp("us", tz="UTC")),
        "model_name": pa.array(np.repeat(np.array([r.model_name for r in records], dtype=object), n), type=pa.string()),
        "model_version": pa.array(np.repeat(np.array([r.model_version for r in records], dtype=object), n),
                                  type=pa.string()),
        "latency_ms": pa.array(np.repeat(np.array([r.latency_ms for r in records]), n)),
    }
    first = records[0]
    same = all(r.numeric == first.numeric and r.classes == first.classes and r.texts.keys() == first.texts.keys()
               for r in records)
    if not same:  # a swap to a model of other features, or identifiers some requests lacked: one table each
        groups: dict[tuple, list[Served]] = {}
        for r in records:
            groups.setdefault((r.numeric, tuple(r.classes), tuple(r.texts)), []).append(r)
        return pa.concat_tables([_table(g) for g in groups.values()], promote_options="permissive")
    numbers = np.vstack([r.numbers for r in records]) if first.numeric else np.empty((0, 0))
    for j, col in enumerate(first.numeric):
        out[col] = pa.array(numbers[:, j], from_pandas=True)
    for col in first.texts:
        out[col] = _column(list(chain.from_iterable(r.texts[col] for r in records)), False)
    out["prediction"] = _column(list(chain.from_iterable(r.labels for r in records)), False)
    proba = np.vstack([r.proba for r in records])
    for j, c in enumerate(first.classes):
        out[f"proba_{c}"] = pa.array(proba[:, j])
    return pa.table(out)


class PredictionLog:
    """A bounded queue of answered requests and the thread that writes it to the lake."""

    def __init__(self, lake: Lake, prefix: str = "predictions/served", max_rows: int = 100_000,
                 flush_s: float = 5.0, flush_rows: int = 10_000, on_count: Callable[[str, int], None] | None = None) -> None:
        self.lake, self.prefix = lake, prefix
        self.max_rows, self.flush_s, self.flush_rows = max_rows, flush_s, flush_rows
        self.on_count = on_count or (lambda outcome, rows: None)
        self.written = self.dropped = 0
        self._queue: list[Served] = []
        self._rows = 0
        self._files = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._warned = 0.0
        self._thread = threading.Thread(target=self._run, name="trilho-prediction-log", daemon=True)
        self._thread.start()

    def offer(self, record: Served) -> bool:
        """Queue one request's record; False (and counted as dropped) when the queue is full."""
        rows = len(record.labels)
        with self._lock:
            if self._rows + rows > self.max_rows:
                self.dropped += rows
                full = True
            else:
                self._queue.append(record)
                self._rows += rows
                full = False
            waiting = self._rows
        if full:
            self.on_count("dropped", rows)
            return False
        if waiting >= self.flush_rows:
            self._wake.set()
        return True

    def _take(self) -> list[Served]:
        with self._lock:
            taken, self._queue, self._rows = self._queue, [], 0
        return taken

    def _write(self, records: list[Served]) -> None:
        if not records:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = sum(len(r.labels) for r in records)
        try:
            sink = pa.BufferOutputStream()
            pq.write_table(_table(records), sink)
            first = records[0]
            self._files += 1
            self.lake.put_bytes(log_key(self.prefix, first.model_name, first.model_version, first.served_at, self._files),
                                sink.getvalue().to_pybytes())
        except Exception as exc:  # noqa: BLE001 - whatever the lake does, serving goes on; the rows are counted
            self.dropped += rows
            self.on_count("dropped", rows)
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("prediction log: %d rows not written to %s (%s); serving goes on", rows, self.lake.uri,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            return
        self.written += rows
        self.on_count("written", rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            self._flush()

    def _flush(self) -> None:
        records = self._take()
        # one file per model version: a swap in the middle of a flush writes two
        by_version: dict[tuple[str, str], list[Served]] = {}
        for r in records:
            by_version.setdefault((r.model_name, r.model_version), []).append(r)
        for group in by_version.values():
            self._write(group)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the thread and write what waits (a clean stop loses nothing queued)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        self._flush()


def read_log(lake: Lake, prefix: str, since: datetime | None = None, until: datetime | None = None,
             version: str | None = None) -> pd.DataFrame:
    """The logged rows under ``prefix`` (a model's folder of the log), optionally of one version and
    served within [since, until); an empty frame where there are none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [k for k in lake.list(prefix.rstrip("/") + "/") if k.endswith(".parquet")]
    if version:
        keys = [k for k in keys if f"/{version}/" in k]
    if since is not None:  # the day folders before it hold nothing newer
        day = since.astimezone(UTC).strftime("%Y-%m-%d")
        keys = [k for k in keys if k.rsplit("/", 2)[-2] >= day]
    tables = [pq.read_table(pa.BufferReader(lake.get_bytes(k))) for k in sorted(keys)]
    if not tables:
        return pd.DataFrame()
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    if since is not None:
        frame = frame[frame["served_at"] >= pd.Timestamp(since).tz_convert("UTC")]
    if until is not None:
        frame = frame[frame["served_at"] < pd.Timestamp(until).tz_convert("UTC")]
    return frame.reset_index(drop=True)
