"""The lake: one small interface over a local folder or an S3-compatible bucket.

Keys are POSIX-style relative paths (``raw/diabetes/<sha256>/file.csv``). ``put_*`` is write-once
unless ``overwrite=True`` (only reports and pointers use it): raw objects are never replaced.
A write is all-or-nothing: a reader never sees half an object.
"""

from __future__ import annotations

from trilho.errors import ConfigError
from trilho.settings import Settings
from trilho.storage.base import Lake, check_key, sha256_file
from trilho.storage.local import LocalLake
from trilho.storage.s3 import S3Lake

__all__ = ["Lake", "LocalLake", "S3Lake", "check_key", "open_lake", "sha256_file"]


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
