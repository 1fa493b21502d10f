"""Ingest of a large generated CSV into a real S3 store (SeaweedFS on 127.0.0.1), side by side.

Three ways, each in its own process so that its peak RSS is its own, against the same store:

* ``plain``: boto3 ``upload_file`` of the file with its default settings, the floor for throughput;
* ``trilho``: ``trilho.data.ingest`` (sha256 and line count in one streamed pass, head check,
  multipart upload, size and sha256 round trip, manifest last);
* ``seed``: the reference's way: pandas reads the whole file, writes it back to CSV in memory,
  and ``put_object`` sends the buffer.

    python benchmarks/bench_ingest.py [--gb 1.0] [--rounds 3] [--skip-seed]

Prints per-way median seconds, MB/s and peak RSS, and the ratio trilho/plain throughput.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.services import ACCESS_KEY, SECRET_KEY, SeaweedFS  # noqa: E402  (the same store the tests use)

CHILD = r"""
import json, os, sys, time
def peak_rss_mb():  # VmHWM: this process's own peak (ru_maxrss would include the parent's size at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
way, path, endpoint, bucket, key = sys.argv[1:6]
start = time.perf_counter()
if way == "plain":
    import boto3
    from botocore.config import Config
    c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"))
    c.upload_file(path, bucket, key)
elif way == "trilho":
    from trilho import load_settings
    from trilho.data.ingest import ingest
    from trilho.storage import open_lake
    s = load_settings(env_file=None, lake=f"s3://{bucket}/{key}", s3_endpoint_url=endpoint)
    done = ingest("file:" + path, open_lake(s), s, "bench")
    assert not done.skipped
elif way == "seed":
    import io, boto3, pandas as pd
    from botocore.config import Config
    c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"))
    df = pd.read_csv(path)
    buf = io.StringIO(); df.to_csv(buf, index=False)
    c.put_object(Bucket=bucket, Key=key, Body=buf.getvalue().encode())
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))
"""


def make_csv(path: Path, target_bytes: int) -> None:
    from trilho.data.synthetic import diabetes

    block = diabetes(rows=20_000, seed=1).to_csv(index=False)
    header, body = block.split("\n", 1)
    with open(path, "w") as fh:
        fh.write(header + "\n")
        written = len(header) + 1
        while written < target_bytes:
            fh.write(body)
            written += len(body)


def run(way: str, path: Path, store: SeaweedFS, bucket: str, key: str) -> dict:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    done = subprocess.run([sys.executable, "-c", CHILD, way, str(path), store.endpoint, bucket, key],
                          env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{way} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-seed", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trilho-bench-ingest-") as tmp:
        tmp = Path(tmp)
        data = tmp / "big.csv"
        make_csv(data, int(args.gb * 1024**3))
        size_mb = data.stat().st_size / 1024**2
        store = SeaweedFS(tmp / "store").start()
        try:
            client = store.client()
            ways = ["plain", "trilho"] + ([] if args.skip_seed else ["seed"])
            results: dict[str, list[dict]] = {w: [] for w in ways}
            for r in range(args.rounds):
                for way in ways:  # interleaved, so that drift on a noisy machine hits every way alike
                    bucket = f"b-{way}-{r}"
                    client.create_bucket(Bucket=bucket)
                    results[way].append(run(way, data, store, bucket, "big.csv" if way != "trilho" else "lake"))
                    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                        for obj in page.get("Contents", []):
                            client.delete_object(Bucket=bucket, Key=obj["Key"])
            print(f"file: {size_mb:.0f} MiB CSV, store: SeaweedFS {store.endpoint}, rounds: {args.rounds}, "
                  f"cores: {os.cpu_count()}")
            med = {}
            for way in ways:
                secs = statistics.median(x["seconds"] for x in results[way])
                rss = max(x["peak_rss_mb"] for x in results[way])
                med[way] = secs
                print(f"{way:>7}: median {secs:6.2f} s  {size_mb / secs:7.1f} MiB/s  peak RSS {rss:7.0f} MiB   "
                      "(all: " + ", ".join(f"{x['seconds']:.2f}" for x in results[way]) + ")")
            print(f"trilho throughput / plain multipart: {med['plain'] / med['trilho']:.2f} (goal >= 0.80)")
            if "seed" in med:
                print(f"seed-style time / trilho time: {med['seed'] / med['trilho']:.2f}")
        finally:
            store.stop()


if __name__ == "__main__":
    main()
