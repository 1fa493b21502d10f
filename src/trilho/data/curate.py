"""The data stage: ingest the source into the lake (idempotent), read the raw object back and
check it is what was written, validate, clean, and keep the curated Parquet beside it; then the
rows the folds see under the duplicate policy."""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from trilho.data.clean import CleanData, clean
from trilho.data.ingest import Ingested, ingest, repair_raw
from trilho.data.tables import read_table
from trilho.data.validate import raise_for_errors, validate
from trilho.errors import StorageError
from trilho.evaluation.splits import duplicate_groups
from trilho.experiment import Experiment
from trilho.schemas import ValidationReport
from trilho.settings import Settings
from trilho.storage import Lake, open_lake, sha256_file

__all__ = ["CURATED_ROW_GROUP", "fold_data", "fold_group_columns", "load_clean", "read_curated"]

log = logging.getLogger(__name__)
CURATED_ROW_GROUP = 100_000


def load_clean(exp: Experiment, settings: Settings, lake: Lake | None = None
               ) -> tuple[Ingested, pd.DataFrame, ValidationReport, CleanData]:
    """Ingest (idempotent), read the raw object back from the lake, validate, clean, curate."""
    lake = lake or open_lake(settings)
    ingested, raw = _read_raw(exp, settings, lake)
    report = validate(raw, exp)
    raise_for_errors(report)
    data = clean(raw, exp)
    report["curated_key"] = _curate(lake, data, f"curated/{exp.name}/{ingested.manifest['sha256']}/data.parquet")
    return ingested, raw, report, data


def _read_raw(exp: Experiment, settings: Settings, lake: Lake) -> tuple[Ingested, pd.DataFrame]:
    """The raw object as the lake holds it, checked against its manifest's digest. A copy that does
    not match is read again (a transfer can be corrupt where the stored copy is not); one that reads
    wrong twice is repaired from the source, fetched first, so a source that fails leaves the lake
    as it was and stops the run with a StorageError."""
    pinned = exp.source.sha256 or None
    ingested = ingest(exp.source.uri, lake, settings, exp.name, pinned)
    expected = ingested.manifest["sha256"]
    with tempfile.TemporaryDirectory(prefix="trilho-raw-") as tmp:
        local = Path(tmp) / ingested.manifest["file_name"]
        reads = [_download(lake, ingested.key, local)]  # the round trip: what comes back is what went in
        if reads[0] != expected:
            reads.append(_download(lake, ingested.key, local))
            if reads[1] == expected:
                log.warning("raw object %s read back with sha256 %s, then %s as its manifest says: a read was "
                            "corrupt in transit; the second read is used", lake.url(ingested.key), reads[0], expected)
        if reads[-1] != expected:
            repair_raw(exp.source.uri, lake, settings, ingested, reads)
            digest = _download(lake, ingested.key, local)
            if digest != expected:
                raise StorageError(f"raw object {lake.url(ingested.key)} has sha256 {digest} right after it was "
                                   f"written with {expected}: the store changes what it holds")
        return ingested, read_table(local)


def _download(lake: Lake, key: str, local: Path) -> str:
    """Download ``key`` to ``local``; the sha256 of what arrived."""
    return sha256_file(lake.download(key, local))[0]


def _curate(lake: Lake, data: CleanData, key: str) -> str:
    """The curated Parquet at ``key`` with its digest beside it (rebuilt when absent or not intact)."""
    if read_curated(lake, key) is None:
        buffer = io.BytesIO()
        # row groups of CURATED_ROW_GROUP rows: the partitions a distributed final fit reads, one per task
        data.curated().to_parquet(buffer, index=False, row_group_size=CURATED_ROW_GROUP)
        lake.put_bytes(key, buffer.getvalue(), overwrite=True)
        lake.put_bytes(key + ".sha256", hashlib.sha256(buffer.getvalue()).hexdigest().encode(), overwrite=True)
    return key


def read_curated(lake: Lake, key: str) -> str | None:
    """The digest of a curated object when the lake holds it intact (its bytes hash to the digest
    recorded beside it), else None: a derived object that cannot be trusted is rebuilt, never used."""
    if not lake.exists(key + ".sha256"):
        return None
    recorded = lake.get_bytes(key + ".sha256").decode().strip()
    held = lake.digest(key)
    if held is None or held[0] != recorded:
        log.warning("curated %s does not match its digest: it is rebuilt", lake.url(key))
        return None
    return recorded


def fold_group_columns(data: CleanData, exp: Experiment) -> pd.DataFrame | None:
    """The ``evaluation.groups`` columns of the rows the folds see (``fold_data``'s rows)."""
    if data.group_columns is None:
        return None
    if exp.cv.duplicates != "drop":
        return data.group_columns
    first = ~pd.Series(duplicate_groups(data.X)).duplicated().to_numpy()
    return data.group_columns.loc[first].reset_index(drop=True)


def fold_data(data: CleanData, exp: Experiment) -> tuple[pd.DataFrame, Any, Any, dict[str, Any]]:
    """The rows and groups the folds see under the duplicate policy, and what the policy did."""
    groups = duplicate_groups(data.X)
    distinct = len(set(groups))
    info = {"policy": exp.cv.duplicates, "rows": int(len(data.y)), "distinct_feature_rows": distinct,
            "rows_copying_another": int(len(groups) - distinct)}
    if exp.cv.duplicates == "drop":
        first = ~pd.Series(groups).duplicated().to_numpy()
        info["rows_used"] = int(first.sum())
        return data.X.loc[first].reset_index(drop=True), data.y[first], None, info
    info["rows_used"] = int(len(data.y))
    return data.X, data.y, (groups if exp.cv.duplicates == "group" else None), info
