"""``trilho monitor`` and ``trilho feedback``: close the loop from served answers back to a retrain.

``record_feedback`` keeps labels that arrived after the answers (a CSV or Parquet file with a
``label`` column and either ``request_id`` (and ``row``, 0 when absent) or one of the model's
identifier columns) in the lake, under ``feedback/<model>/<sha256>.parquet``: write-once, so
sending one file twice keeps it once.

``monitor_model`` reads the prediction log of the model's version (``trilho serve`` wrote it),
holds the rows against the training profile the model carries (``trilho.monitoring.traffic``), joins the
labels that came back, and writes the report (``monitor.json``, ``drift.png``, ``report.html``)
to the lake (``reports/monitor/<model>/<version>/<time>/``) and to an MLflow run of the
experiment ``<model>-monitor``. ``flagged`` says whether anything crossed its threshold; the
command's exit status (3) says the same to a scheduler.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilho.errors import ConfigError, DataValidationError, StorageError, TrackingError
from trilho.model.encoding import WRITTEN_MISSING, calendar_columns, input_columns, missing_words, with_calendar
from trilho.monitoring.prediction_log import read_log
from trilho.monitoring.traffic import compare_traffic, live_metrics, live_regression
from trilho.settings import Settings
from trilho.storage import Lake, open_lake
from trilho.storage.base import sha256_file

__all__ = ["FLAGGED_EXIT", "monitor_model", "parse_when", "record_feedback"]

log = logging.getLogger(__name__)
FLAGGED_EXIT = 3  # `trilho monitor`'s exit status when something crossed its threshold (1 is an error)
FEEDBACK = "feedback"


def parse_when(text: str | None, now: datetime | None = None) -> datetime | None:
    """An ISO date or time (UTC unless it says otherwise), or a span back from now: 30m, 24h, 7d."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - pd.Timedelta(seconds=float(text[:-1]) * units[text[-1]]).to_pytimedelta()
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since/--until {text!r}: give an ISO date or time (2026-12-01, 2026-12-01T08:00) "
                          "or a span back from now (30m, 24h, 7d)") from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def _name(info: dict[str, str]) -> str:
    return info["name"] or info["ident"]


def _read_table(path: Path) -> pd.DataFrame:
    """A feedback file read as the training data is (``trilho.data.tables.read_table``: any separator,
    line ending and encoding it knows, Parquet)."""
    from trilho.data.tables import read_table

    try:
        return read_table(path)
    except DataValidationError as exc:
        raise DataValidationError(f"feedback {path}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"feedback {path}: cannot read it as CSV or Parquet ({str(exc)[:200]})") from None


def record_feedback(path: str | Path, model_uri: str, settings: Settings, *, label_column: str = "label",
                    lake: Lake | None = None) -> dict[str, Any]:
    """Keep the labels of ``path`` for the model's monitoring; returns where and how many."""
    from trilho.tracking.monitor import model_spec

    path = Path(path).expanduser()
    if not path.is_file():
        raise StorageError(f"feedback {str(path)!r}: no such file")
    frame = _read_table(path)
    info, spec = model_spec(model_uri, settings.tracking_uri)
    if label_column not in frame.columns:
        raise DataValidationError(f"feedback {path}: no column {label_column!r} (the true label); it has "
                                  f"{list(frame.columns)[:20]}; name it with --label")
    keys = ["request_id"] if "request_id" in frame.columns else [c for c in spec.get("identifiers", []) if c in frame]
    if not keys:
        raise DataValidationError(f"feedback {path}: no column to join on; give request_id (and row) as "
                                  f"trilho serve answered them (X-Request-ID), or an identifier column "
                                  f"{spec.get('identifiers') or '(the model has none)'}")
    if spec.get("task") == "regression":
        return _keep_feedback(path, info, settings, lake, frame, keys, *_true_values(frame, label_column, spec, path))
    spelled = {str(c).strip().casefold(): c for c in spec["classes"]}
    labels = frame[label_column].astype("string").str.strip().str.casefold()
    # a label not known yet (empty, NA) is no feedback: its row is left out and counted
    words = [w for w in spec.get("written", WRITTEN_MISSING) if w.casefold() not in spelled]
    unlabelled = labels.isna().to_numpy(dtype=bool) | missing_words(frame[label_column], None, words)
    labels = labels.loc[~unlabelled]
    unknown = sorted(set(labels) - set(spelled))
    if unknown:
        raise DataValidationError(f"feedback {path}: labels {unknown[:10]} are not classes of the "
                                  f"model {spec['classes']}")
    return _keep_feedback(path, info, settings, lake, frame, keys, labels.map(spelled).astype(str), unlabelled)


def _true_values(frame: pd.DataFrame, column: str, spec: dict[str, Any], path: Path) -> tuple[pd.Series, np.ndarray]:
    """A regression's true values: numbers; a missing one (empty, NA, ...) is no feedback, counted."""
    raw = frame[column]
    unlabelled = raw.isna().to_numpy(dtype=bool) | missing_words(raw, None, list(spec.get("written", WRITTEN_MISSING)))
    values = pd.to_numeric(raw.where(~unlabelled), errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype="float64", na_value=np.nan)) & ~unlabelled
    if bad.any():
        shown = sorted({str(v) for v in raw[bad]})[:10]
        raise DataValidationError(f"feedback {path}: true values {shown} in column {column!r} are not numbers; this "
                                  "model predicts a number: fix those rows or leave them empty")
    return values[~unlabelled].astype("float64"), unlabelled


