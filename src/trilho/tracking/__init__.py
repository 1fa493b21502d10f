"""The MLflow edge: every call trilho makes to MLflow is in this package, through a client built for
one tracking URI (``store.open_client``), never MLflow's process-wide tracking URI or fluent API.

- ``runs``: the ``Tracker`` (runs, params, metrics, dataset, artifacts, the model);
- ``model``: logging a model's files (``trilho.serving.artifact`` writes them) and loading them back;
- ``registry``: registered models, aliases and the promotion gate's lock;
- ``store``: the store itself (its lock, whether a server answers, stale runs).
"""

from trilho.tracking.model import signature_example
from trilho.tracking.runs import Tracker, flatten
from trilho.tracking.store import process_alive, remember_unfinished, sqlite_file, store_lock

__all__ = ["Tracker", "flatten", "process_alive", "remember_unfinished", "signature_example", "sqlite_file",
           "store_lock"]
