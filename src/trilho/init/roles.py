"""What each column of a data set is to the experiment ``trilho init`` proposes: a feature (numeric,
with a range, or categorical) or set aside (an identifier, free text, empty), and why. Pure: it
reads a ``trilho.init.census.Profile``; trilho.init.propose writes the answer into the experiment."""

from __future__ import annotations

import math

from trilho.init.census import CATEGORY_ROWS, CODE_MAX, ID_NAME, Column, Profile, category_limit

__all__ = ["column_role", "columns", "integer_codes"]

Notes = dict[str, list[str]]


def column_role(profile: Profile, n: str, c: Column) -> tuple[str, str | None]:
    """``drop``, ``categorical``, ``numeric`` or ``range`` (numeric with a finite range), and why."""
    # an identifier is told by its values: unique on every row, and text codes or a run of whole
    # numbers; an id-like name adds to them, never decides alone (a count named num_..., an amount
    # named ..._num, repeat their values and are features)
    if c.text and c.dates:
        return "date", (f"{n!r}: dates{' and times' if c.date_times else ''}, read as dates (data.dates): the "
                        "model gets its calendar parts (year, month, day, weekday, day of the year, "
                        f"{'hour, ' if c.date_times else ''}days since the start, the season), derived the same way "
                        "when it predicts")
    unique = profile.unique.get(n, False)
    idlike = bool(ID_NAME.search(n))
    run = c.integer and not c.text and math.isfinite(c.low) and c.high - c.low + 1 <= 2 * profile.rows
    if unique and (c.text or idlike or run):
        why = ", ".join(w for w, on in (("id-like name", idlike), ("a run of whole numbers", run)) if on)
        return "drop", (f"{n!r}: identifier (unique on every row{', ' + why if why else ''}); "
                        "kept beside predictions, not a feature")
    if c.gaps == profile.rows:
        return "drop", f"{n!r}: dropped, every value is missing"
    if c.marked:
        markers = c.markers or {}
        found = ", ".join(f"{k!r} on {v} rows" for k, v in markers.items())
        numbers = None if c.counts is None else len(set(c.counts) - set(markers))
        if integer_codes(profile, c, numbers):
            return "categorical", f"{n!r}: categorical (integer codes, with {found}) read as missing (data.missing_markers)"
        return "range", f"{n!r}: numeric with {found} read as missing (data.missing_markers)"
    if c.text or c.boolean:
        limit = category_limit(profile.rows)
        if c.distinct is None or c.distinct > limit:
            return "drop", (f"{n!r}: dropped, free text (over {limit} distinct values: a category needs about "
                            f"{CATEGORY_ROWS} rows a value); encode it yourself if it matters")
        return "categorical", (f"{n!r}: categorical ({'boolean' if c.boolean else 'text'}, "
                               f"{c.distinct} values; case and spaces ignored)")
    if integer_codes(profile, c, c.distinct):
        return "categorical", (f"{n!r}: categorical (integer codes, {c.distinct} values: "
                               f"{sorted(c.counts or {}, key=float)}); remove it from data.categorical if these are quantities")
    return ("range" if math.isfinite(c.low) else "numeric"), None


def integer_codes(profile: Profile, c: Column, distinct: int | None) -> bool:
    """Whole numbers with 3..CODE_MAX values (``distinct``), each on 20 rows or more on average: codes."""
    return c.integer and distinct is not None and 3 <= distinct <= CODE_MAX and profile.rows >= 20 * distinct


def columns(profile: Profile, target: str, notes: Notes) -> tuple[list[str], list[str], dict[str, list[float]]]:
    """The columns set aside, the categorical ones, and the observed ranges of the numeric ones."""
    drop: list[str] = []
    categorical: list[str] = []
    ranges: dict[str, list[float]] = {}
    for n, c in profile.columns.items():
        if n == target:
            continue
        role, why = column_role(profile, n, c)
        if why:
            notes["columns"].append(why)
        if role == "drop":
            drop.append(n)
        elif role == "categorical":
            categorical.append(n)
        elif role == "range":
            ranges[n] = [c.low, c.high]
    if ranges:
        notes["columns"].append(f"{len(ranges)} numeric column{'s' if len(ranges) > 1 else ''}; their observed ranges "
                                "are written as data.ranges: values outside are flagged by validation, and kept")
    return drop, categorical, ranges
