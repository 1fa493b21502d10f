"""``trilho init``: read a data set once, in bounded memory, and write an experiment file for it.

``profile_chunks`` is pure: it folds chunks of a table into per-column counts (missing values,
numeric or text, integer-valued, range, a capped set of distinct values, whether every value is
unique) and the row hashes that count duplicates. ``propose`` turns a profile into an experiment
(every choice with the reason for it) and ``render`` writes it as a commented TOML file that
``trilho run -e FILE`` accepts unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilho.encoding import normalise_text
from trilho.errors import ConfigError, DataValidationError
from trilho.ingest import check_size, iter_chunks, read_head

__all__ = ["Profile", "Proposal", "profile_chunks", "propose", "render"]

CAP = 50                # distinct values kept per column; a text column with more is not a category
CODE_MAX = 8            # an integer column with 3..CODE_MAX distinct values is taken as a code
_ID_NAME = re.compile(r"(^|[^a-z])(id|uuid|guid|key|no|num|number|index|unnamed)([^a-z]|$)|^id|id$", re.I)
_TARGET_NAME = re.compile(r"^(target|label|labels|class|classes|y|outcome|diagnosis|churn|churned|default|"
                          r"response|result|status|survived|category|grade|quality)$", re.I)


@dataclass
class Column:
    name: str
    nulls: int = 0
    text: bool = False              # some value is not a number
    boolean: bool = False
    integer: bool = True            # every numeric value is a whole number
    low: float = math.inf
    high: float = -math.inf
    counts: dict[str, int] | None = field(default_factory=dict)  # None once over CAP distinct values
    hashes: list[np.ndarray] | None = field(default_factory=list)  # None once a repeat is seen or not an id kind

    @property
    def distinct(self) -> int | None:
        return None if self.counts is None else len(self.counts)

    def finish(self) -> None:
        """Booleans written as text ("True", "false") are booleans too."""
        if self.counts and set(self.counts) <= {"TRUE", "FALSE"}:
            self.boolean = True


@dataclass
class Profile:
    rows: int
    columns: dict[str, Column]
    duplicate_rows: int              # rows whose non-identifier values repeat an earlier row's
    unique: dict[str, bool]          # per identifier-kind column: every value distinct


def _fold_column(col: Column, values: pd.Series) -> None:
    present = values.dropna()
    col.nulls += int(len(values) - len(present))
    if pd.api.types.is_bool_dtype(values):
        col.boolean = True
    found = present.value_counts() if col.counts is not None or not col.text else None
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = present.to_numpy(dtype="float64")
    elif not col.text:  # text that may still be numbers: each distinct value is converted once
        distinct = found.index.to_series() if found is not None else pd.Series(pd.unique(present))
        converted = pd.to_numeric(distinct, errors="coerce")
        if converted.isna().any():
            col.text = True
        numbers = converted.dropna().to_numpy(dtype="float64")
    else:
        numbers = np.empty(0)
    finite = numbers[np.isfinite(numbers)]
    if len(finite):
        col.low, col.high = min(col.low, float(finite.min())), max(col.high, float(finite.max()))
        if col.integer and not np.all(finite == np.round(finite)):
            col.integer = False
    if col.counts is not None:  # counted on the raw values; only the few distinct ones are spelled out
        if len(found) > 2 * CAP:
            col.counts = None
        else:
            for key, n in zip(normalise_text(pd.Series(found.index, dtype=present.dtype)), found.to_numpy(), strict=True):
                col.counts[str(key)] = col.counts.get(str(key), 0) + int(n)
            if len(col.counts) > CAP:
                col.counts = None
    if col.hashes is not None:  # identifiers are whole numbers or text; a float measurement is not one
        if (not col.text and not col.integer) or present.duplicated().any():
            col.hashes = None
        else:
            numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present)
            keys = present.to_numpy(dtype="float64") if numeric else normalise_text(present).to_numpy(dtype=object)
            col.hashes.append(pd.util.hash_array(keys))


def profile_chunks(chunks: Iterable[pd.DataFrame], target: str | None = None) -> Profile:
    """Fold chunks into a profile; memory grows with the distinct values kept (capped) and eight
    bytes per row for each identifier-like column and for the row hashes."""
    columns: dict[str, Column] = {}
    row_hashes: list[np.ndarray] = []
    rows = 0
    skip: set[str] = set()
    for chunk in chunks:
        if not columns:
            columns = {str(c): Column(str(c)) for c in chunk.columns}
        chunk.columns = [str(c) for c in chunk.columns]
        for name, col in columns.items():
            _fold_column(col, chunk[name])
        if rows == 0:  # identifiers by the first chunk: unique per row there, or an id-like name
            skip = {n for n, c in columns.items() if c.hashes is not None or _ID_NAME.search(n)} | {target or ""}
        kept = [c for c in chunk.columns if c not in skip]
        if kept:
            row_hashes.append(pd.util.hash_pandas_object(chunk[kept], index=False).to_numpy())
        rows += len(chunk)
    if not columns:
        raise DataValidationError("the data has no rows")
    unique = {}
    for name, col in columns.items():
        col.finish()
        if col.hashes is not None:
            found = np.concatenate(col.hashes) if col.hashes else np.empty(0, np.uint64)
            unique[name] = bool(len(np.unique(found)) == len(found) and col.nulls == 0)
            col.hashes = None
    hashes = np.concatenate(row_hashes) if row_hashes else np.empty(0, np.uint64)
    return Profile(rows=rows, columns=columns, duplicate_rows=int(len(hashes) - len(np.unique(hashes))),
                   unique=unique)


@dataclass
class Proposal:
    config: dict[str, Any]
    notes: dict[str, list[str]]      # per section, why each choice was made


def _guess_target(profile: Profile) -> str:
    def plausible(c: Column) -> bool:
        return c.distinct is not None and 2 <= c.distinct <= 20

    named = [n for n, c in profile.columns.items() if _TARGET_NAME.match(n) and plausible(c)]
    if len(named) == 1:
        return named[0]
    candidates = [n for n, c in profile.columns.items() if plausible(c) and not profile.unique.get(n)]
    raise ConfigError(f"which column is the label? {'several look like one: ' + str(named) if named else 'none is named like one'}"
                      f"; columns with 2-20 values: {candidates}; name it with --target COLUMN")


def _label_codes(col: Column) -> list[str]:
    labels = list(col.counts or {})
    if all(re.fullmatch(r"-?\d+(\.0+)?", v) for v in labels):
        return sorted(labels, key=lambda v: float(v))
    return sorted(labels)


def propose(profile: Profile, name: str, source: str, target: str | None = None) -> Proposal:
    """The experiment a careful data scientist would start from, with the reason for each choice."""
    notes: dict[str, list[str]] = {k: [] for k in ("data", "labels", "columns", "missing", "cv", "resampler", "model")}
    target = target or _guess_target(profile)
    if target not in profile.columns:
        raise ConfigError(f"--target {target!r} is not a column; the data has {list(profile.columns)}")
    tcol = profile.columns[target]
    if tcol.distinct is None:
        raise ConfigError(f"--target {target!r} has more than {CAP} distinct values: a classification label "
                          "has a few; pick the label column, or bin this one first")
    if tcol.nulls:
        raise ConfigError(f"--target {target!r} is missing on {tcol.nulls} rows; remove those rows first "
                          "(a row with no label cannot be trained or scored)")
    labels = _label_codes(tcol)
    if len(labels) < 2:
        raise ConfigError(f"--target {target!r} has a single value {labels}: nothing to classify")
    counts = {v: tcol.counts[v] for v in labels}
    kind = "binary" if len(labels) == 2 else f"multiclass ({len(labels)} classes)"
    notes["labels"].append(f"{target!r}: {kind}, counts {counts}; codes in this order")
    smallest, largest = min(counts.values()), max(counts.values())

    drop, categorical, ranges = [], [], {}
    for n, c in profile.columns.items():
        if n == target:
            continue
        unique = profile.unique.get(n, False)
        idlike = bool(_ID_NAME.search(n))
        if unique and (c.text or idlike or profile.rows > CAP):
            drop.append(n)
            notes["columns"].append(f"{n!r}: identifier (unique on every row{', id-like name' if idlike else ''}); "
                                    "kept beside predictions, not a feature")
        elif idlike and (c.distinct is None or c.distinct > profile.rows // 2) and not c.text:
            drop.append(n)
            notes["columns"].append(f"{n!r}: identifier (id-like name, {'many' if c.distinct is None else c.distinct} "
                                    "distinct values); not a feature")
        elif c.nulls == profile.rows:
            drop.append(n)
            notes["columns"].append(f"{n!r}: dropped, every value is missing")
        elif c.text or c.boolean:
            if c.distinct is None:
                drop.append(n)
                notes["columns"].append(f"{n!r}: dropped, free text (over {CAP} distinct values); "
                                        "encode it yourself if it matters")
            else:
                categorical.append(n)
                notes["columns"].append(f"{n!r}: categorical ({'boolean' if c.boolean else 'text'}, "
                                        f"{c.distinct} values; case and spaces ignored)")
        elif c.integer and c.distinct is not None and 3 <= c.distinct <= CODE_MAX and profile.rows >= 20 * c.distinct:
            categorical.append(n)
            notes["columns"].append(f"{n!r}: categorical (integer codes, {c.distinct} values: "
                                    f"{sorted(c.counts, key=float)}); remove it from data.categorical if these are quantities")
        elif math.isfinite(c.low):
            ranges[n] = [c.low, c.high]
    features = [n for n in profile.columns if n != target and n not in drop]
    if not features:
        raise ConfigError("no feature columns are left once the label and the identifiers are set aside")
    numeric = [n for n in features if n not in categorical]
    if ranges:
        notes["columns"].append(f"{len(ranges)} numeric columns; their observed ranges are written as "
                                "data.ranges: values outside are flagged by validation, and kept")

    missing = {n: profile.columns[n].nulls for n in features if profile.columns[n].nulls}
    imbalance = smallest / largest
    n_splits = min(5, smallest)
    if smallest < 2:
        raise ConfigError(f"class {min(counts, key=counts.get)!r} has a single row: no cross-validation can "
                          "test it; remove it or merge it into another class")
    if n_splits < 5:
        notes["cv"].append(f"cv.n_splits = {n_splits}: the smallest class has {smallest} rows, and each fold needs one")
    min_train = smallest - math.ceil(smallest / n_splits)
    resampler: dict[str, Any] = {"name": "none", "params": {}}
    if imbalance < 0.5:
        k = min(5, min_train - 1)
        if k >= 1 and not categorical:
            resampler = {"name": "smote", "params": {} if k == 5 else {"k_neighbors": k}}
            why = "SMOTE: synthetic rows between near neighbours of the smaller classes"
        elif k >= 1 and numeric:
            resampler = {"name": "smotenc", "params": {} if k == 5 else {"k_neighbors": k}}
            why = "SMOTE-NC: SMOTE that keeps categorical columns to real categories"
        else:
            resampler = {"name": "random_over", "params": {}}
            why = "random oversampling: the smallest class is too small for SMOTE's neighbours" if k < 1 \
                else "random oversampling: every feature is categorical, which SMOTE cannot interpolate"
        notes["resampler"].append(f"classes are imbalanced (smallest/largest = {imbalance:.2f}): {why}; "
                                  "applied to training folds only")
    else:
        notes["resampler"].append(f"classes are balanced enough (smallest/largest = {imbalance:.2f}): no resampler")
    complete = resampler["name"] in {"smote", "smotenc"}
    policy = "impute" if (missing and complete) or not missing else "native"
    if missing:
        rows_note = ", ".join(f"{k} {v}" for k, v in missing.items())
        notes["missing"].append(f"missing values: {rows_note}")
        notes["missing"].append("data.missing = 'impute': median / most frequent code, fitted in each training fold "
                                "before the resampler (which needs complete rows)" if policy == "impute" else
                                "data.missing = 'native': XGBoost learns where missing values go; nothing is invented")
    else:
        notes["missing"].append("no missing values; data.missing = 'impute' so that a row missing a value at "
                                "prediction time still gets one (training medians / most frequent codes)")
    if profile.duplicate_rows:
        notes["cv"].append(f"{profile.duplicate_rows} rows repeat another row's features: cv.duplicates = 'group' "
                           "keeps every copy in one fold, so no row is tested on its own copy")
    n_repeats = 10 if profile.rows <= 20_000 else 3 if profile.rows <= 200_000 else 1
    notes["cv"].append(f"{n_repeats} repeats of {n_splits}-fold stratified CV for {profile.rows} rows "
                       "(more repeats, steadier estimates; fewer for large data)")
    notes["model"].append(f"xgboost: gradient-boosted trees, strong on tabular data of this size ({profile.rows} rows, "
                          f"{len(features)} features), handles missing values and codes as they are; "
                          "compare others with `trilho compare`")
    metrics = ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted",
               "mcc", "roc_auc_ovr", "log_loss"] + (["pr_auc"] if len(labels) == 2 else [])
    config = {
        "name": name,
        "description": f"{target} ({kind}) from {source}",
        "random_state": 42,
        "source": {"uri": source},
        "data": {"target": target, "labels": labels, "drop": drop, "categorical": categorical, "missing": policy,
                 "min_rows": min(20, profile.rows), "ranges": ranges},
        "cv": {"n_splits": n_splits, "n_repeats": n_repeats, "first_seed": 0, "duplicates": "group"},
        "resampler": resampler,
        "model": {"name": "xgboost", "params": {}},
        "evaluation": {"metrics": metrics},
        "tracking": {"experiment": name},
        "registry": {"model_name": f"{name}-xgboost", "primary_metric": "f1_macro", "margin": 0.01},
    }
    notes["data"].append(f"{profile.rows} rows, {len(profile.columns)} columns: {len(features)} features "
                         f"({len(numeric)} numeric, {len(categorical)} categorical), {len(drop)} set aside")
    return Proposal(config=config, notes=notes)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def _comment(lines: list[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


def toml_document(config: dict[str, Any], head: list[str]) -> str:
    """A plain-data configuration as TOML under a comment: scalars first, then one table per
    nested dict (``[a]``, ``[a.b]``); keys whose value is None are left out (TOML has no null)."""

    def table(prefix: str, d: dict[str, Any]) -> list[str]:
        flat = [f"{_key(k)} = {_value(v)}\n" for k, v in d.items() if v is not None and not isinstance(v, dict)]
        # a dict of plain values stays inline, as `params = { ... }` does in the shipped files
        inline = [f"{_key(k)} = {_value({a: b for a, b in v.items() if b is not None})}\n" for k, v in d.items()
                  if isinstance(v, dict) and v and not any(isinstance(x, dict) for x in v.values()) and prefix]
        nested = [(k, v) for k, v in d.items() if isinstance(v, dict) and (not prefix or any(
            isinstance(x, dict) for x in v.values()) or not v)]
        out = ([f"\n[{prefix}]\n"] if prefix and (flat or inline) else []) + flat + inline
        for k, v in nested:
            out += table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)
        return out

    return _comment(head) + "".join(table("", config))


def render(proposal: Proposal) -> str:
    """The experiment as a commented TOML file."""
    c, notes = proposal.config, proposal.notes
    out = ["# Written by `trilho init`; every choice below says why. Edit freely, then `trilho run -e THIS_FILE`.\n"]
    out.append(_comment(notes["data"]))
    for key in ("name", "description", "random_state"):
        out.append(f"{key} = {_value(c[key])}\n")
    out.append(f"\n[source]\nuri = {_value(c['source']['uri'])}\n")
    d = c["data"]
    out.append("\n[data]\n" + _comment(notes["labels"]))
    out.append(f"target = {_value(d['target'])}\nlabels = {_value(d['labels'])}\n")
    out.append(_comment(notes["columns"]))
    out.append(f"drop = {_value(d['drop'])}\ncategorical = {_value(d['categorical'])}\n")
    out.append(_comment(notes["missing"]))
    out.append(f"missing = {_value(d['missing'])}\nmin_rows = {d['min_rows']}\n")
    if d["ranges"]:
        out.append("\n[data.ranges]   # observed [min, max]: values outside are flagged, and kept\n")
        out += [f"{_key(k)} = {_value(v)}\n" for k, v in d["ranges"].items()]
    out.append("\n[cv]\n" + _comment(notes["cv"]))
    out += [f"{k} = {_value(v)}\n" for k, v in c["cv"].items()]
    out.append("\n[resampler]\n" + _comment(notes["resampler"]))
    out.append(f"name = {_value(c['resampler']['name'])}\nparams = {_value(c['resampler']['params'])}\n")
    out.append("\n[model]\n" + _comment(notes["model"]))
    out.append(f"name = {_value(c['model']['name'])}\nparams = {_value(c['model']['params'])}\n")
    out.append("\n[evaluation]\n# pr_auc is for two classes; roc_auc_ovr is one-vs-rest for more\n")
    out.append(f"metrics = {_value(c['evaluation']['metrics'])}\n")
    out.append(f"\n[tracking]\nexperiment = {_value(c['tracking']['experiment'])}\n")
    out.append("\n[registry]\n# each run's model becomes the challenger; the gate promotes it unless it may be worse\n")
    out += [f"{k} = {_value(v)}\n" for k, v in c["registry"].items()]
    return "".join(out)


def _name_from(source: str) -> str:
    scheme, sep, rest = source.partition(":")
    path = rest if sep and "/" not in scheme else source  # file:big.csv names "big", not "file:big"
    stem = Path(path.split("?")[0].rstrip("/")).stem or "experiment"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "experiment"
    return name if name[0].isalnum() else f"x{name}"


def init_experiment(data: str, settings: Any, target: str | None = None, name: str | None = None) -> Proposal:
    """Fetch ``data`` (any source trilho reads, or a key in the lake), profile it in one bounded pass
    and propose an experiment for it."""
    import tempfile

    from trilho.ingest import fetch

    with tempfile.TemporaryDirectory(prefix="trilho-init-") as tmp:
        if ":" in data.split("/")[0]:
            path = fetch(data, settings, Path(tmp)).path
        else:  # a key in the lake
            from trilho.storage import open_lake

            lake = open_lake(settings)
            key = data.removeprefix(lake.uri).lstrip("/")
            if not lake.exists(key):
                raise ConfigError(f"DATA {data!r} is neither a source (file:, https://, kaggle:) nor a key in lake "
                                  f"{lake.uri}")
            path = lake.download(key, Path(tmp) / Path(key).name)
            data = lake.url(key)
        check_size(path, data, settings.max_source_bytes)
        read_head(path)  # a file that is not a table is refused before it is read whole
        profile = profile_chunks(iter_chunks(path, 200_000), target)
    return propose(profile, name or _name_from(data), data, target)
