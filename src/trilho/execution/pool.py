"""Where a batch of independent fits runs on this machine: at most ``n_jobs`` at once, one core each.

A fit is a module-level function ``fn(X, y, threads, *args)`` and its small arguments: the data
travel apart from the task, so that a cluster holds them once (trilho.execution.cluster), not once per fit.
Threads for the estimators that release the GIL or finish quickly (XGBoost, logistic regression),
loky's worker processes for those whose fit is Python-heavy and holds it (the forests, histogram
boosting: measured in BENCHMARKS.md). Never bare forked children: a process whose main thread has
fit an XGBoost model leaves OpenMP state behind that deadlocks a forked child's first fit; loky
starts its workers by exec.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from threadpoolctl import threadpool_limits

from trilho.errors import EvaluationError

__all__ = ["FIT_MODULES", "Apart", "Batch", "Fit", "LocalPool", "Warm", "fit_server", "in_worker", "run_fits",
           "started_fit_server"]

ProgressFn = Callable[[int, int], None]


Fit = tuple[Callable[..., Any], tuple]


def in_worker(fn: Callable[..., Any], X, y, threads: int, args: tuple) -> Any:
    """A fit away from this process, its native thread pools held to its share of the cores."""
    with threadpool_limits(threads):
        return fn(X, y, threads, *args)


_HELD: dict[str, Any] = {}  # in a worker process: the data it was started with
# what a worker process imports to fit a model (named here, imported there)
FIT_MODULES = ("trilho.evaluation.cv", "trilho.model.catalog")


_SERVER: list[Any] = []  # the fork server's start context, once fit_server() started it in this process


def fit_server(modules: tuple[str, ...] = FIT_MODULES) -> Any:
    """Start multiprocessing's fork server, if it is not running, and return its start context: a
    process of its own, started by exec, that imports ``modules`` once and then forks a worker
    whenever a pool asks for one. A worker started by exec imports the fits' modules itself (2.6 s of
    CPU each here: pandas, scikit-learn, imbalanced-learn); forked from the server, it has them at
    once. The server fits nothing, so its children inherit no OpenMP state (a child forked from a
    process that has fit XGBoost deadlocks). It ends with this process. None where there is no fork
    server (Windows): the pools then start their workers by exec.

    For a command's own process only (``trilho compare``): as with every start method but loky's,
    each worker runs the process's main script again first, so a script that calls trilho without
    ``if __name__ == "__main__"`` would run again in them. Pools use the server only where it was
    started (``started_fit_server``)."""
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    from joblib.externals.loky.backend.context import get_context

    context = get_context("forkserver")
    context.set_forkserver_preload(list(modules))  # read only when the server starts
    forkserver.ensure_running()
    _SERVER[:] = [context]
    return context


def started_fit_server() -> Any:
    """The start context of the fork server ``fit_server`` started in this process, or None."""
    return _SERVER[0] if _SERVER else None


def _exits_quickly() -> None:
    """In a worker process: at its exit, once the exit handlers have run, everything it holds is
    set aside from the cyclic collector (``gc.freeze``), so that the interpreter's teardown does not
    walk the heap its imports built. Its pool's shutdown waits for that exit: 0.50 s for a worker
    that imported the fits' modules, 0.07 s set aside (trilho.execution.collector does the same for
    a command's own process)."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def _hold(X, y) -> None:
    """A worker process's initializer: the data arrive once per worker, not once per fit."""
    _exits_quickly()
    _HELD["X"], _HELD["y"] = X, y


def _in_process(fn: Callable[..., Any], threads: int, args: tuple) -> Any:
    return in_worker(fn, _HELD["X"], _HELD["y"], threads, args)


@contextlib.contextmanager
def _processes(workers: int, X, y):
    """loky's worker processes (started by exec, never a bare fork: the OpenMP state an XGBoost
    fit leaves in this process cannot reach them), each given the data once when it starts."""
    started = Warm(workers, X, y)
    try:
        yield started.pool
    finally:  # workers and their manager thread go: no thread outlives the fits (trilho.execution.background forks)
        started.close()


def _in_thread(fn: Callable[..., Any], X, y, share: Callable[[], int], args: tuple, gil: bool) -> Any:
    """A fit in one of the pool's threads. OpenMP's thread count is each thread's own: the limit the
    session set in the thread that opened it does not reach this one, where scikit-learn's OpenMP
    estimators (histogram boosting) would start a team of every core's size beside the other fits.
    XGBoost is given its share itself (and may take the idle cores late in the pool)."""
    if not gil:
        return fn(X, y, share, *args)
    with threadpool_limits(share(), user_api="openmp"):
        return fn(X, y, share, *args)


