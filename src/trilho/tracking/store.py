"""The tracking store itself: its locks, its experiment, whether a server answers, runs left unfinished.

Every MLflow call trilho makes goes through ``trilho.tracking`` with an explicit client built for
one tracking URI (``open_client``); nothing sets MLflow's process-wide tracking URI, so two stores
in one process never cross.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trilho.errors import TrackingError

__all__ = ["brief", "check_server", "experiment_id", "gate_lock", "latest_run", "log_page", "open_client", "process_alive",
           "read_pending", "remember_unfinished", "sqlite_file", "store_lock", "write_pending"]

log = logging.getLogger(__name__)


def open_client(tracking_uri: str) -> Any:
    """An MLflow client bound to this store alone. A SQLite store that cannot be opened is one
    ``TrackingError`` that says what the file holds, and that a half-built one can go."""
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except Exception as exc:
        path = sqlite_file(tracking_uri)
        if path is None or not path.is_file():
            raise
        raise TrackingError(_unopened(path, exc)) from exc


def _unopened(path: Path, exc: BaseException) -> str:
    """Why the SQLite store at ``path`` did not open, in one line: what it holds, and what to do."""
    import sqlite3

    cause = " ".join(str(exc).split())[:200]
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = con.execute("SELECT version_num FROM alembic_version").fetchone() \
                if "alembic_version" in tables else None
            runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
            versions = con.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] \
                if "model_versions" in tables else 0
    except sqlite3.Error as read:
        return (f"the tracking store {path} cannot be read as SQLite ({read}; MLflow: {cause}): move it aside and "
                "run again to start a new store, or set MLFLOW_TRACKING_URI to another")
    if runs == 0 and versions == 0:
        return (f"the tracking store {path} is half-built ({len(tables)} tables, schema version "
                f"{version[0] if version else 'none'}; MLflow: {cause}): a process stopped while creating it (a full "
                f"disk?). It holds no run and no model: remove it (rm {path}) and run again")
    return (f"the tracking store {path} holds {runs} runs and {versions} model versions but does not open "
            f"(MLflow: {cause}); keep a copy, then `mlflow db upgrade sqlite:///{path}` if its schema is behind, "
            "or set MLFLOW_TRACKING_URI to another store")


_FAILED_FILES = re.compile(r"^##### File (.+?) #####$", re.M)


def brief(exc: BaseException) -> str:
    """MLflow's message in one line: a download that failed file by file (one paragraph a file) as
    the count, the first file and its cause, and where a full disk is to blame, which folder."""
    text = str(exc)
    files = _FAILED_FILES.findall(text)
    if not files:
        return " ".join(text.split())[:500]
    first = text[text.index("#####", text.index(files[0])) + 5:].strip().splitlines()[0]
    said = f"{len(files)} files could not be downloaded, the first {files[0]!r}: {first[:300]}"
    if "[Errno 28]" in text:
        said += (f"; the disk is full: free some space there, or point TMPDIR (temporary files, now "
                 f"{tempfile.gettempdir()!r}) at a disk with room")
    return said


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative or absolute), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def store_lock(tracking_uri: str, purpose: str = "store") -> Iterator[None]:
    """An exclusive lock beside a SQLite tracking store (``mlflow.db.store.lock``), held while
    processes on this machine create or migrate it (``store``) or move its registry aliases
    (``gate``); nothing for other stores, whose server serialises its own schema."""
    path = sqlite_file(tracking_uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.{purpose}.lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


GATE_WAIT_S = 900.0  # how long a challenger waits for another's gate (a re-evaluation re-fits)
GATE_LEASE_S = 30.0  # a gate lock whose heartbeat stood still this long, to a waiter's eyes, has lost its holder
GATE_BEAT_S = 5.0  # how often the holder of a gate lock moves its heartbeat
GATE_SAY_AFTER_S, GATE_SAY_EVERY_S = 5.0, 60.0  # a waiting challenger says so after this long, then this often
_HOLDER, _SINCE, _BEAT, _TOKEN = "trilho.gate.holder", "trilho.gate.since", "trilho.gate.heartbeat", "trilho.gate.token"


@contextlib.contextmanager
def gate_lock(client: Any, tracking_uri: str, name: str, wait_s: float = GATE_WAIT_S, *, lease_s: float = GATE_LEASE_S,
              beat_s: float = GATE_BEAT_S, say_after_s: float = GATE_SAY_AFTER_S,
              say_every_s: float = GATE_SAY_EVERY_S) -> Iterator[None]:
    """Held while one challenger of the registered model ``name`` is decided and the aliases move, so
    that two challengers arriving at once are decided one after the other.

    A SQLite store: a file lock beside it (released by the system if the process dies). Any other
    store: a registered model named ``<name>.gate-lock``, created to take the lock and deleted to
    release it; the database's unique names make its creation atomic, on any backend. The lock is a
    lease: its holder moves the ``trilho.gate.heartbeat`` tag every ``beat_s`` from a thread of its
    own, and a lock whose heartbeat has not moved for ``lease_s`` (or whose holder's process ended on
    this host) is taken over. A waiter says what it waits for after ``say_after_s``, then every
    ``say_every_s``, and gives up after ``wait_s``.
    """
    if sqlite_file(tracking_uri) is not None:
        with store_lock(tracking_uri, "gate"):
            yield
        return
    lock = f"{name}.gate-lock"
    token = _take_gate(client, lock, name, wait_s, _Lease(lease_s), (say_after_s, say_every_s))
    heartbeat = _Heartbeat(open_client(tracking_uri), lock, token, beat_s)
    try:
        yield
    finally:
        heartbeat.stop()
        _release_gate(client, lock, token)


def _take_gate(client: Any, lock: str, name: str, wait_s: float, lease: _Lease, say: tuple[float, float]) -> str:
    """Create the lock, taking it over from a holder that is gone; returns this holder's token."""
    from mlflow.exceptions import MlflowException

    holder, token = f"{socket.gethostname()}:{os.getpid()}", uuid.uuid4().hex
    start = time.monotonic()
    say_at = start + say[0]
    while True:
        now = f"{time.time():.3f}"
        try:
            client.create_registered_model(lock, tags={_HOLDER: holder, _SINCE: now, _BEAT: now, _TOKEN: token},
                                           description=f"trilho's promotion gate for {name!r} is deciding; deleted after")
            return token
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                # the lock existed when the store tried to create it, and was released before the
                # store looked it up to word its refusal (MLflow's SQL store does both): try again
                continue
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = _gate_tags(client, lock)
        if tags is None:
            continue  # released meanwhile
        gone = lease.gone(tags)
        if gone and _delete_unchanged(client, lock, tags):
            log.warning("took over the promotion gate's lock %r from %s: %s", lock, tags.get(_HOLDER, "?"), gone)
            continue
        waited = time.monotonic() - start
        if waited > wait_s:
            raise TrackingError(f"another challenger of {name!r} held the promotion gate for over {wait_s:.0f}s "
                                f"(registered model {lock!r}); if no trilho run is deciding, delete it "
                                f"({_held_by(tags)})")
        if time.monotonic() >= say_at:
            log.warning("waiting %.0fs for the promotion gate of %r (registered model %r), %s", waited, name, lock,
                        _held_by(tags))
            say_at = time.monotonic() + say[1]
        time.sleep(0.1 + random.random() * 0.2)


