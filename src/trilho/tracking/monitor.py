"""The tracking store's side of ``trilho monitor``: a model's spec and estimates, the report's run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from trilho.errors import TrackingError
from trilho.evaluation.metrics import ALL_METRICS
from trilho.tracking.model import download_model, resolve_model
from trilho.tracking.store import experiment_id, open_client

__all__ = ["log_monitor", "model_spec", "run_estimates"]


def model_spec(model_uri: str, tracking_uri: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Who ``model_uri`` is now (an alias: its version) and its spec (encoding, classes, profile),
    read from its checked files."""
    info = resolve_model(model_uri, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="trilho-monitor-") as tmp:
        local = download_model(info["uri"], Path(tmp), tracking_uri)
        found = list(local.rglob("spec.json"))
        if not found:
            raise TrackingError(f"model {model_uri!r} has no spec.json: it was not logged by trilho")
        return info, json.loads(found[0].read_text())


def run_estimates(tracking_uri: str, run_id: str) -> dict[str, dict[str, float]]:
    """The cross-validated estimate of each metric the run logged: mean and interval."""
    if not run_id:
        return {}
    found = open_client(tracking_uri).get_run(run_id).data.metrics
    out: dict[str, dict[str, float]] = {}
    for m in ALL_METRICS:
        if f"{m}_mean" in found:  # an interval only where the run claimed one (none over forward folds)
            out[m] = {"mean": found[f"{m}_mean"], **({"low": found[f"{m}_ci_low"], "high": found[f"{m}_ci_high"]}
                                                     if f"{m}_ci_low" in found and f"{m}_ci_high" in found else {})}
    return out


def log_monitor(tracking_uri: str, report: dict[str, Any], folder: Path) -> str:
    """The report as a run of the experiment ``<model>-monitor``: a metric per feature's PSI and
    per live metric, the count of flags, the files of ``folder``; returns the run id."""
    from mlflow.entities import Metric, Param, RunTag

    client = open_client(tracking_uri)
    model = report["model"]
    exp = experiment_id(client, f"{model['name'] or 'model'}-monitor")
    run = client.create_run(exp, run_name=f"monitor-v{model['version'] or 'x'}",
                            tags={"trilho.kind": "monitor", "trilho.model_uri": model["uri"],
                                  "trilho.flagged": str(report["flagged"]).lower()})
    run_id = run.info.run_id
    stamp = int(run.info.start_time)
    metrics = [Metric("served_rows", report["traffic"]["rows"], stamp, 0), Metric("flags", len(report["flags"]), stamp, 0)]
    metrics += [Metric(f"psi_{f['feature']}", f["psi"], stamp, 0) for f in report["traffic"]["features"]]
    for m, e in (report.get("live") or {}).get("metrics", {}).items():
        metrics.append(Metric(f"live_{m}", e["live"], stamp, 0))
    params = [Param("model_version", model["version"] or ""), Param("since", str(report["window"]["since"] or "")),
              Param("until", str(report["window"]["until"] or ""))]
    client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag("mlflow.note.content", "; ".join(
        f["reason"] for f in report["flags"]) or "nothing flagged")])
    client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id)
    return run_id
