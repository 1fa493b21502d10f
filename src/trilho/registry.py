"""The model registry: every good run's model becomes the ``challenger``; a gate decides ``champion``.

On the same data the gate compares the challenger with the current champion on the same folds:
the champion's fold scores are read back from its run when its CV scheme matches too, otherwise
the champion's configuration is re-evaluated on the challenger's folds; the challenger is promoted
when the lower end of the corrected paired t interval for (challenger - champion) on the primary
metric is above -margin (non-inferiority). On other data nothing is re-fitted: the challenger's
estimate and interval are set against the champion's logged ones, beside a drift report between
the two data sets (``trilho.drift``); a significant drop or drift keeps it challenger. A first model with no champion is
promoted. Each decision, its figures and its reason are tags on the model version and a JSON
report in the lake.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from trilho import stats
from trilho.errors import TrackingError
from trilho.tracking import process_alive, sqlite_file, store_lock

__all__ = ["GateDecision", "decide", "list_versions", "promote_by_hand", "register_and_gate"]

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    margin: float
    challenger_mean: float
    champion_version: str | None = None
    champion_mean: float | None = None
    comparison: dict[str, float] = field(default_factory=dict)
    basis: str = "first model"
    drift: dict[str, Any] | None = None  # the data drift report, when the data differ from the champion's

    def tags(self) -> dict[str, str]:
        out = {"trilho.gate.decision": "promoted" if self.promote else "kept challenger",
               "trilho.gate.reason": self.reason, "trilho.gate.metric": self.metric,
               "trilho.gate.margin": f"{self.margin:g}", "trilho.gate.basis": self.basis}
        if self.champion_version:
            out["trilho.gate.against_version"] = self.champion_version
        if self.drift is not None:
            out["trilho.gate.drift"] = "; ".join(self.drift.get("reasons", [])) or "none above the thresholds"
        out.update({f"trilho.gate.{k}": f"{v:.6g}" for k, v in self.comparison.items()})
        return out


def decide(challenger: np.ndarray, champion: np.ndarray | None, *, metric: str, margin: float,
           test_fraction: float, level: float = 0.95, champion_version: str | None = None,
           basis: str = "same folds") -> GateDecision:
    """Pure: the gate's decision from paired fold scores (``champion=None``: no champion yet)."""
    challenger = np.asarray(challenger, dtype="float64")
    if champion is None:
        return GateDecision(True, "no champion yet: the first model is promoted", metric, margin,
                            float(challenger.mean()))
    test = stats.paired_corrected_t(challenger, champion, test_fraction, level)
    promote = bool(test["low"] > -margin)
    verdict = "not worse" if promote else "possibly worse"
    reason = (f"{metric}: challenger - champion v{champion_version} = {test['mean_diff']:+.4f}, "
              f"{level:.0%} corrected paired t interval [{test['low']:+.4f}, {test['high']:+.4f}], "
              f"p = {test['p_value']:.3g}; {verdict} than the champion by more than the margin {margin:g}")
    return GateDecision(promote, reason, metric, margin, float(challenger.mean()), champion_version,
                        float(np.mean(champion)), test, basis)


def decide_on_changed_data(challenger: np.ndarray, champion: dict[str, float], drift: dict[str, Any] | None, *,
                           metric: str, margin: float, test_fraction: float, level: float = 0.95,
                           champion_version: str | None = None) -> GateDecision:
    """Pure: the gate's decision when the challenger was evaluated on other data than the champion.

    Fold scores on two data sets do not pair, and re-fitting the champion's procedure on the new
    data would only measure the same procedure twice. So the challenger's own estimate and
    interval are set against the champion's logged ones (``mean``, ``low``, ``high``): a
    challenger whose whole interval lies more than ``margin`` below the champion's estimate is a
    significant drop. Either that or a drifted data set (``trilho.drift``) keeps it out of
    champion until a person promotes it with a reason.
    """
    scores = np.asarray(challenger, dtype="float64")
    from trilho.evaluate import METRIC_RANGE

    low, high = stats.corrected_t_interval(scores, test_fraction, level)
    bounds = METRIC_RANGE.get(metric, (-np.inf, np.inf))  # as the run's own summary clips it
    low, high, mean = max(low, bounds[0]), min(high, bounds[1]), float(scores.mean())
    drop = high < champion["mean"] - margin
    drifted = bool(drift and drift.get("drifted"))
    findings = [f"{metric}: challenger {mean:.4f} [{low:.4f}, {high:.4f}] on its data, champion v{champion_version} "
                f"{champion['mean']:.4f} [{champion.get('low', float('nan')):.4f}, {champion.get('high', float('nan')):.4f}] "
                f"on its own: " + ("a significant drop" if drop else f"no significant drop beyond the margin {margin:g}")]
    if drift is None:
        findings.append("the champion's data are not in this lake, so drift was not measured")
    else:
        findings.append("data drift: " + ("; ".join(drift["reasons"]) if drifted else "none above the thresholds"))
    promote = not drop and not drifted
    if not promote:
        findings.append("kept as challenger: promote it by hand with `trilho promote VERSION -r REASON` if intended")
    comparison = {"challenger_low": low, "challenger_high": high, "champion_low": champion.get("low", float("nan")),
                  "champion_high": champion.get("high", float("nan"))}
    return GateDecision(promote, "data changed; " + "; ".join(findings), metric, margin, mean, champion_version,
                        champion["mean"], comparison, "other data: estimates and drift", drift)


