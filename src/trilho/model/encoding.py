"""Turn raw feature columns into model inputs; shared by training and by the logged model.

This module depends on pandas and numpy only, so that it can travel inside a logged model
(MLflow ``code_paths``) and run where trilho is not installed. The spec it reads is plain JSON:

- ``features``: the feature columns, in order;
- ``categorical``: per categorical column, its ``{VALUE: code}`` map (values stripped and
  upper-cased), or ``null`` before the categories are learned from a training fold;
- ``missing``: the policy (``impute``, ``native``, ``drop``, ``reject``) and ``fill``: per column
  the value a missing one becomes (the training fold's median, or its most frequent code);
- ``classes``: the label names in the order of the model's outputs; ``identifiers``: the columns
  that name a row (batch predictions keep them);
- ``written``: the words read as a missing value in any column as common writers write one
  (``WRITTEN_MISSING``: R's ``NA``, Excel's ``#N/A``, SQL's ``NULL``, ...), less those the
  experiment keeps as values; ``markers``: the experiment's own words for a missing value ("?");
- ``dates`` (only where the data has date columns): per date column, its ``format`` (None: ISO
  8601; a ``strftime`` pattern such as ``%d/%m/%Y``; ``epoch``: seconds since 1970), the calendar
  ``parts`` derived from it (``CALENDAR``) and the ``origin`` that ``days`` counts from (the
  training fold's first day); ``inputs``: the columns a caller sends, date columns as they are.
  Then ``features`` names the columns the model reads, each date column replaced by its parts
  (``signup.month``, ``signup.weekday``, ...); without dates the two lists are one.

A category never seen in training, like a missing value, gets the column's fill value (or stays
missing for a model that handles it natively): every row gets a prediction unless the policy is
``reject``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CALENDAR",
    "WRITTEN_MISSING",
    "calendar_columns",
    "calendar_names",
    "days_since_1970",
    "encoded_names",
    "input_columns",
    "parse_dates",
    "with_calendar",
    "encode_features",
    "encode_matrix",
    "feature_spec",
    "fill_gaps",
    "missing_words",
    "normalise_map",
    "normalise_text",
    "numeric_column",
    "remembered_codes",
    "unmark",
    "unseen_counts",
]

# how the common writers write a missing value: R's write.csv (NA), Excel (#N/A), SQL exports
# (NULL, null), pandas and NumPy (NaN, <NA>), and hand-made sheets (N/A). Read as missing in every
# column, matched as written (surrounding spaces aside): "None", "no" or "na" are values unless
# data.missing_markers names them, and data.not_missing keeps one of these as a value
WRITTEN_MISSING = ("NA", "#N/A", "NULL", "null", "NaN", "N/A", "<NA>")


# what a date column can become: year, month (1-12), day of month, weekday (Monday 0), day of
# year, hour (with minutes as its fraction), days since the training fold's first day, and the
# season as the day of the year on a circle (two columns: no holiday calendar, no jump at New Year)
CALENDAR = ("year", "month", "day", "weekday", "dayofyear", "hour", "days", "season")
_SEASON = ("season_sin", "season_cos")


def calendar_names(col: str, parts: list[str]) -> list[str]:
    """The columns a date column becomes: ``col.part`` per part (the season is two)."""
    out = []
    for part in parts:
        out += [f"{col}.{p}" for p in (_SEASON if part == "season" else (part,))]
    return out


def calendar_columns(spec: dict[str, Any]) -> frozenset[str]:
    """Every calendar part the spec's date columns become (none without dates)."""
    return frozenset(n for col, how in (spec.get("dates") or {}).items() for n in calendar_names(col, how["parts"]))


def input_columns(spec: dict[str, Any]) -> list[str]:
    """The columns a caller sends: the features, with each date column as it is."""
    return list(spec.get("inputs", spec["features"]))


def encoded_names(inputs: list[str], dates: dict[str, Any]) -> list[str]:
    """The model's columns: ``inputs`` with each date column replaced by its calendar parts."""
    out = []
    for col in inputs:
        out += calendar_names(col, dates[col]["parts"]) if col in dates else [col]
    return out


_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"  # an ISO 8601 offset from UTC at a date-time's end


