"""trilho's typed errors: one base, a few kinds, each message names the bad value and the fix.

TrilhoError
 ├─ ConfigError          a bad experiment file, override or setting
 ├─ SourceError          a data source that cannot be reached or read
 │   └─ SourceUnreachableError  the network or the host of a source did not answer
 ├─ StorageError         the lake refused or lost an object
 ├─ DataValidationError  the data breaks the experiment's contract
 ├─ EvaluationError      a fold or a fit failed
 ├─ TrackingError        MLflow could not be reached or refused a write (or a model's files differ from what was logged)
 ├─ ClusterError         the Dask cluster cannot run the fits
 ├─ NotebookError        a notebook's cell raised
 └─ RequestError         a request trilho serve refuses, with its HTTP status (also a ValueError)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ClusterError",
    "ConfigError",
    "DataValidationError",
    "EvaluationError",
    "NotebookError",
    "RequestError",
    "SourceError",
    "SourceUnreachableError",
    "StorageError",
    "TrackingError",
    "TrilhoError",
]


class TrilhoError(Exception):
    """Base of every error trilho raises on purpose; the CLI prints it as one line."""


class ConfigError(TrilhoError):
    pass


class ClusterError(TrilhoError):
    """The Dask cluster trilho was pointed at cannot run its fits (unreachable, no workers, other versions)."""


class SourceError(TrilhoError):
    pass


class SourceUnreachableError(SourceError):
    """The source's host could not be reached (no network, a host that is down): nothing was read."""

    @property
    def cause(self) -> str:
        """What the network said, in a word (``ConnectionError``), or "no answer"."""
        return type(self.__cause__).__name__ if self.__cause__ else "no answer"


class StorageError(TrilhoError):
    pass


class DataValidationError(TrilhoError):
    def __init__(self, message: str, report: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report


class EvaluationError(TrilhoError):
    pass


class TrackingError(TrilhoError):
    pass


class NotebookError(TrilhoError):
    """A cell raised; the message names the cell and the error."""


class RequestError(TrilhoError, ValueError):
    """A request the server answers with ``status`` and this message, never with a trace. Also a
    ValueError, as bad input is: code that caught the one catches the other."""

    def __init__(self, message: str, status: int = 400, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind
