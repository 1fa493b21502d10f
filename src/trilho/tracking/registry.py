"""The model registry through one explicit client: every good run's model becomes the ``challenger``,
and ``trilho.evaluation.gate`` decides, under a lock (``trilho.tracking.store.gate_lock``), whether it becomes
``champion``."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilho.errors import TrackingError
from trilho.evaluation.gate import BY_HAND, GateDecision, judge, judge_changed_data, judge_leaks, judge_on_reference
from trilho.schemas import GateRecord
from trilho.tracking.model import FILES_TAG, download_model, load_model
from trilho.tracking.store import brief, gate_lock, open_client

__all__ = ["CHALLENGER", "CHAMPION", "Challenger", "list_versions", "promote_by_hand", "register_and_gate"]

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"


def _logged_estimate(run, metric: str) -> dict[str, float] | None:
    found = run.data.metrics
    if f"{metric}_mean" not in found:
        return None
    return {"mean": found[f"{metric}_mean"], "low": found.get(f"{metric}_ci_low", float("nan")),
            "high": found.get(f"{metric}_ci_high", float("nan"))}


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


def run_text(client: Any, run_id: str, path: str) -> str:
    """A text artifact of a run, through this store's client."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="trilho-artifact-") as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


@dataclass(frozen=True, eq=False)
class Challenger:
    """A run's model arriving at the gate: where it is, its fold scores on the primary ``metric``,
    and ``cv_key`` (the data digest and the CV params that fix its folds)."""

    name: str
    model_uri: str
    run_id: str
    fold_scores: np.ndarray
    cv_key: dict[str, str]
    metric: str
    margin: float
    test_fraction: float
    level: float = 0.95
    # the pinned reference set: its features as the model takes them and its labels as class codes
    reference: tuple[pd.DataFrame, np.ndarray] | None = None
    # the run's one-feature leaks (trilho.data.leaks), one message naming each column: never champion
    leaks: tuple[str, ...] = ()
    task: str = "classification"  # a regression's reference rows are scored on its predicted values
    quantile: float | None = None  # a quantile decision's: the pinball loss is taken at it
    # dated rows (cv.scheme = "time"): the latest period's truth and the challenger's (pred, proba) there,
    # from its fit on the rows before it; on the same data the gate compares on these rows, per row
    latest: tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None = None


# the champion's procedure re-evaluated on the challenger's folds, from its logged configuration (on
# dated rows: its (pred, proba) on the latest period, fitted on the rows before it)
Reevaluate = Callable[[dict[str, Any]], Any]
# a trilho.monitoring.drift report between the champion's data (its run's tags, its configuration) and the
# challenger's, or None when the champion's data cannot be read
DriftReport = Callable[[dict[str, str], dict[str, Any]], dict[str, Any] | None]


def _reference_predictions(model_uri: str, X: pd.DataFrame, tracking_uri: str,
                           task: str = "classification") -> tuple[list[str], np.ndarray]:
    """A model's class probabilities on the reference rows (its files checked as it loads), and its
    classes; a regression's predicted values as one column, named ``prediction``."""
    output = "labels" if task == "regression" else "proba"
    with tempfile.TemporaryDirectory(prefix="trilho-gate-") as tmp:
        found = load_model(model_uri, Path(tmp) / "model", tracking_uri).predict(X, params={"output": output})
    if isinstance(found, pd.Series):
        return [str(found.name)], found.to_numpy(dtype="float64")[:, None]
    return list(found.columns), found.to_numpy(dtype="float64")


def _on_reference(who: Challenger, current: Any, tracking_uri: str, before: GateDecision | None = None,
                  drift: dict[str, Any] | None = None) -> GateDecision:
    """Champion and challenger scored on the same pinned reference rows."""
    assert who.reference is not None
    X, y = who.reference
    champion_classes, champion = _reference_predictions(f"models:/{who.name}/{current.version}", X, tracking_uri,
                                                        who.task)
    challenger_classes, challenger = _reference_predictions(who.model_uri, X, tracking_uri, who.task)
    if who.task == "regression":  # paired per-row losses of the two models' values
        return judge_on_reference(np.asarray(y, dtype="float64"), (challenger[:, 0], challenger),
                                  (champion[:, 0], champion), metric=who.metric, margin=who.margin, level=who.level,
                                  champion_version=str(current.version), before=before, drift=drift,
                                  quantile=who.quantile)
    # the classes in order, case aside: a model logged before labels kept the data's own spelling says BENIGN
    if [c.casefold() for c in champion_classes] != [c.casefold() for c in challenger_classes]:
        return GateDecision(False, f"champion v{current.version} predicts {champion_classes}, the challenger "
                            f"{challenger_classes}: they cannot be compared on the reference set; kept as challenger "
                            f"({BY_HAND})", who.metric,
                            who.margin, float("nan"), str(current.version), basis="reference set", drift=drift)
    return judge_on_reference(np.asarray(y), (challenger.argmax(axis=1), challenger), (champion.argmax(axis=1), champion),
                               metric=who.metric, margin=who.margin, level=who.level, champion_version=str(current.version),
                               before=before, drift=drift)


