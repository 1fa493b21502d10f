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
        """What trilho.evaluation.cv runs its fits with: submit, as_completed, the pool's name, its size."""
        from distributed import as_completed

        from trilho.execution.pool import in_worker

        data_x, data_y = self._scattered(X, y)
        batch = uuid.uuid4().hex[:8]
        n_tasks = len(gil_bound)
        count = iter(range(n_tasks))

        def submit(fit, _gil: bool):  # every worker is a process of its own: the GIL is not shared
            fn, args = fit
            # pure=False and a fresh key: two identical fits are still two tasks (they may be repeats)
            return self.client.submit(in_worker, fn, data_x, data_y, 1, args, pure=False,
                                      key=f"trilho-{fn.__name__.strip('_')}-{batch}-{next(count)}")

        yield submit, as_completed, "dask", min(self.threads(), n_tasks)

    def fit_distributed(self, source: tuple[Any, str], spec: dict[str, Any], model: dict[str, Any],
                        resampler: dict[str, Any], random_state: int) -> tuple[Any, dict[str, Any]]:
        """The final model through ``xgboost.dask``: every worker reads its own row groups of the curated
        Parquet at ``source`` (a pyarrow filesystem and path), so no process ever holds every row.

        The encoder's state comes from cluster-wide summaries (category counts; each numeric column's
        exact median, by ``_exact_medians``), so it is the state this process would learn from the
        same rows; ``class_weight`` becomes per-row weights
        from the cluster-wide class counts. Returns a fitted ``encode -> model`` pipeline that
        ``trilho.serving.artifact.save_model_files`` writes like any other, and what the fit saw (rows,
        partitions, workers).
        """
        import dask
        import dask.dataframe as dd
        import pandas as pd
        from imblearn.pipeline import Pipeline
        from xgboost import XGBClassifier, XGBRegressor
        from xgboost import dask as dxgb

        from trilho.model.catalog import model_kind
        from trilho.model.encoding import encode_features, input_columns, with_calendar
        from trilho.model.table_encoder import FILLED, TableEncoder, first_day

        filesystem, path = source
        groups, empty = _row_groups(filesystem, path)
        frame = dd.from_map(_read_row_group, [(filesystem, path, i) for i in range(groups)], meta=empty,
                            enforce_metadata=False, label="trilho-curated")
        features, inputs, target = spec["features"], input_columns(spec), "__target__"
        if spec.get("missing") == "drop":
            frame = frame.dropna(subset=inputs)
        filled = spec.get("missing") in FILLED
        categorical = [c for c in spec["categorical"] if filled or spec["categorical"][c] is None]
        numeric = [c for c in features if filled and c not in spec["categorical"]]
        regression = spec.get("task") == "regression"  # a numeric target: its rows counted, no classes
        counts, classes, firsts = dask.compute({c: frame[c].value_counts(split_out=1) for c in categorical},
                                               frame[target].count() if regression else
                                               frame[target].value_counts(split_out=1),
                                               {c: frame[c].min() for c in spec.get("dates") or {}})
        # a date's calendar parts: "days" counts from the first day the cluster holds, as a fold's encoder does
        origins = {c: first_day(pd.Series([first], dtype="datetime64[ns]")) for c, first in firsts.items()}
        dated = {**spec, "dates": TableEncoder(spec).dated(origins)} if origins else spec
        parts = frame.map_partitions(with_calendar, dated, meta=with_calendar(empty, dated)) if origins else frame
        encoder = TableEncoder(spec).learned(counts, _exact_medians(parts, numeric), origins)
        X = frame[inputs].map_partitions(encode_features, encoder.spec_, meta=encode_features(empty, encoder.spec_))
        y = frame[target]
        kind = model_kind(model["name"])
        params = {**kind.defaults, "random_state": random_state, **model.get("params", {})}
        params.pop(kind.threads, None)  # each worker uses its own threads
        weights = None
        if not regression and resampler["name"] == "class_weight":  # scikit-learn's "balanced": n / (k * n_c)
            total, k = float(classes.sum()), len(classes)
            weights = y.map({int(c): total / (k * float(n)) for c, n in classes.items()}, meta=(target, "float64"))
        fitted = (dxgb.DaskXGBRegressor if regression else dxgb.DaskXGBClassifier)(**params)
        fitted.client = self.client
        fitted.fit(X, y, sample_weight=weights)
        local = (XGBRegressor if regression else XGBClassifier)(**params)  # the booster in the class every other fit logs
        local.load_model(bytearray(fitted.get_booster().save_raw("ubj")))
        info = {"rows": int(classes) if regression else int(classes.sum()), "partitions": groups,
                "workers": len(self.client.nthreads()), "weights": weights is not None}
        return Pipeline([("encode", encoder), ("model", local)]), info

    def close(self) -> None:
        self._held = None
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


