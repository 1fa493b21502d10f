"""The lake in a local folder: each write lands in a temporary file and is renamed into place."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from trilho.errors import StorageError
from trilho.storage.base import check_key, sha256_file

__all__ = ["LocalLake"]

log = logging.getLogger(__name__)


def _create_temporary(folder: Path) -> tuple[int, str]:
    """A new temporary file in ``folder``, open for writing, created with mode 0666 less the umask
    (as any file a program makes: 0644 under umask 022, 0664 under 002), so a lake folder a team
    shares stays readable to it; ``tempfile.mkstemp`` would make it 0600 whatever the umask."""
    name = str(folder / f".tmp-{secrets.token_hex(8)}")  # 64 random bits; O_EXCL refuses a taken name
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name


class LocalLake:
    """A lake in a local folder (the embedded default)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

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
            fd, name = _create_temporary(final.parent)
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

