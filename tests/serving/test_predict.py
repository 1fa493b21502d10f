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

from tests.conftest import FAST
from tests.support.services import model_server
from trilho import DataValidationError, TrackingError, load_experiment
from trilho.serving.predict import predict_batch
from trilho.storage import LocalLake
from trilho.workflows.run import run_experiment

CHAMPION = "models:/diabetes-xgboost@champion"


@pytest.fixture
def trained(settings, small_csv):
    exp = load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', *FAST])
    return run_experiment(exp, settings).summary


@pytest.mark.training
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


@pytest.mark.training
def test_new_rows_written_by_r_with_na_in_a_numeric_column_are_predicted_and_counted(settings, small_csv, workdir):
    """The model was trained on rows with no gap (as init proposes for such data, gaps are imputed);
    R writes the new rows' gaps as NA, SQL as NULL ("column 'HbA1c' has non-numeric values ['NA']" before)."""
    exp = load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', *FAST,
                                       'data.missing="impute"'])
    run_experiment(exp, settings)
    raw = pd.read_csv(small_csv).head(20).astype({"HbA1c": "object", "BMI": "object"})
    raw.loc[[2, 5], "HbA1c"] = "NA"
    raw.loc[7, "BMI"] = "NULL"
    raw.to_csv(workdir / "from-r.csv", index=False)
    assert (workdir / "from-r.csv").read_text().count(",NA,") == 2
    done = predict_batch(CHAMPION, str(workdir / "from-r.csv"), settings)
    assert done["rows"] == 20 and done["missing_values"] == {"HbA1c": 2, "BMI": 1}
    out = pq.read_table(LocalLake(settings.lake).root / done["key"]).to_pandas()
    assert out["prediction"].notna().all() and len(out) == 20


@pytest.mark.training
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
    raw.head(0).to_csv(workdir / "header.csv", index=False)  # "NULL pointer access" from the model before
    with pytest.raises(DataValidationError, match="no data rows: input .* holds a header line only"):
        predict_batch(CHAMPION, str(workdir / "header.csv"), settings)
    (workdir / "long.csv").write_text(raw.head(0).to_csv(index=False) + "1," * 4_500_000 + "\n")
    with pytest.raises(DataValidationError, match="'long.csv' has a line of 9,000,000 bytes"):
        predict_batch(CHAMPION, str(workdir / "long.csv"), settings)
    with pytest.raises(TrackingError, match="not found.*trilho models"):
        predict_batch("models:/no-such-model@champion", str(small_csv), settings)
    assert not LocalLake(settings.lake).list("predictions/")  # nothing half-written


@pytest.mark.training
def test_loading_warns_when_the_environment_differs_from_the_models_pins(settings, trained, workdir,
                                                                         monkeypatch, caplog):
    import importlib.metadata

    from trilho.tracking.model import load_model
    real = importlib.metadata.version
    with caplog.at_level("WARNING", logger="trilho.tracking.model"):
        load_model(trained["model_uri"], workdir / "same", settings.tracking_uri)
        assert not caplog.records  # the model's pins are this environment's versions
        monkeypatch.setattr(importlib.metadata, "version", lambda pkg: "0.0" if pkg == "xgboost" else real(pkg))
        model = load_model(trained["model_uri"], workdir / "other", settings.tracking_uri)
    assert [r.getMessage() for r in caplog.records] == [
        f"model {trained['model_uri']} was logged with xgboost=={real('xgboost')}; this environment has 0.0"]
    assert model.metadata.get_input_schema() is not None
    import platform

    logged = platform.python_version()
    monkeypatch.setattr(importlib.metadata, "version", real)
    monkeypatch.setattr(platform, "python_version", lambda: "3.0.0")
    caplog.clear()
    with caplog.at_level("WARNING", logger="trilho.tracking.model"):
        load_model(trained["model_uri"], workdir / "old-python", settings.tracking_uri)
    assert [r.getMessage() for r in caplog.records] == [
        f"model {trained['model_uri']} was logged with Python {logged}; this is Python 3.0.0"]


