"""Coverage of trilho's interval methods on a population with known truth.

Population: one fixed scikit-learn ``make_classification`` draw resembling the diabetes set
(11 features, 3 classes weighted 0.84/0.10/0.06), 2 million rows, from which every data set below
is sampled without overlap. Procedure: trilho's own evaluation (SMOTE + XGBoost in the training
folds, 5-fold CV repeated 10 times) on replicate data sets of 1,000 rows.

Three targets, each measured on one independent test set of 100,000 rows:

- ``err800``: the procedure's expected accuracy for a training set of 800 rows (what 5-fold CV on
  1,000 rows averages over), the mean over ``--truth-fits`` independent training sets;
- ``err1000``: the same for 1,000 training rows: the expected accuracy of the model a run fits on
  all its rows;
- ``err_xy``: per replicate, the accuracy of the model fit on that replicate's 1,000 rows (the
  one a user would deploy).

For each interval method: coverage of each target by a nominal 95% interval, its Monte Carlo
standard error, and the mean width, on the same replicates. The nested-CV interval is computed
from the first 5 and from all 10 repeats of the same fits.

    python benchmarks/bench_coverage.py [--replicates 300] [--truth-fits 200] [--out coverage.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

POOL_ROWS = 2_000_000
N, K, R = 1000, 5, 10
MODEL = {"name": "xgboost", "params": {"objective": "multi:softprob", "num_class": 3, "n_estimators": 60,
                                        "max_depth": 4, "eval_metric": "mlogloss"}}
RESAMPLER = {"name": "smote", "params": {}}
METHODS = ["percentile", "naive_t", "fold_bootstrap", "corrected_t", "row_bootstrap"]
NESTED = {"nested_cv_r5": 5, "nested_cv_r10": 10}  # nested repeats used


def population():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=POOL_ROWS, n_features=11, n_informative=6, n_redundant=2,
                               n_classes=3, n_clusters_per_class=1, weights=[0.84, 0.10, 0.06],
                               class_sep=1.0, flip_y=0.02, random_state=20261126)
    return X.astype("float32"), y


def _frame(rows):
    import pandas as pd

    X, _ = POP
    return pd.DataFrame(X[rows], columns=[f"x{i}" for i in range(X.shape[1])])


def _fit_and_score(seed, train_rows, test_rows) -> float:
    from trilho.model.catalog import build_pipeline

    _, y = POP
    pipe = build_pipeline(MODEL, RESAMPLER, random_state=seed).fit(_frame(train_rows), y[train_rows])
    return float((pipe.predict(_frame(test_rows)) == y[test_rows]).mean())


def one_replicate(args):
    index, rows, test_rows = args
    from trilho.evaluation import cv as evaluate
    from trilho.evaluation import stats
    from trilho.evaluation.cv import cross_validate
    from trilho.evaluation.metrics import scores_from_confusions
    from trilho.evaluation.stats import nested_bounds

    _, y = POP
    yr = y[rows]
    seeds = list(range(index * 100, index * 100 + R))
    cv = cross_validate(_frame(rows), yr, evaluate.Task(model=MODEL, resampler=RESAMPLER, random_state=index, n_splits=K, seeds=seeds, nested_repeats=max(NESTED.values())), evaluate.Runner(n_jobs=1))
    scores = cv.scores("accuracy")
    pred = cv.oof["pred"].to_numpy().reshape(R, N)
    first = cv.oof[cv.oof["seed"] == seeds[0]]
    offsets = stats.row_bootstrap_intervals(first["y"].to_numpy(), pred, 3, scores_from_confusions, ["accuracy"],
                                            n_boot=500, seed=index)["accuracy"]
    found = stats.intervals(scores, METHODS, test_fraction=1 / K, row_offsets=offsets)
    for name, repeats in NESTED.items():
        found[name] = nested_bounds(cv.oof, cv.nested, K, 0.95, seeds[:repeats])["accuracy"]
    return {"mean": float(scores.mean()), "intervals": found, "err_xy": _fit_and_score(index, rows, test_rows)}


def truth_fit(args):
    index, train_rows, test_rows = args
    return _fit_and_score(index, train_rows, test_rows)


def _init():
    global POP
    POP = population()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicates", type=int, default=300)
    parser.add_argument("--truth-fits", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("coverage.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    rng = np.random.default_rng(7)
    order = rng.permutation(POOL_ROWS)
    test_rows = order[:100_000]
    cursor = 100_000
    truth_jobs = {800: [], 1000: []}
    for size, jobs in truth_jobs.items():
        for i in range(args.truth_fits):
            jobs.append((10_000 * (size // 100) + i, order[cursor:cursor + size], test_rows))
            cursor += size
    rep_jobs = []
    for i in range(args.replicates):
        rep_jobs.append((i, order[cursor:cursor + N], test_rows))
        cursor += N
    assert cursor <= POOL_ROWS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(args.workers, initializer=_init) as pool:  # one single-threaded fit per core
        truths = {size: np.array(list(pool.map(truth_fit, jobs, chunksize=4))) for size, jobs in truth_jobs.items()}
        reps = list(pool.map(one_replicate, rep_jobs, chunksize=1))
    err_xy = np.array([r["err_xy"] for r in reps])
    targets = {"err800": np.full(len(reps), truths[800].mean()), "err1000": np.full(len(reps), truths[1000].mean()),
               "err_xy": err_xy}
    rows = []
    for method in [*METHODS, *NESTED]:
        bounds = np.array([r["intervals"][method] for r in reps])
        row = {"method": method, "mean_width": float((bounds[:, 1] - bounds[:, 0]).mean())}
        for name, truth in targets.items():
            cover = float(((bounds[:, 0] <= truth) & (truth <= bounds[:, 1])).mean())
            row[name] = {"coverage": cover, "mc_se": float(np.sqrt(cover * (1 - cover) / len(reps)))}
        rows.append(row)
    means = np.array([r["mean"] for r in reps])
    result = {"replicates": len(reps), "truth_fits": args.truth_fits,
              "truth": {f"err{size}": {"mean": float(t.mean()), "mc_se": float(t.std(ddof=1) / np.sqrt(len(t)))}
                        for size, t in truths.items()},
              "err_xy": {"mean": float(err_xy.mean()), "sd": float(err_xy.std(ddof=1))},
              "mean_cv_accuracy": float(means.mean()), "sd_cv_accuracy": float(means.std(ddof=1)),
              "sd_cv_minus_err_xy": float((means - err_xy).std(ddof=1)),
              "methods": rows, "seconds": time.perf_counter() - start, "model": MODEL, "resampler": RESAMPLER}
    args.out.write_text(json.dumps(result, indent=2))
    for name, t in result["truth"].items():
        print(f"truth {name}: {t['mean']:.4f} ± {t['mc_se']:.4f} (MC SE, {args.truth_fits} fits)")
    print(f"err_xy over replicates: mean {err_xy.mean():.4f}, sd {err_xy.std(ddof=1):.4f}")
    print(f"CV mean over replicates: {result['mean_cv_accuracy']:.4f}, sd {result['sd_cv_accuracy']:.4f}")
    print(f"{'method':>15} {'width':>7} " + " ".join(f"{t:>15}" for t in targets))
    for r in rows:
        cells = " ".join(f"{r[t]['coverage']:7.3f} ± {r[t]['mc_se']:.3f}" for t in targets)
        print(f"{r['method']:>15} {r['mean_width']:7.4f} {cells}")
    print(f"{len(reps)} replicates in {result['seconds']:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
