"""The lake: one small interface over a local folder or an S3-compatible bucket.

Keys are POSIX-style relative paths (``raw/diabetes/<sha256>/file.csv``). ``put_*`` is write-once
unless ``overwrite=True`` (only reports and pointers use it): raw objects are never replaced.
A write is all-or-nothing: a reader never sees half an object.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from trilho.errors import ConfigError, StorageError
from trilho.settings import Settings

__all__ = ["Lake", "LocalLake", "S3Lake", "open_lake", "sha256_file"]

log = logging.getLogger(__name__)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Hex sha256 and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise StorageError(f"lake key {key!r} must be a relative path without '.' or '..' parts")
    return key


@runtime_checkable
class Lake(Protocol):
    """What every lake offers; the pipeline only speaks this."""

    uri: str

    def exists(self, key: str) -> bool: ...
    def put_file(self, key: str, path: str | Path, *, overwrite: bool = False,
                 sha256: str | None = None) -> bool: ...
    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, path: str | Path) -> Path: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def url(self, key: str) -> str: ...
    def delete(self, key: str) -> None: ...
    def digest(self, key: str, read: bool = True) -> tuple[str, int] | None: ...
    def arrow(self, key: str) -> tuple[Any, str]: ...


class LocalLake:
    """A lake in a local folder (the embedded default)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _publish(self, tmp: Path, final: Path, overwrite: bool) -> bool:
        if overwrite:
            os.replace(tmp, final)
            return True
        try:
            os.link(tmp, final)  # atomic create-if-absent: never replaces an existing object
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _write(self, key: str, fill, overwrite: bool) -> bool:
        final = self._path(key)
        if not overwrite and final.exists():
            return False
        name = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
            return self._publish(Path(name), final, overwrite)
        except OSError as exc:
            if name:  # a half-written temporary file never outlives the failure
                Path(name).unlink(missing_ok=True)
            raise StorageError(f"cannot write {key!r} to lake {self.uri}: {exc.strerror or exc}; "
                               "free space there") from None

    def put_file(self, key: str, path: str | Path, *, overwrite: bool = False, sha256: str | None = None) -> bool:
        def fill(fh):
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)
        return self._write(key, fill, overwrite)

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        return self._write(key, lambda fh: fh.write(data), overwrite)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"object {key!r} not found in lake {self.uri}") from None

    def download(self, key: str, path: str | Path) -> Path:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise StorageError(f"object {key!r} not found in lake {self.uri}") from None
        return Path(path)

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith(".tmp-"))

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def arrow(self, key: str) -> tuple[Any, str]:
        """A pyarrow filesystem and path that read ``key`` where the lake is (what Dask workers on
        this machine, or with this folder mounted at the same path, read the curated data through)."""
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(self._path(key))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def digest(self, key: str, read: bool = True) -> tuple[str, int] | None:
        """sha256 and size of what the lake holds under ``key`` (read back: hashing a local file is
        cheap, so ``read`` is always honoured as True), or None when absent."""
        path = self._path(key)
        return sha256_file(path) if path.is_file() else None


# every S3 call: connect within 2 s, an answer within 60 s, three attempts (standard retry mode)
_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S, _ATTEMPTS = 2.0, 60.0, 3
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "403"}
_MISSING_BUCKET = {"NoSuchBucket", "404", "NotFound"}


def _code(exc: Exception) -> str:
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