_MEDIAN_GATHER = 50_000  # values one column may send to this process to finish its median exactly
_MEDIAN_GRID = 1024      # thresholds counted per column per pass


def _exact_medians(frame: Any, columns: list[str]) -> dict[str, float]:
    """Each column's median, exactly as pandas computes it (the mean of the two middle values of the
    non-missing ones), without bringing a column to one process: each pass counts, on the workers,
    the values at or below a grid of thresholds inside the bracket that holds the middle, which
    shrinks the bracket about a thousandfold; once the bracket holds at most ``_MEDIAN_GATHER``
    values they are gathered and the median is read off them. Each pass reads the data once
    (for every column at a time); typically two or three passes."""
    import dask
    import numpy as np

    if not columns:
        return {}
    parts = frame[columns].astype("float64").to_delayed()
    stats = dask.compute(*[dask.delayed(_column_stats)(p) for p in parts])
    n = sum(s["n"] for s in stats)
    low = {c: min(s["min"][c] for s in stats) for c in columns}
    high = {c: max(s["max"][c] for s in stats) for c in columns}
    # per column: bracket (lo, hi] holding both middle order statistics, and how many values are <= lo
    state = {c: (-np.inf, high[c], 0, int(n[c])) for c in columns if n[c] > 0}
    out = {c: float("nan") for c in columns if n[c] == 0}
    while state:
        gather = {c: (lo, hi) for c, (lo, hi, _, inside) in state.items() if inside <= _MEDIAN_GATHER}
        grids = {c: np.unique(np.linspace(max(lo, low[c]), hi, _MEDIAN_GRID + 1))
                 for c, (lo, hi, _, inside) in state.items() if c not in gather}
        found = dask.compute(*[dask.delayed(_median_pass)(p, gather, grids) for p in parts])
        for c in list(state):
            lo, hi, below, _ = state.pop(c)
            first, second = (int(n[c]) - 1) // 2, int(n[c]) // 2  # the middle order statistics, from 0
            if c in gather:
                values = np.sort(np.concatenate([f["gathered"][c] for f in found]))
                out[c] = float((values[first - below] + values[second - below]) / 2)
                continue
            grid = grids[c]
            at_or_below = np.sum([f["counted"][c] for f in found], axis=0)
            top = int(np.searchsorted(at_or_below, second + 1))  # first threshold with the upper middle
            bottom = int(np.searchsorted(at_or_below, first + 1)) - 1  # last threshold below the lower one
            new_lo = grid[bottom] if bottom >= 0 else lo
            new_below = int(at_or_below[bottom]) if bottom >= 0 else below
            new_hi = grid[top]
            inside = int(at_or_below[top]) - new_below
            if (new_lo, new_hi) == (lo, hi):  # no grid point falls between: every value inside equals hi
                out[c] = float(hi)
                continue
            state[c] = (new_lo, new_hi, new_below, inside)
    return {c: out[c] for c in columns}


def _column_stats(part: Any) -> dict[str, Any]:
    return {"n": part.count(), "min": part.min(), "max": part.max()}


def _median_pass(part: Any, gather: dict[str, tuple[float, float]], grids: dict[str, Any]) -> dict[str, Any]:
    """One partition's share of a median pass: its values inside each gathered bracket, and how
    many of its values are at or below each threshold of each grid."""
    import numpy as np

    gathered, counted = {}, {}
    for c, (lo, hi) in gather.items():
        values = part[c].to_numpy()
        gathered[c] = values[(values > lo) & (values <= hi)]
    for c, grid in grids.items():
        values = np.sort(part[c].dropna().to_numpy())
        counted[c] = np.searchsorted(values, grid, side="right")
    return {"gathered": gathered, "counted": counted}


def _row_groups(filesystem: Any, path: str) -> tuple[int, Any]:
    """How many row groups the Parquet file has, and an empty frame of its columns (its footer only)."""
    import pyarrow.parquet as pq

    with filesystem.open_input_file(path) as fh:
        found = pq.ParquetFile(fh)
        return found.metadata.num_row_groups, found.schema_arrow.empty_table().to_pandas()


def _read_row_group(where: tuple[Any, str, int]) -> Any:
    """One row group of the curated Parquet, read by the worker that runs this task."""
    import pyarrow.parquet as pq

    filesystem, path, group = where
    with filesystem.open_input_file(path) as fh:
        return pq.ParquetFile(fh).read_row_group(group).to_pandas()


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
