"""What ``trilho init`` counts of a data set, column by column, and the thresholds that read the
counts: the profile's own data, shared by ``trilho.init.profile`` (which folds a table into it) and
``trilho.init.propose`` (which reads it). Neither imports the other's way back: profile -> propose ->
census, held by an import-linter contract. Pure."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # in annotations only: the profile's counts need no NumPy to be read
    import numpy as np

__all__ = ["CAP", "CATEGORY_ROWS", "CODE_MAX", "COUNT_CAP", "DATE_TEXT", "ID_NAME", "MARKERS_MAX", "MISSING_MARKERS",
           "TARGET_NAME", "Column", "Profile", "Repeats", "category_limit"]

CAP = 50                # the fewest distinct values a text column may have and still be no category: at most this is one
COUNT_CAP = 1_000       # distinct values counted per column; a column with more is not a category
CATEGORY_ROWS = 20      # a text column with more than CAP values is a category when each averages this many rows
CODE_MAX = 8            # an integer column with 3..CODE_MAX distinct values is taken as a code
# what data sets write for a missing number beyond what the CSV reader knows ("NA", "null", ...);
# a column of numbers with at most MARKERS_MAX of these is numbers with gaps
MISSING_MARKERS = ("?", "??", "-", "--", "---", ".", "*", "MISSING", "UNKNOWN", "NONE", "NULL", "NAN", "NA", "N/A",
                   "N.A.", "#N/A", "NOT AVAILABLE")
MARKERS_MAX = 3
ID_NAME = re.compile(r"(^|[^a-z])(id|uuid|guid|key|no|num|number|index|unnamed)([^a-z]|$)|^id|id$", re.I)
# a date or date-time as data sets write them: 2021-03-04, 2021/03/04 10:00, 04/03/2021, 4.3.21
DATE_TEXT = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
                       r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
TARGET_NAME = re.compile(r"^(target|label|labels|class|classes|y|outcome|diagnosis|churn|churned|default|"
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
    counts: dict[str, int] | None = field(default_factory=dict)  # None once over COUNT_CAP distinct values
    # per counted value (stripped, upper-cased), how the data writes it (stripped, case kept) and how
    # often: "BENIGN" -> {"Benign": 300, "benign": 2}; emptied with counts
    spelled: dict[str, dict[str, int]] = field(default_factory=dict)
    hashes: list[np.ndarray] | None = field(default_factory=list)  # None once a repeat is seen or not an id kind
    # the values that are not numbers, when every one is a usual stand-in for a missing value ("?"),
    # with their rows; None once another is seen
    markers: dict[str, int] | None = field(default_factory=dict)
    dates: bool | None = None       # every text value seen looks like a date or date-time (None: none seen yet)
    # dates written day and month first (04/03/2021): a value written that way, and which orders the
    # values seen allow ("dmy": a first field over 12 was seen, "mdy": a second one)
    date_example: str = ""
    date_orders: set[str] = field(default_factory=set)
    date_times: bool = False        # some date seen carries a time of day

    @property
    def marked(self) -> bool:
        """Numbers, with some missing values written as a marker ("?")."""
        return self.text and bool(self.markers) and math.isfinite(self.low)

    @property
    def gaps(self) -> int:
        """Missing values: empty cells, and the markers of a marked column."""
        return self.nulls + (sum((self.markers or {}).values()) if self.marked else 0)

    def shown(self, value: str) -> str:
        """A counted value as the data writes it most (300 "Benign", 2 "benign": "Benign"; a tie to
        the first in sort order), or the value itself when its spellings were not kept."""
        forms = self.spelled.get(value)
        return min(forms, key=lambda form: (-forms[form], form)) if forms else value

    def spelled_count(self, value: str) -> int:
        """How many rows write ``value`` as ``shown`` writes it."""
        forms = self.spelled.get(value)
        return forms[self.shown(value)] if forms else (self.counts or {}).get(value, 0)

    @property
    def distinct(self) -> int | None:
        return None if self.counts is None else len(self.counts)

    def finish(self) -> None:
        """Booleans written as text ("True", "false") are booleans too."""
        if self.counts and set(self.counts) <= {"TRUE", "FALSE"}:
            self.boolean = True


def category_limit(rows: int) -> int:
    """The most distinct values a text column may have on ``rows`` rows and still be a category:
    CAP, or more where each value still averages CATEGORY_ROWS rows (a 51-level state on 3,000 rows
    is one; 5,000 values on 5,000 rows are free text), never over COUNT_CAP."""
    return max(CAP, min(COUNT_CAP, rows // CATEGORY_ROWS))


@dataclass
class Profile:
    rows: int
    columns: dict[str, Column]
    # per possible label (the one named, or each column named like one): rows whose features (the
    # columns that are neither an identifier nor that label) repeat an earlier row's
    duplicates: dict[str, int]
    unique: dict[str, bool]          # per identifier-kind column: every value distinct

    def duplicate_rows(self, target: str) -> int:
        return self.duplicates.get(target, 0)

    def labelled_rows(self, target: str) -> int:
        """The rows whose label is there (the run leaves the others out)."""
        return self.rows - (self.columns[target].nulls if target in self.columns else 0)


@dataclass(frozen=True)
class Repeats:
    """Rows whose features repeat an earlier row's, counted as the run counts them (on the
    experiment's feature columns, typed as the run types them): of all the data's ``rows``, and of
    the ``fold_rows`` the folds use (the rows left once a reference set's rows, and every row
    identical to one of them, are set apart; all of them when there is no reference set)."""

    rows: int
    repeats: int
    fold_rows: int
    fold_repeats: int