class _Lease:
    """Whether a gate lock's holder is gone: its process ended on this host, or the lock's heartbeat
    has not moved for ``lease_s`` while this waiter watched. The waiter's own clock measures that,
    so that a host whose clock runs ahead never takes a live holder's lock."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._beat: tuple[str | None, ...] = ()
        self._still_since = 0.0

    def gone(self, tags: dict[str, str]) -> str | None:
        host, _, pid = tags.get(_HOLDER, "").rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
            return f"its process {pid} on this host has ended"
        beat, now = (tags.get(_HOLDER), tags.get(_TOKEN), tags.get(_BEAT, tags.get(_SINCE))), time.monotonic()
        if beat != self._beat:
            self._beat, self._still_since = beat, now
        elif now - self._still_since > self.lease_s:
            return f"its heartbeat has not moved for {now - self._still_since:.0f}s"
        return None


class _Heartbeat:
    """The holder's daemon thread: every ``beat_s`` it moves the lock's heartbeat, until stopped or
    until the lock is no longer this holder's (taken over after a lease without a beat)."""

    def __init__(self, client: Any, lock: str, token: str, beat_s: float) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(client, lock, token, beat_s), daemon=True,
                                        name="trilho-gate-heartbeat")
        self._thread.start()

    def _beat(self, client: Any, lock: str, token: str, beat_s: float) -> None:
        while not self._stopped.wait(beat_s):
            try:
                tags = _gate_tags(client, lock)
                if tags is None or tags.get(_TOKEN) != token:
                    log.warning("the promotion gate's lock %r is no longer this process's: its heartbeat stops", lock)
                    return
                client.set_registered_model_tag(lock, _BEAT, f"{time.time():.3f}")
            except Exception as exc:  # noqa: BLE001 - the next beat tries again; the lease allows a few misses
                log.warning("could not move the heartbeat of the promotion gate's lock %r: %s", lock, exc)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10.0)  # a beat in flight ends on its own: the thread is a daemon


