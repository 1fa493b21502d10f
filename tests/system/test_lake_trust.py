"""What the lake can be trusted with: a bad read never costs the good copy, an S3 call's attempts are
its requests, and a lake folder a team shares stays readable to it."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import FAST
from tests.support.services import ACCESS_KEY, SECRET_KEY
from trilho import StorageError, load_experiment, load_settings
from trilho.data.curate import load_clean
from trilho.data.ingest import ingest
from trilho.data.synthetic import diabetes
from trilho.storage import Lake, LocalLake, open_lake

# ---------------------------------------------------------------- helpers: a lake, a source, a store


class _WatchedLake:
    """A real lake, seen through: ``download`` flips one byte of what arrives on its first ``flips``
    calls (a transfer corrupted on the way, the stored copy intact), ``put_file`` can be made to
    fail, and every write and delete is recorded."""

    def __init__(self, lake: Lake, flips: float = 0, fail_puts: bool = False) -> None:
        self.lake, self.flips, self.fail_puts = lake, flips, fail_puts
        self.uri = lake.uri
        self.writes: list[str] = []
        self.deletes: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.lake, name)

    def download(self, key: str, path: str | Path) -> Path:
        got = self.lake.download(key, path)
        if self.flips > 0:
            self.flips -= 1
            data = bytearray(got.read_bytes())
            data[len(data) // 2] ^= 0x01
            got.write_bytes(bytes(data))
        return got

    def put_file(self, key: str, path: str | Path, **kwargs) -> bool:
        self.writes.append(key)
        if self.fail_puts:
            raise StorageError(f"cannot write {key!r} to lake {self.uri}: No space left on device; free space there")
        return self.lake.put_file(key, path, **kwargs)

    def put_bytes(self, key: str, data: bytes, **kwargs) -> bool:
        self.writes.append(key)
        return self.lake.put_bytes(key, data, **kwargs)

    def delete(self, key: str) -> None:
        self.deletes.append(key)
        self.lake.delete(key)


class _Source(BaseHTTPRequestHandler):
    """An https-like source: the CSV for the first ``good`` GETs, then HTTP 503."""

    body = b""
    good = 0
    served = 0

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        cls = type(self)
        cls.served += 1
        code, body = (200, cls.body) if cls.served <= cls.good else (503, b"busy")
        self.send_response(code)
        self.send_header("Content-Type", "text/csv" if code == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def source(small_csv):
    """A source that answers twice (the first run's ingest, the second's), then only 503."""
    handler = type("Source", (_Source,), {"body": small_csv.read_bytes(), "good": 2, "served": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/diabetes.csv"
    server.shutdown()
    server.server_close()


def _experiment(uri: str):
    return load_experiment("diabetes", [f"source.uri={json.dumps(uri)}", 'source.sha256=""', *FAST])


@pytest.fixture(params=["local", pytest.param("seaweedfs", marks=pytest.mark.services)])  # a service: not in test-fast
def lake_settings(request, workdir, settings):
    """Settings of a real lake: a local folder, or a bucket on a real SeaweedFS."""
    if request.param == "local":
        return settings
    store = request.getfixturevalue("seaweed")
    return load_settings(env_file=None, lake=f"s3://trust-{uuid.uuid4().hex[:8]}/lake", s3_endpoint_url=store.endpoint,
                         aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, cache_dir=workdir / "cache")


def _held(lake: Lake) -> dict[str, str]:
    """Every raw object the lake holds, by key, with the sha256 of its stored bytes."""
    return {key: lake.digest(key)[0] for key in lake.list("raw/")}


# ---------------------------------------------------------------- 1. a bad read never costs the good copy


def test_a_read_corrupt_in_transit_is_read_again_and_nothing_is_rewritten(lake_settings, small_experiment, caplog):
    lake = open_lake(lake_settings)
    ingested, raw, _, _ = load_clean(small_experiment, lake_settings, lake)
    before = _held(lake)
    watched = _WatchedLake(lake, flips=1)
    with caplog.at_level(logging.WARNING, logger="trilho.data.curate"):
        again, raw_again, _, _ = load_clean(small_experiment, lake_settings, watched)
    assert watched.deletes == [] and watched.writes == []  # nothing removed, nothing written again
    assert _held(lake) == before and again.key == ingested.key
    assert raw_again.equals(raw)
    assert "corrupt in transit" in caplog.text and ingested.manifest["sha256"] in caplog.text


def test_a_copy_that_reads_wrong_twice_and_a_source_that_fails_leave_the_lake_as_it_was(lake_settings, source):
    exp = _experiment(source)
    lake = open_lake(lake_settings)
    ingested, _, _, _ = load_clean(exp, lake_settings, lake)
    before = _held(lake)
    manifest = lake.get_bytes(ingested.manifest_key)
    watched = _WatchedLake(lake, flips=float("inf"))  # every read of the copy comes back changed
    with pytest.raises(StorageError) as caught:
        load_clean(exp, lake_settings, watched)
    message = str(caught.value)
    assert "\n" not in message
    assert f"the lake's copy of {lake.url(ingested.key)} reads back with sha256 " in message
    assert f" twice, its manifest says {ingested.manifest['sha256']}" in message
    assert "the source could not be fetched to repair it" in message and "HTTP 503" in message
    assert message.endswith("nothing was removed")
    assert watched.deletes == [] and watched.writes == []
    assert _held(lake) == before and lake.get_bytes(ingested.manifest_key) == manifest


def _change_stored_copy(seaweed, settings, key: str) -> None:
    """Change one byte of an object in the store itself, keeping its size and recorded sha256 (as a
    store that damaged its copy would): only reading the bytes back can tell."""
    bucket, _, prefix = settings.lake.removeprefix("s3://").partition("/")
    s3 = seaweed.client()
    name = f"{prefix}/{key}"
    data = bytearray(s3.get_object(Bucket=bucket, Key=name)["Body"].read())
    metadata = s3.head_object(Bucket=bucket, Key=name)["Metadata"]
    data[len(data) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=name, Body=bytes(data), Metadata=metadata)


@pytest.fixture
def s3_settings(workdir, seaweed):
    return load_settings(env_file=None, lake=f"s3://trust-{uuid.uuid4().hex[:8]}/lake", s3_endpoint_url=seaweed.endpoint,
                         aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, cache_dir=workdir / "cache")


def test_a_changed_copy_in_the_store_with_the_source_down_is_kept_and_named(seaweed, s3_settings, source):
    exp = _experiment(source)
    lake = open_lake(s3_settings)
    ingested, _, _, _ = load_clean(exp, s3_settings, lake)
    manifest = lake.get_bytes(ingested.manifest_key)
    _change_stored_copy(seaweed, s3_settings, ingested.key)
    changed = _held(lake)
    assert changed[ingested.key] != ingested.manifest["sha256"]
    with pytest.raises(StorageError, match=r"reads back with sha256 [0-9a-f]{64} twice, its manifest says "
                                           rf"{ingested.manifest['sha256']}; the source could not be fetched"):
        load_clean(exp, s3_settings, lake)
    assert _held(lake) == changed and lake.get_bytes(ingested.manifest_key) == manifest  # both still there


def test_a_changed_copy_in_the_store_is_repaired_from_the_source_without_removing_anything(seaweed, s3_settings,
                                                                                           small_experiment):
    lake = open_lake(s3_settings)
    ingested, raw, _, _ = load_clean(small_experiment, s3_settings, lake)
    manifest = lake.get_bytes(ingested.manifest_key)
    _change_stored_copy(seaweed, s3_settings, ingested.key)
    watched = _WatchedLake(lake)
    again, raw_again, _, _ = load_clean(small_experiment, s3_settings, watched)
    assert watched.deletes == [] and watched.writes == [ingested.key]  # put over the bad copy, once
    assert lake.digest(ingested.key)[0] == ingested.manifest["sha256"] and again.key == ingested.key
    assert lake.get_bytes(ingested.manifest_key) == manifest and raw_again.equals(raw)


def test_ingest_repairing_a_changed_copy_removes_nothing_before_the_new_bytes_are_in(settings, small_csv):
    lake = LocalLake(settings.lake)
    first = ingest(f"file:{small_csv}", lake, settings, "diabetes")
    stored = lake.root / first.key
    stored.write_bytes(stored.read_bytes().replace(b"\n", b"\n9,", 1))  # the stored copy changed
    manifest = lake.get_bytes(first.manifest_key)
    full = _WatchedLake(lake, fail_puts=True)  # the write of the good bytes fails (a full disk)
    with pytest.raises(StorageError, match="No space left"):
        ingest(f"file:{small_csv}", full, settings, "diabetes")
    assert full.deletes == [] and lake.exists(first.key) and lake.get_bytes(first.manifest_key) == manifest
    watched = _WatchedLake(lake)
    again = ingest(f"file:{small_csv}", watched, settings, "diabetes")
    assert watched.deletes == [] and watched.writes == [first.key]
    assert not again.skipped and lake.digest(first.key)[0] == first.manifest["sha256"]
    assert lake.get_bytes(first.manifest_key) == manifest


# ---------------------------------------------------------------- 2. three attempts are three requests


class _Busy(BaseHTTPRequestHandler):
    """A store that answers every request with HTTP 503, counting them."""

    protocol_version = "HTTP/1.1"  # so boto3's "Expect: 100-continue" is answered, not waited out
    requests: list[str] = []

    def log_message(self, *args):
        pass

    def _busy(self):
        type(self).requests.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _busy


@pytest.fixture
def busy_store(workdir):
    handler = type("Busy", (_Busy,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = load_settings(env_file=None, lake="s3://lake/team", s3_endpoint_url=f"http://127.0.0.1:{server.server_port}",
                             aws_access_key_id="test", aws_secret_access_key="test-secret")
    yield open_lake(settings, prepare=False), handler.requests
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("call", ["get_bytes", "download", "exists", "put_bytes", "delete", "digest"])
def test_three_attempts_are_three_requests(busy_store, call, tmp_path):
    from trilho.storage import s3

    lake, requests = busy_store
    calls = {"get_bytes": lambda: lake.get_bytes("raw/x"), "download": lambda: lake.download("raw/x", tmp_path / "x"),
             "exists": lambda: lake.exists("raw/x"), "put_bytes": lambda: lake.put_bytes("raw/x", b"1", overwrite=True),
             "delete": lambda: lake.delete("raw/x"), "digest": lambda: lake.digest("raw/x")}
    with pytest.raises(StorageError, match="503"):
        calls[call]()
    assert len(requests) == s3._ATTEMPTS == 3, requests


def test_the_preflight_sends_one_request_per_poll(busy_store):
    lake, requests = busy_store
    with pytest.raises(StorageError, match="503"):
        lake.prepare(create=False, wait_s=0.0)  # the deadline is already past: one poll
    assert len(requests) == 1, requests


def test_a_download_from_a_store_that_never_answers_makes_three_requests(workdir, monkeypatch, tmp_path):
    from trilho.storage import s3

    monkeypatch.setattr(s3, "_READ_TIMEOUT_S", 0.5)  # the read timeout, shortened for the test
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                conn = server.accept()[0]
            except OSError:
                return
            held.append(conn)

    accepting = threading.Thread(target=accept, daemon=True)
    accepting.start()
    settings = load_settings(env_file=None, lake="s3://lake/team", s3_endpoint_url=f"http://127.0.0.1:{server.getsockname()[1]}",
                             aws_access_key_id="test", aws_secret_access_key="test-secret")
    lake = open_lake(settings, prepare=False)
    try:
        with pytest.raises(StorageError, match=r"did not answer within 0.5 s on each of 3 attempts \(ReadTimeoutError\)"):
            lake.download("raw/x", tmp_path / "x")
    finally:
        lake.client.close()
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not), so no thread outlives the test
        server.close()
        accepting.join(5)
        for conn in held:
            conn.close()
    assert not accepting.is_alive()
    assert len(held) == 3  # one connection a request: a timed-out connection is never reused


# ---------------------------------------------------------------- 3. a shared lake folder stays readable


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_lake_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    source = tmp_path / "data.csv"
    diabetes(rows=20, seed=1).to_csv(source, index=False)
    previous = os.umask(umask)
    try:
        lake = LocalLake(tmp_path / "lake")
        lake.put_file("raw/d/abc/data.csv", source)
        lake.put_bytes("raw/d/abc/manifest.json", b"{}")
        lake.put_bytes("reports/run/results.json", b"[]", overwrite=True)
        lake.put_bytes("reports/run/results.json", b"[1]", overwrite=True)  # replaced: a new file, same mode
    finally:
        os.umask(previous)
    for key in ("raw/d/abc/data.csv", "raw/d/abc/manifest.json", "reports/run/results.json"):
        assert stat.S_IMODE((lake.root / key).stat().st_mode) == file_mode, key
    for folder in ("raw", "raw/d", "raw/d/abc", "reports", "reports/run"):
        assert stat.S_IMODE((lake.root / folder).stat().st_mode) == folder_mode, folder
    assert (lake.root / "raw/d/abc/data.csv").read_bytes() == source.read_bytes()
