"""trilho on live services: SeaweedFS as the S3 store, a real ``mlflow server``, faults between them."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.support.services import ACCESS_KEY, SECRET_KEY, FaultProxy, MlflowServer, free_port
from trilho import StorageError, TrackingError, load_settings
from trilho.serving.predict import predict_batch
from trilho.storage import S3Lake, open_lake
from trilho.tracking import Tracker
from trilho.tracking.model import load_model
from trilho.workflows.run import run_experiment

pytestmark = pytest.mark.timeout(300)


def live_settings(workdir: Path, endpoint: str, tracking_uri: str, **extra):
    return load_settings(
        env_file=None, lake=f"s3://data-{uuid.uuid4().hex[:8]}/lake", s3_endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, tracking_uri=tracking_uri,
        cache_dir=workdir / "cache", **extra)


@pytest.fixture
def fast_http(monkeypatch):
    """A dead server should cost seconds, not MLflow's default minutes of retries."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_end_to_end_on_seaweedfs_and_mlflow_server(workdir, seaweed, mlflow_server, small_experiment, tmp_path):
    settings = live_settings(workdir, seaweed.endpoint, mlflow_server.url)
    assert "AWS_ACCESS_KEY_ID" not in os.environ  # proxied artifacts: the MLflow client holds no S3 keys
    result = run_experiment(small_experiment, settings)
    s = result.summary
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(s["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["accuracy_mean"] == pytest.approx(s["cv"]["metrics"]["accuracy"]["mean"])

    lake = open_lake(settings)
    assert isinstance(lake, S3Lake)
    # the raw object comes back byte for byte (sha256 round trip) next to its manifest
    raw = lake.download(s["lake"]["raw"], tmp_path / "raw.csv")
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == s["data"]["sha256"]
    assert json.loads(lake.get_bytes(s["lake"]["manifest"]))["rows"] == 300
    # every artifact, read back through the server, equals the copy in the lake's reports/
    names = [a.path for a in client.list_artifacts(s["run_id"]) if not a.is_dir]
    assert {"results.csv", "results.json", "cv_boxplot.png", "confusion_matrix.png", "classification_report.txt",
            "validation_report.json", "manifest.json", "config.json"} <= set(names)
    for name in names:
        through_server = Path(mlflow.artifacts.download_artifacts(
            run_id=s["run_id"], artifact_path=name, dst_path=str(tmp_path / "dl"), tracking_uri=mlflow_server.url))
        assert through_server.read_bytes() == lake.get_bytes(f"reports/{s['run_id']}/{name}"), name
    assert json.loads(lake.get_bytes(f"reports/{s['run_id']}/summary.json"))["run_id"] == s["run_id"]
    assert lake.exists(f"reports/{s['run_id']}/model/booster.ubj")
    # the server really put them in the MLflow bucket on the store
    stored = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(s["run_id"] in k and k.endswith("results.csv") for k in stored)
    # the model loads back through the server and predicts the data's own labels
    mlflow.set_tracking_uri(mlflow_server.url)
    model = mlflow.pyfunc.load_model(s["model_uri"])
    rows = raw_frame(raw).drop(columns=["CLASS", "ID", "No_Pation"]).head(20)
    assert set(model.predict(rows)["prediction"]) <= {"N", "Y", "P"}
    # registered through the server; batch prediction from the S3 lake into the S3 lake, idempotent
    version = s["registry"]["version"]
    done = predict_batch(f"models:/diabetes-xgboost/{version}", s["lake"]["raw"], settings, chunk_rows=100)
    assert done["rows"] == 300 and done["output"].startswith(settings.lake)
    assert lake.exists(done["key"]) and predict_batch(f"models:/diabetes-xgboost/{version}", s["lake"]["raw"],
                                                      settings)["skipped"]


def raw_frame(path: Path):
    from trilho.data.tables import read_table

    return read_table(path)


def test_fault_04_wrong_credentials_fail_clearly(workdir, seaweed):
    bad = live_settings(workdir, seaweed.endpoint, "sqlite:///x.db").model_copy(
        update={"aws_secret_access_key": load_settings(env_file=None, aws_secret_access_key="not-the-secret-42").aws_secret_access_key})
    with pytest.raises(StorageError) as err:
        open_lake(bad)
    message = str(err.value)
    assert "refused" in message and "(403)" in message and "AWS_SECRET_ACCESS_KEY" in message and seaweed.endpoint in message
    assert "not-the-secret-42" not in message and SECRET_KEY not in message


def test_fault_02_store_cut_mid_upload_leaves_no_object_and_a_rerun_cleans_up(workdir, seaweed, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 * 1024**2))  # three 16 MiB parts
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    direct = live_settings(workdir, seaweed.endpoint, "sqlite:///x.db")
    open_lake(direct)  # creates the bucket
    proxy = FaultProxy(seaweed.port, cut_after_bytes=20 * 1024**2)
    try:
        through_proxy = direct.model_copy(update={"s3_endpoint_url": proxy.endpoint})
        lake = open_lake(through_proxy)
        with pytest.raises(StorageError, match=r"cannot upload 'raw/big/big.bin'"):
            lake.put_file("raw/big/big.bin", big)
    finally:
        proxy.close()
    bucket = direct.lake.removeprefix("s3://").split("/")[0]
    s3 = seaweed.client()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="lake/raw/big/")  # no partial object
    left = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["lake/raw/big/big.bin"]  # the cut left an unfinished upload
    # the next write under raw/, of another key, once the store is back: the stale upload is aborted
    rerun = open_lake(direct.model_copy(update={"stale_upload_s": 0.0}))
    assert rerun.put_file("raw/other/big.bin", big) is True
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # and the object arrives whole
    assert rerun.put_file("raw/big/big.bin", big) is True
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    back = rerun.download("raw/big/big.bin", tmp_path / "back.bin")
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert rerun.put_file("raw/big/big.bin", big) is False  # and is never written twice


