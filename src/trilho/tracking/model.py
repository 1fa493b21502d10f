"""The logged model: its files without pickle, logged and loaded through an explicit client.

``save_model_files`` writes the fitted encoding as JSON and the classifier in XGBoost's own format
or skops; ``log_model`` logs them as a pyfunc whose code is ``servable.py`` (plus ``encoding.py`` and ``answers.py``),
the only trilho code a serving environment needs. Every file of the logged model has its sha256 in
the model's ``trilho-files.json``, and that file's own sha256 is a tag of the logged model (and of
its registered versions) in the tracking store: ``load_model`` checks the files against it before
any of the model's code runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import platform
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from trilho.errors import TrackingError
from trilho.model.answers import model_outputs
from trilho.model.code import CODE_PATHS, SERVABLE, servable
from trilho.model.encoding import WRITTEN_MISSING, input_columns, unmark
from trilho.tracking.store import open_client

__all__ = ["FILES_TAG", "check_model_files", "download_model", "keep_verified", "load_model", "log_model",
           "logged_files_digest", "resolve_model", "signature_example"]

log = logging.getLogger(__name__)
# models:/NAME@ALIAS, models:/NAME/VERSION, or models:/<logged model id> (no alias, no version)
_MODELS_URI = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))?")
FILES_TAG = "trilho.files_sha256"  # the sha256 of the logged model's trilho-files.json
_MODEL_REQUIREMENTS = {"xgboost": ("mlflow", "xgboost", "pandas", "numpy"),
                       "skops": ("mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy")}


def log_model(client: Any, experiment_id: str, run_id: str, model_dir: Path, example: pd.DataFrame) -> str:
    """Log the files that ``save_model_files`` wrote as a pickle-free pyfunc of the run; returns
    its ``models:/<id>`` URI. The logged model is created, written and finalised through ``client``."""
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    spec = json.loads((model_dir / "spec.json").read_text())
    example = signature_example(example, spec)
    classifier = model_dir / spec["file"]
    packages = _MODEL_REQUIREMENTS[spec["format"]] + tuple(spec.get("requirements", ()))
    requirements = [f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in dict.fromkeys(packages)]
    params = client.get_run(run_id).data.params  # the run's params, as MLflow's own log_model copies them
    logged = client.create_logged_model(experiment_id, name="model", source_run_id=run_id, params=params)
    client.log_outputs(run_id, models=[LoggedModelOutput(logged.model_id, step=0)])
    with tempfile.TemporaryDirectory(prefix="trilho-model-") as tmp, warnings.catch_warnings(), _pinned_here():
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column", category=UserWarning)
        local = str(Path(tmp) / "model")
        mlflow.pyfunc.save_model(
            local, mlflow_model=Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                      run_id=run_id, model_id=logged.model_id),
            python_model=str(SERVABLE), code_paths=[str(p) for p in CODE_PATHS],
            artifacts={"classifier": str(classifier), "spec": str(model_dir / "spec.json")},
            signature=_signature(spec, classifier, example), input_example=example, pip_requirements=requirements)
        _portable(Path(local))
        digest, files = _seal(Path(local))
        (model_dir / "logged-files.json").write_text(json.dumps(
            {"model_id": logged.model_id, FILES_TAG: digest, "files": files}, indent=2))
        client.log_model_artifacts(logged.model_id, local)
    client.set_logged_model_tags(logged.model_id, {FILES_TAG: digest})
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"


@contextlib.contextmanager
def _pinned_here() -> Iterator[None]:
    """MLflow's ``save_model`` checks the pip requirements against the installed packages by first
    mapping every installed distribution's files to its modules: 1.2 s of a default run, on the
    tracker's thread, holding the GIL the folds' fits need. The requirements ``log_model`` gives
    are the installed versions themselves, read a moment before: that check cannot find a
    mismatch, and is skipped (where MLflow still has it under that name)."""
    from mlflow.utils import environment

    check = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if check is None:
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda model_requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = check


def _portable(local: Path) -> None:
    """The MLmodel file without the paths of the machine that logged it: MLflow records where the
    model's code and artifacts were copied from, and reads only their names and paths inside the model."""
    import yaml

    mlmodel = local / "MLmodel"
    meta = yaml.safe_load(mlmodel.read_text())
    pyfunc = meta.get("flavors", {}).get("python_function", {})
    if pyfunc.get("model_code_path"):
        pyfunc["model_code_path"] = Path(pyfunc["model_code_path"]).name
    for artifact in pyfunc.get("artifacts", {}).values():
        if isinstance(artifact, dict) and "uri" in artifact:
            artifact["uri"] = artifact["path"]
    mlmodel.write_text(yaml.safe_dump(meta, default_flow_style=False, sort_keys=False))