GATE_WAIT_S = 900.0  # how long a challenger waits for another's gate (a re-evaluation re-fits)
GATE_STALE_S = 3600.0  # a gate lock older than this was left by a process that died elsewhere


@contextlib.contextmanager
def gate_lock(client, tracking_uri: str, name: str, wait_s: float = GATE_WAIT_S) -> Iterator[None]:
    """Held while one challenger is decided and the aliases move, so that two challengers arriving
    at once are decided one after the other, the second against the first if it was promoted.

    A SQLite store: a file lock beside it (released by the system if the process dies). Any other
    store: a registered model named ``<name>.gate-lock``, created to take the lock and deleted to
    release it; the database's unique names make its creation atomic, on any backend. A lock whose
    holder died on this host, or older than ``GATE_STALE_S``, is taken over.
    """
    from mlflow.exceptions import MlflowException

    if sqlite_file(tracking_uri) is not None:
        with store_lock(tracking_uri, "gate"):
            yield
        return
    lock, holder = f"{name}.gate-lock", f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + wait_s
    while True:
        if time.monotonic() > deadline:
            raise TrackingError(f"another challenger of {name!r} held the promotion gate for over {wait_s:.0f}s "
                                f"(registered model {lock!r}); if no trilho run is deciding, delete it")
        try:
            client.create_registered_model(lock, tags={"trilho.gate.holder": holder, "trilho.gate.since": f"{time.time():.3f}"},
                                           description=f"trilho's promotion gate for {name!r} is deciding; deleted after")
            break
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                # the lock existed when the store tried to create it, and was released before the
                # store looked it up to word its refusal (MLflow's SQL store does both): try again
                continue
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if _abandoned(client, lock):
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)
            continue
        time.sleep(0.1 + random.random() * 0.2)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


