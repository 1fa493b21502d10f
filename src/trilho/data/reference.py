"""The reference set: labelled rows pinned in the lake and never trained on, on which the promotion
gate scores the champion and the challenger alike (``registry.reference``).

On other data the two models' own estimates do not compare (an easier data set scores higher), and
drift measures can miss a change that matters. The same rows, scored by both models, do compare:
the reference is ingested like any source (write-once, content-addressed, its sha256 optionally
pinned), validated and cleaned with the experiment's own rules, and every training row identical
to one of its rows (features and label) is left out of the run, so no model ever trains on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from trilho.data.clean import CleanData
from trilho.data.curate import load_clean
from trilho.errors import DataValidationError
from trilho.experiment import Experiment
from trilho.settings import Settings
from trilho.storage import Lake

__all__ = ["ReferenceSet", "load_reference", "without_reference"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceSet:
    uri: str          # where it came from
    key: str          # its raw object in the lake
    sha256: str
    X: pd.DataFrame   # the features, cleaned as training's are (what the model takes)
    y: np.ndarray     # class codes, in the order of data.classes

    def info(self) -> dict[str, object]:
        return {"uri": self.uri, "key": self.key, "sha256": self.sha256, "rows": int(len(self.y))}


REFERENCE_ROWS_MIN = 20  # rows a numeric target's reference set needs for the gate to pair two models on
REFERENCE_CLASS_MIN = 5  # rows of each class the gate needs on the reference set to compare two models at all


def load_reference(exp: Experiment, settings: Settings, lake: Lake) -> tuple[ReferenceSet | None, str | None]:
    """The experiment's reference set, ingested into the lake as ``<name>-reference`` (None when
    unset), and why it is not used when it cannot serve the gate: a file that does not validate, a
    class it lacks or holds too few rows of. Then the gate compares on the folds, as with none; a
    changed file (its pinned sha256) still stops the run, as any tampered source does."""
    uri = exp.registry.reference
    if not uri:
        return None, None
    # read, validated and cleaned by the data's rules; no folds and no resampler run on it, so their checks do not
    as_source = exp.model_copy(update={
        "name": f"{exp.name}-reference",
        "source": exp.source.model_copy(update={"uri": uri, "sha256": exp.registry.reference_sha256 or None}),
        "data": exp.data.model_copy(update={"min_rows": 2}), "cv": exp.cv.model_copy(update={"n_splits": 2}),
        "resampler": exp.resampler.model_copy(update={"name": "none", "params": {}})})
    try:
        ingested, _, _, data = load_clean(as_source, settings, lake)
    except DataValidationError as exc:
        return None, _unusable(uri, str(exc))
    if exp.regression:  # a numeric target: enough rows to pair two models' errors on
        if len(data.y) < REFERENCE_ROWS_MIN:
            return None, _unusable(uri, f"it holds {len(data.y)} rows with a target, under the {REFERENCE_ROWS_MIN} "
                                        "the gate needs")
        return ReferenceSet(uri, ingested.key, ingested.manifest["sha256"], data.X, data.y), None
    counts = np.bincount(data.y, minlength=len(exp.data.classes))
    few = {exp.data.classes[k]: int(n) for k, n in enumerate(counts) if n < REFERENCE_CLASS_MIN}
    if few:
        return None, _unusable(uri, f"it holds {few} rows of these classes, under the {REFERENCE_CLASS_MIN} per class "
                                    "the gate needs")
    return ReferenceSet(uri, ingested.key, ingested.manifest["sha256"], data.X, data.y), None


def _unusable(uri: str, why: str) -> str:
    message = (f"registry.reference {uri!r} cannot serve the gate ({why[:300]}): the gate compares on the folds "
               "instead; fix the file or pick another (trilho init --reference), or unset registry.reference")
    log.warning("%s", message)
    return message


def _row_keys(X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """A hash of each row's values and label, alike for 3 and 3.0 (a column with gaps is float) and
    for every kind of missing value."""
    typed = {c: (X[c].astype("float64") if pd.api.types.is_numeric_dtype(X[c]) else X[c].astype("string"))
             for c in X.columns}
    label = np.asarray(y, dtype="float64" if np.asarray(y).dtype.kind == "f" else "int64")
    return pd.util.hash_pandas_object(pd.DataFrame(typed).assign(__label__=label),
                                      index=False).to_numpy()


def without_reference(data: CleanData, reference: ReferenceSet | None) -> tuple[CleanData, int]:
    """The training data less every row identical (features and label) to a reference row."""
    if reference is None:
        return data, 0
    if list(reference.X.columns) != list(data.X.columns):
        raise DataValidationError(f"registry.reference {reference.uri!r} has the features {list(reference.X.columns)}, "
                                  f"the data {list(data.X.columns)}: the reference must have the data's columns")
    held = np.isin(_row_keys(data.X, data.y), _row_keys(reference.X, reference.y))
    if not held.any():
        return data, 0
    log.info("%d training rows are also in the reference set %s: left out of training", int(held.sum()), reference.uri)
    keep = ~held
    found = None if data.group_columns is None else data.group_columns.loc[keep].reset_index(drop=True)
    return replace(data, X=data.X.loc[keep].reset_index(drop=True), y=data.y[keep], group_columns=found), int(held.sum())
