"""Check a raw table against its experiment: pure, returns a report, raises on what cannot run.

Errors stop the run (unknown labels, missing columns, non-numeric values, missing values when
data.missing rejects them, too few rows, classes too small for the folds or the resampler).
Warnings are reported and kept (missing values under the other policies, duplicates, conflicting
labels, values outside plausible ranges). Missing values are counted per column either way.
Row references are file line numbers: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from trilho.data.clean import unlabelled
from trilho.data.leaks import blocking
from trilho.errors import DataValidationError
from trilho.evaluation.splits import duplicate_groups
from trilho.experiment import Experiment
from trilho.model.catalog import resampler_kind
from trilho.model.encoding import days_since_1970, normalise_text, numeric_column, parse_dates, unmark
from trilho.schemas import ValidationReport

__all__ = ["raise_for_errors", "record_leaks", "repeats_phrase", "validate"]

_MAX_LISTED = 20


def _lines(index: pd.Index) -> list[int]:
    return [int(i) + 2 for i in index[:_MAX_LISTED]]


def _feature_columns(df: pd.DataFrame, exp: Experiment) -> list[str]:
    skip = {exp.data.target, *exp.data.drop}
    return [c for c in df.columns if c not in skip]


def _check_labels(df: pd.DataFrame, exp: Experiment, report: ValidationReport, errors: list) -> pd.Series | None:
    target = exp.data.target
    raw = df[target]
    normal = normalise_text(raw)
    report["labels"] = {
        "raw_counts": {str(k): int(v) for k, v in raw.value_counts(dropna=False).items()},
        "normalised_rows": int((raw.astype("string") != normal).fillna(False).sum()),
    }
    codes = exp.data.codes  # case and surrounding spaces ignored
    unknown = normal[~normal.isin(list(codes)) | normal.isna()]
    if len(unknown):
        values = sorted({str(v) for v in raw.loc[unknown.index].unique()})
        report["labels"]["unknown"] = {"values": values, "lines": _lines(unknown.index)}
        errors.append(
            f"column {target!r} has {len(unknown)} unknown labels {values} on lines "
            f"{_lines(unknown.index)}; known labels are {_known(exp)} (fix the rows or data.labels)"
        )
        return None
    merged = {name: sorted(seen) for name, seen in _spellings_seen(normal, exp).items() if len(seen) > 1}
    if merged:
        report["labels"]["merged"] = merged
    return normal.map(codes)


def _check_target(df: pd.DataFrame, exp: Experiment, report: ValidationReport, errors: list) -> pd.Series | None:
    """A numeric target: every value a number (the rows without one are left out before this)."""
    target = exp.data.target
    raw = df[target]
    try:
        values = numeric_column(target, raw).astype("float64")
    except ValueError:
        converted = pd.to_numeric(raw, errors="coerce")
        bad = raw[converted.isna() & raw.notna()]
        shown = sorted({str(v) for v in bad.unique()})[:10]
        errors.append(f"column {target!r} is the numeric target of a regression, and holds {len(bad)} values that "
                      f"are not numbers {shown} on lines {_lines(bad.index)}; fix those rows, list such words in "
                      "data.missing_markers (the rows are then left out), or set task = 'classification'")
        return None
    bad = values.isna()  # an infinite target is no value to learn or score
    if bad.any():
        errors.append(f"column {target!r} holds {int(bad.sum())} infinite values on lines {_lines(values.index[bad])}; "
                      "fix or remove those rows")
        return None
    numbers = values.to_numpy(dtype="float64")
    if exp.data.target_scale == "log" and (numbers <= 0).any():
        low = values <= 0
        errors.append(f"column {target!r} holds {int(low.sum())} values at or below 0 (such as "
                      f"{float(values[low].iloc[0]):g}) on lines {_lines(values.index[low])}, and data.target_scale = "
                      "'log' needs a positive target: remove those rows, or use target_scale = 'identity'")
        return None
    skew = float(pd.Series(numbers).skew()) if len(numbers) > 2 else 0.0  # type: ignore[arg-type]
    report["target"] = {"min": float(numbers.min()), "max": float(numbers.max()), "mean": float(numbers.mean()),
                        "distinct": int(values.nunique()), "skew": skew}
    return values


def _known(exp: Experiment) -> list[str] | dict[str, list[str]]:
    spellings = exp.data.spellings
    return exp.data.classes if all(len(v) == 1 for v in spellings.values()) else spellings


def _spellings_seen(normal: pd.Series, exp: Experiment) -> dict[str, set[str]]:
    """Per class, the spellings of it that the data holds."""
    class_of = exp.data.class_of
    seen: dict[str, set[str]] = {}
    for label in normal.unique():
        seen.setdefault(class_of[label], set()).add(str(label))
    return seen


def _check_features(df: pd.DataFrame, exp: Experiment, report: ValidationReport, errors: list, warnings: list) -> pd.DataFrame:
    """Type every feature column; count missing values per column and apply the policy's verdict."""
    maps = exp.data.categorical_maps
    typed = {}
    report["non_numeric"], report["nulls"], report["infinities"], report["categories"] = {}, {}, {}, {}
    for col in _feature_columns(df, exp):
        values = df[col]
        nulls = int(values.isna().sum())
        if nulls:
            report["nulls"][col] = nulls
        if col in maps:
            normal = normalise_text(values)
            report["categories"][col] = int(normal.nunique())
            mapping = maps[col]
            if mapping is not None:  # keys were normalised like the values when the experiment loaded
                bad = normal[normal.notna() & ~normal.isin(list(mapping))]
                if len(bad):
                    vals = sorted({str(v) for v in values.loc[bad.index].unique()})[:10]
                    errors.append(f"column {col!r} has values {vals} outside data.categorical.{col} "
                                  f"{sorted(mapping)} on lines {_lines(bad.index)}; add them to the map, or "
                                  f"list {col!r} in data.categorical without a map to learn its categories")
            typed[col] = normal
            continue
        if col in exp.data.date_parts:  # a date: every value read as one, or named with the format to give
            try:
                when = parse_dates(col, values, exp.data.date_formats.get(col))
            except ValueError as exc:
                errors.append(str(exc))
                when = pd.Series(pd.NaT, index=values.index)
            typed[col] = days_since_1970(when)
            continue
        converted = pd.to_numeric(values, errors="coerce")
        bad = values[converted.isna() & values.notna()]
        if len(bad):
            vals = sorted({str(v) for v in bad.unique()})[:10]
            report["non_numeric"][col] = {"values": vals, "lines": _lines(bad.index)}
            errors.append(f"column {col!r} has non-numeric values {vals} on lines {_lines(bad.index)}; "
                          "fix them, or list the column in data.drop or data.categorical")
        converted = converted.astype("float64")
        inf = int(np.isinf(converted).sum())
        if inf:
            report["infinities"][col] = inf
        typed[col] = converted.where(np.isfinite(converted))
    frame = pd.DataFrame(typed, index=df.index)
    incomplete = frame.isna().any(axis=1).to_numpy() if len(frame.columns) else np.zeros(len(df), bool)
    policy = exp.data.missing
    by_column = {c: int(n) for c, n in frame.isna().sum().items() if n}
    report["missing"] = {"policy": policy, "rows": int(incomplete.sum()), "by_column": by_column}
    report["nonfinite_rows"] = int(incomplete.sum())
    if incomplete.any():
        if policy == "reject":
            errors.append(f"{int(incomplete.sum())} rows have missing or infinite feature values on lines "
                          f"{_lines(df.index[incomplete])} (by column: {by_column}); fix them or set data.missing "
                          "to 'impute' (fitted in each training fold), 'native' or 'drop'")
        else:
            what = {"impute": "imputed inside each training fold", "native": "left to the model",
                    "drop": "their rows dropped"}[policy]
            warnings.append(f"{int(incomplete.sum())} rows have missing or infinite values ({what}): {by_column}")
    return frame