def _abandoned(client, lock: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(lock).tags
    except MlflowException:
        return False  # released meanwhile: try again
    host, _, pid = tags.get("trilho.gate.holder", "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
        return True
    return time.time() - float(tags.get("trilho.gate.since", "inf")) > GATE_STALE_S


def _logged_estimate(run, metric: str) -> dict[str, float] | None:
    found = run.data.metrics
    if f"{metric}_mean" not in found:
        return None
    return {"mean": found[f"{metric}_mean"], "low": found.get(f"{metric}_ci_low", float("nan")),
            "high": found.get(f"{metric}_ci_high", float("nan"))}


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _fold_scores(client, run_id: str, metric: str) -> np.ndarray:
    history = sorted(client.get_metric_history(run_id, f"{metric}_fold"), key=lambda m: m.step)
    return np.array([m.value for m in history], dtype="float64")


def _same_folds(champion_run, cv_key: dict[str, str]) -> bool:
    tags, params = champion_run.data.tags, champion_run.data.params
    return (tags.get("trilho.data_sha256") == cv_key["data_sha256"]
            and all(params.get(k) == v for k, v in cv_key.items() if k != "data_sha256"))


def register_and_gate(*, tracking_uri: str, name: str, model_uri: str, run_id: str, fold_scores: np.ndarray,
                      cv_key: dict[str, str], metric: str, margin: float, test_fraction: float,
                      level: float = 0.95, reevaluate=None, drift_report=None) -> dict[str, Any]:
    """Register the run's model, make it the challenger, and run the promotion gate.

    ``cv_key`` holds the data digest and the CV params that fix the folds. On the same data and
    folds the champion's logged fold scores pair with the challenger's; on the same data with
    other folds ``reevaluate(config)`` gives the champion configuration's scores on the
    challenger's folds; on other data ``drift_report(champion_run)`` (a ``trilho.drift`` report,
    or None when the champion's data cannot be read) informs ``decide_on_changed_data``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)

    def decide_now():  # against whichever version is champion at this moment
        current = _alias_version(client, name, CHAMPION)
        if current is None:
            return None, decide(fold_scores, None, metric=metric, margin=margin, test_fraction=test_fraction,
                                level=level)
        champion_run = client.get_run(current.run_id)
        same_data = champion_run.data.tags.get("trilho.data_sha256") == cv_key["data_sha256"]
        logged = _logged_estimate(champion_run, metric)
        if not same_data and logged is not None:
            drift = drift_report(champion_run) if drift_report else None
            return current, decide_on_changed_data(fold_scores, logged, drift, metric=metric, margin=margin,
                                                   test_fraction=test_fraction, level=level,
                                                   champion_version=str(current.version))
        if _same_folds(champion_run, cv_key):
            champion_scores, basis = _fold_scores(client, current.run_id, metric), "same folds, logged scores"
        elif reevaluate is not None:
            config = json.loads(mlflow.artifacts.load_text(f"runs:/{current.run_id}/config.json"))
            champion_scores, basis = reevaluate(config), "champion re-evaluated on the challenger's folds"
        else:
            raise TrackingError(f"champion v{current.version} of {name!r} was evaluated on other folds "
                                "and cannot be re-evaluated here")
        if len(champion_scores) != len(fold_scores):
            raise TrackingError(f"champion v{current.version} has {len(champion_scores)} fold scores for "
                                f"{metric!r}, the challenger {len(fold_scores)}")
        return current, decide(fold_scores, champion_scores, metric=metric, margin=margin,
                               test_fraction=test_fraction, level=level, champion_version=str(current.version),
                               basis=basis)

    try:
        # challengers are gated one at a time (gate_lock), each against the champion of its moment
        with gate_lock(client, tracking_uri, name):
            current, decision = decide_now()  # first, so the version is created with its decision
            version = mlflow.register_model(model_uri, name, await_registration_for=0,
                                            tags={"trilho.run_id": run_id, **decision.tags()}).version
            client.set_registered_model_alias(name, CHALLENGER, version)
            if decision.promote:
                client.set_registered_model_alias(name, CHAMPION, version)
    except MlflowException as exc:
        raise TrackingError(f"model registry at {tracking_uri!r} failed for {name!r}: {exc}") from exc
    log.info("%s v%s: %s", name, version, decision.reason)
    return {"name": name, "version": str(version), "aliases": [CHALLENGER] + ([CHAMPION] if decision.promote else []),
            "decided_at": datetime.now(UTC).isoformat(timespec="seconds"), **asdict(decision)}


def promote_by_hand(tracking_uri: str, name: str, version: str, reason: str, user: str) -> dict[str, Any]:
    """Move ``champion`` to a version by hand; recorded on the version like a gate decision."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        with gate_lock(client, tracking_uri, name):  # never between a challenger's decision and its alias
            previous = _alias_version(client, name, CHAMPION)
            client.get_model_version(name, version)
            client.set_registered_model_alias(name, CHAMPION, version)
            record = {"name": name, "version": str(version), "previous_champion": str(previous.version) if previous else None,
                      "reason": reason, "by": user, "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
                      "decision": "promoted by hand"}
            for key, value in {"trilho.gate.decision": "promoted by hand", "trilho.gate.reason": reason,
                               "trilho.gate.by": user, "trilho.gate.at": record["decided_at"]}.items():
                client.set_model_version_tag(name, version, key, value)
    except MlflowException as exc:
        raise TrackingError(f"cannot promote {name!r} v{version} at {tracking_uri!r}: {exc}") from exc
    return record


def list_versions(tracking_uri: str, name: str) -> list[dict[str, Any]]:
    """Every version of a registered model, newest first, with aliases and the gate's record."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        raise TrackingError(f"no registered model {name!r} at {tracking_uri!r} ({exc}); run an experiment "
                            "with registry.model_name set first") from exc
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        rows.append({"version": str(v.version), "aliases": sorted(by_version.get(str(v.version), [])),
                     "run_id": v.run_id, "created": v.creation_timestamp,
                     "decision": v.tags.get("trilho.gate.decision", ""), "reason": v.tags.get("trilho.gate.reason", "")})
    return rows