@pytest.mark.training
def test_loading_refuses_an_untrusted_payload(settings, trained, workdir):
    """A pickle slipped in place of the booster is never unpickled: loading fails before any of it runs."""
    from trilho.tracking.model import download_model

    local = str(download_model(trained["model_uri"], workdir / "model", settings.tracking_uri))
    booster = next(p for p in (workdir / "model").rglob("booster.ubj"))
    marker = workdir / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    booster.write_bytes(pickle.dumps(Payload()))
    code = "import sys, mlflow; mlflow.pyfunc.load_model(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, local], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "model file artifacts/booster.ubj differs from the one logged" in done.stderr
    assert not marker.exists()


@pytest.mark.training
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


def _encode_both(frame: pd.DataFrame, spec: dict):
    """encode_features's frame as floats and encode_matrix's matrix, or the error each raised."""
    import numpy as np

    from trilho.model.encoding import encode_features, encode_matrix

    out = []
    for encode in (lambda: encode_features(frame, spec).to_numpy(dtype="float64", na_value=np.nan),
                   lambda: encode_matrix(frame, spec)):
        try:
            out.append(encode())
        except ValueError as exc:
            out.append(str(exc))
    return out


def test_the_fast_prediction_encoding_is_the_training_encoding():
    """encode_matrix (what a served XGBoost model runs) gives what encode_features gives, value for
    value and error for error, on frames of every kind of column and gap."""
    import numpy as np

    from trilho.model.encoding import feature_spec

    rng = np.random.default_rng(11)
    maps = {"flags": {"YES": 1, "NO": 0}, "codes": {"0": 0, "1": 1, "2": 2}, "kind": {"A": 0, "B": 1, "C": 2, "1": 3}}
    specs = {}  # one spec per policy for every trial: what a served model remembers carries over
    for policy in ("impute", "native", "drop", "reject"):
        specs[policy] = feature_spec(["ints", "floats", "text_numbers", "flags", "codes", "kind"], maps, ["x", "y"],
                                     [], policy)
        specs[policy]["fill"] = {"ints": 1.0, "floats": 0.5, "text_numbers": 2.0, "flags": 0.0, "kind": 2.0}
    for trial in range(300):
        n = int(rng.integers(1, 40)) if trial % 10 else 1500  # a request's few rows, and a batch
        frame = pd.DataFrame({
            "ints": rng.integers(-5, 50, n),
            "floats": rng.normal(size=n),
            "text_numbers": rng.choice(["1.5", " 2", "3e2", None, "-4"], n).astype(object),
            "flags": rng.choice(["Yes", "no", " YES ", None], n).astype(object),
            "codes": rng.choice([0.0, 1.0, 2.0, np.nan], n),
            # 1, "1" and 1.0 are three values to the text conversion: "1", "1" and "1.0"
            "kind": np.array([[ "a", "B", " c ", "never-seen", None, 1, "1", 1.0][i] for i in rng.integers(0, 8, n)],
                             dtype=object),
        })
        if rng.random() < 0.3:
            frame["kind"] = frame["kind"].map(lambda v: v if isinstance(v, str) else None).astype("string")
        if rng.random() < 0.5:
            frame.loc[rng.random(n) < 0.2, "floats"] = rng.choice([np.nan, np.inf, -np.inf])
        if rng.random() < 0.2:
            frame.loc[0, "text_numbers"] = "not a number"
        policy = str(rng.choice(list(specs)))
        slow, fast = _encode_both(frame, specs[policy])
        if isinstance(slow, str) or isinstance(fast, str):
            assert slow == fast, (trial, policy)
        else:
            np.testing.assert_array_equal(fast, slow, err_msg=f"trial {trial}, policy {policy}")
    assert len(specs["impute"]["__memo__"]["kind"]) >= 8  # values were remembered, and the answers held
    spec = specs["impute"]
    assert "missing feature columns ['kind']" in _encode_both(frame.drop(columns=["kind"]), spec)[1]


