"""The diabetes experiment under each duplicate policy, side by side (the seed-exact run is "keep").

    python benchmarks/bench_duplicates.py [--data ../shared/data/diabetes.csv]

Prints, per policy, the rows the folds see, the mean of each headline metric with its corrected t
interval and the percentile spread; STATISTICS.md explains the difference.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "diabetes.csv")
    args = parser.parse_args()
    from trilho import load_experiment, load_settings
    from trilho.workflows.run import run_experiment

    with tempfile.TemporaryDirectory(prefix="trilho-dups-") as tmp:
        settings = load_settings(env_file=None, lake=f"{tmp}/lake", tracking_uri=f"sqlite:///{tmp}/m.db",
                                 cache_dir=f"{tmp}/cache")
        print("| policy | rows in folds | metric | mean | corrected t 95% | row bootstrap 95% | percentile 2.5–97.5 |")
        print("|---|---|---|---|---|---|---|")
        for policy in ("keep", "group", "drop"):
            exp = load_experiment("diabetes", [f'source.uri="file:{args.data}"', 'source.sha256=""',
                                               f'cv.duplicates="{policy}"', "tracking.log_model=false"])
            s = run_experiment(exp, settings).summary
            used = s["cv"]["duplicates"]["rows_used"]
            for metric in ("accuracy", "f1_macro", "f1_weighted"):
                m = s["cv"]["metrics"][metric]
                ct, rb = m["intervals"]["corrected_t"], m["intervals"]["row_bootstrap"]
                print(f"| {policy} | {used} | {metric} | {m['mean']:.4f} | {ct[0]:.4f} – {ct[1]:.4f} | "
                      f"{rb[0]:.4f} – {rb[1]:.4f} | {m['low']:.4f} – {m['high']:.4f} |")


if __name__ == "__main__":
    main()
