"""MLflow's scoring protocol, read and answered without a pandas frame per request: pure.

A request body is JSON with one of ``dataframe_split`` (``{"columns", "data"}``),
``dataframe_records`` (a list of objects), ``instances`` (a list of objects) or ``inputs`` (an
object of columns, or a list of objects), and optionally ``params``; or CSV with a header line.
It is read into one list of values per column (``Parsed.columns``), and the model's features are
encoded straight from those lists (``encode_request``) when every value is what a JSON body
usually holds (numbers for numeric features, text or whole numbers for categories, nulls).
Anything else (text in a numeric column, true/false, a CSV body) goes through a frame and
``encoding.encode_matrix``, which names the column of any value it cannot read. Both give the
same matrix: a test holds them equal.

JSON is read by orjson; a body holding the ``NaN`` or ``Infinity`` literals (which orjson refuses
and MLflow's own parser reads) is read again by the standard library's parser.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from trilho.errors import RequestError
from trilho.model.encoding import WRITTEN_MISSING, encode_matrix, fill_gaps, input_columns, remembered_codes

__all__ = ["FORMATS", "Parsed", "encode_request", "model_frame", "parse_body", "params_of"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_NONE = type(None)
_NUMBER = (int, float)
_CODE = (str, int, _NONE)  # values a categorical column's memory takes: text, whole numbers, nulls
_OBJECT = np.dtype(object)


@dataclass
class Parsed:
    """A request's rows: per column its values in row order, or (CSV) a frame; and its params."""

    rows: int
    columns: dict[str, list[Any]] | None = None
    frame: pd.DataFrame | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def as_frame(self) -> pd.DataFrame:
        """The rows as the frame MLflow's server would build of them."""
        if self.frame is not None:
            return self.frame
        assert self.columns is not None
        return pd.DataFrame({c: pd.Series(v, dtype=object).infer_objects() if v else pd.Series([], dtype=object)
                             for c, v in self.columns.items()})


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # the NaN and Infinity literals, as MLflow's server reads them
        return json.loads(body)
    except RecursionError:
        raise RequestError("the body nests JSON too deeply to be a table; send one of "
                           f"{list(FORMATS)} with a value per cell") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON ({str(exc)[:200]}); send one of {list(FORMATS)}") from None


def _from_records(records: Any, key: str) -> dict[str, list[Any]]:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError(f"{key!r} must be a list of objects, one per row (column name: value)")
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    return {c: [r.get(c) for r in records] for c in names}


def _from_split(split: Any) -> dict[str, list[Any]]:
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise RequestError("'dataframe_split' must be an object with 'columns' (the names) and 'data' (the rows)")
    columns, data = split.get("columns"), split["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError("'dataframe_split' needs 'columns': the list of column names, in the rows' order")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise RequestError(f"'dataframe_split' row {i} has {len(row) if isinstance(row, list) else 'no list of'} "
                               f"values; the columns are {len(columns)}: {columns}")
    return {c: [row[j] for row in data] for j, c in enumerate(columns)}


def _from_columns(inputs: dict[str, Any]) -> dict[str, list[Any]]:
    lengths = {len(v) for v in inputs.values() if isinstance(v, list)}
    if not lengths:  # one row, a value per column
        return {c: [v] for c, v in inputs.items()}
    if len(lengths) > 1 or any(not isinstance(v, list) for v in inputs.values()):
        raise RequestError("'inputs' as an object must hold one list of values per column, all of one length")
    return {c: list(v) for c, v in inputs.items()}