@pytest.mark.parametrize("output", ["both", "labels", "proba"])
def test_the_served_records_are_the_frames_records(output):
    """What a model inside `mlflow models serve` hands back is what MLflow would make of its frame."""
    import numpy as np

    from trilho.model.answers import model_outputs
    from trilho.model.encoding import feature_spec

    rng = np.random.default_rng(5)
    spec = feature_spec(["a", "kind"], {"kind": {"X": 0, "Y": 1}}, ["no", "yes", "maybe"], [], "impute")
    spec["fill"] = {"a": 0.0, "kind": 0.0}
    for n in (1, 7, 100):
        frame = pd.DataFrame({"a": rng.normal(size=n), "kind": rng.choice(["x", "Y", None], n)})
        weights = rng.random((n, 3))
        proba = weights / weights.sum(axis=1, keepdims=True)
        for matrix in (True, False):
            frame_out = model_outputs(lambda X, p=proba: p, frame, spec, output, matrix=matrix)
            records = model_outputs(lambda X, p=proba: p, frame, spec, output, matrix=matrix, records=True)
            expected = (frame_out.to_frame() if output == "labels" else frame_out).to_dict(orient="records")
            assert records == expected
            assert json.dumps(records) == json.dumps(expected)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_served_booster_predicts_a_requests_rows_on_one_thread(workdir, classes):
    """A request's few rows go to a one-thread copy of the booster (XGBoost's idle threads spin and
    take a core from the server's other requests), through XGBoost's C function for dense rows; a
    big batch keeps every thread. Every path gives the booster's own probabilities, gaps included,
    and the copy leaves the booster's settings alone."""
    import numpy as np
    import xgboost

    from trilho.model.code import servable as _servable

    servable = _servable()
    rng = np.random.default_rng(3)
    X = rng.normal(size=(servable.SMALL_BATCH + 500, 4))
    y = np.digitize(X[:, 0] + rng.normal(size=len(X)), np.linspace(-1, 1, classes - 1))
    X[rng.random(X.shape) < 0.1] = np.nan
    xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y).get_booster().save_model(workdir / "b.ubj")
    booster, proba = servable.load_classifier({"format": "xgboost"}, str(workdir / "b.ubj"))

    def threads(b):
        return json.loads(b.save_config())["learner"]["generic_param"]["nthread"]

    assert proba.matrix and threads(proba.single) == "1" and threads(booster) == "0"  # 0: every core
    assert proba.direct is not None  # XGBoost's C function was reachable and agreed with inplace_predict
    reference = xgboost.Booster(model_file=str(workdir / "b.ubj"))
    used = []
    direct, every_thread = proba.direct, proba.booster.inplace_predict
    proba.direct = lambda data: used.append("direct") or direct(data)
    proba.booster.inplace_predict = lambda data: used.append("every thread") or every_thread(data)
    for n in (1, 5, servable.SMALL_BATCH, servable.SMALL_BATCH + 1, len(X)):
        expected = reference.inplace_predict(X[:n].astype(np.float32))
        found = proba(X[:n])
        assert found.shape == expected.shape == ((n,) if classes == 2 else (n, classes))
        np.testing.assert_array_equal(found, expected)
    assert used == ["direct"] * 3 + ["every thread"] * 2