def _seal(local: Path) -> tuple[str, dict[str, str]]:
    """Write the model's manifest (every file's sha256, the last file written); returns its own
    sha256 and the files it lists."""
    code = servable()
    files = code.file_digests(str(local))
    data = json.dumps({"files": files}, indent=2, sort_keys=True).encode()
    (local / code.FILES).write_bytes(data)
    return hashlib.sha256(data).hexdigest(), files


def _signature(spec: dict[str, Any], classifier: Path, example: pd.DataFrame) -> Any:
    """Every feature by name, typed ``any`` (see ``signature_example``); the outputs as the model gives them."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    _, proba = servable().load_classifier(spec, str(classifier))
    output = model_outputs(proba, example, spec, matrix=getattr(proba, "matrix", False))  # classes in spec order
    inferred = infer_signature(example, output, params={"output": "both", "explain": False})
    return ModelSignature(inputs=Schema([ColSpec(AnyType(), c) for c in input_columns(spec)]),
                          outputs=inferred.outputs, params=inferred.params)


def signature_example(example: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Raw example rows: categoricals and dates as text (dates in ISO 8601), numbers as floats.

    The signature names every feature column (a missing one is refused by name) but types them
    ``any``: MLflow refuses to narrow a float column to an integer one (a missing value makes an
    integer column float) and to widen int64 to float64 or a number to text (integer codes of a
    categorical), while the model's own encoder reads all of these and names the column of any
    value it cannot read.
    """
    text = {*spec["categorical"], *spec.get("dates", {})}
    inputs = input_columns(spec)
    # "?" and NA as missing values, as the model reads them
    example = unmark(example, inputs, spec.get("markers"), spec.get("written", WRITTEN_MISSING))
    return example.astype({c: ("str" if c in text else "float64") for c in inputs})


def resolve_model(model_uri: str, tracking_uri: str) -> dict[str, str]:
    """Name, version and a path-safe identity for a model URI (aliases resolve to their version)."""
    from mlflow.exceptions import MlflowException

    found = _MODELS_URI.fullmatch(model_uri)
    if not found or not (found.group(2) or found.group(3)):  # runs:/..., models:/m-<id>, a path: the URI itself
        return {"uri": model_uri, "name": "", "version": "",
                "ident": f"model-{hashlib.sha256(model_uri.encode()).hexdigest()[:16]}"}
    name, alias, number = found.groups()
    client = open_client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as exc:
        raise TrackingError(f"model {model_uri!r} not found at {tracking_uri!r} ({exc.message}); "
                            "list them with `trilho models`") from None
    return {"uri": f"models:/{name}/{version.version}", "name": name, "version": str(version.version),
            "run_id": version.run_id or "", "ident": f"{_safe(name)}/v{version.version}"}


def download_model(model_uri: str, dst: Path, tracking_uri: str) -> Path:
    """The model's files from this tracking store alone, checked (``check_model_files``) against
    the digest the store recorded when it was logged. MLflow resolves ``models:/`` URIs through its
    process-wide registry URI, so they are resolved here, through this store's client, to the
    location of the files, which MLflow then downloads with this store's URI."""
    import mlflow

    client = open_client(tracking_uri)
    found = _MODELS_URI.fullmatch(model_uri)
    location, logged = model_uri, None
    if found and found.group(1).startswith("m-") and not (found.group(2) or found.group(3)):
        model = client.get_logged_model(found.group(1))
        location, logged = model.artifact_location, model.tags.get(FILES_TAG)
    elif found:
        name, alias, number = found.groups()
        version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        location = client.get_model_version_download_uri(name, version.version)
        logged = logged_files_digest(client, version)
    dst.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst), tracking_uri=tracking_uri))
    check_model_files(model_uri, local, logged)
    return local


