"""`trilho init` on a large generated CSV, beside reading the same file whole with pandas.

The file: an identifier, six numeric columns (two with missing values, one of integers), three
text categoricals in mixed case (one with missing values), a boolean, and a binary text label.
Two ways, each in its own fresh process so that its peak RSS (VmHWM) is its own:

* ``trilho``: ``trilho init file:PATH --target label`` end to end (read in chunks, profile, propose,
  write and re-load the experiment file);
* ``pandas``: ``pd.read_csv(PATH)`` of the whole file and nothing else, the floor a naive profile
  starts from.

    python benchmarks/bench_init.py [--rows 1000000] [--rounds 3]

Prints per-way median seconds and peak RSS, and the ratios trilho/pandas.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

CHILD = r"""
import json, sys, time
def peak_rss_mb():  # VmHWM: this process's own peak (ru_maxrss would include the parent's size at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
way, path, out = sys.argv[1:4]
start = time.perf_counter()
if way == "trilho":
    from typer.testing import CliRunner
    from trilho.cli import app
    result = CliRunner().invoke(app, ["init", "file:" + path, "--target", "label", "-o", out, "--force"])
    assert result.exit_code == 0, result.output
else:
    import pandas as pd
    pd.read_csv(path)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}))
"""


def make_csv(path: Path, rows: int, seed: int = 0, chunk: int = 250_000) -> None:
    rng = np.random.default_rng(seed)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        x = rng.normal(0, 1, (n, 5))
        frame = pd.DataFrame({
            "row_id": np.arange(start, start + n),
            **{f"x{i}": x[:, i].round(4) for i in range(5)},
            "count": rng.integers(0, 500, n),
            "plan": rng.choice(["basic", "Basic", "PLUS ", "premium"], n),
            "region": rng.choice(["north", "South", "east", "WEST", "centre"], n),
            "channel": rng.choice(["web", "Store", "phone"], n).astype(object),
            "active": rng.choice(["True", "false"], n),
            "label": np.where(x[:, 0] + x[:, 1] + rng.normal(0, 1, n) > 1.2, "Churned", "stayed"),
        })
        frame.loc[rng.random(n) < 0.02, "x3"] = np.nan
        frame.loc[rng.random(n) < 0.01, "count"] = np.nan
        frame.loc[rng.random(n) < 0.03, "channel"] = None
        frame.to_csv(path, mode="a" if start else "w", header=not start, index=False)


def run_way(way: str, path: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, way, str(path), str(out)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trilho-bench-init-") as tmp:
        path, out = Path(tmp) / "big.csv", Path(tmp) / "big.toml"
        make_csv(path, args.rows)
        print(f"{args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB")
        results: dict[str, list[dict]] = {"trilho": [], "pandas": []}
        for _ in range(args.rounds):  # interleaved, so drift hits both ways alike
            for way in results:
                results[way].append(run_way(way, path, out))
        med = {way: {k: statistics.median(r[k] for r in runs) for k in ("seconds", "peak_rss_mb")}
               for way, runs in results.items()}
        for way, m in med.items():
            print(f"{way:>7}: {m['seconds']:.2f} s, peak RSS {m['peak_rss_mb']:.0f} MiB "
                  f"(runs: {', '.join(format(r['seconds'], '.2f') for r in results[way])})")
        print(f"trilho/pandas: time {med['trilho']['seconds'] / med['pandas']['seconds']:.2f}, "
              f"peak RSS {med['trilho']['peak_rss_mb'] / med['pandas']['peak_rss_mb']:.2f}")
        print("--- the experiment file it wrote ---")
        print(out.read_text())


if __name__ == "__main__":
    main()
