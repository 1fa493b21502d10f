"""Clean stops and shared stores: a run stopped by a signal ends KILLED and leaves nothing behind;
the promotion gate's lock on a server is a lease that a dead holder loses within its lease time."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trilho.errors import TrackingError
from trilho.tracking import registry


def _group(pgid: int) -> list[str]:
    """The processes still in a process group: "pid command" for each."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended meanwhile
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            left.append(f"{stat.parent.name} {text[text.index('(') + 1:text.rindex(')')]}")
    return left


def _wait_for(check, what: str, proc: subprocess.Popen, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"trilho run ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {what} after {timeout_s:.0f}s")


@pytest.mark.training
@pytest.mark.parametrize(("signum", "code", "model"), [
    (signal.SIGTERM, 143, ["model.name=random_forest", "model.params={n_estimators=100, max_depth=6}"]),  # in processes
    (signal.SIGINT, 130, ["model.params.n_estimators=200", "model.params.max_depth=4"]),  # XGBoost: in threads
], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_run_ends_killed_and_leaves_nothing_behind(workdir, signum, code, model):
    tmp = workdir / "tmp"
    tmp.mkdir()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {**os.environ, "TMPDIR": str(tmp), "TRILHO_LAKE": str(workdir / "lake"), "MLFLOW_TRACKING_URI": uri,
           "TRILHO_CACHE_DIR": str(workdir / "cache"), "TRILHO_N_JOBS": "2"}
    sets = ["cv.n_repeats=10", "cv.duplicates=keep", 'registry.model_name=""', *model]  # some 20 s of fits
    cmd = [sys.executable, "-m", "trilho", "run", "--source", "synthetic:diabetes?rows=3000&seed=1"]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: whatever it starts can be found after
    clients: list[MlflowClient] = []  # made once the store exists: trilho alone creates it

    def running():
        if not list(tmp.glob("trilho-report-*")):
            return None  # the run's folder exists once the run does: the fits have begun
        if not clients:
            clients.append(MlflowClient(uri))
        found = clients[0].get_experiment_by_name("experimento_xgboost")
        runs = clients[0].search_runs([found.experiment_id]) if found else []
        return runs[0] if runs and runs[0].info.status == "RUNNING" else None

    try:
        run = _wait_for(running, "RUNNING run with its folder", proc)
        time.sleep(2.0)  # into the fits
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    name = signal.Signals(signum).name
    assert proc.returncode == code, err
    assert clients[0].get_run(run.info.run_id).info.status == "KILLED"
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == f"stopped by {name}: run {run.info.run_id} marked KILLED", err
    assert not list(tmp.glob("trilho-*")), list(tmp.iterdir())
    deadline = time.monotonic() + 3.0
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group(proc.pid)


# --- the gate lock on a server: a lease with a heartbeat


def _lock(client: MlflowClient, name: str, holder: str, beat: float) -> str:
    lock = f"{name}.gate-lock"
    client.create_registered_model(lock, tags={"trilho.gate.holder": holder, "trilho.gate.since": f"{beat:.3f}",
                                               "trilho.gate.heartbeat": f"{beat:.3f}"})
    return lock


def test_a_gate_lock_whose_holder_died_elsewhere_is_taken_over_within_its_lease(mlflow_server, workdir, caplog):
    client = MlflowClient(mlflow_server.url)
    name = f"lease-{uuid.uuid4().hex[:6]}"
    lock = _lock(client, name, "another-host:4242", time.time() - 120)  # its host went down two minutes ago
    caplog.set_level(logging.WARNING, logger="trilho.tracking.registry")
    start = time.monotonic()
    with registry.gate_lock(client, mlflow_server.url, name, wait_s=30, lease_s=2.0, beat_s=0.5):
        took = time.monotonic() - start
        tags = client.get_registered_model(lock).tags
        assert tags["trilho.gate.holder"] == f"{socket.gethostname()}:{os.getpid()}"
        first = float(tags["trilho.gate.heartbeat"])
        time.sleep(1.5)  # the holder's heartbeat moves while it holds the lock
        assert float(client.get_registered_model(lock).tags["trilho.gate.heartbeat"]) > first
    assert took < 10, took
    assert not client.search_registered_models(f"name = '{lock}'")
    assert any("another-host:4242" in r.getMessage() and "took over" in r.getMessage() for r in caplog.records)


def test_a_gate_lock_with_a_live_heartbeat_is_waited_for_and_the_wait_is_said(mlflow_server, workdir, caplog):
    client = MlflowClient(mlflow_server.url)
    name = f"lease-{uuid.uuid4().hex[:6]}"
    lock = _lock(client, name, "another-host:4343", time.time())
    done = threading.Event()

    def keep() -> None:  # a holder on another host that is alive and deciding: its heartbeat moves
        while not done.wait(0.3):
            client.set_registered_model_tag(lock, "trilho.gate.heartbeat", f"{time.time():.3f}")

    keeper = threading.Thread(target=keep, daemon=True)
    keeper.start()
    caplog.set_level(logging.WARNING, logger="trilho.tracking.registry")
    start = time.monotonic()
    try:
        with pytest.raises(TrackingError, match=r"held the promotion gate for over 4s .*another-host:4343"), \
                registry.gate_lock(client, mlflow_server.url, name, wait_s=4.0, lease_s=1.0, say_after_s=0.5,
                                   say_every_s=1.0):
            pass
    finally:
        done.set()
        keeper.join()
    assert time.monotonic() - start >= 4.0
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert 2 <= len(said) <= 6, said  # once, then every so often: not at every attempt
    assert all(lock in s and "another-host:4343" in s and "last heartbeat" in s for s in said), said
    assert client.get_registered_model(lock).tags["trilho.gate.holder"] == "another-host:4343"  # never taken
    client.delete_registered_model(lock)
