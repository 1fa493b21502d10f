"""The tracking store itself: its lock, its experiment, whether a server answers, runs left unfinished.

Every MLflow call trilho makes goes through ``trilho.tracking`` with an explicit client built for
one tracking URI (``open_client``); nothing sets MLflow's process-wide tracking URI, so two stores
in one process never cross.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trilho.errors import TrackingError

__all__ = ["check_server", "experiment_id", "open_client", "process_alive", "read_pending", "remember_unfinished",
           "sqlite_file", "store_lock", "write_pending"]


def open_client(tracking_uri: str) -> Any:
    """An MLflow client bound to this store alone."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


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
