"""``trilho init``: read a data set in bounded memory, and write an experiment file for it.

``profile_chunks`` is pure: it folds chunks of a table into per-column counts (missing values,
numeric or text, integer-valued, range, a capped set of distinct values and how the data spells
each, whether every value is unique) and the row hashes that count duplicates. ``propose`` turns
a profile into an experiment (every choice with the reason for it) and ``render`` writes it as a
commented TOML file that ``trilho run -e FILE`` accepts unchanged. ``init_experiment`` reads the
data twice: once to profile it, once (``count_repeats``) to count the repeated rows on the
proposed features as the run will, and to pick the reference set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilho.data.clean import as_written
from trilho.data.tables import check_size, iter_chunks, read_head
from trilho.errors import ConfigError, DataValidationError
from trilho.init.census import COUNT_CAP, DATE_TEXT, MARKERS_MAX, MISSING_MARKERS, TARGET_NAME, Column, Profile, Repeats
from trilho.init.propose import Proposal, propose
from trilho.model.encoding import WRITTEN_MISSING, normalise_text, unmark

__all__ = ["experiment_name", "init_experiment", "profile_chunks"]


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as the folds compare them: numbers as float64 (a chunk read as integers and one read
    as floats agree), anything else stripped and upper-cased, as categories are."""
    out = {}
    for name in frame.columns:
        values = frame[name]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        out[name] = values.astype("float64") if numeric else normalise_text(values)
    return pd.DataFrame(out, index=frame.index)


def _fold_column(col: Column, values: pd.Series) -> None:
    present = values.dropna()
    col.nulls += int(len(values) - len(present))
    if pd.api.types.is_bool_dtype(values):
        col.boolean = True
    found = present.value_counts() if col.counts is not None or not col.text else None
    _fold_numbers(col, _numbers(col, values, present, found))
    if col.counts is not None and found is not None:  # counted on the raw values; only a few are spelled out
        _fold_counts(col, found, present.dtype)
    if col.text and col.dates is not False and len(present):
        sample = pd.Series(pd.unique(present.astype(str).str.strip()))[:200]
        col.dates = bool(sample.str.match(DATE_TEXT).all())
        if col.dates:
            _date_order(col, sample)
            col.date_times = col.date_times or bool(sample.str.contains(":").any())
    if col.hashes is not None:  # identifiers are whole numbers or text; a float measurement is not one
        if (not col.text and not col.integer) or present.duplicated().any():
            col.hashes = None
        else:
            numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present)
            keys = present.to_numpy(dtype="float64") if numeric else normalise_text(present).to_numpy(dtype=object)
            col.hashes.append(pd.util.hash_array(keys))


def _date_order(col: Column, sample: pd.Series) -> None:
    """Which day/month order dates written 04/03/2021 allow: a first field over 12 is a day, a
    second one over 12 is a day too (the month came first)."""
    fields = sample.str.extract(r"^(\d{1,2})[-/.](\d{1,2})[-/.]\d{2,4}").dropna().astype(int)
    if not len(fields):
        return
    col.date_example = col.date_example or str(sample[sample.str.match(r"^\d{1,2}[-/.]")].iloc[0])
    if (fields[0] > 12).any():
        col.date_orders.add("dmy")
    if (fields[1] > 12).any():
        col.date_orders.add("mdy")


