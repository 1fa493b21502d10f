"""The default run against the seed's notebook, both as whole processes, side by side in one run.

Each round starts, in turn and on the same machine: the seed style (``bench_experiment.seed_style``
in a fresh interpreter: its imports, the repeated-CV loop, its metrics and MLflow calls, on a SQLite
store), ``trilho run --experiment diabetes --source file:DATA`` (what ``make run`` runs, a fresh
lake and store each round) and the same run bare: no baselines, no explanations, no metrics by
group. It prints each round's wall times, their ratio, and the run's own timings: the CV phase
against the extras, the model's logging, and the process's total.

The extras' price: what they take inside the CV phase's pool, as the run accounts for it (the
explanations' seconds in the folds and any larger baseline's fits, each over the pool's workers,
and any wait for the small baselines' own process), plus the stages after the pool (statistics,
explanations' summary and groups, the baselines' comparison, the figures the run waits for, the
page). They are set against the same run's CV phase less their share in it (``extras_over_cv``:
the folds, the holdout fit and the final fit), measured in the one process. The CV phase's
excess over the bare run's is printed beside it (``cv_excess_s``): the same share measured from
outside, in two processes, so it carries their noise (it swung from 0 to 1.3 s between rounds of
one evening).

    python benchmarks/bench_default_run.py [--data PATH] [--rounds 3]
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
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "diabetes.csv"
BIN = Path(sys.executable).parent
EXTRAS = ("baselines_s", "stats_s", "explain_s", "figures_start_s", "figures_wait_s", "page_s")
IN_POOL = ("explain_in_pool_s", "baselines_in_pool_s", "baselines_wait_s")


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{cmd[:3]} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall


def seed_process(data: Path, folder: Path, env: dict[str, str]) -> float:
    where, uri = str(ROOT / "benchmarks"), f"sqlite:///{folder}/seed.db"
    code = (f"import sys; sys.path.insert(0, {where!r}); from bench_experiment import seed_style; "
            f"from pathlib import Path; seed_style(Path({str(data)!r}), {uri!r})")
    return _timed([sys.executable, "-c", code], folder, env)


BARE = ["--set", "evaluation.baselines=[]", "--set", "evaluation.explain_repeats=0", "--set", "evaluation.groups=[]"]


def trilho_process(data: Path, folder: Path, env: dict[str, str], extra: list[str] | None = None) -> tuple[float, dict]:
    summary = folder / "summary.json"
    wall = _timed([str(BIN / "trilho"), "run", "--experiment", "diabetes", "--source", f"file:{data}",
                   "--summary-json", str(summary), *(extra or [])], folder, env)
    return wall, json.loads(summary.read_text())["timings"]


def _fresh(folder: Path, env: dict[str, str]) -> dict[str, str]:
    """A lake and a tracking store of the round's own."""
    folder.mkdir()
    return {**env, "TRILHO_LAKE": str(folder / "lake"), "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} not found: pass --data PATH (the diabetes CSV)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_"))}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    rows = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="trilho-bench-") as tmp:
            seed_dir = Path(tmp) / "seed"
            seed_dir.mkdir()
            seed_s = seed_process(args.data, seed_dir, env)
            run_dir, bare_dir = Path(tmp) / "run", Path(tmp) / "bare"
            run_s, t = trilho_process(args.data, run_dir, _fresh(run_dir, env))
            bare_s, bare = trilho_process(args.data, bare_dir, _fresh(bare_dir, env), BARE)
        in_pool = sum(t.get(k, 0.0) for k in IN_POOL)
        after = sum(t.get(k, 0.0) for k in EXTRAS)
        extras = in_pool + after
        row = {"seed_s": seed_s, "trilho_s": run_s, "speedup": seed_s / run_s, "bare_s": bare_s,
               "cv_s": t["cv_s"], "bare_cv_s": bare["cv_s"], "cv_excess_s": t["cv_s"] - bare["cv_s"],
               "extras_in_pool_s": in_pool, "extras_after_s": after, "extras_s": extras,
               "extras_over_cv": extras / (t["cv_s"] - in_pool), "baselines_s": t.get("baselines_s", 0.0),
               "log_model_s": t.get("tracking.log the model_s", 0.0), "run_total_s": t["total_s"]}
        rows.append(row)
        print(f"round {r + 1}: " + "  ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    print(f"\nrounds={args.rounds}  data={args.data.name}  (medians; speedup = seed process / trilho process)")
    for key in rows[0]:
        print(f"  {key:15s} {statistics.median(r[key] for r in rows):8.3f}")


if __name__ == "__main__":
    main()
