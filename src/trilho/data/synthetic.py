"""``synthetic:diabetes?rows=N&seed=S``: data with the diabetes schema, balance and dirt, made offline.

Class-conditional normal draws (clipped, rounded like the lab reports) around per-class means
and standard deviations read off the real data set (Rashid 2020, CC BY 4.0), at its class balance
(84.4% Y, 10.3% N, 5.3% P), plus the real file's kinds of dirt: labels with trailing spaces, a
lower-case gender code, repeated patients (about 17% of rows copy another row's features, a few
with a different label) and a handful of physiologically odd values. Features are drawn
independently within a class, so correlations between lab values are weaker than in the real set:
good for demos, pipelines and scale benchmarks, not for conclusions about diabetes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trilho.errors import ConfigError

if TYPE_CHECKING:  # imported when a table is made: a request refused for its size costs no import of them
    import pandas as pd

__all__ = ["check_rows", "diabetes"]

DEFAULT_ROWS = 1000     # rows made when a source does not say (synthetic:diabetes)
CSV_BYTES_PER_ROW = 60  # measured: 56 bytes a row at 1,000 rows, 58 at 100,000 (the ids grow)

_CLASSES = {"Y": 0.844, "N": 0.103, "P": 0.053}
# per class: feature -> (mean, std, min, max, decimals)
_PROFILE = {
    "N": {"AGE": (44.2, 9.4), "Urea": (4.68, 2.52), "Cr": (62.8, 30.0), "HbA1c": (4.56, 0.92), "Chol": (4.27, 1.28),
          "TG": (1.63, 1.03), "HDL": (1.23, 0.51), "LDL": (2.63, 0.98), "VLDL": (0.94, 1.48), "BMI": (22.4, 1.42)},
    "Y": {"AGE": (55.3, 7.55), "Urea": (5.22, 3.02), "Cr": (69.9, 63.6), "HbA1c": (8.88, 2.26), "Chol": (4.95, 1.30),
          "TG": (2.45, 1.43), "HDL": (1.21, 0.69), "LDL": (2.62, 1.14), "VLDL": (2.02, 3.93), "BMI": (30.8, 4.32)},
    "P": {"AGE": (43.3, 7.76), "Urea": (4.51, 2.02), "Cr": (66.1, 41.6), "HbA1c": (6.00, 0.19), "Chol": (4.58, 1.04),
          "TG": (2.13, 1.06), "HDL": (1.13, 0.38), "LDL": (2.49, 0.87), "VLDL": (0.98, 0.50), "BMI": (23.9, 2.71)},
}
_LIMITS = {"AGE": (20, 79, 0), "Urea": (0.5, 38.9, 1), "Cr": (6, 800, 0), "HbA1c": (0.9, 16.0, 1),
           "Chol": (0.0, 10.3, 1), "TG": (0.3, 13.8, 1), "HDL": (0.2, 9.9, 1), "LDL": (0.3, 9.9, 1),
           "VLDL": (0.1, 35.0, 1), "BMI": (19.0, 47.75, 1)}


def check_rows(rows: int, max_bytes: int | None = None) -> None:
    """Refuse ``rows`` the generator cannot make (ValueError), or whose CSV would be over ``max_bytes``."""
    if rows < 20:
        raise ValueError(f"rows={rows}: the synthetic diabetes set needs at least 20 rows")
    if max_bytes is not None and rows * CSV_BYTES_PER_ROW > max_bytes:
        raise ConfigError(f"synthetic:diabetes?rows={rows} would be about {rows * CSV_BYTES_PER_ROW:,} bytes as CSV, "
                          f"over TRILHO_MAX_SOURCE_BYTES={max_bytes:,}: ask for at most "
                          f"{max_bytes // CSV_BYTES_PER_ROW:,} rows, or raise TRILHO_MAX_SOURCE_BYTES")


def diabetes(rows: int = DEFAULT_ROWS, seed: int = 0, max_bytes: int | None = None) -> pd.DataFrame:
    """A synthetic diabetes table with ``rows`` rows, the same for the same seed; refused before a row
    is made when its CSV would be over ``max_bytes`` (the sources' limit, TRILHO_MAX_SOURCE_BYTES)."""
    check_rows(rows, max_bytes)
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_unique = rows - int(round(rows * 0.17))
    labels = rng.choice(list(_CLASSES), size=n_unique, p=list(_CLASSES.values()))
    labels[:3] = ["N", "P", "Y"]  # every class present, whatever the seed
    table = {}
    for feature, (lo, hi, decimals) in _LIMITS.items():
        mean = np.array([_PROFILE[c][feature][0] for c in labels])
        std = np.array([_PROFILE[c][feature][1] for c in labels])
        values = np.clip(rng.normal(mean, std), lo, hi).round(decimals)
        table[feature] = values.astype("int64") if decimals == 0 else values
    frame = pd.DataFrame(table)
    frame.insert(0, "Gender", rng.choice(["F", "M"], size=n_unique, p=[0.435, 0.565]))
    frame["CLASS"] = labels
    # repeated patients: copies of earlier rows, a few relabelled
    copies = frame.iloc[rng.integers(0, n_unique, rows - n_unique)].copy()
    flip = rng.random(len(copies)) < 0.025
    copies.loc[flip, "CLASS"] = rng.choice(list(_CLASSES), size=int(flip.sum()))
    frame = pd.concat([frame, copies]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    # dirt seen in the real file
    dirty = rng.random(rows)
    frame.loc[dirty < 0.005, "CLASS"] = frame.loc[dirty < 0.005, "CLASS"] + " "
    frame.loc[(dirty > 0.995) & (frame["Gender"] == "F"), "Gender"] = "f"
    odd = rng.integers(0, rows, 3)
    frame.loc[odd[0], "HbA1c"], frame.loc[odd[1], "Chol"], frame.loc[odd[2], "Cr"] = 0.9, 0.0, 800
    frame.insert(0, "No_Pation", rng.integers(100, 80_000_000, rows))
    frame.insert(0, "ID", np.arange(1, rows + 1))
    return frame
