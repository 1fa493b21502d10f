"""How optimistic the best trial's score is, and how honest `trilho tune`'s held-out score is.

    python benchmarks/bench_tune_optimism.py [--replicates 20] [--rows 600] [--trials 10]

Population: one fixed scikit-learn ``make_classification`` draw resembling the diabetes set (11
features, 3 classes weighted 0.84/0.10/0.06, the coverage benchmark's), 400,000 rows; every data set
below is drawn from it without overlap. Per replicate: ``--rows`` rows as a CSV, and the whole
`trilho tune` on it (XGBoost + SMOTE, its default search space, ``--trials`` trials, 5-fold CV,
accuracy, 20% held out before the search), in a fresh folder. The truth: the tuned configuration,
fitted exactly as the honest score fits it (on the replicate's search rows), scored on 100,000
fresh population rows, the accuracy of the very model whose score was reported.

It prints, over replicates: the mean of (best trial's CV score - truth), the optimism; the mean of
(honest score - truth); the share of replicates whose honest 95% interval holds the truth, with
Monte Carlo standard errors; and the mean interval width.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

POOL_ROWS = 400_000
TEST_ROWS = 100_000


def population():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=POOL_ROWS, n_features=11, n_informative=6, n_redundant=2,
                               n_classes=3, n_clusters_per_class=1, weights=[0.84, 0.10, 0.06],
                               class_sep=1.0, flip_y=0.02, random_state=20261126)
    return X.astype("float32"), y


def _frame(X, y, rows):
    import pandas as pd

    frame = pd.DataFrame(X[rows], columns=[f"x{i}" for i in range(X.shape[1])])
    frame["label"] = [("A", "B", "C")[k] for k in y[rows]]
    return frame


def one_replicate(index: int, rows, test, X, y, trials: int) -> dict:

    from trilho import load_settings
    from trilho.data.curate import fold_data, load_clean
    from trilho.evaluation.splits import holdout_split
    from trilho.experiment import Experiment
    from trilho.model.catalog import build_pipeline
    from trilho.workflows.tune import tune

    with tempfile.TemporaryDirectory(prefix="trilho-optimism-") as tmp:
        folder = Path(tmp)
        _frame(X, y, rows).to_csv(folder / "data.csv", index=False)
        exp = Experiment.model_validate({
            "name": f"rep{index}", "random_state": index, "source": {"uri": f"file:{folder / 'data.csv'}"},
            "data": {"target": "label", "labels": ["A", "B", "C"], "missing": "reject"},
            "cv": {"n_splits": 5, "n_repeats": 1}, "resampler": {"name": "smote"},
            "model": {"name": "xgboost", "params": {}},
            "evaluation": {"metrics": ["accuracy", "f1_macro"]},
            "tracking": {"experiment": "optimism"}, "registry": {"primary_metric": "accuracy"},
            "tune": {"trials": trials, "metric": "accuracy", "holdout_fraction": 0.2},
        })
        settings = load_settings(env_file=None, lake=str(folder / "lake"), tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
                                 cache_dir=folder / "cache")
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            result = tune(exp, settings, out=folder / "tuned.toml")
        finally:
            os.chdir(cwd)
        s = result.summary
        # the model the honest score scored: the tuned configuration fitted on the search rows
        _, _, _, data = load_clean(exp, settings)
        Xr, yr, groups, _ = fold_data(data, exp)
        search, _ = holdout_split(yr, exp.tune.holdout_fraction, exp.random_state, groups)
        pipe = build_pipeline(result.config["model"], result.config["resampler"], exp.random_state, 2,
                                       data.spec).fit(Xr.iloc[search], yr[search])
        fresh = _frame(X, y, test).drop(columns=["label"])
        truth = float((pipe.predict(fresh) == y[test]).mean())
    return {"best_cv": s["best"]["cv_score"], "honest": s["honest"]["score"], "low": s["honest"]["low"],
            "high": s["honest"]["high"], "truth": truth, "trials": s["trials"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import numpy as np

    X, y = population()
    order = np.random.default_rng(7).permutation(POOL_ROWS)
    test = order[:TEST_ROWS]
    found = []
    for r in range(args.replicates):
        rows = order[TEST_ROWS + r * args.rows: TEST_ROWS + (r + 1) * args.rows]
        found.append(one_replicate(r, rows, test, X, y, args.trials))
        f = found[-1]
        print(f"replicate {r}: best trial {f['best_cv']:.4f}, honest {f['honest']:.4f} "
              f"[{f['low']:.4f}, {f['high']:.4f}], truth {f['truth']:.4f}", flush=True)
    n = len(found)

    def mean_se(values: list[float]) -> str:
        return f"{statistics.mean(values):+.4f} (s.e. {statistics.stdev(values) / n ** 0.5:.4f})"

    covered = [f["low"] <= f["truth"] <= f["high"] for f in found]
    share = sum(covered) / n
    print(f"\n{n} replicates of {args.rows} rows, {args.trials} trials each, accuracy:\n")
    print("| estimate | mean minus truth | coverage of the truth by its 95% interval | mean width |")
    print("|---|---|---|---|")
    print(f"| best trial's own CV score | {mean_se([f['best_cv'] - f['truth'] for f in found])} | (no interval) | |")
    print(f"| honest: held-out rows | {mean_se([f['honest'] - f['truth'] for f in found])} | "
          f"{share:.0%} (s.e. {(share * (1 - share) / n) ** 0.5:.0%}) | "
          f"{statistics.mean(f['high'] - f['low'] for f in found):.4f} |")
    if args.out:
        args.out.write_text(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
