"""Batch prediction throughput: trilho's chunked Parquet path beside the naive whole-frame path.

A model is trained and registered (the diabetes experiment's procedure, one repeat, on synthetic
rows) in a temporary embedded store; then, each in its own process so that its peak RSS is its own:

* ``trilho``: ``predict_batch`` from a Parquet file in the lake to Parquet in the lake (schema
  check, chunks, identifiers kept, manifest);
* ``naive``: ``pd.read_csv`` of the whole CSV, ``mlflow.pyfunc.load_model`` and one ``predict`` on
  the whole frame, written to Parquet;
* ``booster``: the floor: XGBoost's own ``inplace_predict`` of every row, already read and encoded
  into one float32 matrix, on all cores; nothing else is timed.

    python benchmarks/bench_predict.py [--rows 1000000] [--rounds 3]

Times are of the work after the libraries are imported (MLflow, pandas, XGBoost and MLflow's
SQLite store, the same for every way; imports are printed apart, and the end-to-end figure with
them too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
def peak_rss_mb():  # VmHWM: this process's own peak (ru_maxrss would include the parent's size at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
t0 = time.perf_counter()
import mlflow, pandas as pd, xgboost
import mlflow.store.tracking.sqlalchemy_store, mlflow.store.model_registry.sqlalchemy_store  # imported on first use
from trilho import load_settings
from trilho.serving.predict import predict_batch
imported = time.perf_counter() - t0
way, root, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = load_settings(env_file=None, lake=f"{root}/lake", tracking_uri=f"sqlite:///{root}/mlflow.db")
start = time.perf_counter()
if way == "trilho":
    done = predict_batch("models:/bench-model@champion", "input/rows.parquet", settings, output=f"out-{time.time_ns()}")
    assert done["rows"] == rows, done
    phases = done["timings"]
elif way == "booster":
    import numpy as np
    from trilho.model.encoding import encode_features
    mlflow.set_tracking_uri(settings.tracking_uri)
    inner = mlflow.pyfunc.load_model("models:/bench-model@champion").unwrap_python_model()
    matrix = encode_features(pd.read_parquet(f"{root}/rows.parquet"), inner.spec_).to_numpy(dtype=np.float32)
    inner.classifier_.inplace_predict(matrix[:1000])  # warm
    start = time.perf_counter()
    proba = inner.classifier_.inplace_predict(matrix)
    assert proba.shape[0] == rows
    phases = {}
else:
    phases = {}
    mlflow.set_tracking_uri(settings.tracking_uri)
    df = pd.read_csv(f"{root}/rows.csv")
    model = mlflow.pyfunc.load_model("models:/bench-model@champion")
    out = model.predict(df.drop(columns=["CLASS", "ID", "No_Pation"]))
    pd.concat([df[["ID", "No_Pation"]], out], axis=1).to_parquet(f"{root}/naive.parquet", index=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "import_s": imported, "phases": phases,
                  "peak_rss_mb": peak_rss_mb()}))
"""


def prepare(root: Path, rows: int) -> None:
    from trilho import load_experiment, load_settings
    from trilho.data.synthetic import diabetes
    from trilho.storage import LocalLake
    from trilho.workflows.run import run_experiment

    train = root / "train.csv"
    diabetes(rows=1000, seed=7).to_csv(train, index=False)
    settings = load_settings(env_file=None, lake=str(root / "lake"), tracking_uri=f"sqlite:///{root}/mlflow.db",
                             cache_dir=root / "cache")
    exp = load_experiment("diabetes", [f'source.uri="file:{train}"', 'source.sha256=""', "cv.n_repeats=1",
                                       'registry.model_name="bench-model"'])
    run_experiment(exp, settings)
    data = diabetes(rows=rows, seed=8)
    data.to_csv(root / "rows.csv", index=False)
    data.to_parquet(root / "rows.parquet", index=False)
    LocalLake(root / "lake").put_file("input/rows.parquet", root / "rows.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trilho-bench-predict-") as tmp:
        root = Path(tmp)
        prepare(root, args.rows)
        results: dict[str, list[dict]] = {"trilho": [], "naive": [], "booster": []}
        for _ in range(args.rounds):
            for way in results:
                done = subprocess.run([sys.executable, "-c", CHILD, way, str(root), str(args.rows)],
                                      capture_output=True, text=True, timeout=1800, env={**os.environ})
                if done.returncode:
                    raise SystemExit(f"{way} failed:\n{done.stderr[-3000:]}")
                results[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"rows: {args.rows:,}, rounds: {args.rounds}, cores: {os.cpu_count()}")
        med = {}
        for way, runs in results.items():
            med[way] = statistics.median(r["seconds"] for r in runs)
            print(f"{way:>7}: median {med[way]:6.2f} s  {args.rows / med[way]:>10,.0f} rows/s  "
                  f"peak RSS {max(r['peak_rss_mb'] for r in runs):6.0f} MiB  "
                  f"(imports {statistics.median(r['import_s'] for r in runs):.1f} s, not counted)")
        stream = statistics.median(r["phases"]["stream_s"] for r in results["trilho"])
        load = statistics.median(r["phases"]["load_s"] + r["phases"]["resolve_s"] for r in results["trilho"])
        print(f"trilho phases (medians): resolve + load the model {load:.2f} s, stream the rows {stream:.2f} s "
              f"= {args.rows / stream:,.0f} rows/s once the model is loaded")
        cold = statistics.median(r["seconds"] + r["import_s"] for r in results["trilho"])
        print(f"trilho with its imports: {cold:.2f} s = {args.rows / cold:,.0f} rows/s")
        print(f"trilho's stream runs at {med['booster'] / stream:.0%} of the booster's own speed; "
              f"end to end at {med['booster'] / med['trilho']:.0%}")
        print(f"trilho rows/s: {args.rows / med['trilho']:,.0f} (goal >= 500,000); "
              f"naive time / trilho time: {med['naive'] / med['trilho']:.2f}")


if __name__ == "__main__":
    main()
