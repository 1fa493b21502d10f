"""The default experiment run by two versions of trilho, side by side: a git ref against this tree.

    python benchmarks/bench_versions.py --ref REF [--data PATH] [--rounds 3] [--args "--set cv.n_repeats=3"]

REF (a commit, tag or branch) is checked out with ``git worktree`` into a temporary folder and run
from there (its ``src`` first on ``PYTHONPATH``, this environment's libraries); this tree runs as
installed. Each round runs both, alternately, as whole fresh processes (``trilho run --source
file:DATA``) in fresh folders (a new lake and SQLite store each time, the first store's creation
included, as for a newcomer). Prints each round's whole-process wall time, the medians, the ratio,
the run's own stage timings (medians) and the primary metric, which must be equal on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "diabetes.csv"


def one_run(src: Path, data: Path, extra: list[str]) -> dict:
    """One whole ``trilho run`` from ``src``; its wall time, its summary's timings and metric."""
    with tempfile.TemporaryDirectory(prefix="trilho-version-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_"))}
        env |= {"PYTHONPATH": str(src), "TRILHO_CACHE_DIR": f"{tmp}/cache"}
        code = ("import sys, trilho; assert trilho.__file__.startswith(sys.argv[1]), trilho.__file__; "
                "from trilho.cli import app; sys.argv = ['trilho', *sys.argv[2:]]; app()")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, str(src), "run", "--source", f"file:{data}",
                               "--set", 'source.sha256=""', "--summary-json", "summary.json", *extra],
                              cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"trilho run from {src} failed:\n{done.stderr[-3000:]}")
        summary = json.loads(Path(tmp, "summary.json").read_text())
    metric = "f1_macro" if "f1_macro" in summary["cv"]["metrics"] else next(iter(summary["cv"]["metrics"]))
    return {"wall": wall, "timings": summary.get("timings", {}), "metric": metric,
            "value": summary["cv"]["metrics"][metric]["mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the git ref to compare this tree with")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--args", default="", help="extra arguments for both runs, e.g. '--set cv.n_repeats=3'")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data} does not exist; give --data PATH (a CSV of the diabetes set's schema)")
    extra = shlex.split(args.args)
    with tempfile.TemporaryDirectory(prefix="trilho-ref-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.ref], check=True,
                       capture_output=True)
        try:
            sides = {f"{args.ref}": base / "src", "this tree": ROOT / "src"}
            runs: dict[str, list[dict]] = {name: [] for name in sides}
            for n in range(args.rounds):
                for name, src in sides.items():
                    run = one_run(src, args.data, extra)
                    runs[name].append(run)
                    print(f"round {n + 1}: {name:>12} {run['wall']:6.2f} s  {run['metric']} {run['value']:.5f}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    (old, new) = (statistics.median(r["wall"] for r in runs[name]) for name in sides)
    print(f"\nmedian of {args.rounds}: {args.ref} {old:.2f} s, this tree {new:.2f} s, this / {args.ref} = {new / old:.2f}")
    keys = sorted({k for rs in runs.values() for r in rs for k in r["timings"] if k.endswith("_s") and "." not in k})
    print(f"\n{'stage (median s)':<24}" + "".join(f"{name:>14}" for name in sides))
    for key in keys:
        cells = [statistics.median(r["timings"].get(key, float("nan")) for r in runs[name]) for name in sides]
        print(f"{key:<24}" + "".join(f"{c:14.2f}" for c in cells))
    values = {name: {round(r["value"], 10) for r in rs} for name, rs in runs.items()}
    print(f"\n{runs['this tree'][0]['metric']} on each side: {values}")


if __name__ == "__main__":
    main()