def _numbers(col: Column, values: pd.Series, present: pd.Series, found: pd.Series | None) -> np.ndarray:
    """The column's values as numbers; text that is not a number marks the column as text."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return present.to_numpy(dtype="float64")
    if col.text and col.markers is None:
        return np.empty(0)
    distinct = found.index.to_series() if found is not None else pd.Series(pd.unique(present))
    converted = pd.to_numeric(distinct, errors="coerce")  # each distinct value is converted once
    words = distinct[converted.isna().to_numpy()]
    if len(words):
        col.text = True
        _fold_markers(col, present, words)
    return converted.dropna().to_numpy(dtype="float64")


def _fold_markers(col: Column, present: pd.Series, words: pd.Series) -> None:
    if col.markers is None:
        return
    normal = normalise_text(words)
    if len(col.markers) + len(normal) > MARKERS_MAX or not normal.isin(MISSING_MARKERS).all():
        col.markers = None
        return
    rows = normalise_text(present[present.isin(set(words))]).value_counts()
    for key, n in rows.items():
        col.markers[str(key)] = col.markers.get(str(key), 0) + int(n)


def _fold_numbers(col: Column, numbers: np.ndarray) -> None:
    finite = numbers[np.isfinite(numbers)]
    if len(finite):
        col.low, col.high = min(col.low, float(finite.min())), max(col.high, float(finite.max()))
        if col.integer and not np.all(finite == np.round(finite)):
            col.integer = False


def _fold_counts(col: Column, found: pd.Series, dtype: Any) -> None:
    if len(found) > 2 * COUNT_CAP or col.counts is None:
        col.counts, col.spelled = None, {}
        return
    values = pd.Series(found.index, dtype=dtype)
    for key, spelled, n in zip(normalise_text(values), as_written(values), found.to_numpy(), strict=True):
        col.counts[str(key)] = col.counts.get(str(key), 0) + int(n)
        forms = col.spelled.setdefault(str(key), {})
        forms[str(spelled)] = forms.get(str(spelled), 0) + int(n)
    if len(col.counts) > COUNT_CAP:
        col.counts, col.spelled = None, {}


def profile_chunks(chunks: Iterable[pd.DataFrame], target: str | None = None) -> Profile:
    """Fold chunks into a profile; memory grows with the distinct values kept (capped) and eight
    bytes per row for each identifier-like column and for the row hashes."""
    columns: dict[str, Column] = {}
    row_hashes: dict[str, list[np.ndarray]] = {}
    rows = 0
    skip: set[str] = set()
    for chunk in chunks:
        if not columns:
            columns = {str(c): Column(str(c)) for c in chunk.columns}
        chunk.columns = [str(c) for c in chunk.columns]
        for name, col in columns.items():
            _fold_column(col, chunk[name])
        if rows == 0:  # identifiers by the first chunk: unique per row there, or an id-like name
            skip = {n for n, c in columns.items() if c.hashes is not None}
            # the label is not a feature: without one named, each column that init may take for it
            row_hashes = {n: [] for n in ([target] if target else [n for n in columns if TARGET_NAME.match(n)])}
        kept = _comparable(chunk[[c for c in chunk.columns if c not in skip]])
        for label, seen in row_hashes.items():
            features = kept.drop(columns=[label], errors="ignore")
            if len(features.columns):
                seen.append(pd.util.hash_pandas_object(features, index=False).to_numpy())
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
    duplicates = {label: int(rows - len(np.unique(np.concatenate(seen)))) if seen else 0
                  for label, seen in row_hashes.items()}
    return Profile(rows=rows, columns=columns, duplicates=duplicates, unique=unique)


def experiment_name(source: str) -> str:
    scheme, sep, rest = source.partition(":")
    path = rest if sep and "/" not in scheme else source  # file:big.csv names "big", not "file:big"
    stem = Path(path.split("?")[0].rstrip("/")).stem or "experiment"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "experiment"
    return name if name[0].isalnum() else f"x{name}"


REFERENCE_MIN_ROWS = 1_000   # below this, rows set apart would leave too few to train or to tell models apart
REFERENCE_SHARE, REFERENCE_MAX_ROWS = 0.10, 5_000
REFERENCE_CLASS_FLOOR = 20   # rows of each class the reference set aims for, however rare the class
REFERENCE_CLASS_CAP = 0.25   # at most this share of a class's rows set apart (training keeps the rest)
# each class needs this many reference rows for the gate to use the set (trilho.data.reference agrees)
REFERENCE_CLASS_MIN = 5


def as_read(chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Chunks with the common writers' missing-value words (NA, #N/A, NULL, ...) missing in every
    column, as the run reads them (``trilho.model.encoding.WRITTEN_MISSING``)."""
    for chunk in chunks:
        chunk.columns = [str(c) for c in chunk.columns]
        yield unmark(chunk, list(chunk.columns), None, WRITTEN_MISSING)