def _check_duplicates(features: pd.DataFrame, y: pd.Series | None, report: ValidationReport, warnings: list) -> None:
    """Rows whose features repeat an earlier row's, grouped as the folds group them
    (``trilho.evaluation.splits.duplicate_groups``): the count ``trilho init`` and the run's folds say too."""
    groups = pd.Series(duplicate_groups(features), index=features.index)
    dup = groups.duplicated(keep="first")
    same = pd.DataFrame({"g": groups, "y": y}).duplicated(keep="first") if y is not None else dup
    report["duplicates"] = {
        "rows_duplicating_another": int(dup.sum()),
        "with_conflicting_label": int(dup.sum() - same.sum()),
        "conflicting_lines": [],
    }
    if y is not None and dup.any():  # every copy in a set of identical features that carries two labels
        labels_per_group = y.groupby(groups.to_numpy()).nunique()
        conflicting = groups.isin(labels_per_group.index[labels_per_group > 1]).to_numpy()
        report["duplicates"]["conflicting_lines"] = _lines(features.index[conflicting])
    if dup.any():
        what = "target" if y is not None and y.dtype.kind == "f" else "label"
        warnings.append(f"{repeats_phrase(int(dup.sum()), len(features))} "
                        f"({int(dup.sum() - same.sum())} with a different {what})")


