"""trilho: a tabular classification experiment on rails, from raw data to a registered model."""

from trilho.errors import (
    ClusterError,
    ConfigError,
    DataValidationError,
    EvaluationError,
    NotebookError,
    SourceError,
    SourceUnreachableError,
    StorageError,
    TrackingError,
    TrilhoError,
)
from trilho.experiment import Experiment, load_experiment
from trilho.settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "ClusterError",
    "ConfigError",
    "DataValidationError",
    "EvaluationError",
    "Experiment",
    "NotebookError",
    "Settings",
    "SourceError",
    "SourceUnreachableError",
    "StorageError",
    "TrackingError",
    "TrilhoError",
    "__version__",
    "load_experiment",
    "load_settings",
]
