"""What every lake shares: the interface, key checks, file digests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from trilho.errors import StorageError

__all__ = ["Lake", "check_key", "sha256_file"]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Hex sha256 and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def check_key(key: str) -> str:
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
