"""The Dask edge: every fit of a run, a comparison or nested CV as a task on a Dask cluster.

``TRILHO_DASK_SCHEDULER=tcp://host:8786`` points trilho at an existing cluster (Compose's ``dask``
profile, Kubernetes, Coiled, a university's); ``TRILHO_EXECUTOR=dask`` with no scheduler starts a
local cluster of single-threaded worker processes (spawned, never forked). ``local`` (the default)
needs no Dask at all: nothing here is imported then.

The data reach each worker once: the feature frame and labels are scattered to every worker
(``broadcast``) when the executor first sees them, and each task names them by their futures, so a
fit's own message holds only its fold's row numbers. Because every worker holds a copy, a worker
that dies takes no data with it: the scheduler gives its tasks to another worker. The tasks are the
same functions, on the same seeds and folds, as on this machine, each held to one thread, so the
scores are the same (tests compare them).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from trilho.errors import ClusterError, ConfigError
from trilho.settings import Settings

__all__ = ["DaskExecutor", "open_executor"]

log = logging.getLogger(__name__)

# a worker must compute what this process would: the packages whose versions decide a fit's result
_SAME_VERSIONS = ("trilho", "xgboost", "scikit-learn", "imbalanced-learn", "numpy")


def _versions() -> dict[str, str]:
    out = {}
    for name in _SAME_VERSIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


class DaskExecutor:
    """Submits trilho's fits to a Dask cluster; one per command, closed when the command ends."""

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client, self._cluster = client, cluster
        self._held: tuple[Any, Any, list[Any]] | None = None  # the data last scattered and their futures

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    def threads(self) -> int:
        """How many fits the cluster runs at once (its workers' threads)."""
        return max(1, sum(self.client.nthreads().values()))

    def _scattered(self, X, y) -> list[Any]:
        """Futures of X and y on every worker; scattered once for all the batches of one command."""
        if self._held is None or self._held[0] is not X or self._held[1] is not y:
            self._held = (X, y, self.client.scatter([X, y], broadcast=True, hash=False))
        return self._held[2]

    @contextlib.contextmanager
    def session(self, X, y, gil_bound: list[bool]):
        """What trilho.evaluate runs its fits with: submit, as_completed, the pool's name, its size."""
        from distributed import as_completed

        from trilho.evaluate import _in_worker

        data_x, data_y = self._scattered(X, y)
        batch = uuid.uuid4().hex[:8]
        n_tasks = len(gil_bound)
        count = iter(range(n_tasks))

        def submit(fit, _gil: bool):  # every worker is a process of its own: the GIL is not shared
            fn, args = fit
            # pure=False and a fresh key: two identical fits are still two tasks (they may be repeats)
            return self.client.submit(_in_worker, fn, data_x, data_y, 1, args, pure=False,
                                      key=f"trilho-{fn.__name__.strip('_')}-{batch}-{next(count)}")

        yield submit, as_completed, "dask", min(self.threads(), n_tasks)

    def close(self) -> None:
        self._held = None
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def _connect(settings: Settings) -> DaskExecutor:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError("TRILHO_EXECUTOR=dask needs Dask: pip install 'trilho[dask]' "
                          "(or set TRILHO_EXECUTOR=local to run on this machine)") from exc
    address, wait = settings.dask_scheduler, settings.dask_wait_s
    if not address:
        cores = settings.free_cores()
        # a process per core, one thread each: GIL-bound fits do not share an interpreter
        cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        return DaskExecutor(Client(cluster), cluster)
    start = time.monotonic()
    try:
        client = Client(address, timeout=f"{wait}s")
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"Dask scheduler {address} not reachable: waited {time.monotonic() - start:.0f}s ({type(exc).__name__}). "
            "Start it (dask scheduler; dask worker ADDRESS), raise TRILHO_DASK_WAIT_S, or unset "
            "TRILHO_DASK_SCHEDULER to run on this machine") from exc
    executor = DaskExecutor(client)
    try:
        try:
            client.wait_for_workers(1, timeout=wait)
        except (TimeoutError, OSError) as exc:
            raise ClusterError(f"Dask scheduler {address} has no workers after {wait:.0f}s: start some "
                               f"(dask worker {address}) or unset TRILHO_DASK_SCHEDULER") from exc
        here = _versions()
        for worker, theirs in client.run(_versions, on_error="return").items():
            if isinstance(theirs, BaseException):
                raise ClusterError(f"Dask worker {worker} cannot run trilho's tasks ({type(theirs).__name__}: "
                                   f"{theirs}): install trilho {here['trilho']} in the workers' environment")
            differ = {k: (v, theirs.get(k)) for k, v in here.items() if theirs.get(k) != v}
            if differ:
                shown = ", ".join(f"{k} {mine} here, {other} there" for k, (mine, other) in differ.items())
                raise ClusterError(f"Dask worker {worker} would not compute what this machine does ({shown}): "
                                   "give the workers the same versions (the trilho image does)")
    except BaseException:
        executor.close()
        raise
    return executor


@contextlib.contextmanager
def open_executor(settings: Settings) -> Iterator[DaskExecutor | None]:
    """The executor the settings name: None for this machine, or a connected Dask executor (checked
    before any fit: scheduler reachable, workers present, the same versions), closed on exit."""
    if settings.executor != "dask":
        yield None
        return
    executor = _connect(settings)
    log.info("fits run on the Dask cluster at %s (%d threads)", executor.address, executor.threads())
    try:
        yield executor
    finally:
        executor.close()
