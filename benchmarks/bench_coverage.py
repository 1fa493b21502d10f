"""Coverage of trilho's interval methods on a population with known truth.

Population: one fixed scikit-learn ``make_classification`` draw resembling the diabetes set
(11 features, 3 classes weighted 0.84/0.10/0.06), 2 million rows, from which every data set below
is sampled without overlap. Procedure: trilho's own evaluation (SMOTE + XGBoost in the training
folds, 5-fold CV repeated 10 times) on replicate data sets of 1,000 rows.

Truth: the procedure's expected accuracy for a training set of 800 rows (what 5-fold CV on
1,000 rows estimates), the mean over ``--truth-fits`` independent training sets of the accuracy
on one independent test set of 100,000 rows.

For each interval method: coverage of a nominal 95% interval, its Monte Carlo standard error,
and the mean width, on the same replicates.

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


def population():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=POOL_ROWS, n_features=11, n_informative=6, n_redundant=2,
                               n_classes=3, n_clusters_per_class=1, weights=[0.84, 0.10, 0.06],
                               class_sep=1.0, flip_y=0.02, random_state=20261126)
    return X.astype("float32"), y


def one_replicate(args):
    index, rows = args
    import pandas as pd

    from trilho import stats
    from trilho.evaluate import cross_validate, scores_from_confusion

    X, y = POP
    Xr, yr = pd.DataFrame(X[rows], columns=[f"x{i}" for i in range(X.shape[1])]), y[rows]
    cv = cross_validate(Xr, yr, model=MODEL, resampler=RESAMPLER, random_state=index, n_splits=K,
                        seeds=list(range(index * 100, index * 100 + R)), n_jobs=1)
    scores = cv.scores("accuracy")
    pred = cv.oof["pred"].to_numpy().reshape(R, N)
    first = cv.oof[cv.oof["seed"] == index * 100]
    offsets = stats.row_bootstrap_intervals(first["y"].to_numpy(), pred, 3, scores_from_confusion, ["accuracy"],
                                            n_boot=500, seed=index)["accuracy"]
    found = stats.intervals(scores, METHODS, test_fraction=1 / K, row_offsets=offsets)
    return {"mean": float(scores.mean()), "intervals": found}


def truth_fit(args):
    index, train_rows, test_rows = args
    import pandas as pd

    from trilho.evaluate import build_pipeline

    X, y = POP
    cols = [f"x{i}" for i in range(X.shape[1])]
    pipe = build_pipeline(MODEL, RESAMPLER, random_state=index).fit(pd.DataFrame(X[train_rows], columns=cols),
                                                                    y[train_rows])
    return float((pipe.predict(pd.DataFrame(X[test_rows], columns=cols)) == y[test_rows]).mean())


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
    truth_jobs = []
    for i in range(args.truth_fits):
        truth_jobs.append((10_000 + i, order[cursor:cursor + 800], test_rows))
        cursor += 800
    rep_jobs = []
    for i in range(args.replicates):
        rep_jobs.append((i, order[cursor:cursor + N]))
        cursor += N
    assert cursor <= POOL_ROWS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(args.workers, initializer=_init) as pool:  # one single-threaded fit per core
        truths = list(pool.map(truth_fit, truth_jobs, chunksize=4))
        reps = list(pool.map(one_replicate, rep_jobs, chunksize=2))
    truth = float(np.mean(truths))
    truth_se = float(np.std(truths, ddof=1) / np.sqrt(len(truths)))
    rows = []
    for method in METHODS:
        bounds = np.array([r["intervals"][method] for r in reps])
        hit = (bounds[:, 0] <= truth) & (truth <= bounds[:, 1])
        cover = float(hit.mean())
        rows.append({"method": method, "coverage": cover, "mc_se": float(np.sqrt(cover * (1 - cover) / len(reps))),
                     "mean_width": float((bounds[:, 1] - bounds[:, 0]).mean())})
    result = {"replicates": len(reps), "truth_accuracy": truth, "truth_se": truth_se, "truth_fits": len(truths),
              "mean_cv_accuracy": float(np.mean([r["mean"] for r in reps])),
              "sd_cv_accuracy": float(np.std([r["mean"] for r in reps], ddof=1)),
              "methods": rows, "seconds": time.perf_counter() - start, "model": MODEL, "resampler": RESAMPLER}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"truth (expected accuracy, 800 training rows): {truth:.4f} ± {truth_se:.4f} (MC SE, {len(truths)} fits)")
    print(f"CV mean over replicates: {result['mean_cv_accuracy']:.4f}, sd {result['sd_cv_accuracy']:.4f}")
    print(f"{'method':>15} {'coverage':>9} {'MC SE':>6} {'mean width':>11}")
    for r in rows:
        print(f"{r['method']:>15} {r['coverage']:9.3f} {r['mc_se']:6.3f} {r['mean_width']:11.4f}")
    print(f"{len(reps)} replicates in {result['seconds']:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
