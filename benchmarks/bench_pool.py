"""Threads against worker processes for each built-in family's fits, side by side.

    python benchmarks/bench_pool.py [--data ../shared/data/diabetes.csv] [--rounds 3] [--repeats 10]

For each family, with SMOTE, on the diabetes data: one cross-validation (5 folds × ``--repeats``)
on the thread pool and on loky's worker processes (two each, one core per fit; the processes are
started for each cross-validation and stopped after it, as in a run, and their start is timed), interleaved;
median seconds, the ratio, and whether the fold scores are identical. A family whose fit holds
the GIL gains from processes; one that releases it loses their start-up and transfer costs.
trilho.model.catalog' ``gil_bound`` flags follow these figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "diabetes.csv")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    from trilho import load_experiment
    from trilho.data.clean import clean
    from trilho.data.curate import fold_data
    from trilho.data.tables import read_table
    from trilho.evaluation import cv as evaluate
    from trilho.model import catalog as models

    exp = load_experiment("diabetes", [f'source.uri="file:{args.data}"', 'source.sha256=""',
                                       f"cv.n_repeats={args.repeats}"])
    data = clean(read_table(args.data), exp)
    X, y, groups, _ = fold_data(data, exp)
    print("| family | threads s | processes s | processes / threads | identical scores |")
    print("|---|---|---|---|---|")
    for name, kind in models.MODELS.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        scores: dict[bool, np.ndarray] = {}
        for _ in range(args.rounds):
            for processes in (False, True):
                models.MODELS[name] = dataclasses.replace(kind, gil_bound=processes)
                models.model_kind.cache_clear()
                start = time.perf_counter()
                cv = evaluate.cross_validate(X, y, evaluate.Task(model={"name": name, "params": {}}, resampler={"name": "smote"}, random_state=42, n_splits=5, seeds=exp.cv.seeds, groups=groups, encoding=data.spec), evaluate.Runner(n_jobs=2))
                times[processes].append(time.perf_counter() - start)
                scores[processes] = cv.scores("f1_macro")
        models.MODELS[name] = kind
        models.model_kind.cache_clear()
        t, p = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {name} | {t:.2f} | {p:.2f} | {p / t:.2f} | {np.array_equal(scores[False], scores[True])} |",
              flush=True)


if __name__ == "__main__":
    main()
