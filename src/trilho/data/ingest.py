"""Fetch a source into the lake's raw zone: write-once, content-addressed, with a manifest.

Sources: ``kaggle:owner/dataset[/file]``, ``https://...`` (streamed), ``file:path`` and
``synthetic:diabetes?rows=N&seed=S``; reading them is ``trilho.data.tables``. The data object is
written first and the manifest last, so a reader that finds a manifest always finds the whole
object; the same bytes twice write nothing.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from trilho.data import synthetic
from trilho.data.tables import (
    check_lines,
    check_size,
    is_parquet,
    read_head,
    scan_file,
)
from trilho.errors import SourceError, SourceUnreachableError, StorageError
from trilho.schemas import RawManifest
from trilho.settings import Settings
from trilho.storage import Lake

if TYPE_CHECKING:  # pandas is imported where a table is read: a refusal before that costs no import of it
    pass

__all__ = ["Fetched", "Ingested", "fetch", "ingest", "refuse_too_large", "repair_raw"]

log = logging.getLogger(__name__)
_WAY_OUT = "download the file yourself and pass --source file:PATH"


@dataclass(frozen=True)
class Fetched:
    path: Path
    file_name: str
    source: str
    version: str | None


@dataclass(frozen=True)
class Ingested:
    key: str
    manifest_key: str
    manifest: RawManifest
    skipped: bool


def _fetch_kaggle(spec: str, source: str) -> Fetched:
    import kagglehub

    parts = spec.strip("/").split("/", 2)
    if len(parts) < 2:
        raise SourceError(f"source {source!r}: use kaggle:owner/dataset[/file]")
    handle, inner = "/".join(parts[:2]), (parts[2] if len(parts) == 3 else None)
    try:
        local = Path(kagglehub.dataset_download(handle, path=inner))
    except Exception as exc:  # kagglehub raises many kinds; all mean the same to the user
        raise SourceUnreachableError(f"cannot fetch {source!r} from Kaggle ({type(exc).__name__}: {exc}); "
                                     f"{_WAY_OUT}") from exc
    if local.is_dir():
        csvs = sorted(local.rglob("*.csv"))
        if len(csvs) != 1:
            raise SourceError(f"source {source!r} holds {[p.name for p in csvs]}; name one: kaggle:{handle}/FILE")
        local = csvs[0]
    version = re.search(r"/versions/(\d+)", local.as_posix())
    return Fetched(local, local.name, source, version.group(1) if version else None)


def _fetch_http(source: str, settings: Settings, workdir: Path) -> Fetched:
    import requests

    name = unquote(Path(urlsplit(source).path).name) or "download.csv"
    target = workdir / name
    try:
        with requests.get(source, stream=True, timeout=(5, settings.source_timeout_s)) as resp:
            if resp.status_code >= 400:
                raise SourceError(f"source {source!r} answered HTTP {resp.status_code}; check the address or {_WAY_OUT}")
            if "html" in resp.headers.get("Content-Type", ""):
                raise SourceError(f"source {source!r} sent an HTML page, not data; check the address or {_WAY_OUT}")
            declared = int(resp.headers.get("Content-Length") or 0)
            if declared > settings.max_source_bytes:
                raise SourceError(f"source {source!r} is {declared} bytes, over "
                                  f"TRILHO_MAX_SOURCE_BYTES={settings.max_source_bytes}")
            size = 0
            with open(target, "wb") as fh:
                for block in resp.iter_content(1 << 20):
                    size += len(block)
                    if size > settings.max_source_bytes:
                        raise SourceError(f"source {source!r} is over TRILHO_MAX_SOURCE_BYTES={settings.max_source_bytes}")
                    fh.write(block)
    except (requests.ConnectionError, requests.Timeout) as exc:
        target.unlink(missing_ok=True)
        raise SourceUnreachableError(f"cannot fetch {source!r} ({type(exc).__name__}: {exc}); {_WAY_OUT}") from exc
    except requests.RequestException as exc:
        target.unlink(missing_ok=True)
        raise SourceError(f"cannot fetch {source!r} ({type(exc).__name__}: {exc}); {_WAY_OUT}") from exc
    except OSError as exc:  # the disk is full, or a file-size limit is reached
        target.unlink(missing_ok=True)
        raise SourceError(f"cannot save the download of {source!r} to {target.parent} ({exc.strerror or exc}); "
                          "free space there or point TMPDIR at a larger disk") from None
    except SourceError:
        target.unlink(missing_ok=True)
        raise
    return Fetched(target, name, source, None)


def _synthetic_args(spec: str, source: str) -> dict[str, int]:
    name, _, query = spec.partition("?")
    if name != "diabetes":
        raise SourceError(f"source {source!r}: the synthetic generators are ['diabetes']")
    try:
        pairs = dict(parse_qsl(query, strict_parsing=bool(query)))
        unknown = set(pairs) - {"rows", "seed"}
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}")
        return {k: int(v) for k, v in pairs.items()}
    except ValueError as exc:
        raise SourceError(f"source {source!r}: {exc}; use synthetic:diabetes?rows=N&seed=S") from exc


def _fetch_synthetic(spec: str, source: str, workdir: Path, max_bytes: int) -> Fetched:
    args = _synthetic_args(spec, source)
    try:
        frame = synthetic.diabetes(**args, max_bytes=max_bytes)  # refused before it is made when too large
    except ValueError as exc:
        raise SourceError(f"source {source!r}: {exc}; use synthetic:diabetes?rows=N&seed=S") from exc
    file_name = f"synthetic-diabetes-rows{args.get('rows', 1000)}-seed{args.get('seed', 0)}.csv"
    frame.to_csv(workdir / file_name, index=False)
    return Fetched(workdir / file_name, file_name, source, "generator-1")


def _local_path(rest: str) -> Path:
    """The file a ``file:`` source names (``file:PATH`` or ``file://PATH``, ``~`` expanded)."""
    return Path(rest.removeprefix("//")).expanduser()


def refuse_too_large(source: str, limit: int) -> None:
    """Refuse now a ``file:`` source over ``limit`` bytes, or a ``synthetic:`` one that would be, with
    the refusal ``fetch`` and ``ingest`` give: a command can say it before it loads its experiment
    (pandas, scikit-learn and the rest). Anything else, a bad source included, is left to them."""
    scheme, _, rest = source.partition(":")
    if scheme == "file":
        path = _local_path(rest)
        if path.is_file():
            check_size(path, source, limit)
    elif scheme == "synthetic":
        try:
            rows = _synthetic_args(rest, source).get("rows", synthetic.DEFAULT_ROWS)
            synthetic.check_rows(rows, limit)
        except (SourceError, ValueError):  # not a size: fetch says it, in its turn
            pass


def fetch(source: str, settings: Settings, workdir: Path) -> Fetched:
    """Bring a source to a local file (downloads land in ``workdir``)."""
    scheme, sep, rest = source.partition(":")
    if not sep:
        raise SourceError(f"source {source!r} has no scheme; use kaggle:, https://, file: or synthetic:")
    if scheme == "file":
        path = _local_path(rest)
        if not path.is_file():
            raise SourceError(f"source {source!r}: no file at {str(path)!r}")
        return Fetched(path, path.name, source, None)
    if scheme in {"http", "https"}:
        return _fetch_http(source, settings, workdir)
    if scheme == "kaggle":
        return _fetch_kaggle(rest, source)
    if scheme == "synthetic":
        return _fetch_synthetic(rest, source, workdir, settings.max_source_bytes)
    raise SourceError(f"source {source!r}: unknown scheme {scheme!r}; use kaggle:, https://, file: or synthetic:")


def ingest(source: str, lake: Lake, settings: Settings, dataset: str,
           expected_sha256: str | None = None) -> Ingested:
    """Fetch ``source`` and store it under ``raw/<dataset>/<sha256>/``; skip bytes already there."""
    with tempfile.TemporaryDirectory(prefix="trilho-fetch-") as tmp:
        fetched = fetch(source, settings, Path(tmp))
        check_size(fetched.path, source, settings.max_source_bytes)  # every kind of source, before reading it
        scanned = scan_file(fetched.path)
        digest, size, lines, _ = scanned
        if expected_sha256 and digest != expected_sha256:
            raise SourceError(f"source {source!r} has sha256 {digest}, expected {expected_sha256} "
                              "(source.sha256); the data changed upstream: check it, then update or clear the pin")
        base = f"raw/{dataset}/{digest}"
        key, manifest_key = f"{base}/{fetched.file_name}", f"{base}/manifest.json"
        if lake.exists(manifest_key):
            manifest: RawManifest = json.loads(lake.get_bytes(manifest_key))
            held = lake.digest(manifest["key"], read=False)
            if held == (digest, size):
                log.info("raw %s already in the lake (sha256 %s): skipped", manifest["key"], digest)
                return Ingested(manifest["key"], manifest_key, manifest, skipped=True)
            # the manifest promises bytes the lake does not hold: repair, never skip; the fetched bytes
            # are the ones it promises (their sha256 names its folder), so they go over the bad copy
            log.warning("raw %s is %s; writing it again from %s", manifest["key"],
                        "missing" if held is None else f"changed (sha256 {held[0]}, {held[1]} bytes)", source)
            _rewrite_raw(lake, manifest["key"], fetched.path, digest, size)
            return Ingested(manifest["key"], manifest_key, manifest, skipped=False)
        # refuse what cannot be parsed before it reaches raw/, reading only its head (memory stays flat)
        head = read_head(fetched.path)
        check_lines(fetched.path, scanned, fetched.file_name)  # and a later row too long to parse
        if is_parquet(fetched.path):  # rows from the file's own metadata, not its line breaks
            import pyarrow.parquet as pq

            lines = pq.ParquetFile(fetched.path).metadata.num_rows + 1
        manifest = {
            "dataset": dataset, "source": fetched.source, "version": fetched.version,
            "file_name": fetched.file_name, "key": key, "sha256": digest, "bytes": size,
            "rows": max(lines - 1, 0), "columns": [str(c) for c in head.columns],
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        lake.put_file(key, fetched.path, sha256=digest)
        lake.put_bytes(manifest_key, json.dumps(manifest, indent=2).encode())  # last: marks completion
        log.info("raw %s written (%d bytes, sha256 %s)", key, size, digest)
        return Ingested(key, manifest_key, manifest, skipped=False)


def repair_raw(source: str, lake: Lake, settings: Settings, ingested: Ingested, reads: list[str]) -> None:
    """Write the raw object of ``ingested`` again from ``source``: its lake copy read back as the
    sha256s ``reads``, not as its manifest says. The source is fetched and checked against the
    manifest first; until those bytes are in hand the lake is left exactly as it was."""
    expected = ingested.manifest["sha256"]
    seen = f"{reads[0]} twice" if len(reads) == 2 and reads[0] == reads[1] else ", then ".join(reads)
    wrong = f"the lake's copy of {lake.url(ingested.key)} reads back with sha256 {seen}, its manifest says {expected}"
    with tempfile.TemporaryDirectory(prefix="trilho-repair-") as tmp:
        try:
            fetched = fetch(source, settings, Path(tmp))
            check_size(fetched.path, source, settings.max_source_bytes)
        except SourceError as exc:
            raise StorageError(f"{wrong}; the source could not be fetched to repair it ({exc}): "
                               "nothing was removed") from exc
        digest, size, _, _ = scan_file(fetched.path)
        if digest != expected:
            raise StorageError(f"{wrong}; the source {source!r} now sends sha256 {digest}, not those bytes, so it "
                               "cannot repair it: nothing was removed")
        log.warning("%s: writing it again from %s", wrong, source)
        _rewrite_raw(lake, ingested.key, fetched.path, digest, size)


def _rewrite_raw(lake: Lake, key: str, path: Path, digest: str, size: int) -> None:
    """Put bytes that hash to ``key``'s own content address over a copy that does not (the one
    overwrite a raw object gets), then read the stored copy back; the manifest stays as it is."""
    lake.put_file(key, path, overwrite=True, sha256=digest)
    held = lake.digest(key)
    if held != (digest, size):
        raise StorageError(f"raw object {lake.url(key)} was written again with sha256 {digest} ({size} bytes) and "
                           f"reads back as {held} (sha256, bytes): the store changes what it holds")
