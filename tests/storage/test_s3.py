"""The S3 lake over real HTTP, against moto's server mode (the live SeaweedFS tests belong with the services)."""

import contextlib
import hashlib

import pytest

from trilho import StorageError, load_settings
from trilho.storage import Lake, S3Lake, open_lake


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_settings(workdir, s3_endpoint):
    import boto3

    bucket = f"lake-{hashlib.sha1(str(workdir).encode()).hexdigest()[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test-secret").create_bucket(Bucket=bucket)
    return load_settings(env_file=None, lake=f"s3://{bucket}/team", s3_endpoint_url=s3_endpoint,
                         aws_access_key_id="test", aws_secret_access_key="test-secret")


def test_s3_lake_is_write_once_and_round_trips(s3_settings, tmp_path):
    lake = open_lake(s3_settings)
    assert isinstance(lake, S3Lake) and isinstance(lake, Lake)
    src = tmp_path / "data.csv"
    src.write_bytes(b"a,b\n1,2\n" * 1000)
    assert lake.put_file("raw/d/sha/data.csv", src) is True
    assert lake.put_file("raw/d/sha/data.csv", src) is False  # never overwritten
    assert lake.put_bytes("raw/d/sha/manifest.json", b"{}") and not lake.put_bytes("raw/d/sha/manifest.json", b"[]")
    back = lake.download("raw/d/sha/data.csv", tmp_path / "back.csv")
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()
    head = lake.client.head_object(Bucket=lake.bucket, Key="team/raw/d/sha/data.csv")
    assert head["Metadata"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert lake.list("raw/") == ["raw/d/sha/data.csv", "raw/d/sha/manifest.json"]
    assert lake.url("raw/d/sha/data.csv") == f"{s3_settings.lake}/raw/d/sha/data.csv"
    assert lake.exists("raw/d/sha/data.csv") and not lake.exists("raw/d/other")


def test_s3_lake_sends_no_trailing_checksums(s3_settings):
    lake = open_lake(s3_settings)
    assert lake.client.meta.config.request_checksum_calculation == "when_required"
    assert lake.client.meta.config.s3["addressing_style"] == "path"


def test_fault_05_missing_bucket_and_object_are_clear(s3_settings):
    lake = open_lake(s3_settings)
    with pytest.raises(StorageError, match="object 'raw/none' not found"):
        lake.get_bytes("raw/none")
    no_create = s3_settings.model_copy(update={"lake": "s3://no-such-bucket-here", "create_buckets": False})
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist.*TRILHO_CREATE_BUCKETS"):
        open_lake(no_create)
    unprepared = open_lake(no_create, prepare=False)
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        unprepared.put_bytes("raw/x", b"1")


def test_bucket_bootstrap_is_idempotent(s3_settings):
    settings = s3_settings.model_copy(update={"lake": "s3://fresh-bucket/p"})
    first = open_lake(settings)
    first.put_bytes("k", b"1")
    again = open_lake(settings)  # the bucket exists now: nothing to create, nothing lost
    assert again.get_bytes("k") == b"1"


def test_fault_01_store_down_at_start_fails_within_the_wait(s3_settings):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = s3_settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{port}", "s3_wait_s": 1.0})
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"127.0.0.1:{port} not reachable: waited \ds.*TRILHO_S3_WAIT_S"):
        open_lake(down)
    assert time.monotonic() - start < 15  # a 1 s wait; loose for a busy machine


@contextlib.contextmanager
def _silent_store():
    """An address that accepts every connection and never answers; yields its URL."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


def test_fault_09_a_store_that_accepts_and_never_answers_fails_within_the_wait(s3_settings):
    import time

    with _silent_store() as url:
        hung = s3_settings.model_copy(update={"s3_endpoint_url": url, "s3_wait_s": 3.0})
        lake = S3Lake(hung.lake, hung)  # the client is made first: the message times the wait, not its making
        start = time.monotonic()
        with pytest.raises(StorageError, match=r"not reachable: waited (\d+)s \(ReadTimeoutError\)") as caught:
            lake.prepare(create=hung.create_buckets, wait_s=hung.s3_wait_s)  # what open_lake does first
        elapsed = time.monotonic() - start
    stated = int(caught.value.args[0].split("waited ")[1].split("s")[0])
    assert elapsed < 3.0 + 3.0 + 8  # the wait, one short read timeout, and slack for a busy machine
    assert abs(stated - elapsed) <= 1.5  # the message says how long it really waited


def test_ingest_into_the_s3_lake(s3_settings, small_csv):
    from trilho.data.ingest import ingest

    lake = open_lake(s3_settings)
    first = ingest(f"file:{small_csv}", lake, s3_settings, "diabetes")
    again = ingest(f"file:{small_csv}", lake, s3_settings, "diabetes")
    assert not first.skipped and again.skipped and again.key == first.key
    assert len(lake.list("raw/")) == 2


def test_a_store_that_stops_answering_after_the_preflight_fails_within_its_timeouts(s3_settings, monkeypatch):
    import time

    from trilho.storage import s3 as storage

    monkeypatch.setattr(storage, "_READ_TIMEOUT_S", 1.0)  # the read timeout, shortened for the test
    with _silent_store() as url:
        lake = open_lake(s3_settings.model_copy(update={"s3_endpoint_url": url}), prepare=False)
        try:
            start = time.monotonic()
            with pytest.raises(StorageError, match=r"did not answer within 1 s on each of 3 attempts \(ReadTimeoutError\)"):
                lake.get_bytes("raw/x")
            elapsed = time.monotonic() - start
        finally:
            lake.client.close()
            lake._probe.close()
    # three 1 s attempts and their back-off; the bound is loose for a busy machine, and far below what
    # the default read timeout (60 s per attempt) would take, so it still tells the two apart
    assert elapsed < 3 * 1.0 + 12
