"""Tables as users write them: CSV in any separator, line ending, decimal mark and the encodings
trilho knows, or Parquet; read whole, in bounded chunks, or their head only, with the checks that
refuse a file before it costs memory (its size, its longest line, a spreadsheet or a header with
a name twice), each in one line that names the file and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from trilho.errors import DataValidationError, SourceError

if TYPE_CHECKING:  # pandas is imported where a table is read: a refusal before that costs no import of it
    import pandas as pd

__all__ = ["HEAD_BYTES", "MAX_LINE_BYTES", "Scanned", "check_header", "check_lines", "check_size", "check_text",
           "csv_dialect", "is_parquet", "iter_chunks", "not_utf8", "read_head", "read_table", "scan_file"]


def is_parquet(path: str | Path) -> bool:
    """A Parquet file, by its magic bytes (whatever its name)."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def _name(path: str | Path | io.BytesIO) -> str:
    return "the upload" if isinstance(path, io.BytesIO) else Path(path).name


_SEPARATORS = (",", ";", "\t", "|")
_DECIMAL_COMMA = re.compile(r"^[-+]?\d*,\d+$")
_DECIMAL_POINT = re.compile(r"^[-+]?\d*\.\d+$")
_SNIFF_BYTES = 1 << 16


def csv_dialect(head: bytes) -> dict[str, str]:
    """``read_csv``'s ``sep`` and ``decimal`` for a CSV whose first bytes are ``head``.

    A comma unless the first lines (at most 50) split into the same number of fields, more than one,
    only on another separator (";", tab, "|"); with ";" (a European spreadsheet export), numbers
    written "3,5" and none "3.5" mean a decimal comma.
    """
    lines = [line for line in head.decode("utf-8-sig", errors="replace").splitlines() if line.strip()]
    if len(head) >= _SNIFF_BYTES:  # a full head's last line may be cut short
        lines = lines[:-1] or lines
    lines = lines[:50]
    for sep in _SEPARATORS:
        rows = list(csv.reader(lines, delimiter=sep))
        if rows and len(rows[0]) > 1 and all(len(r) == len(rows[0]) for r in rows):
            break
    else:
        return {"sep": ",", "decimal": "."}
    values = [v.strip() for r in rows[1:] for v in r]
    comma = sep != "," and any(_DECIMAL_COMMA.match(v) for v in values) and \
        not any(_DECIMAL_POINT.match(v) for v in values)
    return {"sep": sep, "decimal": "," if comma else "."}


_SAVE_AS = "open it in the program that wrote it and save it as 'CSV UTF-8', or convert it"


def not_utf8(name: str, data: bytes, exc: UnicodeDecodeError, head: bool = True) -> DataValidationError:
    """The error for text that is not UTF-8: where (``head``: ``data`` is the file's first bytes),
    what the byte reads as in the encoding older spreadsheet exports use (Windows-1252, a superset
    of Latin-1 for text), and the fix."""
    bad = bytes(data[exc.start:exc.start + 1])
    where = f"a byte past the first {_SNIFF_BYTES // 1024} KiB"
    if head:
        line = bytes(data[:exc.start]).count(b"\n") + 1
        where = f"line {line}, byte {exc.start:,}"
    return DataValidationError(
        f"{name!r} is not UTF-8 text: {where} is 0x{bad.hex()}, {bad.decode('cp1252', errors='replace')!r} in "
        f"Windows-1252/Latin-1, the encoding older Excel and many exports write; {_SAVE_AS} "
        "(iconv -f WINDOWS-1252 -t UTF-8 IN > OUT)")