def _decide_now(client: Any, who: Challenger, reevaluate: Reevaluate | None,
                drift_report: DriftReport | None, tracking_uri: str) -> GateDecision:
    """The decision against whichever version is champion at this moment; with a reference set,
    both are scored on it before any promotion. A leaking challenger is not compared at all."""
    current = _alias_version(client, who.name, CHAMPION)
    if who.leaks:
        return judge_leaks(who.leaks, who.fold_scores, metric=who.metric, margin=who.margin,
                               champion_version=str(current.version) if current is not None else None)
    if current is None:
        return judge(who.fold_scores, None, metric=who.metric, margin=who.margin, test_fraction=who.test_fraction,
                      level=who.level)
    champion_run = client.get_run(current.run_id)
    same_data = champion_run.data.tags.get("trilho.data_sha256") == who.cv_key["data_sha256"]
    logged = _logged_estimate(champion_run, who.metric)
    if not same_data and logged is not None:
        drift = (drift_report(champion_run.data.tags, json.loads(run_text(client, current.run_id, "config.json")))
                 if drift_report else None)
        if who.reference is not None:
            return _on_reference(who, current, tracking_uri, drift=drift)
        return judge_changed_data(who.fold_scores, logged, drift, metric=who.metric, margin=who.margin,
                                      test_fraction=who.test_fraction, level=who.level,
                                      champion_version=str(current.version))
    decision = _decide_on_same_data(client, who, reevaluate, current, champion_run)
    return decision if who.reference is None else _on_reference(who, current, tracking_uri, before=decision)


def _decide_on_same_data(client: Any, who: Challenger, reevaluate: Reevaluate | None, current: Any,
                         champion_run: Any) -> GateDecision:
    if who.latest is not None and reevaluate is not None:  # dated rows: the latest period, paired per row
        y, challenger = who.latest
        champion = reevaluate(json.loads(run_text(client, current.run_id, "config.json")))
        return judge_on_reference(y, challenger, champion, metric=who.metric, margin=who.margin, level=who.level,
                                  champion_version=str(current.version), quantile=who.quantile,
                                  rows="the latest period, both models fitted on the rows before it")
    if _same_folds(champion_run, who.cv_key):
        champion_scores, basis = _fold_scores(client, current.run_id, who.metric), "same folds, logged scores"
    elif reevaluate is not None:
        config = json.loads(run_text(client, current.run_id, "config.json"))
        champion_scores, basis = reevaluate(config), "champion re-evaluated on the challenger's folds"
    else:
        raise TrackingError(f"champion v{current.version} of {who.name!r} was evaluated on other folds "
                            "and cannot be re-evaluated here")
    if len(champion_scores) != len(who.fold_scores):
        raise TrackingError(f"champion v{current.version} has {len(champion_scores)} fold scores for "
                            f"{who.metric!r}, the challenger {len(who.fold_scores)}")
    return judge(who.fold_scores, champion_scores, metric=who.metric, margin=who.margin, test_fraction=who.test_fraction,
                  level=who.level, champion_version=str(current.version), basis=basis)


def _source(client: Any, model_uri: str) -> tuple[str, str | None]:
    """Where a logged model's files are, and its id. MLflow's SQL registry would look a
    ``models:/<id>`` source up through the process-wide tracking URI (a TODO in its code), so the
    version is created from the logged model's own artifact location, found through this client."""
    if not model_uri.startswith("models:/m-"):
        return model_uri, None
    model_id = model_uri.removeprefix("models:/")
    return client.get_logged_model(model_id).artifact_location, model_id


def register_and_gate(tracking_uri: str, who: Challenger, reevaluate: Reevaluate | None = None,
                      drift_report: DriftReport | None = None) -> GateRecord:
    """Register the run's model, make it the challenger, and run the promotion gate (a challenger
    whose run flagged a leak, ``who.leaks``, is registered and never made champion).

    On the same data and folds the champion's logged fold scores pair with the challenger's; on
    the same data with other folds ``reevaluate(config)`` gives the champion configuration's scores
    on the challenger's folds; on other data ``drift_report`` informs ``judge_changed_data``.
    """
    from mlflow.exceptions import MlflowException

    client = open_client(tracking_uri)
    try:
        with tempfile.TemporaryDirectory(prefix="trilho-gate-") as tmp:  # only a model whose files are as logged
            download_model(who.model_uri, Path(tmp), tracking_uri)
        # challengers are gated one at a time (gate_lock), each against the champion of its moment
        with gate_lock(client, tracking_uri, who.name):
            decision = _decide_now(client, who, reevaluate, drift_report, tracking_uri)  # first: the version carries it
            with contextlib.suppress(MlflowException):
                client.create_registered_model(who.name)
            source, model_id = _source(client, who.model_uri)
            files = client.get_logged_model(model_id).tags.get(FILES_TAG) if model_id else None
            version = client.create_model_version(
                who.name, source, run_id=who.run_id, await_creation_for=0, model_id=model_id,
                tags={"trilho.run_id": who.run_id, **decision.tags(), **({FILES_TAG: files} if files else {})}).version
            client.set_registered_model_alias(who.name, CHALLENGER, version)
            if decision.promote:
                client.set_registered_model_alias(who.name, CHAMPION, version)
    except MlflowException as exc:
        raise TrackingError(f"model registry at {tracking_uri!r} failed for {who.name!r}: {brief(exc)}") from exc
    log.info("%s v%s: %s", who.name, version, decision.reason)
    record = {"name": who.name, "version": str(version),
              "aliases": [CHALLENGER] + ([CHAMPION] if decision.promote else []),
              "decided_at": datetime.now(UTC).isoformat(timespec="seconds"), **asdict(decision)}
    return GateRecord(**record)  # type: ignore[typeddict-item]


def promote_by_hand(tracking_uri: str, name: str, version: str, reason: str, user: str) -> dict[str, Any]:
    """Move ``champion`` to a version by hand; recorded on the version like a gate decision."""
    from mlflow.exceptions import MlflowException

    client = open_client(tracking_uri)
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

    client = open_client(tracking_uri)
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