class _Cores:
    """The pool's cores and how many of its fits are unfinished: while fewer fits are left than
    cores (the pool's last moments), a fit running in a thread may take the idle cores."""

    def __init__(self, total: int, fits: int) -> None:
        self.total, self.unfinished = total, fits
        self._lock = threading.Lock()

    def share(self) -> int:
        return max(1, self.total // max(1, min(self.total, self.unfinished)))

    def run(self, call: Callable[[Callable[[], int]], Any]) -> Any:
        """``call(share)``, counted as unfinished until it returns."""
        try:
            return call(self.share)
        finally:
            with self._lock:
                self.unfinished -= 1


def _imported(modules: tuple[str, ...]) -> None:
    """An Apart's or a Warm pool's first call in each worker process."""
    _exits_quickly()
    for name in modules:
        importlib.import_module(name)


class Warm:
    """A pool's worker processes started ahead of its session, each given the data once and the
    fits' modules imported: their start (an interpreter, its imports, the data) then takes a core
    that is otherwise idle, such as while this process opens the tracking store, rather than one
    the session's fits need. ``server``: ``fit_server()``'s context, to fork them from it.
    ``close()`` ends them (no thread of theirs outlives it)."""

    def __init__(self, workers: int, X, y, modules: tuple[str, ...] = (), server: Any = None) -> None:
        from joblib.externals.loky import ProcessPoolExecutor

        self.workers, self.X, self.y = workers, X, y
        self.pool = ProcessPoolExecutor(max_workers=workers, initializer=_hold, initargs=(X, y), context=server)
        for _ in range(workers if modules else 0):  # every worker starts at the first task; each takes one of these
            self.pool.submit(_imported, modules)

    def close(self) -> None:
        self.pool.shutdown(wait=True)  # a fit still running ends first: a killed worker leaks loky's semaphores


class LocalPool:
    """The fits on this machine: at most ``n_jobs`` at once, one core each. A fit that holds the
    GIL runs in a worker process, its slot's thread waiting for it; the others in the thread, where
    an XGBoost fit takes the cores the pool's finished fits left idle (trilho.model.catalog).
    ``warm``: worker processes started beforehand on the same data, used instead of new ones."""

    def __init__(self, n_jobs: int, warm: Warm | None = None) -> None:
        self.n_jobs = n_jobs
        self.warm = warm

    @contextlib.contextmanager
    def session(self, X, y, gil_bound: list[bool]) -> Iterator[tuple[Any, Any, str, int]]:
        workers = max(1, min(self.n_jobs, len(gil_bound)))
        threads = max(1, self.n_jobs // workers)
        processes = any(gil_bound) and workers > 1
        with contextlib.ExitStack() as stack:
            stack.enter_context(threadpool_limits(threads))
            pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="trilho-fit"))
            warm = self.warm
            if processes and warm is not None and warm.workers == workers and warm.X is X and warm.y is y:
                procs = warm.pool
            else:
                procs = stack.enter_context(_processes(workers, X, y)) if processes else None
            cores = _Cores(self.n_jobs, len(gil_bound))

            def submit(fit: Fit, gil: bool):
                fn, args = fit
                if procs is not None and gil:  # the slot's thread waits for its worker process
                    return pool.submit(cores.run, lambda _share: procs.submit(_in_process, fn, threads, args).result())
                return pool.submit(cores.run, lambda share: _in_thread(fn, X, y, share, args, gil))

            yield submit, as_completed, ("processes" if processes else "threads"), workers


class Apart:
    """One call in a worker process of its own (loky's: started by exec, never a bare fork), while
    this process goes on. The process starts at once, importing ``modules``: started ahead (before
    this process's own imports, say), it is ready when ``submit(fn, *args)`` gives it its work.
    ``result()`` waits for that call; ``cancel()`` drops it if not yet started; either ends the
    process, so that no thread of it outlives that call."""

    def __init__(self, modules: tuple[str, ...] = ()) -> None:
        from joblib.externals.loky import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=1)
        self._pool.submit(_imported, modules)
        self._future: Any = None

    @property
    def free(self) -> bool:
        """Not given its work yet, nor ended."""
        return self._future is None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Apart:
        assert self._future is None, "an Apart takes one call"
        self._future = self._pool.submit(fn, *args)
        return self

    def result(self) -> Any:
        try:
            return self._future.result()
        finally:
            self._pool.shutdown(wait=True)

    def cancel(self) -> None:
        if self._future:
            self._future.cancel()
        self._future = False
        # a call already running ends first (a few small fits): a worker killed mid-call leaks loky's
        # semaphores, which its resource tracker then reports on stderr at exit
        self._pool.shutdown(wait=True)


@dataclass
class Batch:
    """Independent fits and their names (for errors); ``tick[i]`` when fit i counts as progress,
    ``gil_bound[i]`` when its estimator holds the GIL (trilho.model.catalog says which)."""

    fits: list[Fit] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    tick: list[bool] = field(default_factory=list)
    gil_bound: list[bool] = field(default_factory=list)
    order: list[int] | None = None  # the order the fits start in, when not the order they were added in

    def add(self, fit: Fit, name: str, tick: bool = True, gil_bound: bool = False) -> int:
        """Append one fit; returns its index."""
        self.fits.append(fit)
        self.names.append(name)
        self.tick.append(tick)
        self.gil_bound.append(gil_bound)
        return len(self.fits) - 1


def run_fits(X, y, batch: Batch, n_jobs: int, executor: Any = None, progress: ProgressFn | None = None,
             on_result: Callable[[int, Any], None] | None = None,
             stop: threading.Event | None = None) -> tuple[list[Any], str, int]:
    """Run the batch on this machine (``LocalPool(n_jobs)``) or on ``executor`` (trilho.execution.cluster's
    Dask executor); any failure raises, naming the fit. ``on_result(i, result)`` runs as each fit
    arrives; once ``stop`` is set the fits not yet started are cancelled. Returns the results in
    order, what ran the fits ("threads", "processes" or "dask") and how many ran at once."""
    results: list[Any] = [None] * len(batch.fits)
    done, total = 0, sum(batch.tick)
    runner = executor or LocalPool(n_jobs)
    with runner.session(X, y, batch.gil_bound) as (submit, completed, pool, workers):
        order = batch.order if batch.order is not None else range(len(batch.fits))
        futures = {submit(batch.fits[i], batch.gil_bound[i]): i for i in order}
        try:
            for future in completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as exc:
                    raise EvaluationError(f"{batch.names[i]} failed: {type(exc).__name__}: {exc}") from exc
                if stop is not None and stop.is_set():
                    raise EvaluationError("the evaluation was stopped")
                if on_result:
                    on_result(i, results[i])
                if batch.tick[i]:
                    done += 1
                    if progress:
                        progress(done, total)
        except BaseException:
            for other in futures:
                other.cancel()
            raise
    return results, pool, workers