def _typed_rows(chunk: pd.DataFrame, data: dict[str, Any], codes: dict[str, int],
                regression: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, a hash of its features as the run types them (trilho.data.clean: markers missing,
    categories normalised, numbers as numbers; float64 whatever a chunk read), its label's code (a
    regression's: the target's value) and whether it has one (the run leaves the others out)."""
    from trilho.data.clean import typed_features

    features = [c for c in chunk.columns if c != data["target"] and c not in data["drop"]]
    categorical = set(data["categorical"])
    formats = {c: (data.get("date_formats") or {}).get(c) for c in data.get("dates") or {}}
    typed = typed_features(unmark(chunk, features, data.get("missing_markers")), features, categorical, formats)
    typed = typed.astype({c: "float64" for c in features if c not in categorical and c not in formats})
    hashed = pd.util.hash_pandas_object(typed, index=False).to_numpy()
    if regression:
        value = pd.to_numeric(unmark(chunk, [data["target"]], data.get("missing_markers"))[data["target"]],
                              errors="coerce").to_numpy(dtype="float64")
        return hashed, value, np.isfinite(value)
    label = normalise_text(chunk[data["target"]]).map(codes).astype("float64").fillna(-1).to_numpy(dtype="int64")
    return hashed, label, label >= 0


def _row_keys(features: np.ndarray, label: np.ndarray) -> np.ndarray:
    return pd.util.hash_pandas_object(pd.DataFrame({"f": features, "y": label}), index=False).to_numpy()


def count_repeats(chunks: Iterable[pd.DataFrame], config: dict[str, Any], share: float | None = None
                  ) -> tuple[Repeats, np.ndarray | None, str | None] | None:
    """The rows that repeat an earlier row's features, counted on a proposed experiment's features
    exactly as the run counts them (``trilho.data.curate.fold_data``, ``trilho.data.validate``); with
    ``share``, also the reference set (``pick_reference``: the keys of its distinct rows, or None
    and why not) and the count among the rows the folds will use once those rows, and every row
    identical to one of them, are set apart (as ``trilho.data.reference.without_reference`` sets them
    apart). One pass, eight bytes a row thrice. None when a column does not read as the proposal
    says (the run's validation will say which)."""
    from trilho.experiment import DataSpec

    data = config["data"]
    regression = config.get("task") == "regression"
    hashes, keys, labels = [], [], []
    try:
        codes = DataSpec.model_validate(data).codes  # the labels matched as the run matches them
        for chunk in chunks:
            features, label, present = _typed_rows(chunk, data, codes, regression)
            hashes.append(features[present])  # a row with no label is left out of the run
            if share is not None:
                keys.append(_row_keys(features, label)[present])
                # a numeric target: one stratum, its rows taken in hash order (no order of the file or
                # of the target), so the set spans the target's range as the data does
                labels.append(np.zeros(int(present.sum()), np.int64) if regression else label[present])
    except (ValueError, KeyError):
        return None
    found = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    repeats = int(len(found) - len(np.unique(found)))
    if share is None:
        return Repeats(len(found), repeats, len(found), repeats), None, None
    key = np.concatenate(keys) if keys else np.empty(0, np.uint64)
    classes = ["(every row)"] if regression else [str(c) for c in DataSpec.model_validate(data).classes]
    chosen, why = pick_reference(key, np.concatenate(labels) if labels else np.empty(0, np.int64), share, classes)
    kept = found if chosen is None else found[~np.isin(key, chosen)]
    return Repeats(len(found), repeats, len(kept), int(len(kept) - len(np.unique(kept)))), chosen, why


def pick_reference(keys: np.ndarray, labels: np.ndarray, share: float, classes: list[str]
                   ) -> tuple[np.ndarray | None, str | None]:
    """The reference set, class by class: whole sets of identical rows (``keys``: features and
    label), in the fixed order of their hashes, until the class has ``share`` of its rows (at least
    ``REFERENCE_CLASS_FLOOR``), never more than ``REFERENCE_CLASS_CAP`` of them and never one set
    larger than the class's aim (a pattern that many rows share stays in training). The chosen keys,
    or None and why when a class cannot spare ``REFERENCE_CLASS_MIN`` rows this way (data with few
    distinct rows: every copy of a row goes to the same side)."""
    sizes = pd.DataFrame({"label": labels, "key": keys}).groupby(["label", "key"]).size()
    chosen: list[np.ndarray] = []
    for code, name in enumerate(classes):
        if code not in sizes.index.get_level_values(0):
            return None, f"no reference set: the data has no row of class {name!r}"
        own = sizes.xs(code, level="label").sort_index()  # by hash: a fixed order that is no order of the file
        n = int(own.sum())
        cap = int(n * REFERENCE_CLASS_CAP)
        want = min(max(round(share * n), REFERENCE_CLASS_FLOOR), cap)
        small = own[own <= max(want, 1)]  # a set larger than the aim stays in training
        taken = np.cumsum(small.to_numpy())
        # whole sets in hash order while the aim is not reached; a set that would pass the cap ends it
        stop = int(np.searchsorted(taken, want, side="left")) + 1
        take = min(stop, len(small))
        while take and taken[take - 1] > cap:
            take -= 1
        if take == 0 or taken[take - 1] < REFERENCE_CLASS_MIN:
            return None, (f"no reference set: class {name!r} cannot spare {REFERENCE_CLASS_MIN} rows for it "
                          f"({n} rows in {len(own)} distinct ones; each copy of a row goes to the same side, and "
                          f"at most {REFERENCE_CLASS_CAP:.0%} of a class is set apart); without one, the gate "
                          "compares on the folds")
        chosen.append(small.index.to_numpy()[:take])
    return np.concatenate(chosen).astype(np.uint64), None


def reference_rows(chunks: Iterable[pd.DataFrame], config: dict[str, Any], chosen: np.ndarray) -> pd.DataFrame:
    """The rows whose features and label are one of the ``chosen`` keys (``pick_reference``), as written."""
    from trilho.experiment import DataSpec

    data = config["data"]
    codes = DataSpec.model_validate(data).codes
    kept = []
    for chunk in chunks:
        features, label, present = _typed_rows(chunk, data, codes, config.get("task") == "regression")
        kept.append(chunk.loc[np.isin(_row_keys(features, label), chosen) & present])
    return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()


def _reference_share(rows: int, reference_to: Path | None, notes: list[str]) -> float | None:
    """The share of rows for a reference set, or None (and why not, when one was asked for)."""
    if reference_to is None:
        return None
    if rows < REFERENCE_MIN_ROWS:
        notes.append(f"no reference set: {rows} rows are too few to set some apart (under {REFERENCE_MIN_ROWS}); "
                     "without one, the gate keeps a model trained on changed data as challenger")
        return None
    return min(REFERENCE_SHARE, REFERENCE_MAX_ROWS / rows)


def _pin_reference(proposal: Proposal, picked: pd.DataFrame, reference_to: Path, rows: int) -> None:
    """Write the reference set beside the experiment file and pin it in the proposal."""
    from trilho.storage import sha256_file

    picked.to_csv(reference_to, index=False)
    digest, _ = sha256_file(reference_to)
    proposal.config["registry"] |= {"reference": f"file:{reference_to}", "reference_sha256": digest}
    target = proposal.config["data"]["target"]
    if proposal.config.get("task") == "regression":
        values = pd.to_numeric(picked[target], errors="coerce")
        spread = (f"{target} from {values.min():.4g} to {values.max():.4g}, median {values.median():.4g}; "
                  "rows chosen by their hash, so across the target's whole range")
    else:
        counts = {str(k): int(v) for k, v in picked[target].astype("string").str.strip().value_counts().items()}
        spread = f"by class {counts}; whole sets of identical rows chosen by their hash, class by class"
    proposal.notes.setdefault("registry", []).append(
        f"reference set: {len(picked)} rows ({len(picked) / max(rows, 1):.0%}; {spread}) written to {reference_to}; "
        "they are never trained on, and the gate scores champion and challenger on them before any promotion "
        "(pinned by its sha256)")


def init_experiment(data: str, settings: Any, target: str | None = None, name: str | None = None,
                    reference_to: Path | None = None, task: str | None = None) -> Proposal:
    """Fetch ``data`` (any source trilho reads, or a key in the lake), profile it in one bounded pass
    and propose an experiment for it; a second bounded pass counts the rows that repeat an earlier
    row's features on the proposed features, as the run will count them (``count_repeats``). With
    ``reference_to``, a reference set for the promotion gate (some of the rows, never trained on),
    picked in that second pass, is written there."""
    import tempfile

    from trilho.data.ingest import fetch

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
        profile = profile_chunks(as_read(iter_chunks(path, 200_000)), target)
        if profile.rows == 0:
            raise DataValidationError(f"no data rows: {data!r} holds a header line only "
                                      f"({len(profile.columns)} columns); init needs rows to propose anything")
        name = name or experiment_name(data)
        proposal = propose(profile, name, data, target, task=task)
        why_not: list[str] = []
        share = _reference_share(profile.labelled_rows(proposal.config["data"]["target"]), reference_to, why_not)
        if share is not None and proposal.config["cv"].get("scheme") == "time":
            share = None  # the latest rows are what a dated model most needs to learn from
            why_not.append("no reference set: the rows are dated, and rows set apart would be taken from the periods "
                           "the served model most needs to learn from; on the same data the gate compares champion "
                           "and challenger on the latest period, row by row, both fitted on the rows before it")
        # a second pass: the repeated rows counted on the proposal's own features, as the run will
        # count them (and on the rows the folds will use), with the reference set chosen meanwhile
        counted = count_repeats(as_read(iter_chunks(path, 200_000)), proposal.config, share)
        repeats, chosen, why = counted if counted is not None else (None, None, None)
        if share is not None and counted is None:
            why = "no reference set: a column does not read as proposed (the run's validation says which)"
        proposal = propose(profile, name, data, proposal.config["data"]["target"], repeats,
                           task=proposal.config.get("task", "classification"))
        proposal.notes.setdefault("registry", []).extend([*why_not, *([why] if why else [])])
        if chosen is not None and reference_to is not None:
            picked = reference_rows(as_read(iter_chunks(path, 200_000)), proposal.config, chosen)
            _pin_reference(proposal, picked, reference_to, profile.labelled_rows(proposal.config["data"]["target"]))
    return proposal
