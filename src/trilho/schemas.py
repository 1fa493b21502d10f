"""The shapes of what trilho writes as JSON and hands to its callers: the run summary
(``--summary-json``, ``reports/<run>/summary.json``), the validation report, the raw and
prediction manifests, and the gate's record. They are a public interface: keys are added, never
renamed. TypedDicts, so the JSON stays plain dicts and the type checker reads every access."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

__all__ = ["CVSummary", "DataSummary", "GateRecord", "HoldoutSummary", "LakeSummary", "MetricSummary",
           "PredictionManifest", "RawManifest", "RunSummary", "ValidationReport"]


class RawManifest(TypedDict):
    """``raw/<dataset>/<sha256>/manifest.json``: written last, so its presence marks a complete object."""

    dataset: str
    source: str
    version: str | None
    file_name: str
    key: str
    sha256: str
    bytes: int
    rows: int
    columns: list[str]
    fetched_at: str


class ValidationReport(TypedDict):
    """``validation_report.json``: what the raw table holds and what is wrong with it."""

    rows: int
    columns: list[str]
    dtypes: dict[str, str]
    errors: list[str]
    warnings: list[str]
    labels: NotRequired[dict[str, Any]]
    # rows whose label is missing, left out: {"rows", "lines"}
    unlabelled: NotRequired[dict[str, Any]]
    undated: NotRequired[dict[str, Any]]  # rows whose cv.time date is missing: left out
    non_numeric: NotRequired[dict[str, Any]]
    nulls: NotRequired[dict[str, int]]
    infinities: NotRequired[dict[str, int]]
    categories: NotRequired[dict[str, int]]
    missing: NotRequired[dict[str, Any]]
    nonfinite_rows: NotRequired[int]
    duplicates: NotRequired[dict[str, Any]]
    class_counts: NotRequired[dict[str, int]]
    out_of_range: NotRequired[dict[str, Any]]
    curated_key: NotRequired[str]
    # trilho.data.leaks before any fit: {"column", "kind" (leak | small_class | date), "score", "message"}
    leaks: NotRequired[list[dict[str, Any]]]
    # a numeric target (task = 'regression'): {"min", "max", "mean", "distinct", "skew"}
    target: NotRequired[dict[str, Any]]


class MetricSummary(TypedDict):
    """One metric over the folds: the reference's figures and every interval asked for."""

    mean: float
    std: float
    low: float
    high: float
    intervals: dict[str, tuple[float, float] | None]
    ci_method: str
    ci: tuple[float, float] | None


class DataSummary(TypedDict):
    source: str
    sha256: str
    rows: int
    features: list[str]
    ingest_skipped: bool
    warnings: list[str]
    reference: NotRequired[dict[str, Any]]  # registry.reference: where, its sha256, rows, training rows left out


class CVSummary(TypedDict):
    n_splits: int
    seeds: list[int]
    n_folds: int
    duplicates: dict[str, Any]
    interval: str
    level: float
    workers: int
    pool: str
    metrics: dict[str, MetricSummary]
    fit_s: dict[str, float]


class HoldoutSummary(TypedDict):
    labels: NotRequired[list[str]]                   # a classification's
    label_codes: NotRequired[list[int]]
    confusion_matrix: NotRequired[list[list[int]]]
    report: NotRequired[dict[str, Any]]
    scores: dict[str, float]
    rows: NotRequired[int]                           # a regression's: its rows, and its intervals' coverage
    interval: NotRequired[dict[str, Any]]


class LakeSummary(TypedDict):
    uri: str
    raw: str
    manifest: str
    curated: str
    reports: str


class GateRecord(TypedDict):
    """``reports/<run>/promotion.json`` and the summary's ``registry``: the version and why it
    holds its aliases (``trilho.evaluation.gate.GateDecision``'s fields besides)."""

    name: str
    version: str
    aliases: list[str]
    decided_at: str
    promote: bool
    reason: str
    metric: str
    margin: float
    challenger_mean: float
    champion_version: str | None
    champion_mean: float | None
    comparison: dict[str, float]
    basis: str
    drift: dict[str, Any] | None


class RunSummary(TypedDict):
    """What ``trilho run --summary-json`` writes, and ``reports/<run>/summary.json``."""

    experiment: str
    task: NotRequired[str]  # "classification" or "regression" (older runs: classification)
    run_id: str
    tracking_uri: str
    mlflow_experiment: str
    mlflow_experiment_id: str
    data: DataSummary
    cv: CVSummary
    holdout: HoldoutSummary
    lake: LakeSummary
    final_fit: NotRequired[dict[str, Any]]
    model_uri: NotRequired[str]
    registry: NotRequired[GateRecord]
    tracking_error: NotRequired[str]
    timings: NotRequired[dict[str, float]]
    # the majority class and default models on the same folds (trilho.evaluation.baselines.compare)
    baselines: NotRequired[dict[str, Any]]
    # the decision rule, the folds' thresholds and the logged model's (trilho.evaluation.decision)
    decision: NotRequired[dict[str, Any]]
    # each feature's importance on held-out rows, by name (trilho.evaluation.explain.summarise_importance)
    importance: NotRequired[dict[str, Any]]
    # evaluation.groups: every metric per group value, out of fold (trilho.evaluation.groups.group_metrics)
    groups: NotRequired[dict[str, Any]]
    # where the run's HTML page is in the lake (trilho.reporting.html)
    report_html: NotRequired[str]
    # a regression's prediction intervals: level, the logged model's half-width, out-of-fold coverage
    # (trilho.evaluation.conformal.interval_summary)
    prediction_interval: NotRequired[dict[str, Any]]
    # cv.scheme = "time": each period's scores, their trend, the latest period with its interval, and what the
    # headline is (trilho.evaluation.periods.time_summary)
    time: NotRequired[dict[str, Any]]


class PredictionManifest(TypedDict):
    """``<output>/<model>/<version>/<input sha256>/manifest.json``, written last."""

    model_uri: str
    requested_model: str
    model_name: str
    model_version: str
    model_run_id: str
    input: str
    input_sha256: str
    input_bytes: int
    rows: int
    output: str
    key: str
    columns: list[str]
    unseen_categories: dict[str, int]
    missing_values: dict[str, int]
    missing_policy: str
    created_at: str
    seconds: float
    timings: dict[str, float]
    skipped: NotRequired[bool]