def test_run_left_running_by_a_killed_process_is_marked_failed(workdir, mlflow_server):
    code = ("import os,sys; from trilho.tracking import Tracker\n"
            "t = Tracker(sys.argv[1], 'stale-check')\n"
            "with t.run('doomed', {}) as run_id:\n"
            "    print(run_id, flush=True); os._exit(9)\n")
    child = subprocess.run([sys.executable, "-c", code, mlflow_server.url], capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stderr
    run_id = child.stdout.split()[0]
    client = MlflowClient(mlflow_server.url)
    assert client.get_run(run_id).info.status == "RUNNING"
    closed = Tracker(mlflow_server.url, "stale-check").close_stale_runs()
    assert run_id in closed
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "ended without closing" in run.data.tags["trilho.failure"]


def test_fault_16_server_down_at_start_fails_fast(workdir, small_experiment):
    from tests.support.services import free_port

    settings = load_settings(env_file=None, lake=str(workdir / "lake"), tracking_uri=f"http://127.0.0.1:{free_port()}",
                             mlflow_wait_s=1.0, cache_dir=workdir / "cache")
    with pytest.raises(TrackingError, match="not reachable.*trilho server"):
        run_experiment(small_experiment, settings)


def test_fault_17_server_dying_mid_run_loses_nothing_and_the_run_is_closed_later(workdir, seaweed, small_experiment, fast_http,
                                                                        tmp_path):
    server = MlflowServer(tmp_path / "mlflow", (tmp_path / "artifacts").as_uri()).start()
    try:
        settings = live_settings(workdir, seaweed.endpoint, server.url)

        def kill_when_trained(_stage, done, total):
            if done == total:
                server.kill()

        with pytest.raises(TrackingError, match="nothing is lost: the results and the model are in s3://"):
            run_experiment(small_experiment, settings, progress=kill_when_trained)
        lake = open_lake(settings)
        reports = lake.list("reports/")
        run_id = reports[0].split("/")[1]
        for name in ("results.csv", "summary.json", "cv_boxplot.png", "model/booster.ubj", "model/spec.json"):
            assert f"reports/{run_id}/{name}" in reports
        summary = json.loads(lake.get_bytes(f"reports/{run_id}/summary.json"))
        assert summary["cv"]["metrics"]["accuracy"]["n"] == 5 and "tracking_error" in summary

        server.start()  # back, on the same store: the next start closes the run the crash left open
        client = MlflowClient(server.url)
        assert client.get_run(run_id).info.status == "RUNNING"
        tracker = Tracker(server.url, "experimento_xgboost", pending_file=settings.cache_dir / "unfinished_runs.json")
        assert tracker.close_stale_runs() == [run_id]
        assert client.get_run(run_id).info.status == "FAILED"
        assert tracker.close_stale_runs() == []
    finally:
        server.stop()


def test_direct_artifact_mode_of_the_reference(workdir, seaweed, small_experiment, tmp_path, monkeypatch):
    """``--default-artifact-root s3://...`` without proxying: the client writes to S3 itself."""
    s3 = seaweed.client()
    s3.create_bucket(Bucket="mlflow-direct")
    server = MlflowServer(tmp_path / "mlflow", "unused", env=seaweed.env())
    server.start_direct = True
    try:
        server.start(extra=["--no-serve-artifacts", "--default-artifact-root", "s3://mlflow-direct/"])
        for name, value in seaweed.env().items():
            monkeypatch.setenv(name, value)
        settings = live_settings(workdir, seaweed.endpoint, server.url)
        result = run_experiment(small_experiment, settings)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-direct").get("Contents", [])]
        assert any(result.run_id in k and k.endswith("results.csv") for k in keys)
        model = load_model(result.summary["model_uri"], tmp_path / "loaded", server.url)  # this server's alone
        assert model.metadata.signature is not None
    finally:
        server.stop()


def test_init_store_creates_both_buckets_idempotently(workdir, seaweed):
    env = {**os.environ, "TRILHO_S3_ENDPOINT_URL": seaweed.endpoint, "AWS_ACCESS_KEY": ACCESS_KEY,
           "AWS_SECRET_KEY": SECRET_KEY, "BUCKET_DATA": "init-data", "BUCKET_MLFLOW": "init-mlflow"}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "trilho", "init-store"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "s3://init-data: ready" in done.stdout and "s3://init-mlflow: ready" in done.stdout
    names = {b["Name"] for b in seaweed.client().list_buckets()["Buckets"]}
    assert {"init-data", "init-mlflow"} <= names
    wrong = subprocess.run([sys.executable, "-m", "trilho", "init-store"], env={**env, "AWS_SECRET_KEY": "nope-nope"},
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "refused" in wrong.stderr and "nope-nope" not in wrong.stderr


def test_trilho_server_brings_up_mlflow_with_proxied_artifacts(workdir):
    from tests.support.services import _wait, free_port

    port = free_port()
    log = workdir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trilho", "server", "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import requests

        url = f"http://127.0.0.1:{port}"
        _wait(lambda: requests.get(url + "/health", timeout=1).status_code == 200, "trilho server", proc, log, 90)
        tracker = Tracker(url, "served")
        with tracker.run("hello", {}) as run_id:
            (workdir / "note.txt").write_text("hi")
            tracker.client.log_artifact(run_id, str(workdir / "note.txt"))
        assert (workdir / "mlartifacts").is_dir() and list((workdir / "mlartifacts").rglob("note.txt"))
        assert (workdir / "mlflow.db").is_file()
        # SIGTERM to trilho alone (as a service manager sends it): MLflow and its workers go too
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _listening(port):
            time.sleep(0.2)
        assert not _listening(port), "MLflow is still listening after trilho server was stopped"
    finally:
        from tests.support.services import _stop

        _stop(proc)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_fault_07_a_byte_changed_in_transit_is_never_reported_as_written(workdir, seaweed, tmp_path):
    from trilho.data.ingest import ingest

    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i * 2},MARKERX{i % 2}\n" for i in range(1000)))
    direct = live_settings(workdir, seaweed.endpoint, "sqlite:///x.db")
    open_lake(direct)
    proxy = FaultProxy(seaweed.port, rewrite=(b"MARKERX1\n1", b"MARKERY1\n1"))
    try:
        lake = open_lake(direct.model_copy(update={"s3_endpoint_url": proxy.endpoint}))
        with pytest.raises(StorageError, match=r"cannot upload 'raw/rows/.*BadDigest"):  # the store checked the MD5
            ingest(f"file:{csv}", lake, direct, "rows")
        assert proxy.rewritten == 1
    finally:
        proxy.close()
    lake = open_lake(direct)
    assert lake.list("raw/rows/") == []  # neither the changed object nor a manifest
    done = ingest(f"file:{csv}", lake, direct, "rows")  # the next ingest writes it whole
    assert not done.skipped and lake.digest(done.key) == (hashlib.sha256(csv.read_bytes()).hexdigest(),
                                                          csv.stat().st_size)


def test_a_lake_whose_raw_object_went_missing_or_changed_is_repaired(workdir, seaweed, tmp_path):
    from trilho.data.ingest import ingest

    csv = tmp_path / "rows.csv"
    csv.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(100)))
    settings = live_settings(workdir, seaweed.endpoint, "sqlite:///x.db")
    lake = open_lake(settings)
    first = ingest(f"file:{csv}", lake, settings, "rows")
    lake.delete(first.key)  # the object is gone, its manifest kept
    again = ingest(f"file:{csv}", lake, settings, "rows")
    assert not again.skipped and lake.digest(first.key)[0] == first.manifest["sha256"]
    assert ingest(f"file:{csv}", lake, settings, "rows").skipped