def test_a_served_model_works_one_requests_rows_at_a_time(workdir):
    """Requests of a few rows go through the model one at a time (side by side, every call into
    Arrow or XGBoost sends a request to the back of the queue for the GIL); big batches still
    run side by side."""
    import threading
    import time
    from types import SimpleNamespace

    import numpy as np
    import xgboost

    from trilho.model.code import servable as _servable
    from trilho.model.encoding import feature_spec

    servable = _servable()
    rng = np.random.default_rng(8)
    X = rng.normal(size=(300, 2))
    xgboost.XGBClassifier(n_estimators=5).fit(X, (X[:, 0] > 0).astype(int)).get_booster().save_model(workdir / "b.ubj")
    spec = feature_spec(["a", "b"], {}, ["no", "yes"], [], "impute") | {"fill": {"a": 0.0, "b": 0.0}, "format": "xgboost"}
    (workdir / "spec.json").write_text(json.dumps(spec))
    model = servable.LabelledModel()
    model.load_context(SimpleNamespace(artifacts={"spec": str(workdir / "spec.json"), "classifier": str(workdir / "b.ubj")}))
    proba, active, most, meet = model.proba_, [0], [0], threading.Barrier(2, timeout=30)

    def watched(X):
        active[0] += 1
        most[0] = max(most[0], active[0])
        if len(X) > servable.SMALL_BATCH:
            meet.wait()  # both big batches must be inside at once, or this times out
        else:
            time.sleep(0.05)
        active[0] -= 1
        return proba(X)

    watched.matrix = True
    model.proba_ = watched
    small = pd.DataFrame({"a": [0.5], "b": [-1.0]})
    big = pd.DataFrame({"a": rng.normal(size=servable.SMALL_BATCH + 1), "b": 0.0})
    for frame, callers, expected in ((small, 4, 1), (big, 2, 2)):
        most[0] = 0
        answers: list = []
        threads = [threading.Thread(target=lambda f=frame, a=answers: a.append(model.predict(None, f))) for _ in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert most[0] == expected and len(answers) == callers
        assert list(answers[0].columns) == ["prediction", "proba_no", "proba_yes"]


def test_a_missing_marker_is_a_missing_value_to_both_encodings():
    """data.missing_markers = ["?"]: the logged model reads "?" (any case, spaces) as it reads an
    empty cell, in a number column and a category alike; a value that is no marker is still refused."""
    import numpy as np

    from trilho.model.encoding import feature_spec

    spec = feature_spec(["n", "c"], {"c": {"A": 0, "B": 1}}, ["x", "y"], [], "native", ["?", "n/a"])
    marked = pd.DataFrame({"n": ["1.5", " ? ", "N/A", "2"], "c": ["a", "?", "b", " N/a"]}, dtype=object)
    empty = pd.DataFrame({"n": [1.5, None, None, 2.0], "c": ["a", None, "b", None]})
    slow, fast = _encode_both(marked, spec)
    expected = np.array([[1.5, 0], [np.nan, np.nan], [np.nan, 1], [2, np.nan]])
    np.testing.assert_array_equal(slow, expected)
    np.testing.assert_array_equal(fast, expected)
    np.testing.assert_array_equal(_encode_both(empty, spec)[1], expected)
    marked.loc[0, "n"] = "??"
    slow, fast = _encode_both(marked, spec)
    assert slow == fast and "column 'n' has non-numeric values ['??']" in slow
    assert _encode_both(marked, feature_spec(["n", "c"], {"c": {"A": 0}}, ["x", "y"], [], "native"))[0] \
        .startswith("column 'n' has non-numeric values")  # no markers: "?" is not a number


def _tumours(rows: int = 400, seed: int = 4) -> pd.DataFrame:
    """A label the data writes "Benign" and "Malignant", with a few rows in other cases."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bad = rng.random(rows) < 0.35
    frame = pd.DataFrame({"case": np.arange(rows), "radius": (rng.normal(12, 2, rows) + 4 * bad).round(2),
                          "texture": (rng.normal(19, 4, rows) + 2 * bad).round(2),
                          "diagnosis": np.where(bad, "Malignant", "Benign").astype(object)})
    frame.loc[frame.index[:3], "diagnosis"] = ["benign", "BENIGN ", " malignant"]
    return frame


@pytest.mark.training
def test_predictions_and_reports_use_the_datas_own_spelling_of_each_class(workdir, settings):
    """`trilho init` -> run -> predict on a label written "Benign"/"Malignant": the prediction
    column, the proba_<class> columns, the logged model's signature, the summary and the reports
    name the classes so, not BENIGN/MALIGNANT; the codes are the same as before."""
    from trilho.experiment import Experiment
    from trilho.init.profile import init_experiment
    from trilho.tracking.model import load_model, resolve_model

    path = workdir / "tumours.csv"
    _tumours().to_csv(path, index=False)
    proposal = init_experiment(f"file:{path}", settings, target="diagnosis")
    assert proposal.config["data"]["labels"] == ["Benign", "Malignant"]  # codes in the order BENIGN, MALIGNANT
    config = proposal.config | {"cv": {**proposal.config["cv"], "n_repeats": 1},
                                "model": {"name": "xgboost", "params": {"n_estimators": 15, "max_depth": 3}}}
    exp = Experiment.model_validate(config)
    summary = run_experiment(exp, settings).summary
    assert summary["holdout"]["labels"] == ["Benign", "Malignant"] and summary["holdout"]["label_codes"] == [0, 1]
    assert {"Benign", "Malignant"} <= set(summary["holdout"]["report"])
    report = LocalLake(settings.lake).root / summary["lake"]["reports"]
    assert "Benign" in (report / "classification_report.txt").read_text()
    assert set(json.loads((report / "validation_report.json").read_text())["class_counts"]) == {"Benign", "Malignant"}

    uri = f"models:/{exp.registry.model_name}@champion"
    logged = load_model(resolve_model(uri, settings.tracking_uri)["uri"], workdir / "logged", settings.tracking_uri)
    assert logged.metadata.get_output_schema().input_names() == ["prediction", "proba_Benign", "proba_Malignant"]
    done = predict_batch(uri, str(path), settings)
    out = pq.read_table(LocalLake(settings.lake).root / done["key"]).to_pandas()
    assert list(out.columns) == ["case", "prediction", "proba_Benign", "proba_Malignant"]
    assert set(out["prediction"]) == {"Benign", "Malignant"}


def test_a_model_logged_before_names_its_classes_as_it_did(workdir):
    """A logged model's spec.json carries the names its outputs use: one logged before (upper-cased
    names) still answers BENIGN / proba_BENIGN; one logged now, its data's spelling."""
    from types import SimpleNamespace

    import numpy as np
    import xgboost

    from trilho.model.code import servable as _servable
    from trilho.model.encoding import feature_spec

    servable = _servable()
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 2))
    xgboost.XGBClassifier(n_estimators=5).fit(X, (X[:, 0] > 0).astype(int)).get_booster().save_model(workdir / "b.ubj")
    rows = pd.DataFrame({"a": [2.0, -2.0], "b": [0.0, 0.0]})
    for names in (["BENIGN", "MALIGNANT"], ["Benign", "Malignant"]):
        spec = feature_spec(["a", "b"], {}, names, [], "impute") | {"fill": {"a": 0.0, "b": 0.0}, "format": "xgboost"}
        (workdir / "spec.json").write_text(json.dumps(spec))
        model = servable.LabelledModel()
        model.load_context(SimpleNamespace(artifacts={"spec": str(workdir / "spec.json"),
                                                      "classifier": str(workdir / "b.ubj")}))
        answer = model.predict(None, rows)
        assert list(answer.columns) == ["prediction", *(f"proba_{n}" for n in names)]
        assert answer["prediction"].tolist() == [names[1], names[0]]