def parse_body(body: bytes, content_type: str) -> Parsed:
    """A request's rows and params, or a ``RequestError`` that says what the body should be."""
    mime, _, rest = (content_type or "").partition(";")
    mime = mime.strip().lower()
    charset = rest.partition("charset=")[2].strip().lower() or "utf-8"
    if charset not in ("utf-8", "utf8"):
        raise RequestError(f"charset {charset!r}: the server reads UTF-8 only", 415, "unsupported_media_type")
    if mime == "text/csv":
        try:
            frame = pd.read_csv(io.BytesIO(body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"the body is not CSV with a header line ({str(exc)[:200]})") from None
        return Parsed(rows=len(frame), frame=frame)
    if mime not in ("application/json", ""):
        raise RequestError(f"content type {mime!r}: send application/json or text/csv", 415, "unsupported_media_type")
    doc = _loads(body)
    if not isinstance(doc, dict):
        raise RequestError(f"the body must be a JSON object with one of {list(FORMATS)}; got a {type(doc).__name__}")
    found = [k for k in FORMATS if k in doc]
    if len(found) != 1:
        raise RequestError(f"the body must hold exactly one of {list(FORMATS)}; it holds {sorted(doc)}")
    key, value = found[0], doc[found[0]]
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise RequestError("'params' must be an object (name: value)")
    if key == "dataframe_split":
        columns = _from_split(value)
    elif key == "inputs" and isinstance(value, dict):
        columns = _from_columns(value)
    elif isinstance(value, list) and value and not isinstance(value[0], dict):
        raise RequestError(f"{key!r} holds rows without column names; send objects (column: value) or "
                           "'dataframe_split' with 'columns'")
    else:
        columns = _from_records(value, key)
    rows = len(next(iter(columns.values()))) if columns else 0
    return Parsed(rows=rows, columns=columns, params=params)


def params_of(params: dict[str, Any]) -> tuple[str, bool]:
    """The ``output`` and ``explain`` parameters of a request (the logged model's own two)."""
    unknown = sorted(set(params) - {"output", "explain"})
    if unknown:
        raise RequestError(f"params {unknown}: the model takes 'output' and 'explain'")
    explain = params.get("explain", False)
    if explain not in (True, False, "true", "false", "True", "False", 1, 0, "1", "0"):
        raise RequestError(f"params explain={explain!r}: use true or false")
    return str(params.get("output", "both")), explain in (True, "true", "True", 1, "1")


# a number written as text the way a CSV-to-JSON client or a web form sends one ("50", "-1.5e3"):
# what pandas' own conversion reads as the same number (anything else goes through the frame)
_NUMBER_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")
_TEXT_LIMIT = 10_000  # texts remembered per model


def _numbers(values: list[Any], spec: dict[str, Any]) -> list[float] | None:
    """A numeric column whose values include text: numbers written as text read as the numbers,
    a missing-value word (``NA``, a marker) as missing, each text worked out once and remembered;
    None where a value is something else (the frame's way names it)."""
    memo = spec.setdefault("__texts__", {})  # this model's own: text -> number (NaN: a missing-value word)
    written, markers, _ = _words(spec)
    out = []
    for v in values:
        kind = type(v)
        if kind in _NUMBER:
            out.append(v)
        elif v is None:
            out.append(np.nan)
        elif kind is str:
            found = memo.get(v)
            if found is None:
                word = v.strip()
                if word in written or word.upper() in markers:
                    found = np.nan
                elif _NUMBER_TEXT.fullmatch(v):
                    found = float(v)
                else:
                    return None
                if len(memo) < _TEXT_LIMIT:
                    memo[v] = found
            out.append(found)
        else:
            return None
    return out


def _words(spec: dict[str, Any]) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The model's missing-value words, worked out once and kept in its spec: the writers' words as
    written, its markers (upper-cased), and all of them upper-cased as category maps spell keys."""
    found = spec.get("__words__")
    if found is None:
        written, markers = frozenset(spec.get("written", WRITTEN_MISSING)), frozenset(spec.get("markers") or ())
        found = spec["__words__"] = (written, markers, frozenset(w.strip().upper() for w in written | markers))
    return found


def _words_coded(mapping: dict[str, int], spec: dict[str, Any]) -> bool:
    """A hand-written category map that gives a missing-value word a code: the frame's way reads
    the word as missing first, so the fast path (which would code it) steps aside."""
    return not _words(spec)[2].isdisjoint(mapping)


def _fast_matrix(columns: dict[str, list[Any]], rows: int, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The features as ``encode_matrix`` would give them and where they were missing (or, for a
    category, unseen) before the missing-value policy filled them; None where a value is not one
    the fast path reads (the caller then goes through a frame)."""
    features = spec["features"]
    out = np.empty((rows, len(features)), dtype="float64")
    memos = spec.setdefault("__memo__", {})  # this model's own: per categorical column, value -> code
    for j, col in enumerate(features):
        values = columns[col]
        mapping = spec["categorical"].get(col, False)
        if mapping is False:
            if all(type(v) in _NUMBER or v is None for v in values):
                out[:, j] = [np.nan if v is None else v for v in values]
                continue
            read = _numbers(values, spec)
            if read is None:
                return None
            out[:, j] = read
            continue
        if mapping is None or not all(type(v) in _CODE for v in values) or _words_coded(mapping, spec):
            return None
        # encode_matrix's own memory of each value's code: in an object column a value's code does not
        # depend on the rest of its column (a missing-value word has none, unless a map gives it one:
        # _words_coded sent that case to the frame)
        out[:, j] = remembered_codes(col, np.array(values, dtype=object), _OBJECT, mapping, memos.setdefault(col, {}))
    out[np.isinf(out)] = np.nan  # infinite is as unknown as missing
    gaps = np.isnan(out)
    if gaps.any() and spec.get("missing", "reject") == "reject":
        return None  # the frame's encoding names the column
    return fill_gaps(out, gaps, spec), gaps


def _check_cells(columns: dict[str, list[Any]], spec: dict[str, Any]) -> None:
    """Refuse, naming the column and row, a cell no table holds: a list or an object, or true/false
    where the model takes a number (reading it as 1 or 0 would be a guess)."""
    for col in input_columns(spec):
        numeric = spec["categorical"].get(col, False) is False and col not in spec.get("dates", {})
        for i, v in enumerate(columns[col]):
            if isinstance(v, list | dict):
                raise RequestError(f"column {col!r} row {i} holds a JSON {'list' if isinstance(v, list) else 'object'}; "
                                   "each cell must be a number, text or null")
            if numeric and isinstance(v, bool):
                raise RequestError(f"column {col!r} row {i} holds {str(v).lower()}; the model takes a number there "
                                   "(send 1 or 0 if that is what it means)")


def encode_request(parsed: Parsed, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The request's features as ``encode_matrix``'s float matrix, and where they were missing (a
    category: missing or unseen) before the model's policy filled them; ``ValueError`` naming the
    column that is missing or holds what the model cannot read."""
    if parsed.columns is not None:
        inputs = input_columns(spec)
        missing = [c for c in inputs if c not in parsed.columns]
        if missing:
            raise ValueError(f"missing feature columns {missing}; expected {inputs}")
        found = None if spec.get("dates") else _fast_matrix(parsed.columns, parsed.rows, spec)  # dates: the frame's way
        if found is not None:
            return found
        _check_cells(parsed.columns, spec)
    frame = parsed.as_frame()
    if spec.get("missing", "reject") in ("native", "reject"):  # nothing is filled
        X = encode_matrix(frame, spec)
        return X, np.isnan(X)
    X = encode_matrix(frame, {**spec, "missing": "native"})
    gaps = np.isnan(X)
    return fill_gaps(X, gaps, spec), gaps


def model_frame(X: np.ndarray, spec: dict[str, Any]) -> pd.DataFrame:
    """``encode_features``' frame of a float matrix, for models fitted on frames (integer codes
    where a categorical column is complete, as in training)."""
    frame = pd.DataFrame(X, columns=spec["features"])
    whole = {c: "int64" for c in spec["categorical"] if c in frame and not frame[c].isna().any()}
    return frame.astype(whole) if whole else frame
