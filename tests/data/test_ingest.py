import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from tests.conftest import shared_file
from trilho import DataValidationError, SourceError
from trilho.data.ingest import fetch, ingest
from trilho.data.tables import read_table
from trilho.storage import LocalLake

CSV = b"ID,No_Pation,Gender,AGE,CLASS\n1,10,F,50,N\n2,11,M,60,Y\n"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path == "/data/diabetes%20copy.csv":
            self._send(200, "text/csv", CSV)
        elif self.path == "/page":
            self._send(200, "text/html; charset=utf-8", b"<html>login</html>")
        elif self.path == "/page-as-text":
            self._send(200, "text/plain", b"\n  <!DOCTYPE html>\n<html><body>Service unavailable</body></html>\n")
        elif self.path == "/big.csv":
            self._send(200, "text/csv", b"a,b\n" + b"1,2\n" * 600_000)  # 2.4 MB
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(CSV) + 100))
            self.end_headers()
            self.wfile.write(CSV)
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(404, "text/plain", b"no")

    def _send(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_both_shared_files_load_identically():
    lf = read_table(shared_file("data", "diabetes.csv"))
    cr = read_table(shared_file("data", "diabetes_cr_line_endings.csv"))
    assert lf.shape == cr.shape == (1000, 14)
    pd.testing.assert_frame_equal(lf, cr)


def test_fault_22_bom_and_crlf_are_read(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4\r\n")
    frame = read_table(path)
    assert list(frame.columns) == ["a", "b"] and len(frame) == 2


@pytest.mark.parametrize("sep, decimal", [(";", ","), (";", "."), ("\t", "."), ("|", "."), (",", ".")])
def test_separated_files_of_every_usual_kind_read_alike(tmp_path, sep, decimal):
    """A European spreadsheet's export (";" and a decimal comma), tab- and pipe-separated files, and
    a CSV whose text holds semicolons: every one is the same table, read whole or in chunks."""
    from trilho.data.tables import csv_dialect, iter_chunks

    frame = pd.DataFrame({"age": [41.5, 57.1, None, 33.0] * 30, "count": [1, 2, 3, 4] * 30,
                          "note": ["a; b", "c", "d, e", "f"] * 30, "label": ["Y", "N", "Y", "N"] * 30})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False, sep=sep, decimal=decimal)
    assert csv_dialect(path.read_bytes()) == {"sep": sep, "decimal": decimal}
    pd.testing.assert_frame_equal(read_table(path), frame)
    pd.testing.assert_frame_equal(pd.concat(iter_chunks(path, 50), ignore_index=True), frame)


def test_a_file_that_splits_evenly_on_no_separator_is_read_as_a_csv(tmp_path):
    from trilho.data.tables import csv_dialect

    assert csv_dialect(b"only\n1\n2\n") == {"sep": ",", "decimal": "."}  # one column
    assert csv_dialect(b"a;b\n1;2;3\n4\n") == {"sep": ",", "decimal": "."}  # ragged: refused as before
    assert csv_dialect(b"a;b\r1,5;2\r3,25;4\r") == {"sep": ";", "decimal": ","}  # CR-only lines
    assert csv_dialect(b"a;b\n1,5;2\n3.25;4\n") == {"sep": ";", "decimal": "."}  # both marks: no guess


@pytest.mark.parametrize("body, match", [(b"", "empty"), (b"a,b\n1,2,3,4\n5\n", "not a readable CSV")])
def test_fault_31_unreadable_files_are_data_errors(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(body)
    with pytest.raises(DataValidationError, match=match):
        read_table(path)


def test_fault_15_ingest_is_content_addressed_and_idempotent(settings, small_csv):
    lake = LocalLake(settings.lake)
    first = ingest(f"file:{small_csv}", lake, settings, "diabetes")
    digest = hashlib.sha256(small_csv.read_bytes()).hexdigest()
    assert first.key == f"raw/diabetes/{digest}/small.csv" and not first.skipped
    manifest = json.loads(lake.get_bytes(first.manifest_key))
    assert manifest["sha256"] == digest and manifest["bytes"] == small_csv.stat().st_size
    assert manifest["rows"] == 300 and manifest["columns"][0] == "ID"
    assert {"source", "version", "fetched_at"} <= set(manifest)
    before = {k: lake.get_bytes(k) for k in lake.list("raw/")}
    again = ingest(f"file:{small_csv}", lake, settings, "diabetes")
    assert again.skipped and again.key == first.key
    assert {k: lake.get_bytes(k) for k in lake.list("raw/")} == before  # nothing rewritten


def test_fault_11_pinned_sha256_mismatch_stops_before_the_lake(settings, small_csv):
    lake = LocalLake(settings.lake)
    with pytest.raises(SourceError, match="expected 00"):
        ingest(f"file:{small_csv}", lake, settings, "diabetes", expected_sha256="00" * 32)
    assert lake.list() == []


def test_fault_21_empty_file_never_reaches_raw(settings, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    lake = LocalLake(settings.lake)
    with pytest.raises(DataValidationError, match="empty"):
        ingest(f"file:{empty}", lake, settings, "diabetes")
    assert lake.list() == []


def test_http_source_streams_into_the_lake(settings, http_base):
    lake = LocalLake(settings.lake)
    done = ingest(f"{http_base}/data/diabetes%20copy.csv", lake, settings, "web")
    assert done.key.endswith("/diabetes copy.csv")
    assert lake.get_bytes(done.key) == CSV


@pytest.mark.parametrize("path, match", [("/missing", "HTTP 404"), ("/page", "HTML page"),
                                         ("/short", "cannot fetch")])
def test_fault_10_http_failures_are_clear_and_leave_nothing(settings, http_base, tmp_path, path, match):
    work = tmp_path / "dl"
    work.mkdir()
    with pytest.raises(SourceError, match=match) as info:
        fetch(f"{http_base}{path}", settings, work)
    assert "--source file:PATH" in str(info.value) or path == "/short"
    assert list(work.iterdir()) == []  # the partial download is removed


def test_unreachable_source_fails_fast(settings, tmp_path):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    start = time.monotonic()
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}"):
        fetch(f"http://127.0.0.1:{port}/x.csv", settings, tmp_path)
    assert time.monotonic() - start < 10


@pytest.mark.timeout(120)
def test_unreachable_kaggle_is_a_clear_error(settings, tmp_path, monkeypatch):
    # offline here, and the handle does not exist online: either way a SourceError with the way out
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kh"))
    with pytest.raises(SourceError, match=r"kaggle:trilho-tests/no-such-dataset/x\.csv.*--source file:PATH"):
        fetch("kaggle:trilho-tests/no-such-dataset/x.csv", settings, tmp_path)


@pytest.mark.parametrize("source, match", [
    ("ftp://x/y.csv", "unknown scheme"), ("nocolon", "no scheme"), ("file:/no/such/file.csv", "no file"),
    ("synthetic:titanic", "generators"), ("synthetic:diabetes?rows=abc", "rows=N"),
    ("synthetic:diabetes?rows=5", "at least 20"), ("synthetic:diabetes?colour=red", "unknown parameters"),
])
def test_bad_sources_name_themselves(settings, tmp_path, source, match):
    with pytest.raises(SourceError, match=match):
        fetch(source, settings, tmp_path)


def test_synthetic_source_is_reproducible_and_dirty(settings, tmp_path):
    a = read_table(fetch("synthetic:diabetes?rows=500&seed=7", settings, tmp_path).path)
    b = read_table(fetch("synthetic:diabetes?rows=500&seed=7", settings, tmp_path).path)
    pd.testing.assert_frame_equal(a, b)
    real_columns = ["ID", "No_Pation", "Gender", "AGE", "Urea", "Cr", "HbA1c", "Chol", "TG", "HDL", "LDL",
                    "VLDL", "BMI", "CLASS"]
    assert list(a.columns) == real_columns and len(a) == 500
    share = a["CLASS"].str.strip().value_counts(normalize=True)
    assert share["Y"] > 0.75 and 0.05 < share["N"] < 0.16 and 0.02 < share["P"] < 0.1
    features = a.drop(columns=["ID", "No_Pation", "CLASS"])
    assert 0.10 < features.duplicated().mean() < 0.25  # repeated patients, like the real file


@pytest.mark.parametrize("content, lines, longest", [
    (b"a,b\n1,2\n", 2, 3), (b"a,b\r1,2\r3,4", 3, 3), (b"a,b\r\n1,2\r\n3,4\r\n", 3, 4), (b"", 0, 0), (b"a,b", 1, 3),
    (b"a\n" + b"9" * 50 + b"\nb\n", 3, 50), (b"a\nb\n" + b"7" * 40, 3, 40),
])
@pytest.mark.parametrize("chunk", [1, 2, 3, 1 << 20])
def test_scan_file_counts_lines_in_one_pass_across_block_edges(tmp_path, content, lines, longest, chunk):
    import hashlib

    from trilho.data.tables import scan_file

    path = tmp_path / "f.csv"
    path.write_bytes(content)
    assert scan_file(path, chunk=chunk) == (hashlib.sha256(content).hexdigest(), len(content), lines, longest)


@pytest.mark.parametrize("name", ["diabetes.csv", "diabetes_cr_line_endings.csv"])
def test_manifest_rows_match_pandas_on_the_real_files(settings, name):
    from tests.conftest import shared_file
    from trilho.data.ingest import ingest
    from trilho.data.tables import read_table
    from trilho.storage import open_lake

    path = shared_file("data", name)
    done = ingest(f"file:{path}", open_lake(settings), settings, "diabetes")
    assert done.manifest["rows"] == len(read_table(path)) == 1000


_PEAK = r"""
import os, resource, signal, sys
if os.environ.get("FSIZE"):  # a disk that fills up: writes past this many bytes fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(os.environ["FSIZE"]),) * 2)
from trilho import load_settings
from trilho.data.ingest import ingest
from trilho.storage import LocalLake
try:
    ingest(sys.argv[1], LocalLake(sys.argv[2]), load_settings(env_file=None, lake=sys.argv[2]), "big")
    outcome = "written"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) // 1024
print(f"{peak}\t{outcome}")
"""


def _ingest_in_child(source: str, lake, env: dict | None = None) -> tuple[float, int, str]:
    import os
    import subprocess
    import sys

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, source, str(lake)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=True)
    peak, outcome = done.stdout.strip().splitlines()[-1].split("\t", 1)
    return time.perf_counter() - start, int(peak), outcome


def test_fault_13_a_huge_file_source_is_refused_at_once(tmp_path):
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(20 * 1024**3)  # 20 GiB, sparse: no line break anywhere
    seconds, peak_mb, outcome = _ingest_in_child(f"file:{big}", tmp_path / "lake")
    assert outcome.startswith("SourceError") and "over TRILHO_MAX_SOURCE_BYTES" in outcome, outcome
    # the child's whole life (interpreter, imports) within the goal; the refusal itself reads nothing
    assert seconds <= 10 and peak_mb <= 300, (seconds, peak_mb)
    assert not (tmp_path / "lake" / "raw").exists()


def test_the_size_limit_holds_for_file_sources(tmp_path):
    path = tmp_path / "medium.csv"
    path.write_text("a,b\n" + "1,2\n" * 8_000_000)  # 32 MB
    _, _, outcome = _ingest_in_child(f"file:{path}", tmp_path / "lake", {"TRILHO_MAX_SOURCE_BYTES": "1000000"})
    assert outcome.startswith("SourceError") and "32,000,004 bytes, over TRILHO_MAX_SOURCE_BYTES=1,000,000" in outcome


def test_a_file_with_no_line_break_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "one-line.csv"
    path.write_bytes(b"x" * (200 << 20))  # 200 MiB, one "line"
    seconds, peak_mb, outcome = _ingest_in_child(f"file:{path}", tmp_path / "lake")
    assert outcome.startswith("DataValidationError") and "no line break in its first" in outcome, outcome
    assert "one-line.csv" in outcome and peak_mb <= 300, peak_mb


def test_fault_20_a_changed_raw_object_or_curated_table_is_rebuilt_not_used(settings, small_experiment):
    from trilho.data.curate import load_clean

    lake = LocalLake(settings.lake)
    ingested, _, report, data = load_clean(small_experiment, settings, lake)
    raw_path = lake.root / ingested.key
    raw_path.write_bytes(raw_path.read_bytes().replace(b"\n", b"\n9,", 1))  # the store changed it
    again = ingest(small_experiment.source.uri, lake, settings, small_experiment.name)
    assert not again.skipped and lake.digest(again.key)[0] == ingested.manifest["sha256"]

    curated = lake.root / report["curated_key"]
    curated.write_bytes(b"not parquet at all")
    _, _, _, rebuilt = load_clean(small_experiment, settings, lake)
    pd.testing.assert_frame_equal(pd.read_parquet(curated), rebuilt.curated(), check_dtype=False)
    assert lake.get_bytes(report["curated_key"] + ".sha256").decode() == hashlib.sha256(curated.read_bytes()).hexdigest()


def test_fault_12_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path, http_base):
    lake = tmp_path / "lake"
    _, _, outcome = _ingest_in_child(f"{http_base}/big.csv", lake, {"FSIZE": str(1 << 20)})
    assert outcome.startswith("SourceError") and "cannot save the download" in outcome and "free space" in outcome
    assert "Traceback" not in outcome and not lake.exists()
    local = tmp_path / "big.csv"
    local.write_bytes(b"a,b\n" + b"1,2\n" * 600_000)
    _, _, outcome = _ingest_in_child(f"file:{local}", lake, {"FSIZE": str(1 << 20)})
    assert outcome.startswith("StorageError") and "free space" in outcome
    assert [p.name for p in lake.rglob("*") if p.is_file()] == []  # no .tmp-* left in raw/


def test_fault_10_an_html_page_sent_as_text_is_not_data(settings, http_base):
    with pytest.raises(DataValidationError, match="an HTML page, not data"):
        ingest(f"{http_base}/page-as-text", LocalLake(settings.lake), settings, "page")
    assert not LocalLake(settings.lake).list("raw/")