def _check_classes(y: pd.Series, exp: Experiment, report: ValidationReport, errors: list) -> None:
    counts = {exp.data.classes[int(k)]: int(v) for k, v in y.value_counts().sort_index().items()}  # type: ignore[call-overload]
    report["class_counts"] = counts
    if len(counts) < 2:
        errors.append(f"need at least 2 classes to classify, found only {list(counts)}")
        return
    n_splits = exp.cv.n_splits
    neighbours = resampler_kind(exp.resampler.name).neighbours
    k = int(exp.resampler.params.get("k_neighbors", 5)) if neighbours else 0
    for label, n in counts.items():
        min_train = n - math.ceil(n / n_splits)  # the smallest count a training fold can hold
        if n < n_splits:
            errors.append(f"class {label!r} has {n} rows; {n_splits}-fold CV needs at least {n_splits} "
                          "per class (add data or lower cv.n_splits)")
        elif k and min_train < k + 1:
            errors.append(f"class {label!r} has {n} rows, so a training fold may hold only "
                          f"{min_train}; {exp.resampler.name.upper()} with k_neighbors={k} needs {k + 1} "
                          "(lower resampler.params.k_neighbors or cv.n_splits)")


def _check_ranges(frame: pd.DataFrame, exp: Experiment, report: ValidationReport, warnings: list) -> None:
    report["out_of_range"] = {}
    for col, (lo, hi) in exp.data.ranges.items():
        if col not in frame.columns or col in exp.data.categorical_maps or col in exp.data.date_parts:
            continue
        values = frame[col]
        odd = values[(values < lo) | (values > hi)]
        if len(odd):
            report["out_of_range"][col] = {
                "range": [lo, hi], "count": int(len(odd)),
                "min": float(values.min()), "max": float(values.max()), "lines": _lines(odd.index),
            }
    if report["out_of_range"]:
        warnings.append("values outside plausible ranges (kept): " + ", ".join(
            f"{c} ×{v['count']}" for c, v in report["out_of_range"].items()))


