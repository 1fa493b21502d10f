"""The final fit through xgboost.dask (``model.distributed = true``) against one process's fit.

    python benchmarks/bench_distributed_fit.py [--rows 1000000] [--workers 2]

The shipped experiment with ``resampler.name = "class_weight"`` on ``synthetic:diabetes?rows=N``,
cleaned as a run cleans it and written as the curated Parquet (row groups of 100,000 rows). Then,
side by side on this machine: the distributed fit on a local cluster of ``--workers``
single-threaded worker processes reading that Parquet themselves (cluster start excluded, the
encoder's cluster-wide summaries included), then the one-process final fit (2 threads). It prints
each one's wall time and memory (what the one-process fit adds above the loaded data, sampled;
each worker's whole peak), how often their labels agree, and whether the encoders' learned state
is identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _watch_worker() -> float:
    """Start sampling this worker's resident memory (run on each worker by ``Client.run``; the
    kernel's own peak, ru_maxrss, would carry the parent's over a spawn), return it now in MB."""
    import sys
    import threading

    peak = sys.__dict__.setdefault("_bench_peak_mb", [0.0])

    def watch() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    return _rss_mb()


def _worker_peak() -> float:
    import sys

    return sys.__dict__["_bench_peak_mb"][0]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


class _Sampler:
    """The peak of this process's resident memory while a block runs, above where it started."""

    def __enter__(self) -> _Sampler:
        import threading

        self.before, self.peak, self._on = _rss_mb(), 0.0, True

        def watch() -> None:
            while self._on:
                self.peak = max(self.peak, _rss_mb())
                time.sleep(0.01)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._on = False
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    from distributed import Client, LocalCluster

    from trilho import load_experiment
    from trilho.data.clean import clean
    from trilho.data.curate import CURATED_ROW_GROUP
    from trilho.data.synthetic import diabetes
    from trilho.execution.cluster import DaskExecutor
    from trilho.model.catalog import build_pipeline
    from trilho.storage import LocalLake

    exp = load_experiment("diabetes", ['source.uri="file:x.csv"', 'source.sha256=""', 'resampler.name="class_weight"',
                                       "model.distributed=true"])
    data = clean(diabetes(rows=args.rows, seed=1), exp)
    model, resampler = exp.model.model_dump(), exp.resampler.model_dump()
    with tempfile.TemporaryDirectory(prefix="trilho-dfit-") as tmp:
        lake = LocalLake(Path(tmp) / "lake")
        key = "curated/bench/data.parquet"
        path = Path(lake.arrow(key)[1])
        path.parent.mkdir(parents=True)
        data.curated().to_parquet(path, index=False, row_group_size=CURATED_ROW_GROUP)
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            executor = DaskExecutor(client)
            idle = client.run(_watch_worker)
            start = time.perf_counter()
            there, info = executor.fit_distributed(lake.arrow(key), data.spec, model, resampler, exp.random_state)
            distributed_s = time.perf_counter() - start
            worker_mb = sorted((peak, idle[w]) for w, peak in client.run(_worker_peak).items())
        start = time.perf_counter()
        with _Sampler() as sampled:
            here = build_pipeline(model, resampler, exp.random_state, 2, data.spec).fit(data.X, data.y)
        local_s = time.perf_counter() - start
    agree = float(np.mean(here.predict(data.X) == there.predict(data.X)))
    same_state = here.named_steps["encode"].spec_ == there.named_steps["encode"].spec_
    print(f"{args.rows:,} rows, {info['partitions']} partitions, {info['workers']} workers x 1 thread\n")
    print("| final fit | wall s | memory |")
    print("|---|---|---|")
    print(f"| one process, 2 threads | {local_s:.1f} | the fit adds {sampled.peak - sampled.before:.0f} MB to the "
          f"{sampled.before:.0f} MB the process holds with the data loaded |")
    print(f"| xgboost.dask | {distributed_s:.1f} | each worker's peak: "
          f"{', '.join(f'{m:.0f} MB ({m - i:.0f} above its idle {i:.0f})' for m, i in worker_mb)} |")
    print(f"\nlabels agree: {agree:.2%}; encoder state identical: {same_state}; "
          f"distributed / one process = {distributed_s / local_s:.2f}")


if __name__ == "__main__":
    main()
