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
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from trilho.encoding import model_outputs
from trilho.errors import TrackingError

__all__ = ["Tracker", "flatten", "remember_unfinished", "save_model_files"]

log = logging.getLogger(__name__)
_PKG = Path(__file__).parent
_MODEL_REQUIREMENTS = {"xgboost": ("mlflow", "xgboost", "pandas", "numpy"),
                       "skops": ("mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy")}


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


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative or absolute), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def store_lock(tracking_uri: str, purpose: str = "store") -> Iterator[None]:
    """An exclusive lock beside a SQLite tracking store (``mlflow.db.store.lock``), held while
    processes on this machine create or migrate it (``store``) or move its registry aliases
    (``gate``); nothing for other stores, whose server serialises its own schema."""
    path = sqlite_file(tracking_uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.{purpose}.lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _experiment_id(client: Any, name: str) -> str:
    """The experiment's id, creating it; another process creating it at the same moment is fine."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # it was created meanwhile (a server with several clients)
        if found is None:
            raise
        return found.experiment_id


class Tracker:
    """One experiment on one tracking server; counts the seconds it spends talking to it."""

    def __init__(self, tracking_uri: str, experiment: str, pending_file: Path | None = None,
                 wait_s: float = 5.0) -> None:
        start = time.perf_counter()
        import mlflow
        from mlflow.tracking import MlflowClient

        self.import_seconds = time.perf_counter() - start  # loading the library, reported apart
        self.uri = tracking_uri
        self.seconds = 0.0
        self.breakdown: dict[str, float] = {}
        self.pending_file = pending_file
        start = time.perf_counter()
        if tracking_uri.startswith(("http://", "https://")):
            _check_server(tracking_uri, wait_s)
        try:
            mlflow.set_tracking_uri(tracking_uri)
            # the first client of a fresh SQLite store creates and migrates it: one process at a time
            with store_lock(tracking_uri):
                self.client = MlflowClient(tracking_uri)
                self.experiment_id = _experiment_id(self.client, experiment)
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
        """An MLflow run that ends FINISHED, or FAILED when the body raises.

        If even FAILED cannot be recorded (the server went away), the run id is remembered and
        the next ``close_stale_runs`` marks it.
        """
        import os
        import socket

        import mlflow

        tags = {**tags, "trilho.host": socket.gethostname(), "trilho.pid": str(os.getpid())}
        with self.timed("start a run"):
            active = mlflow.start_run(experiment_id=self.experiment_id, run_name=name, tags=tags, nested=nested)
        run_id = active.info.run_id
        try:
            yield run_id
        except BaseException:
            try:
                with self.timed("end the run"):
                    mlflow.end_run("FAILED")
            except Exception:
                # end_run pops the run before it calls the server, so the next run starts clean
                remember_unfinished(self.pending_file, self.uri, run_id)
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

    def log_dataset(self, run_id: str, frame: pd.DataFrame, source: str, name: str, target: str,
                    sha256: str) -> None:
        """Record the training data by reference: its lake URI and the sha256 the lake already has
        (not a digest of the frame), a schema read from its first thousand rows, its size."""
        import mlflow
        from mlflow.entities import Dataset, DatasetInput, InputTag

        with self.timed("log the dataset"), warnings.catch_warnings():
            # MLflow hints about integer columns and ambiguous local sources; both are expected here
            warnings.simplefilter("ignore", UserWarning)
            sample = mlflow.data.from_pandas(frame.head(1000), source=source, name=name, targets=target,
                                             digest=sha256[:10])._to_mlflow_entity()
            profile = json.dumps({"num_rows": int(len(frame)), "num_elements": int(frame.size), "sha256": sha256})
            entity = Dataset(name, sample.digest, sample.source_type, sample.source, sample.schema, profile)
            self.client.log_inputs(run_id, datasets=[DatasetInput(entity, [InputTag("mlflow.data.context", "training")])])

    def log_folder(self, run_id: str, folder: Path) -> None:
        with self.timed("upload artifacts"):
            self.client.log_artifacts(run_id, str(folder))

    def log_model(self, model_dir: Path, example: pd.DataFrame) -> str:
        """Log the files that ``save_model_files`` wrote as a pickle-free pyfunc; returns its URI."""
        import mlflow
        from mlflow.models import ModelSignature, infer_signature
        from mlflow.types.schema import AnyType, ColSpec, Schema

        spec = json.loads((model_dir / "spec.json").read_text())
        example = signature_example(example, spec)
        classifier = model_dir / spec["file"]
        servable = _servable()
        _, proba = servable.load_classifier(spec, str(classifier))
        output = model_outputs(proba, example, spec,  # what the model returns, classes in spec order
                               matrix=getattr(proba, "matrix", False))
        inferred = infer_signature(example, output, params={"output": "both"})
        packages = _MODEL_REQUIREMENTS[spec["format"]] + tuple(spec.get("requirements", ()))
        requirements = [f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in dict.fromkeys(packages)]
        with self.timed("log the model"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(_PKG / "servable.py"),
                code_paths=[str(_PKG / "encoding.py")],
                artifacts={"classifier": str(classifier), "spec": str(model_dir / "spec.json")},
                signature=ModelSignature(inputs=Schema([ColSpec(AnyType(), c) for c in spec["features"]]),
                                         outputs=inferred.outputs, params=inferred.params),
                input_example=example,
                pip_requirements=requirements,
            )
        return info.model_uri

    def close_stale_runs(self) -> list[str]:
        """Mark FAILED the runs that trilho left RUNNING: its process died, or the server did.

        A run is stale when it carries this host's name and a process id that no longer runs, or
        when a previous process could not end it and wrote its id to the pending file.
        """
        import socket


        closed: list[str] = []
        with self.timed("close stale runs"):
            pending = _read_pending(self.pending_file)
            for run_id in pending.pop(self.uri, []):
                with contextlib.suppress(Exception):
                    if self.client.get_run(run_id).info.status == "RUNNING":
                        self._fail_run(run_id, "the tracking server went away before the run ended")
                        closed.append(run_id)
            runs = self.client.search_runs(
                [self.experiment_id], max_results=200,
                filter_string=f"attributes.status = 'RUNNING' and tags.`trilho.host` = '{socket.gethostname()}'")
            for run in runs:
                pid = int(run.data.tags.get("trilho.pid", "0") or 0)
                if pid and not process_alive(pid):
                    self._fail_run(run.info.run_id, f"process {pid} ended without closing the run")
                    closed.append(run.info.run_id)
            _write_pending(self.pending_file, pending)
        for run_id in closed:
            log.warning("marked stale run %s FAILED", run_id)
        return closed

    def _fail_run(self, run_id: str, why: str) -> None:
        self.client.set_tag(run_id, "trilho.failure", why)
        self.client.set_terminated(run_id, "FAILED")


def remember_unfinished(pending_file: Path | None, uri: str, run_id: str) -> None:
    """Note a run that could not be ended, so that the next start marks it FAILED."""
    if pending_file is None:
        return
    pending = _read_pending(pending_file)
    pending.setdefault(uri, []).append(run_id)
    _write_pending(pending_file, pending)


def _read_pending(path: Path | None) -> dict[str, list[str]]:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_pending(path: Path | None, pending: dict[str, list[str]]) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: v for k, v in pending.items() if v}))


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signature_example(example: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Raw example rows: categoricals as text, numbers as floats.

    The signature names every feature column (a missing one is refused by name) but types them
    ``any``: MLflow refuses to narrow a float column to an integer one (a missing value makes an
    integer column float) and to widen int64 to float64 or a number to text (integer codes of a
    categorical), while the model's own encoder reads all of these and names the column of any
    value it cannot read.
    """
    categorical = set(spec["categorical"])
    return example.astype({c: ("str" if c in categorical else "float64") for c in spec["features"]})


def _servable():
    """The logged model's own code, as MLflow will run it (loaded by path, never imported by trilho)."""
    import importlib.util

    found = importlib.util.spec_from_file_location("trilho_servable", _PKG / "servable.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


def save_model_files(pipeline: Any, spec: dict[str, Any], folder: Path) -> Path:
    """The fitted encoding as JSON and the fitted classifier without pickle: XGBoost's own file, or
    skops for every other family (with what it needs to be trusted); the resampler stays behind."""
    from trilho import models

    steps = models.serving_steps(pipeline)
    if "encode" in pipeline.named_steps:
        spec = {**pipeline.named_steps["encode"].spec_, "classes": spec["classes"], "identifiers": spec["identifiers"]}
    folder.mkdir(parents=True, exist_ok=True)
    estimator = steps[-1][1]
    from xgboost import XGBClassifier

    if len(steps) == 1 and isinstance(estimator, XGBClassifier):  # class-weighted ones too: weights act in fit only
        spec = {**spec, "format": "xgboost", "file": "booster.ubj"}
        estimator.get_booster().save_model(folder / spec["file"])
    else:
        import skops.io
        from sklearn.pipeline import Pipeline

        package = type(estimator).__module__.split(".")[0]
        spec = {**spec, "format": "skops", "file": "classifier.skops",
                "trusted_packages": [] if package in {"sklearn"} else [package],
                "requirements": [] if package in {"sklearn"} else [_distribution(package)]}
        skops.io.dump(estimator if len(steps) == 1 else Pipeline(steps), folder / spec["file"])
    (folder / "spec.json").write_text(json.dumps(spec, indent=2))
    return folder


def _distribution(package: str) -> str:
    """The distribution that installs an import package (``sklearn`` -> ``scikit-learn``)."""
    found = importlib.metadata.packages_distributions().get(package, [package])
    return found[0]


def _check_server(uri: str, wait_s: float = 5.0) -> None:
    """Fail in seconds, not minutes of client retries, when the tracking server is not there."""
    import requests

    deadline = time.monotonic() + wait_s
    while True:
        try:
            resp = requests.get(uri.rstrip("/") + "/health", timeout=min(5.0, max(wait_s, 1.0)))
            break
        except requests.RequestException as exc:
            if time.monotonic() >= deadline:
                raise TrackingError(
                    f"MLflow server {uri} is not reachable ({type(exc).__name__}); start it (trilho server, "
                    "or docker compose up mlflow) or point MLFLOW_TRACKING_URI elsewhere") from None
            time.sleep(0.5)
    if resp.status_code != 200:
        raise TrackingError(f"MLflow server {uri} answered /health with HTTP {resp.status_code}; "
                            "check the address and the server's --allowed-hosts")