def parse_dates(col: str, values: pd.Series, fmt: str | None = None) -> pd.Series:
    """A date column as naive date-times in their own wall-clock time (missing stays missing):
    already dates as they are (with a time zone: its local time), numbers as seconds since 1970 when
    ``fmt`` is ``epoch``, text by ``fmt`` (a ``strftime`` pattern) or as ISO 8601 (2021-03-04,
    2021-03-04 10:00). An offset (``+02:00``, ``Z``) is dropped: the weekday and the hour a row
    was written in are its local ones, whatever offset a writer added. ``ValueError`` naming the
    column, the values that are no dates and the fix."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(values):
        return values
    if fmt == "epoch":
        seconds = pd.to_numeric(values, errors="coerce")
        bad = values[seconds.isna() & values.notna()]
        if len(bad):
            raise ValueError(f"column {col!r} has values that are no seconds since 1970 {sorted(map(str, bad.unique()))[:5]}")
        return pd.to_datetime(seconds, unit="s")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.notna().any():
        raise ValueError(f"column {col!r} holds numbers where dates are expected (e.g. {values.dropna().iloc[0]}); "
                         f"set data.date_formats.{col} = \"epoch\" for seconds since 1970, or \"%Y%m%d\" for 20210304")
    text = values.astype("string").str.strip()
    text = text.where(text != "", None)
    if not fmt:  # the wall-clock time: an offset or a Z at the end is dropped
        text = text.str.replace(_OFFSET, "", regex=True)
    found = pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce")
    bad = text[found.isna() & text.notna()]
    if len(bad):
        how = f"the format {fmt!r}" if fmt else "ISO 8601 (2021-03-04 or 2021-03-04 10:00)"
        shown = sorted(map(str, bad.unique()))[:5]
        fix = (f"check the values (impossible dates, such as 2024-02-30, are refused), or, for another way of writing "
               f"them, name it in data.date_formats.{col} (e.g. \"%d/%m/%Y\")" if not fmt else
               f"{col!r} is read as {fmt!r} (data.date_formats.{col}): write its dates that way")
        raise ValueError(f"column {col!r} has values that are no dates in {how}: {shown}; {fix}")
    return found


def days_since_1970(when: pd.Series) -> pd.Series:
    """Parsed dates as days since 1970-01-01, with their fraction (missing: NaN)."""
    days = when.to_numpy(dtype="datetime64[s]").astype("int64").astype("float64") / 86_400.0
    days[when.isna().to_numpy()] = np.nan
    return pd.Series(days, index=when.index)


def _parts(when: pd.Series, parts: list[str], origin: float | None) -> dict[str, np.ndarray]:
    """The calendar parts of parsed dates, as floats (missing where the date is)."""
    dt = when.dt
    days = days_since_1970(when).to_numpy()
    out: dict[str, np.ndarray] = {}
    for part in parts:
        if part == "days":
            out[part] = days - (origin if origin is not None else np.nanmin(days) if np.isfinite(days).any() else 0.0)
        elif part == "season":
            angle = 2 * np.pi * (dt.day_of_year.to_numpy(dtype="float64", na_value=np.nan) - 1) / 365.25
            out["season_sin"], out["season_cos"] = np.sin(angle), np.cos(angle)
        elif part == "hour":
            out[part] = (dt.hour + dt.minute / 60).to_numpy(dtype="float64", na_value=np.nan)
        else:
            field = {"weekday": "day_of_week", "dayofyear": "day_of_year"}.get(part, part)
            out[part] = getattr(dt, field).to_numpy(dtype="float64", na_value=np.nan)
    return out


def with_calendar(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """``df`` with each date column's calendar parts added as number columns (``spec["dates"]``);
    ``df`` itself when the spec has no dates. ``ValueError`` naming a missing input column or a
    value that is no date."""
    dates = spec.get("dates")
    if not dates:
        return df
    inputs = input_columns(spec)
    missing = [c for c in inputs if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature columns {missing}; expected {inputs}")
    added = {}
    for col, how in dates.items():
        values = df[col]
        if not pd.api.types.is_datetime64_any_dtype(values):
            values = unmark(df[[col]], [col], spec.get("markers"), spec.get("written", WRITTEN_MISSING))[col]
        found = _parts(parse_dates(col, values, how.get("format")), how["parts"], how.get("origin"))
        added.update({f"{col}.{k}": v for k, v in found.items()})
    return df.assign(**added)


def normalise_text(values: pd.Series) -> pd.Series:
    """Strip surrounding whitespace and upper-case, keeping missing values missing.

    Whole numbers read as floats (an integer column with a missing value) read as the integers
    they are: the code 2 is "2" whether or not its column had a gap.
    """
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(dtype="float64")
        finite = numbers[np.isfinite(numbers)]
        if np.array_equal(finite, np.round(finite)) and not np.isinf(numbers).any():
            values = values.astype("Int64")
    return values.astype("string").str.strip().str.upper()


def normalise_map(mapping: dict[str, int]) -> dict[str, int]:
    """A hand-written code map in the same spelling as the values it meets (stripped, upper-cased)."""
    return {str(k).strip().upper(): int(v) for k, v in mapping.items()}


def feature_spec(features: list[str], categorical: dict[str, dict[str, int] | None], classes: list[str],
                 identifiers: list[str] | None = None, missing: str = "reject",
                 markers: list[str] | None = None, written: tuple[str, ...] | list[str] = WRITTEN_MISSING
                 ) -> dict[str, Any]:
    """The plain-data description of the encoding (before any fit: learned maps are ``None``)."""
    spec = {
        "features": list(features),
        "categorical": {c: (None if m is None else normalise_map(m)) for c, m in categorical.items()},
        "classes": list(classes),
        "identifiers": list(identifiers or []),
        "missing": missing,
        "fill": {},
        "written": list(written),
    }
    if markers:
        spec["markers"] = [m.strip().upper() for m in markers]
    return spec


def missing_words(values: pd.Series, markers: list[str] | None,
                  written: tuple[str, ...] | list[str] | None = WRITTEN_MISSING) -> np.ndarray:
    """Where ``values`` hold a word that means a missing value: one of ``written`` as written, or one of
    ``markers`` (stripped, upper-cased values: "?"). The one rule for training, prediction and serving.
    Numbers hold no such word. Each distinct value is looked at once.

    >>> missing_words(pd.Series(["NA", "na", "3", "", None, "#N/A"]), None).tolist()
    [True, False, False, False, False, True]
    """
    if (not markers and not written) or (pd.api.types.is_numeric_dtype(values)
                                         and not pd.api.types.is_bool_dtype(values)):
        return np.zeros(len(values), dtype=bool)
    try:
        distinct = pd.unique(values.dropna().to_numpy(dtype=object))
    except TypeError:  # an unhashable value (a list in a cell): every value on its own
        distinct = values.dropna().to_numpy(dtype=object)
    words, upper = frozenset(written or ()), frozenset(markers or ())
    hit = []
    for value in distinct:  # each distinct value once, in plain Python: as text, as pandas writes a value
        text = (value if type(value) is str else str(value)).strip()
        if text in words or (upper and text.upper() in upper):
            hit.append(value)
    return values.isin(hit).to_numpy(dtype=bool) if hit else np.zeros(len(values), dtype=bool)


def unmark(df: pd.DataFrame, columns: list[str], markers: list[str] | None,
           written: tuple[str, ...] | list[str] | None = WRITTEN_MISSING) -> pd.DataFrame:
    """``df`` with every value of ``columns`` that means a missing value (``missing_words``) made
    missing; ``df`` itself when there is nothing to do."""
    if not markers and not written:
        return df
    changed = {}
    for col in columns:
        if col not in df.columns:
            continue
        values = df[col]
        marked = missing_words(values, markers, written)
        if marked.any():
            changed[col] = values.astype(object).where(~marked, None)
    return df.assign(**changed) if changed else df


def numeric_column(col: str, values: pd.Series) -> pd.Series:
    """A column as numbers (its own dtype kept when already numeric), infinite values as missing;
    ``ValueError`` naming the column and its non-numeric values."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        converted = values
    else:
        converted = pd.to_numeric(values, errors="coerce")
        bad = values[converted.isna() & values.notna()]
        if len(bad):
            raise ValueError(f"column {col!r} has non-numeric values {sorted(map(str, bad.unique()))[:10]}")
    if pd.api.types.is_float_dtype(converted) and np.isinf(converted.to_numpy(dtype="float64")).any():
        converted = converted.replace([np.inf, -np.inf], np.nan)  # infinite is as unknown as missing
    return converted


