"""A logged model loads only what trilho wrote: file digests checked before any of its code runs,
skops files trusted type by type (never a callable), no build-machine path in the MLmodel file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient

from tests.support.services import free_port
from tests.system.test_services import live_settings
from trilho import TrackingError, load_experiment
from trilho.data.synthetic import diabetes
from trilho.serving.artifact import save_model_files
from trilho.serving.predict import predict_batch
from trilho.tracking.model import FILES_TAG, download_model
from trilho.workflows.run import run_experiment

SERVABLE = Path(__file__).resolve().parents[2] / "src" / "trilho" / "model" / "servable.py"


def _servable():
    found = importlib.util.spec_from_file_location("trilho_servable_under_test", SERVABLE)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


def payload_skops(path: Path, marker: Path, callable_: str = "builtins.exec") -> Path:
    """A skops file whose root is a reduce node calling ``callable_`` on code that writes ``marker``."""
    module, _, name = callable_.rpartition(".")
    code = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(f"open({str(marker)!r}, 'w').write('ran')"), "is_json": True, "__id__": 1}
    schema = {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
              "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                          "content": [code], "__id__": 2},
              "__id__": 3, "protocol": 2, "_skops_version": "0.16.0"}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("schema.json", json.dumps(schema))
    return path


@pytest.mark.training
@pytest.mark.parametrize("callable_", ["builtins.exec", "builtins.eval"])
def test_a_skops_file_calling_a_builtin_is_refused_and_never_runs(tmp_path, callable_):
    import skops.io
    from sklearn.ensemble import RandomForestClassifier

    servable = _servable()
    marker = tmp_path / "pwned"
    bad = payload_skops(tmp_path / "classifier.skops", marker, callable_)
    assert skops.io.get_untrusted_types(file=bad) == [callable_]  # skops asks only whether to trust this name
    # an older model's spec (trusted packages, no type list) and a current one (its exact types) both refuse it
    for spec in ({"format": "skops", "trusted_packages": []}, {"format": "skops", "skops_types": ["sklearn.tree._tree.Tree"]}):
        with pytest.raises(servable.ModelFilesError, match=f"classifier.skops names types .*{callable_}"):
            servable.load_classifier(spec, str(bad))
    assert not marker.exists()
    # a real forest, saved as trilho saves it, loads with exactly the types it held
    X, y = np.random.default_rng(0).random((40, 3)), np.arange(40) % 2
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    from sklearn.pipeline import Pipeline

    folder = save_model_files(Pipeline([("model", forest)]), {"classes": ["a", "b"], "identifiers": [],
                                                             "features": ["x0", "x1", "x2"], "categorical": []}, tmp_path / "m")
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["skops_types"] == ["sklearn.tree._tree.Tree"]
    estimator, proba = servable.load_classifier(spec, str(folder / spec["file"]))
    assert np.allclose(proba(X), forest.predict_proba(X))


def test_only_classes_of_the_trusted_packages_are_trusted():
    servable = _servable()
    packages = servable.TRUSTED_PACKAGES
    assert servable.is_trusted_class("sklearn.tree._tree.Tree", packages)
    assert servable.is_trusted_class("numpy.dtype", packages)
    for name in ("builtins.exec", "builtins.eval", "builtins.getattr", "builtins.__import__", "builtins.open",
                 "os.system", "subprocess.Popen", "numpy.load", "sklearn.utils.__builtins__"):
        assert not servable.is_trusted_class(name, packages), name


@pytest.mark.training
def test_an_xgboost_file_that_cannot_be_written_is_one_line(tmp_path):
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from trilho import StorageError

    X, y = np.random.default_rng(0).random((40, 3)), np.arange(40) % 2
    fitted = Pipeline([("model", XGBClassifier(n_estimators=2).fit(X, y))])
    folder = tmp_path / "m"
    (folder / "booster.ubj").mkdir(parents=True)  # the file's place is taken: XGBoost's write fails
    with pytest.raises(StorageError, match="cannot write the model file .*booster.ubj") as err:
        save_model_files(fitted, {"classes": ["a", "b"], "identifiers": []}, folder)
    assert "\n" not in str(err.value)


@pytest.mark.training
def test_the_logged_model_records_its_files_digests_and_no_build_machine_path(settings, small_experiment, workdir):
    summary = run_experiment(small_experiment, settings).summary
    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version_by_alias("diabetes-xgboost", "champion")
    local = download_model(summary["model_uri"], workdir / "dl", settings.tracking_uri)
    manifest = (local / "trilho-files.json").read_bytes()
    files = json.loads(manifest)["files"]
    held = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()} - {"trilho-files.json"}
    assert set(files) == held and {"MLmodel", "servable.py", "code/encoding.py", "code/answers.py", "artifacts/booster.ubj"} <= held
    for rel, digest in files.items():
        assert hashlib.sha256((local / rel).read_bytes()).hexdigest() == digest
    digest = hashlib.sha256(manifest).hexdigest()
    assert client.get_logged_model(summary["model_uri"].removeprefix("models:/")).tags[FILES_TAG] == digest
    assert version.tags[FILES_TAG] == digest
    mlmodel = (local / "MLmodel").read_text()
    pyfunc = yaml.safe_load(mlmodel)["flavors"]["python_function"]
    assert pyfunc["model_code_path"] == "servable.py"
    assert all(a["uri"] == a["path"] for a in pyfunc["artifacts"].values())
    for path in (str(Path(__file__).resolve().parents[2] / "src"), "/tmp/", os.environ.get("TMPDIR", "/tmp")):
        assert path not in mlmodel.replace(yaml.safe_load(mlmodel)["artifact_path"], ""), path
    lake_copy = json.loads((settings_lake(settings) / summary["lake"]["reports"] / "model" / "logged-files.json").read_text())
    assert lake_copy[FILES_TAG] == digest and lake_copy["files"] == files


def settings_lake(settings) -> Path:
    return Path(settings.lake.removeprefix("file://"))


def _artifact_key(s3, bucket: str, suffix: str) -> str:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    found = [k for k in keys if k.endswith(suffix)]
    assert len(found) == 1, found
    return found[0]


def _serve_refuses(model_uri: str, env: dict[str, str], log: Path) -> str:
    """``mlflow models serve`` of the model: it must exit without ever answering; returns its log."""
    port = free_port()
    path = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                                 "local", "--host", "127.0.0.1", "--port", str(port)], env={**env, "PATH": path},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_split": {
                    "columns": ["x"], "data": [[1]]}}, timeout=2)
                pytest.fail(f"the tampered model was served: {answer.status_code} {answer.text[:200]}")
            except requests.RequestException:
                time.sleep(0.5)
        assert proc.poll() is not None, "mlflow models serve neither served nor exited"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    return log.read_text()


@pytest.mark.training
def test_a_tampered_model_behind_mlflow_server_on_seaweedfs_is_refused_and_its_payload_never_runs(
        workdir, seaweed, mlflow_server, small_csv, tmp_path):
    settings = live_settings(workdir, seaweed.endpoint, mlflow_server.url)
    exp = load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', "cv.n_repeats=1",
                                       'model.name="random_forest"', "model.params={n_estimators=10, max_depth=3}",
                                       'registry.model_name="trust-forest"'])
    summary = run_experiment(exp, settings).summary
    champion = "models:/trust-forest@champion"
    rows = workdir / "rows.csv"
    diabetes(rows=20, seed=9).drop(columns=["CLASS"]).to_csv(rows, index=False)
    model_id = summary["model_uri"].removeprefix("models:/")
    s3 = seaweed.client()
    key = _artifact_key(s3, "mlflow", f"{model_id}/artifacts/artifacts/classifier.skops")
    original = s3.get_object(Bucket="mlflow", Key=key)["Body"].read()
    marker = tmp_path / "pwned"

    # 1. a skops payload (a reduce node calling builtins.exec) in place of the forest
    s3.put_object(Bucket="mlflow", Key=key, Body=payload_skops(tmp_path / "p.skops", marker).read_bytes())
    with pytest.raises(TrackingError, match="model file artifacts/classifier.skops differs from the one logged"):
        predict_batch(champion, str(rows), settings)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url}
    served = _serve_refuses(champion, env, tmp_path / "serve.log")
    assert "classifier.skops differs from the one logged" in served
    assert not marker.exists()

    # 2. the forest back, and two lines prepended to the model's code
    s3.put_object(Bucket="mlflow", Key=key, Body=original)
    code_key = _artifact_key(s3, "mlflow", f"{model_id}/artifacts/servable.py")
    code = s3.get_object(Bucket="mlflow", Key=code_key)["Body"].read()
    edited = f"open({str(marker)!r}, 'w').write('ran')\nimport os\n".encode() + code
    s3.put_object(Bucket="mlflow", Key=code_key, Body=edited)
    with pytest.raises(TrackingError, match="model file servable.py differs from the one logged"):
        predict_batch(champion, str(rows), settings)
    verify = subprocess.run([sys.executable, "-m", "trilho", "verify", champion], env=env, capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 1 and "servable.py differs" in verify.stderr and len(verify.stderr.strip().splitlines()) == 1
    assert not marker.exists()

    # 3. put back as logged: it loads and predicts again
    s3.put_object(Bucket="mlflow", Key=code_key, Body=code)
    done = predict_batch(champion, str(rows), settings)
    assert done["rows"] == 20 and not marker.exists()


def test_a_pickle_in_place_of_the_xgboost_file_is_one_line(tmp_path):
    import pickle

    servable = _servable()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "booster.ubj"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(servable.ModelFilesError, match="booster.ubj is not an XGBoost model file") as err:
        servable.load_classifier({"format": "xgboost"}, str(path))
    assert "\n" not in str(err.value) and not marker.exists()