def _keep_feedback(path: Path, info: dict[str, str], settings: Settings, lake: Lake | None, frame: pd.DataFrame,
                   keys: list[str], labels: pd.Series, unlabelled: np.ndarray) -> dict[str, Any]:
    """Write the labelled rows of ``frame`` (``labels``: their true values, in the rows' order) to the lake."""
    frame = frame.loc[~unlabelled]
    kept = frame[keys].copy()
    if keys == ["request_id"]:
        kept["request_id"] = kept["request_id"].astype(str)
        kept["row"] = frame["row"].astype("int64") if "row" in frame.columns else 0
    kept["label"] = labels.to_numpy()
    kept["received_at"] = pd.Timestamp.now(tz="UTC")
    lake = lake or open_lake(settings)
    digest, _ = sha256_file(path)
    key = f"{FEEDBACK}/{_name(info)}/{digest}.parquet"
    buffer = io.BytesIO()
    kept.to_parquet(buffer, index=False)
    written = lake.put_bytes(key, buffer.getvalue())  # write-once: the same file again keeps the first copy
    return {"key": key, "url": lake.url(key), "rows": int(len(kept)), "joined_on": keys, "skipped": not written,
            "unlabelled_rows": int(unlabelled.sum())}


def _feedback(lake: Lake, name: str) -> pd.DataFrame:
    keys = sorted(k for k in lake.list(f"{FEEDBACK}/{name}/") if k.endswith(".parquet"))
    frames = [pd.read_parquet(io.BytesIO(lake.get_bytes(k))) for k in keys]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).sort_values("received_at", kind="stable")


