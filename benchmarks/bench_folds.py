"""Duplicate-aware fold assignment: scikit-learn's StratifiedGroupKFold against trilho's vectorised
``grouped_stratified_folds``, side by side, on the synthetic diabetes data's duplicate structure.

    python benchmarks/bench_folds.py [--rows 1000000] [--exact-up-to 100000] [--rounds 3]

The rows are ``synthetic:diabetes?rows=N&seed=1`` (about 17% repeated patients, three classes);
groups are its duplicate groups as ``trilho run`` computes them. Per way and size: median seconds
for one repeat of 5 folds, and the fold balance (largest minus smallest fold, and the largest
spread of one class's rows over the folds). The exact algorithm is timed only up to
``--exact-up-to`` rows (it grows with the number of groups times the folds, in Python).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--exact-up-to", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from sklearn.model_selection import StratifiedGroupKFold

    from trilho import load_experiment
    from trilho.data.clean import clean
    from trilho.data.synthetic import diabetes
    from trilho.evaluation.splits import duplicate_groups, grouped_stratified_folds

    exp = load_experiment("diabetes")
    sizes = sorted({min(args.rows, s) for s in (10_000, 100_000, args.rows)})
    print("| rows | groups | way | median s (one repeat, 5 folds) | fold sizes max-min | class spread max |")
    print("|---|---|---|---|---|---|")
    for rows in sizes:
        data = clean(diabetes(rows=rows, seed=1), exp)
        groups, y = duplicate_groups(data.X), data.y
        ways = {"vectorised": lambda y=y, groups=groups: grouped_stratified_folds(y, groups, 5, 0)}
        if rows <= args.exact_up_to:
            def exact(y=y, groups=groups):
                fold = np.empty(len(y), dtype=np.int64)
                for i, (_, test) in enumerate(StratifiedGroupKFold(5, shuffle=True, random_state=0)
                                              .split(np.zeros(len(y)), y, groups)):
                    fold[test] = i
                return fold
            ways["StratifiedGroupKFold"] = exact
        for way, run in ways.items():
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                fold = run()
                times.append(time.perf_counter() - start)
            counts = np.bincount(fold, minlength=5)
            spread = max(int(np.ptp(np.bincount(fold[y == k], minlength=5))) for k in np.unique(y))
            print(f"| {rows:,} | {int(groups.max()) + 1:,} | {way} | {statistics.median(times):.3f} | "
                  f"{int(counts.max() - counts.min())} | {spread} |", flush=True)


if __name__ == "__main__":
    main()