def codes(col: str, values: pd.Series, mapping: dict[str, int]) -> pd.Series:
    """A categorical column as codes; missing and unseen values become NaN."""
    return normalise_text(values).map(mapping).astype("float64")


def encode_features(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Select the spec's feature columns in order, encode categoricals, apply the missing policy.

    Numeric columns keep the dtype pandas gave them when nothing is filled (integers stay integers,
    which matters for resamplers that round synthetic rows back to the input dtype); codes are
    integers once complete. Raises ``ValueError`` naming the column and values it cannot encode.
    """
    df = with_calendar(df, spec)
    missing = [c for c in spec["features"] if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature columns {missing}; expected {spec['features']}")
    df = unmark(df, spec["features"], spec.get("markers"), spec.get("written", WRITTEN_MISSING))
    policy, fill = spec.get("missing", "reject"), spec.get("fill", {})
    out = {}
    for col in spec["features"]:
        mapping = spec["categorical"].get(col, False)
        if mapping is False:
            values = numeric_column(col, df[col])
        elif mapping is None:
            raise ValueError(f"column {col!r}: categories not learned yet (fit the encoder first)")
        else:
            values = codes(col, df[col], mapping)
        if values.hasnans:
            if policy == "reject":
                rows = np.flatnonzero(values.isna().to_numpy())[:10].tolist()
                raise ValueError(f"column {col!r} has {int(values.isna().sum())} missing, infinite or unknown "
                                 f"values (rows {rows}) and the model's missing-value policy is 'reject'")
            if policy != "native" and col in fill:
                values = values.fillna(fill[col])
        if mapping is not False and not values.hasnans:
            values = values.astype("int64")
        out[col] = values
    return pd.DataFrame(out, index=df.index)


def unseen_counts(df: pd.DataFrame, spec: dict[str, Any]) -> dict[str, int]:
    """Per categorical column, how many values the model never saw in training (missing ones apart)."""
    out = {}
    for col, mapping in spec["categorical"].items():
        if col in df.columns and mapping:
            normal = normalise_text(df[col])
            n = int((normal.notna() & ~normal.isin(list(mapping))).sum())
            if n:
                out[col] = n
    return out


def _plain_number(dtype: Any) -> bool:
    """A dtype whose values are numbers as they stand (what ``numeric_column`` keeps unconverted)."""
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not isinstance(dtype, pd.CategoricalDtype))


_SMALL_ROWS = 1_000   # up to this many rows, encode_matrix reads the frame as one object array
_MEMO_LIMIT = 10_000  # values remembered per categorical column (a served model sees the same few again and again)


def remembered_codes(col: str, raw: np.ndarray, dtype: Any, mapping: dict[str, int], memo: dict) -> np.ndarray:
    """``codes`` of a text column, each distinct value computed once by ``codes`` itself and then
    remembered: text normalises value by value, so a remembered code is the one ``codes`` gives.
    Keys carry the value's type (1 and "1" and 1.0 are three values to pandas' text conversion)."""
    try:
        keys = [(type(v), v) for v in raw]
        todo = sorted({i for i, k in enumerate(keys) if k not in memo})
    except TypeError:  # an unhashable value: no memory, the plain way
        return codes(col, pd.Series(raw, dtype=dtype), mapping).to_numpy(dtype="float64")
    if todo:
        found = codes(col, pd.Series(raw[todo], dtype=dtype), mapping).to_numpy(dtype="float64")
        if len(memo) + len(todo) > _MEMO_LIMIT:
            return codes(col, pd.Series(raw, dtype=dtype), mapping).to_numpy(dtype="float64")
        memo.update(zip((keys[i] for i in todo), found, strict=True))
    return np.fromiter((memo[k] for k in keys), dtype="float64", count=len(keys))


_PLAN_LIMIT = 64  # column layouts remembered per model (a served model sees the same one again and again)


def _plan(names: list[str], dtypes: list[Any], spec: dict[str, Any]) -> tuple[dict[str, int], list[int], list[int], list[int]]:
    """For a frame's column names and dtypes: where each name is, and which features are numbers
    as they stand, which categories held as text, and which the rest (``encode_features`` column by
    column). The same layout arrives with every request, so the answer is remembered per layout."""
    plans = spec.setdefault("__plans__", {})  # this model's own, like "__memo__"
    try:
        key: Any = (tuple(names), tuple(dtypes))
        found = plans.get(key)
    except TypeError:  # an unhashable dtype: work it out every time
        key, found = None, None
    if found is not None:
        return found
    features = spec["features"]
    where = {c: i for i, c in enumerate(names)}
    missing = [c for c in features if c not in where]
    if missing:
        raise ValueError(f"missing feature columns {missing}; expected {features}")
    types = [dtypes[where[c]] for c in features]
    plain = [i for i, c in enumerate(features) if spec["categorical"].get(c, False) is False and _plain_number(types[i])]
    taken = set(plain)
    others = [i for i in range(len(features)) if i not in taken]
    texts = [i for i in others if spec["categorical"].get(features[i], False)
             and (pd.api.types.is_object_dtype(types[i]) or isinstance(types[i], pd.StringDtype))]
    rest = [i for i in others if i not in texts]
    found = (where, plain, texts, rest)
    if key is not None and len(plans) < _PLAN_LIMIT:
        plans[key] = found
    return found


def encode_matrix(df: pd.DataFrame, spec: dict[str, Any]) -> np.ndarray:
    """``encode_features`` as one float64 matrix, what a prediction needs, at a fraction of its cost
    on a few rows: a request's rows are read as one object array (not a column at a time), numeric
    columns that pandas already holds as numbers are cast without checks, a categorical column's
    codes are remembered per distinct value, and only the rest (text that should be numbers) goes
    through ``encode_features``. Same values, same missing-value policy, same errors, in the same
    order (a test holds the two equal)."""
    features = spec["features"]
    df = unmark(with_calendar(df, spec), features, spec.get("markers"), spec.get("written", WRITTEN_MISSING))
    # the column names as a plain list: asking a pandas Index (text held by Arrow) for a name builds
    # its lookup table anew for every request's fresh frame
    names = df.columns.tolist()
    dtypes = df.dtypes.tolist()
    where, plain, texts, rest = _plan(names, dtypes, spec)
    policy = spec.get("missing", "reject")
    out = np.empty((len(df), len(features)), dtype="float64")
    # a few rows (a request): every value in one object array at once, cheaper than a column at a time
    raw = df.to_numpy(dtype=object) if len(df) <= _SMALL_ROWS and len(where) == len(names) else None
    for i in plain:
        if raw is not None and isinstance(dtypes[where[features[i]]], np.dtype):
            out[:, i] = raw[:, where[features[i]]].astype("float64")
        else:
            out[:, i] = df[features[i]].to_numpy(dtype="float64", na_value=np.nan)
    out[np.isinf(out)] = np.nan  # infinite is as unknown as missing
    try:
        memos = spec.setdefault("__memo__", {})  # this model's own: per categorical column, value -> code
        for i in texts:
            col = features[i]
            values = raw[:, where[col]] if raw is not None else df[col].to_numpy(dtype=object)
            out[:, i] = remembered_codes(col, values, dtypes[where[col]], spec["categorical"][col], memos.setdefault(col, {}))
        if rest:  # text that should be numbers, and the rest: column by column, as in training
            part = encode_features(df[[features[i] for i in rest]],
                                   {**spec, "features": [features[i] for i in rest], "missing": "native",
                                    "dates": {}})  # the calendar parts are columns by now
            out[:, rest] = part.to_numpy(dtype="float64", na_value=np.nan)
        gaps = np.isnan(out)
        if policy == "reject" and gaps.any():
            raise ValueError("a gap under 'reject'")
    except ValueError:  # bad input: the column-by-column encoding names the first bad column, in order
        encode_features(df, spec)
        raise
    return fill_gaps(out, gaps, spec)


def fill_gaps(X: np.ndarray, gaps: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """``X`` (filled in place) where ``gaps`` holds, as the model's missing-value policy says: each
    column's fill value, or (``native``) the gaps kept."""
    if not gaps.any() or spec.get("missing", "reject") == "native":
        return X
    fill, features = spec.get("fill", {}), spec["features"]
    for i in np.flatnonzero(gaps.any(axis=0)).tolist():
        if features[i] in fill:
            X[gaps[:, i], i] = fill[features[i]]
    return X