def _gate_tags(client: Any, lock: str) -> dict[str, str] | None:
    """The lock's tags, or None when there is no lock."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(lock).tags)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _delete_unchanged(client: Any, lock: str, seen: dict[str, str]) -> bool:
    """Delete the lock if it is still the one seen (not one that another waiter took over meanwhile)."""
    from mlflow.exceptions import MlflowException

    tags = _gate_tags(client, lock)
    if tags is None or any(tags.get(key) != seen.get(key) for key in (_HOLDER, _TOKEN, _SINCE, _BEAT)):
        return False
    try:
        client.delete_registered_model(lock)
    except MlflowException:
        return False  # another waiter deleted it first
    return True


def _release_gate(client: Any, lock: str, token: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # a lock left behind is taken over once its lease runs out
        tags = _gate_tags(client, lock)
        if tags is not None and tags.get(_TOKEN) == token:
            client.delete_registered_model(lock)
        else:
            log.warning("the promotion gate's lock %r was taken over while this process held it", lock)


def _held_by(tags: dict[str, str]) -> str:
    """Who holds a gate lock and how long ago its heartbeat last moved, in words."""
    try:
        beat = f"its last heartbeat {time.time() - float(tags.get(_BEAT, tags.get(_SINCE, ''))):.0f}s ago"
    except ValueError:
        beat = "no heartbeat"
    return f"held by {tags.get(_HOLDER, 'an unknown holder')}, {beat}"


def experiment_id(client: Any, name: str) -> str:
    """The experiment's id, creating it; another process creating it at the same moment is fine."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # it was created meanwhile (a server with several clients)
        if found is None:
            raise
        return found.experiment_id


def remember_unfinished(pending_file: Path | None, uri: str, run_id: str) -> None:
    """Note a run that could not be ended, so that the next start marks it FAILED."""
    if pending_file is None:
        return
    pending = read_pending(pending_file)
    pending.setdefault(uri, []).append(run_id)
    write_pending(pending_file, pending)


def read_pending(path: Path | None) -> dict[str, list[str]]:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_pending(path: Path | None, pending: dict[str, list[str]]) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: v for k, v in pending.items() if v}))


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_server(uri: str, wait_s: float = 5.0) -> None:
    """Fail in seconds, not minutes of client retries, when the tracking server is not there."""
    import requests

    deadline = time.monotonic() + wait_s
    while True:
        try:
            resp = requests.get(uri.rstrip("/") + "/health", timeout=min(5.0, max(wait_s, 1.0)))
            break
        except requests.RequestException as exc:
            if time.monotonic() >= deadline:
                raise TrackingError(
                    f"MLflow server {uri} is not reachable ({type(exc).__name__}); start it (trilho server, "
                    "or docker compose up mlflow) or point MLFLOW_TRACKING_URI elsewhere") from None
            time.sleep(0.5)
    if resp.status_code != 200:
        raise TrackingError(f"MLflow server {uri} answered /health with HTTP {resp.status_code}; "
                            "check the address and the server's --allowed-hosts")


def latest_run(tracking_uri: str, experiment: str) -> str | None:
    """The run id of the newest ``trilho run`` in the MLflow experiment named ``experiment``, or None."""
    client = open_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string="tags.`trilho.kind` = 'experiment'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def log_page(tracking_uri: str, run_id: str, page: Path) -> None:
    """A run's HTML page into its artifacts, as ``report.html`` (beside the rest of its report folder)."""
    import shutil
    import tempfile

    client = open_client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="trilho-page-") as tmp:
        copy = Path(tmp) / "report.html"
        shutil.copyfile(page, copy)
        client.log_artifact(run_id, str(copy))
