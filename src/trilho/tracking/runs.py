"""MLflow runs: one experiment on one store, through one explicit client.

Params and metrics are sent with ``log_batch`` (one call per thousand values), artifacts as one
folder, the dataset by reference, the model as code plus files that load without pickle
(``trilho.tracking.model``). Work that waits on the server while the fits use the cores is
handed to ``Tracker.submit``: the tracker's own thread runs it, and the caller gets a future.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from trilho.errors import TrackingError
from trilho.execution.background import Stopped
from trilho.tracking import model as logged_model
from trilho.tracking.store import (
    brief,
    check_server,
    experiment_id,
    open_client,
    process_alive,
    read_pending,
    remember_unfinished,
    store_lock,
    write_pending,
)

__all__ = ["Tracker", "flatten", "tracking_key"]

log = logging.getLogger(__name__)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} for MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if not isinstance(value, str) else value
    return out


# what MLflow accepts in a param or metric name on every platform (its own rule also allows ':',
# except on Windows); anything else, such as a column named "weight (kg)", becomes "_"
_NAME_CHAR = re.compile(r"[^\w.\- /]")
_KEY_LIMIT = 250  # MLflow's longest param or metric name


def tracking_key(name: str) -> str:
    """``name`` as MLflow takes it for a param or a metric: other characters as "_", a name that
    reads as an odd path ("a//b", "a/", "/a") without its slashes, a long one cut and ended with a
    digest of the whole. A valid name comes back as it is."""
    key = _NAME_CHAR.sub("_", name)
    if "/" in key and (posixpath.normpath(key) != key or key.startswith("/")):
        key = key.replace("/", "_")
    return _with_digest(key, name) if len(key) > _KEY_LIMIT else key


def _with_digest(key: str, name: str) -> str:
    return f"{key[:_KEY_LIMIT - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _tracking_keys(names: Iterable[str]) -> dict[str, str]:
    """Each name's tracking key: valid names as they are, then the others, a digest keeping apart
    two that would otherwise share a key."""
    names = list(names)
    out = {name: name for name in names if tracking_key(name) == name}
    taken = set(out)
    for name in names:
        if name not in out:
            key = tracking_key(name)
            out[name] = key = _with_digest(key, name) if key in taken else key
            taken.add(key)
    return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


_INSERT_RACE_TRIES = 4


def _lost_insert_race(exc: BaseException) -> bool:
    """The store refused a row another client inserted a moment before (PostgreSQL, SQLite, MySQL wording)."""
    text = str(exc).lower()
    return any(words in text for words in ("unique constraint", "duplicate key", "duplicate entry"))


class Tracker:
    """One experiment on one tracking store; counts the seconds it spends talking to it."""

    def __init__(self, tracking_uri: str, experiment: str, pending_file: Path | None = None,
                 wait_s: float = 5.0) -> None:
        start = time.perf_counter()
        import mlflow  # noqa: F401 - loading the library, timed apart from talking to the store

        self.import_seconds = time.perf_counter() - start
        self.uri = tracking_uri
        self.seconds = 0.0
        self.breakdown: dict[str, float] = {}
        self.pending_file = pending_file
        self._background: ThreadPoolExecutor | None = None
        start = time.perf_counter()
        if tracking_uri.startswith(("http://", "https://")):
            check_server(tracking_uri, wait_s)
        try:
            # the first client of a fresh SQLite store creates and migrates it: one process at a time
            with store_lock(tracking_uri):
                self.client = open_client(tracking_uri)
                self.experiment_id = experiment_id(self.client, experiment)
        except TrackingError:  # says what the store holds and what to do already
            raise
        except Exception as exc:
            raise TrackingError(f"MLflow at {tracking_uri!r} is not usable ({type(exc).__name__}: {exc}); "
                                "start it or set MLFLOW_TRACKING_URI") from exc
        self.seconds += time.perf_counter() - start

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """``fn(*args)`` on the tracker's own thread, in the order submitted; its future holds the
        result or the error, for the caller to collect when it suits it."""
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="trilho-tracking")
        return self._background.submit(fn, *args)

    def close(self, cancel: bool = False) -> None:
        """Wait for the submitted work and let its thread go; ``cancel``: only for the call under way,
        the work not yet begun is dropped."""
        if self._background is not None:
            self._background.shutdown(wait=True, cancel_futures=cancel)
            self._background = None

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """The span of the work given to ``submit``: leaving it waits for that work, or, when left by
        an error or a stop, for the call under way only, so that nothing still reads what the
        caller's own clean-up is about to remove."""
        try:
            yield
        except BaseException:
            self.close(cancel=True)
            raise
        self.close()

    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except TrackingError:
            raise
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, (MlflowException, OSError)) or "requests" in type(exc).__module__:
                raise TrackingError(f"MLflow at {self.uri!r} failed to {what}: {brief(exc)}") from exc
            raise
        finally:
            spent = time.perf_counter() - start
            self.seconds += spent
            self.breakdown[what] = self.breakdown.get(what, 0.0) + spent

    @contextlib.contextmanager
    def run(self, name: str, tags: dict[str, str], parent: str | None = None,
            started: float | None = None) -> Iterator[str]:
        """An MLflow run that ends FINISHED, FAILED when the body raises, or KILLED when the process
        was stopped (``trilho.execution.background.Stopped``, or Ctrl-C); ``parent``: the run it is a
        child of; ``started``: when its work began (``time.time()``), where that was before the run
        could be recorded.

        If even that cannot be recorded (the server went away), the run id is remembered and the
        next ``close_stale_runs`` marks it.
        """
        tags = {**tags, "trilho.host": socket.gethostname(), "trilho.pid": str(os.getpid())}
        if parent:
            tags["mlflow.parentRunId"] = parent
        with self.timed("start a run"):
            start_time = None if started is None else int(started * 1000)
            run_id = self.client.create_run(self.experiment_id, start_time=start_time, tags=tags,
                                            run_name=name).info.run_id
        try:
            yield run_id
        except BaseException as exc:
            stopped = isinstance(exc, KeyboardInterrupt)
            try:
                with self.timed("end the run"):
                    self.client.set_terminated(run_id, "KILLED" if stopped else "FAILED")
            except Exception:
                remember_unfinished(self.pending_file, self.uri, run_id)
            else:
                if isinstance(exc, Stopped):
                    exc.runs.append(run_id)
            raise
        with self.timed("end the run"):
            self.client.set_terminated(run_id, "FINISHED")

    def log_values(self, run_id: str, params: dict[str, str] | None = None,
                   metrics: list[tuple[str, float, int]] | None = None) -> None:
        """Params and (key, value, step) metrics in as few batch calls as MLflow allows."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        pkeys = _tracking_keys(params or {})
        mkeys = _tracking_keys(dict.fromkeys(k for k, _, _ in metrics or []))
        p = [Param(pkeys[k], v[:6000]) for k, v in (params or {}).items()]
        m = [Metric(mkeys[k], float(v), now, int(s)) for k, v, s in (metrics or [])]
        with self.timed("log params and metrics"):
            for chunk in _chunks(p, 100):
                self.client.log_batch(run_id, params=chunk, synchronous=True)
            for chunk in _chunks(m, 1000):
                self.client.log_batch(run_id, metrics=chunk, synchronous=True)

    def log_repeats(self, run_id: str, folds: pd.DataFrame, metrics: list[str]) -> None:
        """The reference layout under ``run_id``: one child run per repeat (seed), its fold scores as steps."""
        for seed, group in folds.groupby("seed", sort=False):
            with self.run(f"seed_{seed}", {"seed": str(seed), "trilho.kind": "repeat"}, parent=run_id) as child:
                rows = [(m, v, int(f)) for m in metrics for f, v in zip(group["fold"], group[m], strict=True)]
                rows += [(f"{m}_mean_seed", float(group[m].mean()), 0) for m in metrics]
                self.log_values(child, metrics=rows)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        with self.timed("tag the run"):
            self.client.set_tag(run_id, key, value)

    def log_dataset(self, run_id: str, frame: pd.DataFrame, source: str, name: str, target: str,
                    sha256: str) -> None:
        """Record the training data by reference: its lake URI and the sha256 the lake already has
        (not a digest of the frame), a schema read from its first thousand rows, its size."""
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.entities import Dataset, DatasetInput, InputTag

        with self.timed("log the dataset"), warnings.catch_warnings():
            # MLflow hints about integer columns and ambiguous local sources; both are expected here
            warnings.simplefilter("ignore", UserWarning)
            sample = from_pandas(frame.head(1000), source=source, name=name, targets=target,
                                 digest=sha256[:10])._to_mlflow_entity()
            profile = json.dumps({"num_rows": int(len(frame)), "num_elements": int(frame.size), "sha256": sha256})
            entity = Dataset(name, sample.digest, sample.source_type, sample.source, sample.schema, profile)
            inputs = [DatasetInput(entity, [InputTag("mlflow.data.context", "training")])]
            for attempt in range(_INSERT_RACE_TRIES):
                try:
                    self.client.log_inputs(run_id, datasets=inputs)
                    break
                except Exception as exc:
                    # MLflow's store looks the data set up, then inserts it: another run that logged
                    # the same data set in between makes the insert break the unique key, and the
                    # whole call is rolled back. Again, the look-up finds that run's row.
                    if attempt + 1 == _INSERT_RACE_TRIES or not _lost_insert_race(exc):
                        raise
                    time.sleep(0.05 * (attempt + 1))

    def log_folder(self, run_id: str, folder: Path) -> None:
        with self.timed("upload artifacts"):
            self.client.log_artifacts(run_id, str(folder))

    def log_model(self, run_id: str, model_dir: Path, example: pd.DataFrame) -> str:
        """Log the files that ``save_model_files`` wrote as the run's pickle-free pyfunc; returns its URI."""
        with self.timed("log the model"):
            return logged_model.log_model(self.client, self.experiment_id, run_id, model_dir, example)

    def close_stale_runs(self) -> list[str]:
        """Mark FAILED the runs that trilho left RUNNING: its process died, or the server did.

        A run is stale when it carries this host's name and a process id that no longer runs, or
        when a previous process could not end it and wrote its id to the pending file.
        """
        closed: list[str] = []
        with self.timed("close stale runs"):
            pending = read_pending(self.pending_file)
            for run_id in pending.pop(self.uri, []):
                with contextlib.suppress(Exception):
                    if self.client.get_run(run_id).info.status == "RUNNING":
                        self._fail_run(run_id, "the tracking server went away before the run ended")
                        closed.append(run_id)
            runs = self.client.search_runs(
                [self.experiment_id], max_results=200,
                filter_string=f"attributes.status = 'RUNNING' and tags.`trilho.host` = '{socket.gethostname()}'")
            for run in runs:
                pid = int(run.data.tags.get("trilho.pid", "0") or 0)
                if pid and not process_alive(pid):
                    self._fail_run(run.info.run_id, f"process {pid} ended without closing the run")
                    closed.append(run.info.run_id)
            write_pending(self.pending_file, pending)
        for run_id in closed:
            log.warning("marked stale run %s FAILED", run_id)
        return closed

    def _fail_run(self, run_id: str, why: str) -> None:
        self.client.set_tag(run_id, "trilho.failure", why)
        self.client.set_terminated(run_id, "FAILED")
