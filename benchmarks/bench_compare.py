"""`trilho compare` against PyCaret's `compare_models`, side by side, on the same rows and folds.

    python benchmarks/bench_compare.py --pycaret-python /path/to/pycaret-venv/bin/python [--rounds 3]

PyCaret 3.3.2 needs its own environment (it pins mlflow 2.x and SQLAlchemy < 2.1):
``python -m venv pc && pc/bin/pip install pycaret==3.3.2 mlflow==2.17.2 'sqlalchemy<2.1' xgboost``.

Both sides, as whole fresh processes in fresh folders, interleaved: XGBoost, random forest and
logistic regression, each with SMOTE inside the training folds, on the diabetes data's 1,000 rows
and 5 folds × 10 repeats (PyCaret: ``fold_strategy=RepeatedStratifiedKFold(5, 10)`` and the whole
file as its training data, so it cross-validates the same rows trilho does; ``n_jobs=-1``; no
experiment logging). trilho, like for like: ``trilho compare 'xgboost+smote'
'random_forest[n_estimators=100]+smote' 'logistic_regression[max_iter=1000]+smote' --set
cv.duplicates=keep`` (the same rows; PyCaret's forest has scikit-learn's 100 trees and its
logistic regression ``max_iter=1000``, where trilho's families default to 200 trees and 2,000
iterations; both XGBoosts take the library's defaults beside the diabetes experiment's objective;
the paired intervals, an MLflow parent run with a child per candidate, the figure and the lake
copy included). Prints the median seconds of each, their ratio, each round's own ratio and their
median, and the mean macro F1 each gives per candidate.
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

PYCARET = """
import json, sys, time
start = time.perf_counter()
import pandas as pd
from pycaret.classification import compare_models, pull, setup
from sklearn.model_selection import RepeatedStratifiedKFold

df = pd.read_csv(sys.argv[1])
df = df.drop(columns=["ID", "No_Pation"])
for col in ("CLASS", "Gender"):
    df[col] = df[col].astype(str).str.strip().str.upper()
setup(data=df, target="CLASS", test_data=df.head(50), index=False, fix_imbalance=True, session_id=42, verbose=False,
      html=False, n_jobs=-1, fold_strategy=RepeatedStratifiedKFold(n_splits=5, n_repeats=10, random_state=42))
compare_models(include=["xgboost", "rf", "lr"], verbose=False, sort="F1")
table = pull()
print(json.dumps({"seconds": time.perf_counter() - start,
                  "f1": {str(k): float(v) for k, v in zip(table["Model"], table["F1"], strict=True)}}))
"""


def pycaret_run(python: str, data: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="pycaret-") as tmp:
        start = time.perf_counter()
        done = subprocess.run([python, "-c", PYCARET, str(data)], cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"PyCaret failed:\n{done.stderr[-3000:]}")
    return {"wall": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def trilho_run(data: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="trilho-compare-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_"))}
        env["TRILHO_CACHE_DIR"] = f"{tmp}/cache"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "trilho", "compare", "xgboost+smote", "random_forest[n_estimators=100]+smote",
                               "logistic_regression[max_iter=1000]+smote", "--source", f"file:{data}", "--set", "cv.duplicates=keep",
                               "--set", 'source.sha256=""', "--metric", "f1_macro"],
                              cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"trilho compare failed:\n{done.stderr[-3000:]}")
        # the comparison's summary, as the lake keeps it (the embedded default: ./lake)
        summary = json.loads(next(Path(tmp, "lake", "reports").glob("*/comparison.json")).read_text())
    return {"wall": wall, "f1": {r["candidate"]: r["mean"] for r in summary["candidates"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pycaret-python", required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "diabetes.csv")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"trilho": [], "pycaret": []}
    last = {}
    for n in range(args.rounds):
        for side in ("trilho", "pycaret"):
            run = trilho_run(args.data) if side == "trilho" else pycaret_run(args.pycaret_python, args.data)
            times[side].append(run["wall"])
            last[side] = run
            print(f"round {n + 1}: {side} {run['wall']:.1f} s", flush=True)
    t, p = statistics.median(times["trilho"]), statistics.median(times["pycaret"])
    print(f"\nmedian of {args.rounds}: trilho {t:.1f} s, PyCaret {p:.1f} s, trilho / PyCaret = {t / p:.2f}")
    # each round's own ratio: the two ran one after the other, so a machine whose speed drifts
    # between rounds moves both sides of it
    paired = [a / b for a, b in zip(times["trilho"], times["pycaret"], strict=True)]
    print(f"the rounds' own ratios: {', '.join(f'{r:.2f}' for r in paired)}; their median {statistics.median(paired):.2f}")
    print("mean macro F1 (trilho) and F1 (PyCaret's table):")
    print(json.dumps({side: last[side]["f1"] for side in last}, indent=2))


if __name__ == "__main__":
    main()
