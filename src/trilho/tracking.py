"""MLflow: the run, batched params and metrics, artifacts, dataset lineage, the model.

Every write goes through here. Metrics and params are sent with ``log_batch`` (one call per
thousand values), artifacts as one folder; the model is logged as code plus XGBoost's own file
format, so loading it never unpickles anything.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilho.encoding import encode_features
from trilho.errors import ConfigError, TrackingError

__all__ = ["Tracker", "flatten"]

log = logging.getLogger(__name__)
_PKG = Path(__file__).parent
_MODEL_REQUIREMENTS = ("mlflow", "xgboost", "pandas", "numpy")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} for MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if not isinstance(value, str) else value
    return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Tracker:
    """One experiment on one tracking server; counts the seconds it spends talking to it."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        start = time.perf_counter()
        import mlflow
        from mlflow.tracking import MlflowClient

        self.import_seconds = time.perf_counter() - start  # loading the library, reported apart
        self.uri = tracking_uri
        self.seconds = 0.0
        self.breakdown: dict[str, float] = {}
        start = time.perf_counter()
        if tracking_uri.startswith(("http://", "https://")):
            _check_server(tracking_uri)
        try:
            mlflow.set_tracking_uri(tracking_uri)
            self.client = MlflowClient(tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        except Exception as exc:
            raise TrackingError(f"MLflow at {tracking_uri!r} is not usable ({type(exc).__name__}: {exc}); "
                                "start it or set MLFLOW_TRACKING_URI") from exc
        self.seconds += time.perf_counter() - start

    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except TrackingError:
            raise
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, (MlflowException, OSError)) or "requests" in type(exc).__module__:
                raise TrackingError(f"MLflow at {self.uri!r} failed to {what}: {exc}") from exc
            raise
        finally:
            spent = time.perf_counter() - start
            self.seconds += spent
            self.breakdown[what] = self.breakdown.get(what, 0.0) + spent

    @contextlib.contextmanager
    def run(self, name: str, tags: dict[str, str], nested: bool = False) -> Iterator[str]:
        """An MLflow run that ends FINISHED, or FAILED when the body raises."""
        import mlflow

        with self.timed("start a run"):
            active = mlflow.start_run(experiment_id=self.experiment_id, run_name=name, tags=tags, nested=nested)
        try:
            yield active.info.run_id
        except BaseException:
            with contextlib.suppress(Exception), self.timed("end the run"):
                mlflow.end_run("FAILED")
            raise
        with self.timed("end the run"):
            mlflow.end_run("FINISHED")

    def log_values(self, run_id: str, params: dict[str, str] | None = None,
                   metrics: list[tuple[str, float, int]] | None = None) -> None:
        """Params and (key, value, step) metrics in as few batch calls as MLflow allows."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        p = [Param(k, v[:6000]) for k, v in (params or {}).items()]
        m = [Metric(k, float(v), now, int(s)) for k, v, s in (metrics or [])]
        with self.timed("log params and metrics"):
            for chunk in _chunks(p, 100):
                self.client.log_batch(run_id, params=chunk, synchronous=True)
            for chunk in _chunks(m, 1000):
                self.client.log_batch(run_id, metrics=chunk, synchronous=True)

    def log_dataset(self, frame: pd.DataFrame, source: str, name: str, target: str) -> None:
        import mlflow

        with self.timed("log the dataset"), warnings.catch_warnings():
            # MLflow hints about integer columns and ambiguous local sources; both are expected here
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets=target)
            mlflow.log_input(dataset, context="training")

    def log_folder(self, run_id: str, folder: Path) -> None:
        with self.timed("upload artifacts"):
            self.client.log_artifacts(run_id, str(folder))

    def log_model(self, pipeline: Any, spec: dict[str, Any], example: pd.DataFrame,
                  registered_name: str | None = None) -> str:
        """Log the fitted classifier (no resampler) with its encoding, as a pickle-free pyfunc."""
        import mlflow
        from mlflow.models import infer_signature
        from xgboost import XGBClassifier

        model = pipeline.named_steps["model"]
        if not isinstance(model, XGBClassifier):
            raise ConfigError(f"model {type(model).__name__} cannot be logged without pickle yet; "
                              "use model.name='xgboost' or set tracking.log_model=false")
        # the signature takes the raw columns as a CSV reader gives them (integers stay integers:
        # MLflow refuses to narrow a float column to an integer one, and would refuse int -> float too)
        example = example.astype({c: "str" for c in spec["categorical"]})
        labels = pd.Series(np.asarray(spec["classes"], dtype=object)[model.predict(
            encode_features(example, spec))], name="prediction")
        requirements = [f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in _MODEL_REQUIREMENTS]
        with (tempfile.TemporaryDirectory(prefix="trilho-model-") as tmp, self.timed("log the model"),
              warnings.catch_warnings()):
            # our predict takes a DataFrame and returns labels; the signature below says so
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column", category=UserWarning)
            booster, spec_path = Path(tmp) / "booster.ubj", Path(tmp) / "spec.json"
            model.get_booster().save_model(booster)
            spec_path.write_text(json.dumps(spec, indent=2))
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(_PKG / "servable.py"),
                code_paths=[str(_PKG / "encoding.py")],
                artifacts={"booster": str(booster), "spec": str(spec_path)},
                signature=infer_signature(example, labels, params={"output": "labels"}),
                input_example=example,
                pip_requirements=requirements,
                registered_model_name=registered_name,
            )
        return info.model_uri



def _check_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes of client retries, when the tracking server is not there."""
    import requests

    try:
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise TrackingError(f"MLflow server {uri} is not reachable ({type(exc).__name__}); start it "
                            "(trilho ui, or docker compose up mlflow) or point MLFLOW_TRACKING_URI elsewhere") from exc
    if resp.status_code != 200:
        raise TrackingError(f"MLflow server {uri} answered /health with HTTP {resp.status_code}; "
                            "check the address and the server's --allowed-hosts")
