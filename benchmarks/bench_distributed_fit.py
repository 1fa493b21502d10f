"""The final fit through xgboost.dask (``model.distributed = true``) against one process's fit.

    python benchmarks/bench_distributed_fit.py [--rows 1000000] [--workers 2]

The shipped experiment with ``resampler.name = "class_weight"`` on ``synthetic:diabetes?rows=N``,
cleaned as a run cleans it and written as the curated Parquet (row groups of 100,000 rows). Then,
side by side on this machine: the one-process final fit (all cores) and the distributed one on a
local cluster of ``--workers`` single-threaded worker processes reading that Parquet themselves
(cluster start excluded, the encoder's cluster-wide summaries included). It prints each one's wall
time and peak memory (of the process; of the largest worker), how often their labels agree, and
whether the encoders' learned state is identical.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    from distributed import Client, LocalCluster

    from trilho import load_experiment
    from trilho.clean import clean
    from trilho.cluster import DaskExecutor
    from trilho.models import build_pipeline
    from trilho.pipeline import CURATED_ROW_GROUP
    from trilho.storage import LocalLake
    from trilho.synthetic import diabetes

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
            start = time.perf_counter()
            there, info = executor.fit_distributed(lake.arrow(key), data.spec, model, resampler, exp.random_state)
            distributed_s = time.perf_counter() - start
            worker_mb = max(client.run(_peak_mb).values())
        before = _peak_mb()
        start = time.perf_counter()
        here = build_pipeline(model, resampler, exp.random_state, 2, data.spec).fit(data.X, data.y)
        local_s = time.perf_counter() - start
        local_mb = _peak_mb()
    agree = float(np.mean(here.predict(data.X) == there.predict(data.X)))
    same_state = here.named_steps["encode"].spec_ == there.named_steps["encode"].spec_
    print(f"{args.rows:,} rows, {info['partitions']} partitions, {info['workers']} workers x 1 thread\n")
    print("| final fit | wall s | peak memory MB |")
    print("|---|---|---|")
    print(f"| one process, 2 threads | {local_s:.1f} | {local_mb:.0f} (process; {before:.0f} before the fit) |")
    print(f"| xgboost.dask | {distributed_s:.1f} | {worker_mb:.0f} (largest worker) |")
    print(f"\nlabels agree: {agree:.2%}; encoder state identical: {same_state}; "
          f"distributed / one process = {distributed_s / local_s:.2f}")


if __name__ == "__main__":
    main()
