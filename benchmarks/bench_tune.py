"""`trilho tune` against PyCaret's `tune_model`, side by side: wall time, reported score, honest score.

    python benchmarks/bench_tune.py --pycaret-python /path/to/pycaret-venv/bin/python [--trials 20]
        [--sets diabetes synthetic100k]

Both tune XGBoost with SMOTE inside the training folds for accuracy, with the same number of trials
and the same CV (5 stratified folds, one repeat) on the same share of the rows (70%; the other 30%
set aside before the search). PyCaret 3.3.2: ``setup(train_size=0.7, fix_imbalance=True,
fold_strategy=StratifiedKFold(5))``, ``tune_model(create_model("xgboost"), n_iter=N,
optimize="Accuracy", choose_better=False)``: it reports the best candidate's CV mean; its honest
score is ``predict_model`` on the 30% it set aside. trilho: ``trilho tune --trials N --set
tune.holdout_fraction=0.3 --set cv.n_repeats=1 --set tune.metric="accuracy"``, which reports both.
Whole fresh processes in fresh folders, one after the other, on: the diabetes data (1,000 rows)
and ``synthetic:diabetes?rows=100000&seed=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PYCARET = """
import json, sys, time
import pandas as pd
from pycaret.classification import create_model, predict_model, pull, setup, tune_model
from sklearn.model_selection import StratifiedKFold

df = pd.read_csv(sys.argv[1])
df = df.drop(columns=[c for c in ("ID", "No_Pation") if c in df.columns])
for col in ("CLASS", "Gender"):
    df[col] = df[col].astype(str).str.strip().str.upper()
setup(data=df, target="CLASS", train_size=0.7, index=False, fix_imbalance=True, session_id=42, verbose=False,
      html=False, n_jobs=-1, fold_strategy=StratifiedKFold(n_splits=5, shuffle=True, random_state=42))
model = create_model("xgboost", verbose=False)
tuned = tune_model(model, n_iter=int(sys.argv[2]), optimize="Accuracy", choose_better=False, verbose=False)
cv = pull()
reported = float(cv.loc["Mean", "Accuracy"])
predict_model(tuned, verbose=False)
honest = float(pull()["Accuracy"].iloc[0])
print(json.dumps({"reported": reported, "honest": honest}))
"""


def _timed(cmd: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{cmd[:4]} failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def pycaret_run(python: str, data: Path, trials: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="pycaret-tune-") as tmp:
        wall, out = _timed([python, "-c", PYCARET, str(data), str(trials)], tmp)
    return {"wall": wall, **json.loads(out.strip().splitlines()[-1])}


def trilho_run(source: str, trials: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="trilho-tune-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_"))}
        env["TRILHO_CACHE_DIR"] = f"{tmp}/cache"
        wall, _ = _timed([sys.executable, "-m", "trilho", "tune", "--source", source, "--trials", str(trials),
                          "--set", "tune.holdout_fraction=0.3", "--set", "cv.n_repeats=1",
                          "--set", 'tune.metric="accuracy"', "--summary-json", f"{tmp}/tune.json"], tmp, env)
        s = json.loads(Path(tmp, "tune.json").read_text())
    return {"wall": wall, "reported": s["best"]["cv_score"], "honest": s["honest"]["score"],
            "interval": [s["honest"]["low"], s["honest"]["high"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pycaret-python", required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "diabetes.csv")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sets", nargs="+", default=["diabetes", "synthetic100k"])
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; XGBoost + SMOTE, {args.trials} trials, 5-fold CV on 70% of the rows, accuracy\n")
    print("| data | tool | wall s | reported (best CV) | honest (the 30% set aside) |")
    print("|---|---|---|---|---|")
    for name in args.sets:
        with tempfile.TemporaryDirectory(prefix="bench-tune-data-") as tmp:
            if name == "diabetes":
                data, source = args.data, f"file:{args.data}"
            else:
                from trilho.data.synthetic import diabetes

                data = Path(tmp) / "synthetic.csv"
                diabetes(rows=100_000, seed=1).to_csv(data, index=False)
                source = f"file:{data}"
            ours = trilho_run(source, args.trials)
            print(f"| {name} | trilho | {ours['wall']:.1f} | {ours['reported']:.4f} | {ours['honest']:.4f} "
                  f"[{ours['interval'][0]:.4f}, {ours['interval'][1]:.4f}] |", flush=True)
            theirs = pycaret_run(args.pycaret_python, data, args.trials)
            print(f"| {name} | PyCaret tune_model | {theirs['wall']:.1f} | {theirs['reported']:.4f} | "
                  f"{theirs['honest']:.4f} (no interval) |", flush=True)


if __name__ == "__main__":
    main()