def validate(df: pd.DataFrame, exp: Experiment) -> ValidationReport:
    """Validate a raw table; never raises for data problems, records them in the report."""
    errors: list[str] = []
    warnings: list[str] = []
    report: ValidationReport = {
        "rows": int(len(df)),
        "columns": [str(c) for c in df.columns],
        "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
        "errors": errors,
        "warnings": warnings,
    }
    expected = [exp.data.target, *exp.data.drop, *exp.data.categorical, *exp.evaluation.groups, *exp.data.date_parts,
                *([exp.cv.group] if exp.cv.group else [])]
    missing = list(dict.fromkeys(c for c in expected if c not in df.columns))
    if missing:
        errors.append(f"missing columns {missing}; the file has {report['columns']} "
                      "(check data.target, data.drop, data.categorical, data.dates, evaluation.groups and cv.group)")
        return report
    gone = unlabelled(df, exp)
    if gone.any():  # no label: left out and counted, never a class of its own
        target = exp.data.target
        report["unlabelled"] = {"rows": int(gone.sum()), "lines": _lines(df.index[gone])}
        what = "target value" if exp.regression else "label"
        warnings.append(f"{int(gone.sum())} rows have no {what} (column {target!r} empty or a missing-value word "
                        f"such as NA) on lines {_lines(df.index[gone])}: left out of training and scoring")
        df = df.loc[~gone]
    if len(df) < exp.data.min_rows:
        without = f" with a label ({int(gone.sum())} without)" if gone.any() else ""
        empty = "no data rows: the file holds a header line only; " if not report["rows"] else ""
        errors.append(f"{empty}{len(df)} data rows{without}, fewer than data.min_rows={exp.data.min_rows}")
        return report
    y = _check_target(df, exp, report, errors) if exp.regression else _check_labels(df, exp, report, errors)
    # values the data uses for "missing" ("?", NA) are missing values from here on, counted as such
    df = unmark(df, _feature_columns(df, exp), exp.data.missing_markers, exp.data.written_missing)
    features = _check_features(df, exp, report, errors, warnings)
    if not features.columns.size:
        errors.append("no feature columns left after dropping the target and data.drop")
    order = exp.time_column
    if order is not None and order in features and features[order].isna().any():
        undated = features.index[features[order].isna().to_numpy()]
        report["undated"] = {"rows": int(len(undated)), "lines": _lines(undated)}
        warnings.append(f"{len(undated)} rows have no date in {order!r} (cv.time) on lines {_lines(undated)}: left out "
                        "of training and scoring, as forward folds cannot place them")
    _check_duplicates(features, y, report, warnings)
    if y is not None and not exp.regression:
        _check_classes(y, exp, report, errors)
    _check_ranges(features, exp, report, warnings)
    return report


def raise_for_errors(report: ValidationReport) -> None:
    """Raise one DataValidationError that lists every error in the report."""
    if report["errors"]:
        raise DataValidationError("invalid data: " + "; ".join(report["errors"]), report)


def record_leaks(report: ValidationReport, findings: list[dict], policy: str) -> None:
    """Keep the leak checks' findings (``trilho.data.leaks.find_leaks``) in the report, each message among
    its warnings; under ``validation.leaks = "reject"`` a one-feature leak stops the run here,
    before any fit, with one DataValidationError naming the columns and the fix."""
    report["leaks"] = findings
    report["warnings"].extend(f["message"] for f in findings)
    leaked = [f["column"] for f in blocking(findings)]
    if leaked and policy == "reject":
        scores = ", ".join(f"{f['column']!r} {f['score']:.4f}" for f in blocking(findings))
        raise DataValidationError(
            f"leak: {len(leaked)} column(s) alone predict the label (own out-of-fold ROC AUC: {scores}), so a "
            f"model would score on them and fail where they are not known; set data.drop = {leaked} if they are "
            "known only after the outcome, or validation.leaks = \"warn\" to run anyway", report)


def repeats_phrase(repeats: int, rows: int, which: str = "") -> str:
    """The one wording of the count, wherever it is said: "174 of the 1,000 rows repeat an earlier
    row's features"; ``which`` says which rows ("the folds use").

    >>> repeats_phrase(174, 1000, "the folds use")
    "174 of the 1,000 rows the folds use repeat an earlier row's features"
    """
    return f"{repeats:,} of the {rows:,} rows{' ' + which if which else ''} repeat an earlier row's features"
