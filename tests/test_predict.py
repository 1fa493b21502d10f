"""Batch prediction into the lake and online serving with ``mlflow models serve``."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests

from trilho import DataValidationError, TrackingError, load_experiment
from trilho.pipeline import run_experiment
from trilho.predict import predict_batch
from trilho.storage import LocalLake

from .conftest import FAST
from .services import model_server

CHAMPION = "models:/diabetes-xgboost@champion"


@pytest.fixture
def trained(settings, small_csv):
    exp = load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', *FAST])
    return run_experiment(exp, settings).summary


def test_batch_predict_from_the_lake_is_chunked_validated_and_idempotent(settings, trained, small_csv):
    lake = LocalLake(settings.lake)
    raw_key = trained["lake"]["raw"]
    done = predict_batch(CHAMPION, raw_key, settings, chunk_rows=64)  # 300 rows -> 5 chunks
    assert not done["skipped"] and done["rows"] == 300 and done["model_version"] == "1"
    assert done["key"] == f"predictions/diabetes-xgboost/v1/{trained['data']['sha256']}/predictions.parquet"
    out = pq.read_table(lake.root / done["key"]).to_pandas()
    assert list(out.columns) == ["ID", "No_Pation", "prediction", "proba_N", "proba_Y", "proba_P"]
    raw = pd.read_csv(small_csv)
    assert out["ID"].tolist() == raw["ID"].tolist()  # identifiers kept, in input order
    assert set(out["prediction"]) <= {"N", "Y", "P"}
    assert (out[["proba_N", "proba_Y", "proba_P"]].sum(axis=1) - 1).abs().max() < 1e-5
    manifest = json.loads(lake.get_bytes(done["key"].replace("predictions.parquet", "manifest.json")))
    assert manifest["input_sha256"] == trained["data"]["sha256"] and manifest["model_uri"] == "models:/diabetes-xgboost/1"
    # the same model and input again: nothing written
    before = (lake.root / done["key"]).stat().st_mtime_ns
    again = predict_batch(CHAMPION, raw_key, settings)
    assert again["skipped"] and (lake.root / done["key"]).stat().st_mtime_ns == before
    # a local Parquet file gives the same predictions as the CSV
    parquet = settings.lake + "/../input.parquet"
    raw.to_parquet(parquet, index=False)
    from_parquet = predict_batch(CHAMPION, parquet, settings, chunk_rows=100)
    other = pq.read_table(lake.root / from_parquet["key"]).to_pandas()
    assert other["prediction"].tolist() == out["prediction"].tolist()


def test_batch_predict_refuses_bad_input_clearly(settings, trained, small_csv, workdir):
    raw = pd.read_csv(small_csv)
    raw.drop(columns=["HbA1c"]).to_csv(workdir / "missing.csv", index=False)
    with pytest.raises(DataValidationError, match=r"lacks the model's columns \['HbA1c'\]"):
        predict_batch(CHAMPION, str(workdir / "missing.csv"), settings)
    bad = raw.astype({"AGE": "object"})
    bad.loc[7, "AGE"] = "old"
    bad.to_csv(workdir / "typed.csv", index=False)
    with pytest.raises(DataValidationError, match=r"rows 1-300: the model refused them.*AGE"):
        predict_batch(CHAMPION, str(workdir / "typed.csv"), settings)
    with pytest.raises(TrackingError, match="not found.*trilho models"):
        predict_batch("models:/no-such-model@champion", str(small_csv), settings)
    assert not LocalLake(settings.lake).list("predictions/")  # nothing half-written


def test_loading_warns_when_the_environment_differs_from_the_models_pins(settings, trained, workdir,
                                                                         monkeypatch, caplog):
    import importlib.metadata

    import mlflow

    from trilho.predict import load_model

    mlflow.set_tracking_uri(settings.tracking_uri)
    real = importlib.metadata.version
    with caplog.at_level("WARNING", logger="trilho.predict"):
        load_model(trained["model_uri"], workdir / "same")
        assert not caplog.records  # the model's pins are this environment's versions
        monkeypatch.setattr(importlib.metadata, "version", lambda pkg: "0.0" if pkg == "xgboost" else real(pkg))
        model = load_model(trained["model_uri"], workdir / "other")
    assert [r.getMessage() for r in caplog.records] == [
        f"model {trained['model_uri']} was logged with xgboost=={real('xgboost')}; this environment has 0.0"]
    assert model.metadata.get_input_schema() is not None
    import platform

    logged = platform.python_version()
    monkeypatch.setattr(importlib.metadata, "version", real)
    monkeypatch.setattr(platform, "python_version", lambda: "3.0.0")
    caplog.clear()
    with caplog.at_level("WARNING", logger="trilho.predict"):
        load_model(trained["model_uri"], workdir / "old-python")
    assert [r.getMessage() for r in caplog.records] == [
        f"model {trained['model_uri']} was logged with Python {logged}; this is Python 3.0.0"]


def test_loading_refuses_an_untrusted_payload(settings, trained, workdir):
    """A pickle slipped in place of the booster is never unpickled: loading fails before any of it runs."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(trained["model_uri"], dst_path=str(workdir / "model"),
                                                tracking_uri=settings.tracking_uri)
    booster = next(p for p in (workdir / "model").rglob("booster.ubj"))
    marker = workdir / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    booster.write_bytes(pickle.dumps(Payload()))
    code = "import sys, mlflow; mlflow.pyfunc.load_model(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, local], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "XGBoostError" in done.stderr
    assert not marker.exists()


def test_online_serving_answers_invocations(settings, trained, small_csv, workdir):
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    with model_server(CHAMPION, env, workdir / "serve.log") as url:
        rows = pd.read_csv(small_csv).drop(columns=["CLASS", "ID", "No_Pation"]).head(5)
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        answer = requests.post(url + "/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 5 and {"prediction", "proba_N", "proba_Y", "proba_P"} <= set(predictions[0])
        assert all(p["prediction"] in {"N", "Y", "P"} for p in predictions)
        bad = {"dataframe_split": json.loads(rows.drop(columns=["HbA1c"]).to_json(orient="split", index=False))}
        refused = requests.post(url + "/invocations", json=bad, timeout=30)
        assert refused.status_code == 400 and "HbA1c" in refused.text