def keep_verified(model_uri: str, to: Path, tracking_uri: str) -> Path:
    """The model's files, checked (``download_model``) in a folder beside ``to``, then moved into
    ``to`` (a new or empty folder) as the model's own folder, its ``MLmodel`` at the top, so that
    ``mlflow models serve -m TO`` serves the checked copy. A check that fails leaves ``to`` as it was."""
    import shutil

    from trilho.errors import ConfigError

    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ConfigError(f"--to {str(to)!r} is not a new or empty folder: name a folder for the checked copy alone")
    to.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".trilho-verify-", dir=to.parent) as tmp:  # one file system: moves
        local = download_model(model_uri, Path(tmp), tracking_uri)
        found = local if (local / "MLmodel").is_file() else next((p.parent for p in local.rglob("MLmodel")), local)
        to.mkdir(exist_ok=True)
        for item in found.iterdir():
            shutil.move(str(item), str(to / item.name))
    return to


def logged_files_digest(client: Any, version: Any) -> str | None:
    """The digest of a registered version's files: its own tag, and its logged model's, which must agree."""
    from mlflow.exceptions import MlflowException

    on_version = (version.tags or {}).get(FILES_TAG)
    model_id = getattr(version, "model_id", None)
    on_model = None
    if model_id:
        try:
            on_model = client.get_logged_model(model_id).tags.get(FILES_TAG)
        except MlflowException:
            on_model = None
    if on_version and on_model and on_version != on_model:
        raise TrackingError(f"model {version.name!r} version {version.version}: the files digest on the version "
                            f"({on_version[:12]}) and on its logged model ({on_model[:12]}) differ; it is not loaded")
    return on_version or on_model


def check_model_files(model_uri: str, local: Path, logged: str | None) -> None:
    """Refuse a downloaded model whose files differ from what was logged, in one line naming the
    file, before any of its code runs; a model logged before trilho recorded digests is said."""
    code = servable()
    try:
        checked = code.check_files(str(local), logged)
    except code.ModelFilesError as exc:
        raise TrackingError(f"model {model_uri!r}: {exc}") from None
    if not checked:
        log.warning("model %s was logged without file digests: its files cannot be checked", model_uri)


def load_model(model_uri: str, dst: Path, tracking_uri: str):
    """``mlflow.pyfunc.load_model`` from this tracking store alone, once its files are checked
    against what was logged, with a cheaper check of the model's requirements and Python.

    MLflow's own check maps every installed distribution to its modules (about a second on every
    load); the logged model pins its few requirements exactly, so comparing those pins with the
    installed versions says the same. A mismatch is a warning, as in MLflow.
    """
    import importlib.metadata

    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        dst = download_model(model_uri, dst, tracking_uri)
        # a model's code is imported by bare name (encoding, answers): another model's copy, loaded
        # earlier in this process, must not stand in for this one's (models logged before their
        # servable checked this themselves need it done here)
        for name in ("encoding", "answers"):
            sys.modules.pop(name, None)
        model = mlflow.pyfunc.load_model(str(dst), suppress_warnings=True)
    except (MlflowException, OSError, ValueError) as exc:  # ValueError: the model's own refusals
        raise TrackingError(f"cannot load model {model_uri!r}: {exc}") from exc
    requirements = dst / "requirements.txt"
    for line in requirements.read_text().splitlines() if requirements.is_file() else []:
        pinned = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)\s*", line)
        if not pinned:
            continue
        package, wanted = pinned.groups()
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != wanted:
            log.warning("model %s was logged with %s==%s; this environment has %s", model_uri, package, wanted,
                        installed or "no such package")
    logged_python = model.metadata.flavors.get("python_function", {}).get("python_version", "")
    if logged_python.split(".")[:2] != platform.python_version().split(".")[:2]:
        log.warning("model %s was logged with Python %s; this is Python %s", model_uri, logged_python or "?",
                    platform.python_version())
    return model


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def model_refusals() -> tuple[type[Exception], ...]:
    """The errors a loaded model raises when it refuses its input (its signature's checks)."""
    from mlflow.exceptions import MlflowException

    return (MlflowException,)