def check_text(head: bytes, name: str) -> None:
    """Refuse, naming what the file is and the fix, a file that is no UTF-8 CSV text: a spreadsheet
    saved under a .csv name, UTF-16 text (Excel's 'Unicode Text'), Latin-1 text."""
    if head.startswith(b"\x1f\x8b"):  # gzip: the CSV reader decompresses it by its name
        return
    if head.startswith(b"PK\x03\x04"):
        raise DataValidationError(f"{name!r} is a spreadsheet (.xlsx) or a zip archive, not CSV text, whatever its "
                                  f"name says; {_SAVE_AS}")
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise DataValidationError(f"{name!r} is an old Excel workbook (.xls), not CSV text; {_SAVE_AS}")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:4096]:
        raise DataValidationError(f"{name!r} is UTF-16 text (as Excel's 'Unicode Text' and some Windows tools write "
                                  f"it), not UTF-8; {_SAVE_AS} (iconv -f UTF-16 -t UTF-8 IN > OUT)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not a character cut short by the end of the head
            raise not_utf8(name, head, exc) from None


def check_header(head: bytes, sep: str, name: str) -> None:
    """Refuse a header that names one column twice (pandas would rename the copy 'name.1' silently)."""
    first = head.decode("utf-8-sig", errors="replace").splitlines()[:1]
    names = next(csv.reader(first, delimiter=sep), []) if first else []
    seen: dict[str, list[int]] = {}
    for i, col in enumerate(names, start=1):
        seen.setdefault(col, []).append(i)
    twice = {c: at for c, at in seen.items() if len(at) > 1 and c.strip()}
    if twice:
        listed = "; ".join(f"{c!r} at columns {at}" for c, at in twice.items())
        raise DataValidationError(f"{name!r} names a column more than once in its header ({listed}): each column "
                                  "needs its own name; rename or remove the copies")


def _dialect_of(path: str | Path | io.BytesIO, name: str | None = None) -> tuple[str, str]:
    if isinstance(path, io.BytesIO):
        with path.getbuffer() as view:  # the head only, not a copy of the whole buffer
            head = bytes(view[:_SNIFF_BYTES])
    else:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    name = name or _name(path)
    check_text(head, name)
    found = csv_dialect(head)
    check_header(head, found["sep"], name)
    return found["sep"], found["decimal"]


# only an empty cell is a missing value: pandas' own words ("NA", "None", "null", "NaN", "N/A", ...)
# are values as written (a class may be called "None"); the words this data uses for a missing
# value are the experiment's data.missing_markers, which `trilho init` finds and proposes
AS_WRITTEN: dict[str, Any] = {"keep_default_na": False, "na_values": [""]}


def read_table(path: str | Path | io.BytesIO, nrows: int | None = None, name: str | None = None) -> pd.DataFrame:
    """Read a CSV (LF, CRLF or CR-only line endings, optional UTF-8 BOM; comma, semicolon, tab or
    pipe separated, ``csv_dialect``) or a Parquet file into a frame."""
    import pandas as pd

    if not isinstance(path, io.BytesIO) and is_parquet(path):
        import pyarrow.parquet as pq

        try:
            source = pq.ParquetFile(path)
            if nrows is None:
                return source.read().to_pandas()
            return next(source.iter_batches(batch_size=nrows)).to_pandas() if source.metadata.num_rows else \
                source.schema_arrow.empty_table().to_pandas()
        except Exception as exc:  # pyarrow raises several kinds for a damaged file
            raise DataValidationError(f"{name or _name(path)!r} is not a readable Parquet file: {exc}") from None
    try:
        with warnings.catch_warnings():
            # index_col=False: a row longer than the header is an error, never a silent index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # the C engine accepts CR-only files; the python engine would not
            sep, decimal = _dialect_of(path, name)
            return pd.read_csv(path, engine="c", encoding="utf-8-sig", index_col=False, nrows=nrows, sep=sep,
                               decimal=decimal, **AS_WRITTEN)
    except pd.errors.ParserWarning as exc:
        raise DataValidationError(f"{name or _name(path)!r} is not a readable CSV: rows are longer than the header "
                                  f"({exc})") from None
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{name or _name(path)!r} is empty: no columns to parse") from None
    except UnicodeDecodeError as exc:
        raise not_utf8(name or _name(path), exc.object, exc, head=False) from None
    except pd.errors.ParserError as exc:
        raise DataValidationError(f"{name or _name(path)!r} is not a readable CSV: {exc}") from exc


def iter_chunks(path: Path, rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Chunks of a CSV or Parquet file, only ``columns`` of them (those the file has) when given;
    memory holds one chunk at a time."""
    import pandas as pd

    if is_parquet(path):
        import pyarrow.parquet as pq

        source = pq.ParquetFile(path)
        chosen = None if columns is None else [c for c in source.schema_arrow.names if c in set(columns)]
        for batch in source.iter_batches(batch_size=rows, columns=chosen):
            yield batch.to_pandas()
        return
    wanted = None if columns is None else set(columns).__contains__
    sep, decimal = _dialect_of(path)
    try:
        yield from pd.read_csv(path, chunksize=rows, engine="c", encoding="utf-8-sig", index_col=False, usecols=wanted,
                               low_memory=False, sep=sep, decimal=decimal, **AS_WRITTEN)
    except UnicodeDecodeError as exc:
        raise not_utf8(path.name, exc.object, exc, head=False) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataValidationError(f"{path.name!r} is not a readable CSV: {exc}") from None


HEAD_BYTES = 8 << 20  # the head check reads at most this much of a file


def check_size(path: Path, source: str, limit: int) -> int:
    """The file's size, or a SourceError when it is over the limit (before a byte of it is read)."""
    size = path.stat().st_size
    if size > limit:
        raise SourceError(f"source {source!r} is {size:,} bytes, over TRILHO_MAX_SOURCE_BYTES={limit:,}; "
                          "raise the limit if the file is meant to be this large")
    return size


def read_head(path: str | Path, rows: int = 1000, max_bytes: int = HEAD_BYTES) -> pd.DataFrame:
    """Parse the first ``rows`` rows of a CSV (or a Parquet file's first batch) from at most
    ``max_bytes`` of it: a file with no line break in that much is refused, never read whole."""
    if is_parquet(path):
        return read_table(path, nrows=rows)
    with open(path, "rb") as fh:
        block = fh.read(max_bytes)
        more = bool(fh.read(1))
    if block.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        raise DataValidationError(f"{Path(path).name!r} is an HTML page, not data (a login or error page served "
                                  "in its place?); check the address")
    if more:
        end = max(block.rfind(b"\n"), block.rfind(b"\r"))
        if end < 0:
            raise DataValidationError(f"{Path(path).name!r} has no line break in its first {max_bytes:,} bytes: "
                                      "not a CSV (a row that long is not table data)")
        block = block[:end + 1]
    return read_table(io.BytesIO(block), nrows=rows, name=Path(path).name)


class Scanned(NamedTuple):
    sha256: str
    bytes: int
    lines: int
    longest_line: int  # bytes, its ending aside


def scan_file(path: str | Path, chunk: int = 1 << 22) -> Scanned:
    """sha256, bytes, number of lines and the longest line's length of a file in one streamed pass
    (memory stays flat).

    The line ending is read off the first block: LF and CRLF files count LFs, CR-only files
    (an old spreadsheet export) count CRs. A last line without an ending counts too.
    """
    import numpy as np

    digest = hashlib.sha256()
    size = lines = longest = 0
    ending = None
    last = b""
    since = 0  # bytes since the last line ending
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            if ending is None and (b"\r" in block or b"\n" in block):
                ending = b"\r" if b"\n" not in block else b"\n"
            digest.update(block)
            size += len(block)
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == ending[0]) if ending else np.empty(0, np.int64)
            lines += len(ends)
            if len(ends):
                longest = max(longest, since + int(ends[0]), int(np.diff(ends).max(initial=0)) - 1)
                since = len(block) - int(ends[-1]) - 1
            else:
                since += len(block)
            longest = max(longest, since)
            last = block[-1:]
    lines += size > 0 and last not in (b"\n", b"\r")
    return Scanned(digest.hexdigest(), size, lines, longest)


MAX_LINE_BYTES = 8 << 20  # a CSV row longer than this is no table data (and would take gigabytes to parse)


def check_lines(path: Path, scanned: Scanned, name: str) -> None:
    """Refuse a CSV with a line over ``MAX_LINE_BYTES`` before a row is parsed: the reader would hold
    it whole, several times over."""
    if scanned.longest_line > MAX_LINE_BYTES and not is_parquet(path):
        raise DataValidationError(
            f"{name!r} has a line of {scanned.longest_line:,} bytes; trilho reads rows of at most {MAX_LINE_BYTES:,} "
            "bytes (a file saved without line breaks, or a cell holding a whole document?): split it into rows, or "
            "keep long text out of the table")
