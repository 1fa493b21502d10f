"""Many runs at once against one tracking store: the embedded SQLite file and a real `mlflow server`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST
from trilho.data.synthetic import diabetes

RUNS = 4


def _start_runs(workdir: Path, env: dict[str, str], csv: Path, model: str) -> list[subprocess.Popen]:
    """RUNS `trilho run` processes started together on one store (one thread each: 4 on 2 cores)."""
    args = [sys.executable, "-m", "trilho", "run", "--source", f"file:{csv}", "--set", 'source.sha256=""',
            "--set", f'registry.model_name="{model}"', *[a for item in FAST for a in ("--set", item)]]
    procs, logs = [], []
    for n in range(RUNS):
        logs.append(open(workdir / f"run-{n}.log", "wb"))  # noqa: SIM115 - closed below
        procs.append(subprocess.Popen([*args, "--summary-json", str(workdir / f"summary-{n}.json")], cwd=workdir,
                                      env={**env, "TRILHO_N_JOBS": "1"}, stdout=logs[-1], stderr=subprocess.STDOUT))
    for proc, log in zip(procs, logs, strict=True):
        proc.wait(timeout=400)
        log.close()
    return procs


def _check_all_landed(workdir: Path, procs: list[subprocess.Popen], tracking_uri: str, model: str) -> None:
    from mlflow.tracking import MlflowClient

    failed = {n: (workdir / f"run-{n}.log").read_text()[-2000:] for n, p in enumerate(procs) if p.returncode}
    assert not failed, failed
    summaries = [json.loads((workdir / f"summary-{n}.json").read_text()) for n in range(RUNS)]
    client = MlflowClient(tracking_uri)
    versions = client.search_model_versions(f"name = '{model}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, RUNS + 1))
    assert sorted(int(s["registry"]["version"]) for s in summaries) == list(range(1, RUNS + 1))
    for s in summaries:  # every run's results reached the store
        assert client.get_run(s["run_id"]).info.status == "FINISHED"
    # the promotions form one chain: a first champion, then each promoted challenger compared with
    # the champion of its moment, which it replaced. Two challengers that read the same champion
    # (the race) would both name it, and the alias would end on one whose comparison was not with
    # the version it replaced.
    decisions = {str(v.version): v.tags for v in versions}
    shown = {v: (t["trilho.gate.decision"], t.get("trilho.gate.against_version")) for v, t in decisions.items()}
    firsts = [v for v, tags in decisions.items() if "trilho.gate.against_version" not in tags]
    assert len(firsts) == 1, shown
    promoted = [v for v, tags in decisions.items() if tags["trilho.gate.decision"] == "promoted"]
    replaced = [decisions[v]["trilho.gate.against_version"] for v in promoted if v not in firsts]
    assert len(replaced) == len(set(replaced)), shown  # no champion was replaced twice
    champion = str(client.get_model_version_by_alias(model, "champion").version)
    assert champion in promoted and champion not in replaced, shown
    assert set(replaced) == set(promoted) - {champion}, shown  # every earlier champion was replaced once


@pytest.fixture
def shared_csv(workdir: Path) -> Path:
    path = workdir / "data.csv"
    diabetes(rows=300, seed=3).to_csv(path, index=False)
    return path


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    # the workdir fixture has already taken every TRILHO_, MLFLOW_ and AWS_ variable out of os.environ
    return {**os.environ, "TRILHO_CACHE_DIR": str(workdir / "cache"), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            **extra}


def test_concurrent_first_runs_on_a_fresh_embedded_store_all_land(workdir, shared_csv):
    """Four `trilho run` started at once in a fresh project: one ./mlflow.db, one ./lake."""
    assert not (workdir / "mlflow.db").exists()
    procs = _start_runs(workdir, _env(workdir), shared_csv, "load-embedded")
    _check_all_landed(workdir, procs, f"sqlite:///{workdir / 'mlflow.db'}", "load-embedded")


def test_concurrent_runs_against_a_tracking_server_all_land(workdir, shared_csv, mlflow_server):
    procs = _start_runs(workdir, _env(workdir, MLFLOW_TRACKING_URI=mlflow_server.url), shared_csv, "load-server")
    _check_all_landed(workdir, procs, mlflow_server.url, "load-server")


def test_concurrent_runs_against_a_team_server_on_postgresql_all_land(workdir, shared_csv, mlflow_pg_server,
                                                                     postgres):
    """The team's stack: mlflow server with two workers on PostgreSQL; runs, registry, gate, and the
    champion served from it."""
    import mlflow

    procs = _start_runs(workdir, _env(workdir, MLFLOW_TRACKING_URI=mlflow_pg_server.url), shared_csv, "load-pg")
    _check_all_landed(workdir, procs, mlflow_pg_server.url, "load-pg")
    mlflow.set_tracking_uri(mlflow_pg_server.url)
    rows = diabetes(rows=20, seed=9).drop(columns=["CLASS"])
    predicted = mlflow.pyfunc.load_model("models:/load-pg@champion").predict(rows)
    assert len(predicted) == 20 and set(predicted["prediction"]) <= {"N", "Y", "P"}
    # what the server wrote is in PostgreSQL's tables, not in a file beside it
    import psycopg

    with psycopg.connect(postgres.url("mlflow")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM model_versions WHERE name = 'load-pg'")
        assert cur.fetchone()[0] == RUNS
    assert not list(mlflow_pg_server.root.glob("*.db"))


def test_the_store_lock_is_a_file_beside_the_store(tmp_path):
    from trilho.tracking import sqlite_file, store_lock

    assert sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_file(f"sqlite:///{tmp_path}/x/m.db") == tmp_path / "x" / "m.db"
    assert sqlite_file("http://127.0.0.1:5000") is None and sqlite_file("sqlite:///:memory:") is None
    with store_lock(f"sqlite:///{tmp_path}/x/m.db", "gate"):
        assert (tmp_path / "x" / "m.db.gate.lock").exists()
    with store_lock("http://127.0.0.1:5000"):
        pass  # a server: nothing to lock here


@pytest.mark.parametrize("server", ["mlflow_server", "mlflow_pg_server"])
def test_the_gate_lock_on_a_server_waits_names_itself_and_takes_over_from_the_dead(server, request, workdir):
    import socket

    from mlflow.tracking import MlflowClient

    from trilho.errors import TrackingError
    from trilho.tracking import registry

    mlflow_server = request.getfixturevalue(server)
    client = MlflowClient(mlflow_server.url)
    lock = "gate-test.gate-lock"
    # held by a live process (this one): a second challenger waits, then says who holds what
    client.create_registered_model(lock, tags={"trilho.gate.holder": f"{socket.gethostname()}:{os.getpid()}",
                                               "trilho.gate.since": f"{time.time():.3f}"})
    start = time.monotonic()
    with pytest.raises(TrackingError, match=r"held the promotion gate for over 1s \(registered model "
                                            r"'gate-test.gate-lock'\); if no trilho run is deciding, delete it"), \
            registry.gate_lock(client, mlflow_server.url, "gate-test", wait_s=1.0):
        pass
    assert time.monotonic() - start >= 1.0
    # its holder dies: the lock is taken over at once, and released after
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client.set_registered_model_tag(lock, "trilho.gate.holder", f"{socket.gethostname()}:{dead.pid}")
    with registry.gate_lock(client, mlflow_server.url, "gate-test", wait_s=5.0):
        assert client.get_registered_model(lock).tags["trilho.gate.holder"].endswith(f":{os.getpid()}")
    assert not client.search_registered_models(f"name = '{lock}'")


def test_the_gate_lock_on_a_team_server_holds_under_a_crowd(mlflow_pg_server, workdir):
    """Eight challengers at once, five times each, on two server workers over PostgreSQL: never two
    inside the gate, and no error when a lock is released between another's attempt and its check."""
    import threading

    from mlflow.tracking import MlflowClient

    from trilho.tracking import registry

    inside, seen, errors = [0], [], []

    def challenger() -> None:
        client = MlflowClient(mlflow_pg_server.url)
        try:
            for _ in range(5):
                with registry.gate_lock(client, mlflow_pg_server.url, "crowd", wait_s=120):
                    inside[0] += 1
                    seen.append(inside[0])
                    time.sleep(0.005)
                    inside[0] -= 1
        except Exception as exc:  # noqa: BLE001 - reported below, by name
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=challenger) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    assert len(seen) == 40 and set(seen) == {1}


