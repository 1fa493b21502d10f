"""Settings that are not about the experiment: where the lake is, where MLflow is, credentials.

They come from the environment or a git-ignored ``.env`` file. Both the standard names that boto3
and MLflow already read and the reference stack's ``.env`` names are accepted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trilho.errors import ConfigError

__all__ = ["LOCAL_UI", "Settings", "load_settings"]


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


# where `trilho ui` serves the MLflow UI of a local store: the link printed for a run on one
LOCAL_UI = "http://127.0.0.1:5000"


class Settings(BaseSettings):
    """Where trilho reads and writes; validated once, frozen, passed explicitly."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True, populate_by_name=True
    )

    lake: str = Field("lake", validation_alias=_env("TRILHO_LAKE"))
    tracking_uri: str = Field(
        "sqlite:///mlflow.db", validation_alias=_env("TRILHO_TRACKING_URI", "MLFLOW_TRACKING_URI")
    )
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias=_env(
            "TRILHO_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MINIO_URL",
            "MLFLOW_S3_ENDPOINT_URL",
        ),
    )
    aws_access_key_id: SecretStr | None = Field(
        None, validation_alias=_env("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY")
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias=_env("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY")
    )
    aws_region: str = Field("us-east-1", validation_alias=_env("AWS_REGION", "AWS_DEFAULT_REGION"))
    bucket_data: str | None = Field(None, validation_alias=_env("TRILHO_BUCKET_DATA", "BUCKET_DATA"))
    bucket_mlflow: str | None = Field(
        None, validation_alias=_env("TRILHO_BUCKET_MLFLOW", "BUCKET_MLFLOW")
    )
    n_jobs: int | None = Field(None, ge=1, validation_alias=_env("TRILHO_N_JOBS"))
    cache_dir: Path = Field(
        Path.home() / ".cache" / "trilho", validation_alias=_env("TRILHO_CACHE_DIR")
    )
    source_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("TRILHO_SOURCE_TIMEOUT"))
    max_source_bytes: int = Field(2 * 1024**3, gt=0, validation_alias=_env("TRILHO_MAX_SOURCE_BYTES"))
    s3_wait_s: float = Field(30.0, ge=0, validation_alias=_env("TRILHO_S3_WAIT_S"))
    create_buckets: bool = Field(True, validation_alias=_env("TRILHO_CREATE_BUCKETS"))
    stale_upload_s: float = Field(3600.0, ge=0, validation_alias=_env("TRILHO_STALE_UPLOAD_S"))
    mlflow_wait_s: float = Field(5.0, ge=0, validation_alias=_env("TRILHO_MLFLOW_WAIT_S"))
    # the MLflow UI as a user's browser reaches it, for the links trilho prints (None: the tracking URI
    # when it is a server's, else the address `trilho ui` opens); Compose sets it, since its
    # tracking URI (http://mlflow:5000) names a host only the stack's network knows
    mlflow_ui: str | None = Field(None, validation_alias=_env("TRILHO_MLFLOW_UI"))
    # where the fits run: this machine, or a Dask cluster (trilho.execution.cluster); a scheduler alone means dask
    executor: Literal["local", "dask"] = Field("local", validation_alias=_env("TRILHO_EXECUTOR"))
    dask_scheduler: str | None = Field(None, validation_alias=_env("TRILHO_DASK_SCHEDULER"))
    dask_wait_s: float = Field(10.0, gt=0, validation_alias=_env("TRILHO_DASK_WAIT_S"))
    # where `trilho tune` keeps its Optuna studies (None: beside the tracking store; trilho.workflows.tune)
    tune_storage: str | None = Field(None, validation_alias=_env("TRILHO_TUNE_STORAGE"))
    # trilho serve (trilho.serving.server): who may ask, how much, how often it looks for a new version, its log
    serve_token: SecretStr | None = Field(None, validation_alias=_env("TRILHO_SERVE_TOKEN"))
    serve_max_body_bytes: int = Field(16 * 1024**2, gt=0, validation_alias=_env("TRILHO_SERVE_MAX_BODY_BYTES"))
    serve_refresh_s: float = Field(30.0, ge=0, validation_alias=_env("TRILHO_SERVE_REFRESH_S"))
    serve_batch_wait_ms: float = Field(0.0, ge=0, le=100, validation_alias=_env("TRILHO_SERVE_BATCH_WAIT_MS"))
    serve_max_batch_rows: int = Field(1_000, ge=1, validation_alias=_env("TRILHO_SERVE_MAX_BATCH_ROWS"))
    serve_log: bool = Field(True, validation_alias=_env("TRILHO_SERVE_LOG"))
    serve_log_prefix: str = Field("predictions/served", min_length=1, validation_alias=_env("TRILHO_SERVE_LOG_PREFIX"))
    serve_log_queue_rows: int = Field(100_000, ge=1, validation_alias=_env("TRILHO_SERVE_LOG_QUEUE_ROWS"))
    serve_log_flush_s: float = Field(5.0, gt=0, validation_alias=_env("TRILHO_SERVE_LOG_FLUSH_S"))

    @model_validator(mode="after")
    def _lake_from_bucket(self) -> Settings:
        # The reference stack named only a bucket; it means the lake lives there.
        if self.bucket_data and "lake" not in self.model_fields_set:
            object.__setattr__(self, "lake", f"s3://{self.bucket_data}")
        if self.dask_scheduler and "executor" not in self.model_fields_set:
            object.__setattr__(self, "executor", "dask")
        return self

    def ui_url(self) -> str:
        """The MLflow UI's address as a user's browser opens it (``TRILHO_MLFLOW_UI``), else the
        tracking server's, else the one ``trilho ui`` serves a local store on."""
        if self.mlflow_ui:
            return self.mlflow_ui.rstrip("/")
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return LOCAL_UI

    def free_cores(self) -> int:
        """Cores this process may use: the fits never get more threads than this in total."""
        if self.n_jobs:
            return self.n_jobs
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)


def load_settings(env_file: str | Path | None = ".env", **overrides: object) -> Settings:
    """Read settings from the environment (and ``env_file``), naming the bad key on error."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        shown = "" if any(w in key.upper() for w in ("SECRET", "KEY", "PASSWORD", "TOKEN")) else f" = {first.get('input')!r}"
        raise ConfigError(f"setting {key}{shown}: {first['msg']} (check your environment or .env)") from exc