class S3Lake:
    """A lake under ``s3://bucket/prefix`` on any S3-compatible store, through boto3.

    Large files go up as multipart uploads streamed from disk (memory stays flat); the object
    appears only when the upload completes, and uploads that a killed process left behind are
    aborted by the next write under the same key once they are older than ``stale_upload_s``.
    """

    def __init__(self, uri: str, settings: Settings) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"lake {uri!r} names no bucket; use s3://bucket[/prefix]")
        self.uri, self.bucket, self.prefix = uri.rstrip("/"), bucket, prefix.strip("/")
        self.endpoint = settings.s3_endpoint_url or "AWS S3"
        self.stale_upload_s = settings.stale_upload_s
        common = dict(
            region_name=settings.aws_region,
            s3={"addressing_style": "path"},
            connect_timeout=_CONNECT_TIMEOUT_S, read_timeout=_READ_TIMEOUT_S,
            # third-party stores mishandle the trailing checksums boto3 >= 1.36 sends by default;
            # integrity is checked by size and by our own sha256 instead
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        secret = settings.aws_secret_access_key
        key_id = settings.aws_access_key_id
        credentials = dict(
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=key_id.get_secret_value() if key_id else None,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
        )
        self._arrow = dict(endpoint_url=settings.s3_endpoint_url, region=settings.aws_region,
                           key_id=credentials["aws_access_key_id"], secret=credentials["aws_secret_access_key"])
        session = boto3.session.Session()
        self.client = session.client("s3", config=Config(retries={"mode": "standard", "max_attempts": _ATTEMPTS}, **common),
                                     **credentials)
        # the preflight polls on its own clock, so its client does not retry, and a store that accepts
        # connections but never answers costs one short read timeout per poll, not a minute
        probe = {**common, "read_timeout": min(5.0, max(1.0, settings.s3_wait_s))}
        self._probe = session.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 1}, **probe),
                                     **credentials)
        self.transfer = TransferConfig(multipart_threshold=16 * 1024**2, multipart_chunksize=16 * 1024**2,
                                       max_concurrency=4, use_threads=True)

    def arrow(self, key: str) -> tuple[Any, str]:
        """A pyarrow S3 filesystem with this lake's endpoint and credentials, and the path of ``key``
        on it: Dask workers read the curated data straight from the store, never through this process."""
        import pyarrow.fs

        endpoint = urlsplit(self._arrow["endpoint_url"]) if self._arrow["endpoint_url"] else None
        fs = pyarrow.fs.S3FileSystem(
            access_key=self._arrow["key_id"], secret_key=self._arrow["secret"], region=self._arrow["region"],
            endpoint_override=endpoint.netloc if endpoint else None, scheme=endpoint.scheme if endpoint else "https",
            connect_timeout=_CONNECT_TIMEOUT_S, request_timeout=_READ_TIMEOUT_S, force_virtual_addressing=False)
        return fs, f"{self.bucket}/{self._key(key)}"

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        code = _code(exc)
        if code in _AUTH_CODES:
            return StorageError(f"S3 store {self.endpoint} refused to {action} {key!r} in {self.uri} ({code}): "
                                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the key's permissions")
        if code in _MISSING_BUCKET and action != "check":
            return StorageError(f"bucket {self.bucket!r} does not exist on {self.endpoint}; create it or "
                                "set TRILHO_CREATE_BUCKETS=true")
        from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):  # say how long it really waited
            limit = _READ_TIMEOUT_S if isinstance(exc, ReadTimeoutError) else _CONNECT_TIMEOUT_S
            return StorageError(f"cannot {action} {key!r} in lake {self.uri}: {self.endpoint} did not answer within "
                                f"{limit:g} s on each of {_ATTEMPTS} attempts ({type(exc).__name__})")
        return StorageError(f"cannot {action} {key!r} in lake {self.uri} at {self.endpoint}: {exc}")

    def prepare(self, *, create: bool, wait_s: float) -> None:
        """Wait (bounded) for the store, check the credentials, create the bucket if allowed."""
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        started = time.monotonic()
        deadline = started + wait_s
        while True:
            try:
                self._probe.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                code = _code(exc)
                if code in _MISSING_BUCKET:
                    break
                if code in _AUTH_CODES:
                    raise self._fail("open", self.bucket, exc) from None
                if not code.startswith("5") or time.monotonic() >= deadline:
                    raise self._fail("open", self.bucket, exc) from exc
            except (EndpointConnectionError, BotoCoreError) as exc:
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"S3 store {self.endpoint} not reachable: waited {time.monotonic() - started:.0f}s "
                        f"({type(exc).__name__}); "
                        "start it, or check TRILHO_S3_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL "
                        "(TRILHO_S3_WAIT_S sets how long to wait)") from None
            time.sleep(0.5)
        if not create:
            raise StorageError(f"bucket {self.bucket!r} does not exist on {self.endpoint}; create it or "
                               "set TRILHO_CREATE_BUCKETS=true")
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._fail("create bucket", self.bucket, exc) from exc
        log.info("created bucket %s on %s", self.bucket, self.endpoint)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise self._fail("check", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("check", key, exc) from exc

    def abort_stale_uploads(self, key: str, older_than_s: float | None = None) -> int:
        """Abort unfinished multipart uploads under ``key``'s zone (``raw/`` for a raw object) started
        more than ``older_than_s`` ago: one a killed ingest left on another key goes too."""
        from botocore.exceptions import BotoCoreError, ClientError

        age = self.stale_upload_s if older_than_s is None else older_than_s
        now = datetime.now(UTC)
        aborted = 0
        try:
            zone = self._key(key)
            if "/" in key:  # the zone's folder (raw/), with the lake's prefix
                zone = zone[:len(zone) - len(key)] + key.split("/", 1)[0] + "/"
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=zone)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if (now - upload["Initiated"]).total_seconds() >= age:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        aborted += 1
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("clean up unfinished uploads of", key, exc) from exc
        if aborted:
            log.info("aborted %d unfinished upload(s) of %s", aborted, key)
        return aborted

    def put_file(self, key: str, path: str | Path, *, overwrite: bool = False, sha256: str | None = None) -> bool:
        """Upload a file once: streamed in parts from disk (memory holds at most ``max_concurrency``
        parts), each part sent with its MD5, which the store checks (a byte changed in transit is
        refused, never stored); the object appears only when the upload completes, and without
        ``overwrite`` only if no other writer completed it first (a conditional write). Returns
        False when the object was already there."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not overwrite and self.exists(key):
            return False
        digest, size = (sha256, Path(path).stat().st_size) if sha256 else sha256_file(path)
        self.abort_stale_uploads(key)
        try:
            self._upload(key, Path(path), size, {"Metadata": {"sha256": digest}},
                         {} if overwrite else {"IfNoneMatch": "*"})
        except ClientError as exc:
            if _code(exc) != "PreconditionFailed":
                raise self._fail("upload", key, exc) from exc
            log.info("%s was completed by another writer first", key)
            written = False
        except BotoCoreError as exc:
            raise self._fail("upload", key, exc) from exc
        else:
            written = True
        found = self.digest(key, read=False)
        if found != (digest, size):
            raise StorageError(f"upload of {key!r} to {self.uri} did not round-trip: the store holds {found} "
                               f"(sha256, bytes), ({digest}, {size}) were sent")
        return written

    def _upload(self, key: str, path: Path, size: int, extra: dict[str, Any], condition: dict[str, str],
                data: bytes | None = None) -> None:
        import base64
        from concurrent.futures import ThreadPoolExecutor

        def md5(data: bytes) -> str:
            return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()

        name = self._key(key)
        if data is not None or size <= self.transfer.multipart_threshold:
            body = path.read_bytes() if data is None else data
            self.client.put_object(Bucket=self.bucket, Key=name, Body=body, ContentMD5=md5(body), **extra, **condition)
            return
        chunk = self.transfer.multipart_chunksize
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=name, **extra)["UploadId"]

        def send(number: int) -> dict[str, Any]:
            with open(path, "rb") as fh:
                fh.seek((number - 1) * chunk)
                data = fh.read(chunk)
            answer = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload, PartNumber=number,
                                             Body=data, ContentMD5=md5(data))
            return {"PartNumber": number, "ETag": answer["ETag"]}

        try:
            with ThreadPoolExecutor(self.transfer.max_request_concurrency, thread_name_prefix="trilho-upload") as pool:
                parts = list(pool.map(send, range(1, -(-size // chunk) + 1)))
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload,
                                                  MultipartUpload={"Parts": parts}, **condition)
        except BaseException:
            with contextlib.suppress(Exception):  # nothing half-written stays behind
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)
            raise

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if not overwrite and self.exists(key):
            return False
        try:
            self._upload(key, Path(), len(data), {"Metadata": {"sha256": hashlib.sha256(data).hexdigest()}},
                         {} if overwrite else {"IfNoneMatch": "*"}, data)
        except ClientError as exc:
            if _code(exc) == "PreconditionFailed":  # another writer completed it first
                return False
            raise self._fail("write", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("write", key, exc) from exc
        return True

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404"}:
                raise StorageError(f"object {key!r} not found in lake {self.uri}") from None
            raise self._fail("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from exc

    def download(self, key: str, path: str | Path) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, self._key(key), str(path), Config=self.transfer)
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404"}:
                raise StorageError(f"object {key!r} not found in lake {self.uri}") from None
            raise self._fail("download", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("download", key, exc) from exc
        return Path(path)

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
            for page in pages:
                keys += [obj["Key"][len(base):] for obj in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted(keys)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("delete", key, exc) from exc

    def digest(self, key: str, read: bool = True) -> tuple[str, int] | None:
        """sha256 and size of what the store holds under ``key``, streamed back and hashed (memory
        stays flat), or None when absent. ``read=False``: the sha256 recorded at upload (which the
        upload verified by reading back) and the stored size, from one HEAD request."""
        from botocore.exceptions import BotoCoreError, ClientError

        digest, size = hashlib.sha256(), 0
        try:
            if not read:
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return head.get("Metadata", {}).get("sha256", ""), head["ContentLength"]
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            for block in body.iter_chunks(1 << 20):
                digest.update(block)
                size += len(block)
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404"}:
                return None
            raise self._fail("read back", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read back", key, exc) from exc
        return digest.hexdigest(), size


def open_lake(settings: Settings, *, prepare: bool = True) -> Lake:
    """The lake named by settings: ``s3://bucket[/prefix]`` or a local folder.

    An S3 lake is checked first (bounded wait for the store, credentials, bucket bootstrap), so a
    store that is down or refuses the keys fails in seconds, before any work.
    """
    if settings.lake.startswith("s3://"):
        lake = S3Lake(settings.lake, settings)
        if prepare:
            lake.prepare(create=settings.create_buckets, wait_s=settings.s3_wait_s)
        return lake
    if "://" in settings.lake and not settings.lake.startswith("file://"):
        raise ConfigError(f"lake {settings.lake!r}: use a folder path, file://path or s3://bucket[/prefix]")
    return LocalLake(settings.lake.removeprefix("file://"))
