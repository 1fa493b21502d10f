"""The lake in an S3-compatible bucket (MinIO, SeaweedFS, AWS): conditional writes, bounded waits, typed errors."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trilho.errors import ConfigError, StorageError
from trilho.settings import Settings
from trilho.storage.base import check_key, sha256_file

__all__ = ["S3Lake"]

log = logging.getLogger(__name__)

# every S3 call: connect within 2 s, an answer within 60 s, three attempts in all (standard retry mode;
# botocore's ``max_attempts`` counts retries after the first request, ``total_max_attempts`` counts requests)
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
        retries = {"mode": "standard", "total_max_attempts": _ATTEMPTS}
        self.client = session.client("s3", config=Config(retries=retries, **common), **credentials)
        # the preflight polls on its own clock, so its client does not retry, and a store that accepts
        # connections but never answers costs one short read timeout per poll, not a minute
        probe = {**common, "read_timeout": min(5.0, max(1.0, settings.s3_wait_s))}
        once = {"mode": "standard", "total_max_attempts": 1}
        self._probe = session.client("s3", config=Config(retries=once, **probe), **credentials)
        # num_download_attempts=1: s3transfer's own retries of a download sit on top of botocore's (a
        # store that never answers took 5 x 3 requests), so botocore's are the only ones: each request
        # gets _ATTEMPTS in all, and a body that breaks off is one StorageError, as for get_bytes
        self.transfer = TransferConfig(multipart_threshold=16 * 1024**2, multipart_chunksize=16 * 1024**2,
                                       max_concurrency=4, use_threads=True, num_download_attempts=1)

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
        key = check_key(key)
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
        with self._reading("read", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def download(self, key: str, path: str | Path) -> Path:
        with self._reading("download", key):
            self.client.download_file(self.bucket, self._key(key), str(path), Config=self.transfer)
        return Path(path)

    @contextlib.contextmanager
    def _reading(self, action: str, key: str) -> Iterator[None]:
        """A read of ``key``: a missing object and a failing store are each one StorageError."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404"}:
                raise StorageError(f"object {key!r} not found in lake {self.uri}") from None
            raise self._fail(action, key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail(action, key, exc) from exc
        except Boto3Error as exc:  # a download's transfer failed (its body broke off): boto3's own kinds
            raise self._fail(action, key, getattr(exc, "last_exception", None) or exc) from exc

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