def test_fault_14_two_writers_of_one_raw_object_write_it_once(workdir, seaweed, tmp_path, monkeypatch):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024**2))  # two parts
    lake = open_lake(live_settings(workdir, seaweed.endpoint, "sqlite:///x.db"))
    assert lake.put_file("raw/x/big.bin", big) is True
    assert lake.put_bytes("raw/x/manifest.json", b"{}") is True
    monkeypatch.setattr(lake, "exists", lambda key: False)  # the second writer looked before the first finished
    assert lake.put_file("raw/x/big.bin", big) is False  # the store's conditional write refused it
    assert lake.put_bytes("raw/x/manifest.json", b'{"other": 1}') is False
    assert lake.get_bytes("raw/x/manifest.json") == b"{}"
    s3 = seaweed.client()
    bucket = lake.bucket
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # the refused upload was aborted


_INGEST_CHILD = r"""
import sys
from trilho import load_settings
from trilho.data.ingest import ingest
from trilho.storage import open_lake
settings = load_settings(env_file=None, lake=sys.argv[2], s3_endpoint_url=sys.argv[3], aws_access_key_id=sys.argv[4],
                         aws_secret_access_key=sys.argv[5])
ingest("file:" + sys.argv[1], open_lake(settings), settings, "big")
"""


def test_fault_03_an_ingest_killed_mid_upload_leaves_no_object_and_the_next_cleans_up(workdir, seaweed, tmp_path):
    import time as clock

    big = tmp_path / "big.csv"
    big.write_bytes(b"a,b\n" + b"1,2\n" * (60 * 1024**2 // 4))  # 60 MiB: four parts
    settings = live_settings(workdir, seaweed.endpoint, "sqlite:///x.db")
    open_lake(settings)
    child = subprocess.Popen([sys.executable, "-c", _INGEST_CHILD, str(big), settings.lake, seaweed.endpoint,
                              ACCESS_KEY, SECRET_KEY])
    s3, bucket = seaweed.client(), settings.lake.removeprefix("s3://").split("/")[0]
    deadline = clock.monotonic() + 60
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads") and clock.monotonic() < deadline:
        assert child.poll() is None, "the ingest ended before its upload could be interrupted"
        clock.sleep(0.05)
    child.kill()  # SIGKILL: no handler runs
    child.wait()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert not [o for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if o["Key"].endswith("big.csv")]
    from trilho.data.ingest import ingest

    lake = open_lake(settings.model_copy(update={"stale_upload_s": 0.0}))
    done = ingest(f"file:{big}", lake, settings, "big")
    assert not done.skipped and s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert lake.digest(done.key, read=False) == (hashlib.sha256(big.read_bytes()).hexdigest(), big.stat().st_size)


def test_fault_06_a_key_without_write_permission_is_refused_clearly(workdir, seaweed, tmp_path):
    from tests.support.services import READER_KEY, READER_SECRET

    admin = live_settings(workdir, seaweed.endpoint, "sqlite:///x.db")
    lake = open_lake(admin)
    lake.put_bytes("raw/x/readable.txt", b"hello")
    from pydantic import SecretStr

    reader = admin.model_copy(update={"aws_access_key_id": SecretStr(READER_KEY),
                                      "aws_secret_access_key": SecretStr(READER_SECRET)})
    limited = open_lake(reader)
    assert limited.get_bytes("raw/x/readable.txt") == b"hello"  # what it may do, it does
    (tmp_path / "f.csv").write_text("a\n1\n")
    with pytest.raises(StorageError, match=r"refused to .* \(AccessDenied\): check AWS_ACCESS_KEY_ID .*permissions") as caught:
        limited.put_file("raw/x/f.csv", tmp_path / "f.csv")
    assert READER_SECRET not in str(caught.value)


def test_fault_08_a_briefly_overloaded_store_is_retried_then_given_up_on_clearly(workdir, seaweed, tmp_path):
    settings = live_settings(workdir, seaweed.endpoint, "sqlite:///x.db")
    open_lake(settings).put_bytes("raw/x/a.txt", b"a")
    proxy = FaultProxy(seaweed.port, busy=2)  # two 503s, then the store answers
    try:
        through = settings.model_copy(update={"s3_endpoint_url": proxy.endpoint})
        lakes = [open_lake(through, prepare=False) for _ in range(2)]
        assert lakes[0].get_bytes("raw/x/a.txt") == b"a" and proxy.busy == 0
        proxy.busy = 10  # more than the three attempts allow (another client: new connections)
        with pytest.raises(StorageError, match=r"cannot read 'raw/x/a.txt'.*503"):
            lakes[1].get_bytes("raw/x/a.txt")
        assert proxy.busy <= 7  # it tried at least three times before the clear error
    finally:
        for lake in locals().get("lakes", []):
            lake.client.close()
            lake._probe.close()
        proxy.close()


# this test stops a tracking server of its own while the MLflow client still holds pooled keep-alive
# connections to it; those sockets are collected, unclosed, at some later garbage collection.
# They are the client library's, not trilho's: ignored here, and collected before the test ends
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_fault_19_an_artifact_store_down_while_tracking_is_up_fails_the_run(workdir, seaweed, small_experiment,
                                                                          tmp_path, fast_http):
    seaweed.client().create_bucket(Bucket="mlflow-fault19")
    proxy = FaultProxy(seaweed.port)
    server = MlflowServer(tmp_path / "mlflow", "s3://mlflow-fault19/artifacts",
                          env={**seaweed.env(), "MLFLOW_S3_ENDPOINT_URL": proxy.endpoint}).start()
    try:
        proxy.cut_all()  # the artifact store goes away; the tracking server stays up
        settings = load_settings(env_file=None, lake=str(workdir / "lake"), tracking_uri=server.url,
                                 cache_dir=workdir / "cache")
        with pytest.raises(TrackingError, match="nothing is lost"):
            run_experiment(small_experiment, settings)
        runs = MlflowClient(server.url).search_runs(
            [MlflowClient(server.url).get_experiment_by_name(small_experiment.tracking.experiment).experiment_id])
        assert [r.info.status for r in runs] == ["FAILED"]
    finally:
        server.stop()
        proxy.close()
        gc.collect()


def test_the_prediction_log_writes_to_an_s3_lake_and_counts_what_a_dead_store_loses(workdir, seaweed):
    """trilho serve's log through the real S3 store; then the store's address goes dead: the requests'
    records are dropped and counted, and offering them never waits on the store."""
    import numpy as np

    from trilho.monitoring.prediction_log import PredictionLog, Served, read_log

    settings = live_settings(workdir, seaweed.endpoint, "sqlite:///x.db")
    lake = open_lake(settings)

    def served(i: int) -> Served:
        return Served(f"r{i}", time.time(), "m", "3", 1.0, np.full((2, 1), float(i)), ("a",), {"kind": ["x", "y"]},
                      ["no", "yes"], np.array([[0.7, 0.3], [0.2, 0.8]]), ("no", "yes"))

    log = PredictionLog(lake, flush_s=0.2)
    for i in range(30):
        log.offer(served(i))
    log.close()
    frame = read_log(lake, "predictions/served/m", version="3")
    assert len(frame) == 60 and log.written == 60 and log.dropped == 0
    assert sorted(frame["a"].unique().tolist()) == [float(i) for i in range(30)]

    dead = open_lake(settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}", "s3_wait_s": 0.0}),
                     prepare=False)
    lost = PredictionLog(dead, flush_s=0.1)
    start = time.perf_counter()
    for i in range(10):
        lost.offer(served(i))
    assert time.perf_counter() - start < 0.5
    lost.close()
    assert lost.dropped == 20 and lost.written == 0