@pytest.mark.parametrize("server", ["embedded", "mlflow_server", "mlflow_pg_server"])
def test_runs_logging_the_same_new_dataset_at_once_all_record_it(server, request, workdir):
    """Concurrent runs on one data set: MLflow's store looks the data set up, then inserts it, in
    one transaction; two runs that both find nothing both insert, and one hits the unique key. Each
    run must still end with the data set as its input."""
    import threading

    from trilho.tracking import Tracker

    url = f"sqlite:///{workdir / 'mlflow.db'}" if server == "embedded" else request.getfixturevalue(server).url
    frame = diabetes(rows=50, seed=4)
    trackers = [Tracker(url, f"dataset-race-{server}") for _ in range(6)]
    runs = [t.client.create_run(t.experiment_id).info.run_id for t in trackers]
    errors: list[str] = []
    for round_ in range(8):  # a new data set each round: every round is a fresh race
        sha = f"{round_:02d}{'ab' * 31}"
        barrier = threading.Barrier(len(trackers))

        def log(tracker: Tracker, run_id: str, barrier: threading.Barrier, sha: str) -> None:
            barrier.wait()
            try:
                tracker.log_dataset(run_id, frame, "file:///data.csv", "race", "CLASS", sha)
            except Exception as exc:  # noqa: BLE001 - reported below, by name
                errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")

        threads = [threading.Thread(target=log, args=(tracker, run_id, barrier, sha))
                   for tracker, run_id in zip(trackers, runs, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors, errors[:2]
    client = trackers[0].client
    for run_id in runs:
        assert sorted(d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs) == \
            sorted(f"{r:02d}{'ab' * 4}" for r in range(8))