@pytest.mark.training
def test_verify_to_a_folder_keeps_the_checked_copy_at_its_top_and_nothing_when_a_file_differs(settings, trained,
                                                                                                 workdir):
    """`trilho verify … --to DIR && mlflow models serve -m DIR`: the model sat in DIR/artifacts, and a
    failed check left the changed files there."""
    import mlflow

    from trilho.errors import ConfigError
    from trilho.tracking.model import keep_verified

    kept = keep_verified(CHAMPION, workdir / "checked", settings.tracking_uri)
    assert (kept / "MLmodel").is_file()
    model = mlflow.pyfunc.load_model(str(kept))  # what `mlflow models serve -m DIR` loads
    assert model.metadata.get_input_schema() is not None
    with pytest.raises(ConfigError, match="not a new or empty folder"):
        keep_verified(CHAMPION, workdir / "checked", settings.tracking_uri)

    stored = [p for p in workdir.rglob("servable.py") if "checked" not in p.parts and "lake" not in p.parts]
    assert stored
    for path in stored:
        path.write_text(path.read_text() + "\n# changed\n")
    with pytest.raises(TrackingError, match="servable.py differs"):
        keep_verified(CHAMPION, workdir / "bad", settings.tracking_uri)
    assert not (workdir / "bad").exists() or not any((workdir / "bad").iterdir())
    assert not [p for p in workdir.iterdir() if p.name.startswith(".trilho-verify-")]  # the check's folder went too