def _joined(served: pd.DataFrame, feedback: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """The served rows whose label came back, with it (the latest label of a row wins)."""
    if served.empty or feedback.empty:
        return pd.DataFrame()
    parts = []
    by_request = feedback[feedback["request_id"].notna()] if "request_id" in feedback else feedback.iloc[:0]
    if len(by_request):
        latest = by_request.drop_duplicates(["request_id", "row"], keep="last")[["request_id", "row", "label"]]
        parts.append(served.merge(latest.astype({"row": "int64"}), on=["request_id", "row"], how="inner"))
    for col in spec.get("identifiers", []):
        if col in feedback and col in served:
            latest = feedback[feedback[col].notna()][[col, "label"]].drop_duplicates([col], keep="last")
            parts.append(served.assign(**{col: served[col].astype(str)}).merge(latest.astype({col: str}), on=col))
    if not parts:
        return pd.DataFrame()
    joined = pd.concat(parts, ignore_index=True)
    return joined.drop_duplicates(["request_id", "row"], keep="first")


BATCH_ROWS = 200_000  # rows of one batch prediction's input read back, at most (the first ones)


def _batch_rows(lake: Lake, info: dict[str, str], spec: dict[str, Any], since: datetime | None,
                until: datetime | None, output: str = "predictions") -> pd.DataFrame:
    """The rows ``trilho predict`` predicted with this version (inputs that are still where they
    were read from), with their predictions, as the prediction log holds them; an input that is
    gone is said and skipped."""
    from trilho.data.tables import iter_chunks

    frames = []
    with tempfile.TemporaryDirectory(prefix="trilho-monitor-") as tmp:
        for key in lake.list(f"{output}/{info['ident']}/"):
            if not key.endswith("/manifest.json") or "/explained/" in key:
                continue
            manifest = json.loads(lake.get_bytes(key))
            made = datetime.fromisoformat(manifest["created_at"])
            if (since and made < since) or (until and made >= until):
                continue
            source, base = str(manifest["input"]), lake.uri.rstrip("/") + "/"
            if source.startswith(base) and lake.exists(source[len(base):]):
                local = lake.download(source[len(base):], Path(tmp) / Path(source).name)
            else:
                from urllib.parse import unquote, urlparse

                local = Path(unquote(urlparse(source).path)) if source.startswith("file:") else Path(source)
            if not local.is_file():
                log.warning("batch predictions %s: their input %s is gone; left out", key, source)
                continue
            features = next(iter_chunks(local, BATCH_ROWS, input_columns(spec)), pd.DataFrame())
            features = with_calendar(features, spec) if len(features) else features  # dates: as the model reads them
            predicted = pd.read_parquet(io.BytesIO(lake.get_bytes(manifest["key"])), columns=["prediction"])
            rows = min(len(features), len(predicted))
            values = predicted["prediction"] if spec.get("task") == "regression" else predicted["prediction"].astype(str)
            frames.append(features.head(rows).assign(prediction=values.head(rows).to_numpy(),
                                                     served_at=pd.Timestamp(made)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


PERIOD_ROWS = 30  # a period's rows under this: counted, not judged


def period_length(when: pd.Series) -> str:
    """The period the window is cut into: hours over two days or less, days over two months or
    less, weeks over a year or less, else months."""
    span = when.max() - when.min()
    for length, most in (("h", pd.Timedelta(days=2)), ("D", pd.Timedelta(days=62)), ("W", pd.Timedelta(days=366))):
        if span <= most:
            return length
    return "M"


def by_period(rows: pd.DataFrame, joined: pd.DataFrame, spec: dict[str, Any],
              thresholds: dict[str, float] | None = None) -> dict[str, Any] | None:
    """The window period by period, in time order (``period_length``): per period, the rows served,
    the feature that drifted most (PSI against the training profile) and the predictions' shift, and,
    where labels came back, the live error (RMSE, or accuracy). None without served times."""
    if "served_at" not in rows or not len(rows):
        return None
    when = pd.to_datetime(rows["served_at"], utc=True).dt.tz_localize(None)
    length = period_length(when)
    periods = when.dt.to_period(length)
    labelled = None
    if len(joined) and "served_at" in joined:
        labelled = pd.to_datetime(joined["served_at"], utc=True).dt.tz_localize(None).dt.to_period(length)
    calendar = calendar_columns(spec)
    out = []
    for period in sorted(periods.unique()):
        part = rows.loc[(periods == period).to_numpy()]
        entry: dict[str, Any] = {"period": str(period), "start": str(period.start_time), "rows": int(len(part))}
        if len(part) >= PERIOD_ROWS:
            traffic = compare_traffic(spec["profile"], part.reset_index(drop=True), spec, thresholds)
            top = next((f for f in traffic["features"] if f["feature"] not in calendar), None)  # a date's parts move anyway
            entry |= {"top_feature": top["feature"] if top else None, "top_psi": top["psi"] if top else None,
                      "flags": len(traffic["flags"])}
            if traffic.get("predicted") is not None:
                shift = traffic["predicted"]
                entry["predicted_shift"] = shift.get("psi", shift.get("total_variation"))
        if labelled is not None:
            got = joined.loc[(labelled == period).to_numpy()]
            if len(got):
                entry["labelled"] = int(len(got))
                if spec.get("task") == "regression":
                    error = got["label"].to_numpy(dtype="float64") - got["prediction"].to_numpy(dtype="float64")
                    entry["rmse"] = float(np.sqrt(np.mean(error**2)))
                else:
                    entry["accuracy"] = float(np.mean(got["label"].astype(str).to_numpy()
                                                      == got["prediction"].astype(str).to_numpy()))
        out.append(entry)
    return {"length": {"h": "hour", "D": "day", "W": "week", "M": "month"}[length], "periods": out}


def monitor_model(model_uri: str, settings: Settings, *, since: datetime | None = None, until: datetime | None = None,
                  lake: Lake | None = None, thresholds: dict[str, float] | None = None,
                  track: bool = True, batch: bool = True) -> dict[str, Any]:
    """The monitoring report of the model's version (written to the lake and MLflow): the rows it
    served, and (``batch``) those ``trilho predict`` predicted with it."""
    from trilho.reporting import html as pages
    from trilho.reporting import plots
    from trilho.tracking.monitor import log_monitor, model_spec, run_estimates

    info, spec = model_spec(model_uri, settings.tracking_uri)
    if "profile" not in spec:
        raise ConfigError(f"model {info['uri']} was logged before trilho kept a profile of its training data; run its "
                          "experiment again (trilho run) to log one that can be monitored")
    lake = lake or open_lake(settings)
    name = _name(info)
    log_prefix = f"{settings.serve_log_prefix.strip('/')}/{name}"
    served = read_log(lake, log_prefix, since, until, version=info["version"] or None)
    predicted = _batch_rows(lake, info, spec, since, until) if batch else pd.DataFrame()
    rows = pd.concat([f for f in (served, predicted) if len(f)], ignore_index=True) if len(served) or len(predicted) \
        else served
    traffic = compare_traffic(spec["profile"], rows, spec, thresholds)
    traffic["sources"] = {"served": int(len(served)), "batch": int(len(predicted))}
    joined = _joined(served, _feedback(lake, name), spec)
    live = None
    if len(joined) and spec.get("task") == "regression":
        live = live_regression(joined["label"].to_numpy(dtype="float64"), joined["prediction"].to_numpy(dtype="float64"),
                               run_estimates(settings.tracking_uri, info.get("run_id", "")), spec.get("interval"))
    elif len(joined):
        live = live_metrics(joined["label"].to_numpy(), joined["prediction"].astype(str).to_numpy(),
                            [str(c) for c in spec["classes"]], run_estimates(settings.tracking_uri, info.get("run_id", "")))
    over_time = by_period(rows, joined, spec, thresholds)
    flags = [*traffic["flags"], *((live or {}).get("flags", []))]
    now = datetime.now(UTC)
    prefix = f"reports/monitor/{name}/{info['version'] or 'unversioned'}/{now:%Y%m%dT%H%M%SZ}/"
    report: dict[str, Any] = {
        "model": {"requested": model_uri, "uri": info["uri"], "name": info["name"], "version": info["version"],
                  "run_id": info.get("run_id", "")},
        "window": {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None},
        "checked_at": now.isoformat(timespec="seconds"), "flagged": bool(flags), "flags": flags,
        "traffic": traffic, "live": live, "by_period": over_time,
        "sources": {"log": f"{lake.uri.rstrip('/')}/{log_prefix}/", "feedback": f"{lake.uri.rstrip('/')}/{FEEDBACK}/{name}/"},
        "report": lake.url(prefix + "report.html"),
    }
    with tempfile.TemporaryDirectory(prefix="trilho-monitor-") as tmp:
        folder = Path(tmp)
        figures = {}
        if traffic["features"]:
            buffer = io.BytesIO()
            plots.drift_figure(traffic["features"], traffic["thresholds"]["psi"]).savefig(buffer, format="png", dpi=110)
            figures["drift.png"] = buffer.getvalue()
            (folder / "drift.png").write_bytes(figures["drift.png"])
        (folder / "monitor.json").write_text(json.dumps(report, indent=2, default=str))
        (folder / "report.html").write_text(pages.render_monitor(report, figures), encoding="utf-8")
        for path in sorted(folder.iterdir()):
            lake.put_file(prefix + path.name, path, overwrite=True)
        if track:
            try:
                report["mlflow_run_id"] = log_monitor(settings.tracking_uri, report, folder)
            except TrackingError as exc:  # the lake has the report; the tracking store is told next time
                log.warning("monitoring report not logged to MLflow: %s", exc)
    return report
