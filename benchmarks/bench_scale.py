"""Whole `trilho run` at 100,000 and 1,000,000 rows, on this machine and on a local Dask cluster.

    python benchmarks/bench_scale.py [--rows 100000 1000000] [--rounds 1] [--dask-rows 100000]

Each run is a fresh process, a fresh lake and tracking store, the shipped experiment on
``synthetic:diabetes?rows=N&seed=1`` with ``cv.n_repeats=1`` (5 folds, a holdout fit and the
final fit; the default duplicate policy). It prints, per size: wall seconds (median of
``--rounds``), peak resident memory of the largest process (the run or one of its workers), the
part of the wall spent outside the fit pool, the mean and largest time of one fold's fit, and the
ratio t(largest) / t(smallest). Then, at ``--dask-rows``, the same run with
``TRILHO_EXECUTOR=dask`` (a local cluster of one single-threaded worker process per core, its
start included) against the local executor, interleaved, and whether their scores are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRILHO = [sys.executable, "-m", "trilho"]


def one_run(rows: int, executor: str = "local") -> dict:
    """One `trilho run` in a fresh folder: its wall time, peak RSS and summary."""
    with tempfile.TemporaryDirectory(prefix="trilho-scale-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_"))}
        env |= {"TRILHO_EXECUTOR": executor, "TRILHO_CACHE_DIR": f"{tmp}/cache"}
        summary = Path(tmp) / "summary.json"
        cmd = [*TRILHO, "run", "--source", f"synthetic:diabetes?rows={rows}&seed=1", "--set", "cv.n_repeats=1",
               "--summary-json", str(summary)]
        # a child's peak RSS, read from the rusage of a wrapper that waits for it alone
        wrapper = ("import resource,subprocess,sys,json;"
                   "rc=subprocess.call(sys.argv[1:]);"
                   "print(json.dumps({'rc':rc,'maxrss_kb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=tmp, env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - start
        info = json.loads(done.stdout.strip().splitlines()[-1])
        if info["rc"] != 0:
            raise SystemExit(f"trilho run failed ({rows} rows, {executor}):\n{done.stderr[-3000:]}")
        out = json.loads(summary.read_text())
    return {"wall": wall, "rss_gb": info["maxrss_kb"] / 1024**2, "summary": out}


ONE_FIT = """
import json, sys, time
import numpy as np
from trilho import load_experiment
from trilho.evaluation import cv as evaluate, splits
from trilho.data.clean import clean
from trilho.data.curate import fold_data
from trilho.data.synthetic import diabetes

rows = int(sys.argv[1])
exp = load_experiment("diabetes", ['source.uri="file:x.csv"', 'source.sha256=""', "cv.n_repeats=1"])
data = clean(diabetes(rows=rows, seed=1), exp)
X, y, groups, _ = fold_data(data, exp)
test = splits.split_plan(y, 5, [exp.cv.seeds[0]], groups)[0][3]
import threading
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
before, peak, fitting = rss(), [0], [True]
def watch():  # the fit's own peak: sampled while it runs, not the process's lifetime peak
    while fitting[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)
watcher = threading.Thread(target=watch)
watcher.start()
start = time.perf_counter()
evaluate.fold_fit(X, y, 1, dict(model=exp.model.model_dump(), resampler=exp.resampler.model_dump(),
                   random_state=exp.random_state, encoding=data.spec), 1, 0, test, np.arange(int(y.max()) + 1))
seconds = time.perf_counter() - start
fitting[0] = False
watcher.join()
print(json.dumps({"fit_s": seconds, "data_mb": (X.memory_usage(deep=True).sum()) / 2**20,
                  "fit_peak_mb": (peak[0] - before) / 2**20}))
"""


def one_fit(rows: int) -> dict:
    """One fold's fit (the shipped model and resampler, one thread) in a fresh process: its time and
    the memory it adds above the loaded data, what a cluster worker needs per concurrent fit."""
    done = subprocess.run([sys.executable, "-c", ONE_FIT, str(rows)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def fold_fits(summary: dict) -> tuple[float, float]:
    fit = summary["cv"].get("fit_s") or {}
    return fit.get("mean", float("nan")), fit.get("max", float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dask-rows", type=int, default=100_000)
    parser.add_argument("--dask-rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; each row: a fresh `trilho run`, 5 folds x 1 repeat\n")
    print("| rows | wall s (median) | peak RSS GB | outside the fit pool | one fold's fit s (mean / max) |")
    print("|---|---|---|---|---|")
    walls = {}
    for rows in args.rows:
        runs = [one_run(rows) for _ in range(args.rounds)]
        wall = statistics.median(r["wall"] for r in runs)
        walls[rows] = wall
        last = runs[-1]["summary"]
        pool = last["timings"]["cv_s"]
        mean, most = fold_fits(last)
        print(f"| {rows:,} | {wall:.1f} | {max(r['rss_gb'] for r in runs):.2f} | "
              f"{(wall - pool) / wall:.0%} ({wall - pool:.1f} s) | {mean:.1f} / {most:.1f} |", flush=True)
    print("\nPer fit, for planning a cluster (one fold's fit, one thread, a fresh process):\n")
    print("| rows | fit s | feature frame MB | memory the fit adds, MB |")
    print("|---|---|---|---|")
    for rows in args.rows:
        fit = one_fit(rows)
        print(f"| {rows:,} | {fit['fit_s']:.1f} | {fit['data_mb']:.0f} | {fit['fit_peak_mb']:.0f} |", flush=True)
    if len(walls) > 1:
        small, large = min(walls), max(walls)
        print(f"\nt({large:,}) / t({small:,}) = {walls[large] / walls[small]:.2f}")
    if args.dask_rows:
        times: dict[str, list[float]] = {"local": [], "dask": []}
        metrics = {}
        for _ in range(args.dask_rounds):
            for executor in ("local", "dask"):
                run = one_run(args.dask_rows, executor)
                times[executor].append(run["wall"])
                metrics[executor] = run["summary"]["cv"]["metrics"]
                assert run["summary"]["cv"]["pool"] == ("dask" if executor == "dask" else run["summary"]["cv"]["pool"])
        local, dask = statistics.median(times["local"]), statistics.median(times["dask"])
        print(f"\n{args.dask_rows:,} rows, whole run, median of {args.dask_rounds} interleaved: local {local:.1f} s, "
              f"Dask local cluster (2 single-threaded workers, start included) {dask:.1f} s: "
              f"dask / local = {dask / local:.2f}; identical scores: {metrics['local'] == metrics['dask']}")


if __name__ == "__main__":
    main()
