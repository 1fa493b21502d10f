"""trilho serve against mlflow models serve, under load, across an alias swap, and the loop it closes:
the prediction log, trilho feedback and trilho monitor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pandas as pd
import pytest
import requests

from tests.support.services import model_server, trilho_server
from trilho import load_experiment
from trilho.data.synthetic import diabetes
from trilho.monitoring.prediction_log import read_log
from trilho.settings import load_settings
from trilho.storage import LocalLake
from trilho.workflows.run import run_experiment

pytestmark = pytest.mark.training

FAMILIES = {
    "xgboost": ["model.params.n_estimators=15", "model.params.max_depth=3"],
    "logistic_regression": ["model.name=logistic_regression", "model.params={}"],
    "random_forest": ["model.name=random_forest", "model.params={n_estimators=20, max_depth=4}"],
}
DROP = ["CLASS", "ID", "No_Pation"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One registered model per family, trained on the same 400 rows; a second xgboost version."""
    root = tmp_path_factory.mktemp("serve")
    settings = load_settings(env_file=None, lake=str(root / "lake"), tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                             cache_dir=root / "cache")
    data = root / "train.csv"
    diabetes(rows=400, seed=3).to_csv(data, index=False)
    source = [f"source.uri={json.dumps('file:' + str(data))}", 'source.sha256=""', "cv.n_repeats=1"]
    names = {}
    for family, sets in FAMILIES.items():
        exp = load_experiment("diabetes", [*source, *sets, f"registry.model_name=serve-{family}"])
        run_experiment(exp, settings)
        names[family] = f"serve-{family}"
    # a second version of the xgboost model, on other rows: what a retrain registers
    other = root / "train2.csv"
    diabetes(rows=400, seed=4).to_csv(other, index=False)
    exp = load_experiment("diabetes", [f"source.uri={json.dumps('file:' + str(other))}", 'source.sha256=""', "cv.n_repeats=1",
                                       *FAMILIES["xgboost"], "registry.model_name=serve-xgboost"])
    run_experiment(exp, settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_", "AWS_"))}
    env |= {"TRILHO_LAKE": settings.lake, "MLFLOW_TRACKING_URI": settings.tracking_uri, "TRILHO_CACHE_DIR": str(root / "cache"),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return {"settings": settings, "names": names, "env": env, "root": root}


def _rows(n: int, seed: int) -> pd.DataFrame:
    return diabetes(rows=max(n, 20), seed=seed).drop(columns=DROP).head(n)


GAPS = "missing written NA and NULL"


def _bodies(rows: pd.DataFrame) -> dict[str, tuple[bytes, str]]:
    """The same rows in every format of MLflow's protocol, with params too."""
    records = json.loads(rows.to_json(orient="records"))
    split = json.loads(rows.to_json(orient="split", index=False))
    out = {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: [r[c] for r in records] for c in rows.columns}},
        "labels only": {"dataframe_split": split, "params": {"output": "labels"}},
        "probabilities only": {"dataframe_records": records, "params": {"output": "proba"}},
        "explained": {"dataframe_split": split, "params": {"explain": True}},
        "one row": {"dataframe_records": records[:1]},
        "lower-case category": {"dataframe_records": [{**records[0], "Gender": " f "}]},
        # a CSV-to-JSON client or a web form: every number as text; R's NA and SQL's NULL for a gap
        "numbers as text": {"dataframe_records": [{k: str(v) if isinstance(v, int | float) else v for k, v in r.items()}
                                                  for r in records]},
        # (these models reject a gap: both servers refuse it as a gap, not as text that is no number)
        "missing written NA and NULL": {"dataframe_records": [{**records[0], "HbA1c": "NA", "AGE": "NULL"},
                                                              {**records[1], "BMI": "N/A"}]},
    }
    encoded = {k: (json.dumps(v).encode(), "application/json") for k, v in out.items()}
    encoded["csv"] = (rows.to_csv(index=False).encode(), "text/csv")
    return encoded


@pytest.mark.parametrize("family", list(FAMILIES))
def test_answers_equal_mlflow_models_serve(trained, family, tmp_path):
    uri = f"models:/{trained['names'][family]}/1"
    bodies = _bodies(_rows(6, 21))
    answers: dict[str, dict[str, object]] = {}
    with model_server(uri, trained["env"], tmp_path / "mlflow.log") as url:
        for name, (body, kind) in bodies.items():
            if name == "csv":  # MLflow reads CSV only by the signature's column types, and these are `any` (it answers 400)
                continue
            got = requests.post(url + "/invocations", data=body, headers={"Content-Type": kind}, timeout=60)
            if name == GAPS:
                assert got.status_code == 400 and "missing-value policy is 'reject'" in got.text, got.text[-800:]
                continue
            assert got.status_code == 200, (name, got.text[:500])
            answers[name] = got.json()
    with trilho_server(uri, trained["env"], tmp_path / "trilho.log", "--no-log") as (url, _):
        for name, (body, kind) in bodies.items():
            got = requests.post(url + "/invocations", data=body, headers={"Content-Type": kind}, timeout=60)
            if name == GAPS:
                assert got.status_code == 400 and "column 'AGE' has 1 missing" in got.json()["message"], got.text
                continue
            assert got.status_code == 200, (name, got.text[:500])
            assert got.json() == answers["dataframe_split" if name == "csv" else name], name
            assert got.headers["X-Model-Version"] == "1" and len(got.headers["X-Request-ID"]) == 32
        missing = {"dataframe_records": json.loads(_rows(2, 1).drop(columns=["HbA1c"]).to_json(orient="records"))}
        refused = requests.post(url + "/invocations", json=missing, timeout=30)
        assert refused.status_code == 400 and "missing feature columns ['HbA1c']" in refused.json()["message"]


def test_two_hundred_clients_get_answers_and_the_log_holds_every_row(trained, tmp_path):
    uri = f"models:/{trained['names']['xgboost']}/1"
    rows = _rows(200, 8)
    one = [json.dumps({"dataframe_records": json.loads(rows.iloc[[i]].to_json(orient="records"))}).encode()
           for i in range(len(rows))]
    hundred = json.dumps({"dataframe_split": json.loads(rows.head(100).to_json(orient="split", index=False))}).encode()
    env = {**trained["env"], "TRILHO_SERVE_LOG_PREFIX": "predictions/served-load"}
    with trilho_server(uri, env, tmp_path / "trilho.log") as (url, proc):
        def client(i: int) -> tuple[list[int], int]:
            statuses, rows_sent = [], 0
            with requests.Session() as s:
                for k in range(5):
                    body = hundred if (i + k) % 25 == 0 else one[(i * 5 + k) % len(one)]
                    got = s.post(url + "/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60)
                    statuses.append(got.status_code)
                    rows_sent += len(got.json()["predictions"]) if got.status_code == 200 else 0
            return statuses, rows_sent

        with ThreadPoolExecutor(200) as pool:
            done = list(pool.map(client, range(200)))
        metrics = requests.get(url + "/metrics", timeout=10).text
    statuses = [s for found, _ in done for s in found]
    served = sum(n for _, n in done)
    assert statuses.count(200) == 1000, {s: statuses.count(s) for s in set(statuses)}
    assert f"trilho_rows_total {float(served)}" in metrics
    assert 'trilho_requests_total{route="invocations",status="200"} 1000.0' in metrics
    assert "trilho_batch_rows_count" in metrics and "trilho_request_seconds_bucket" in metrics
    assert proc.returncode == 0  # a clean stop
    logged = read_log(LocalLake(trained["settings"].lake), "predictions/served-load/serve-xgboost")
    assert len(logged) == served and logged["request_id"].nunique() == 1000
    assert set(logged["model_version"]) == {"1"}
    assert logged["HbA1c"].notna().all() and set(logged["Gender"].str.strip().str.upper()) <= {"F", "M"}  # as sent


def test_an_alias_swap_under_load_fails_no_request(trained, tmp_path):
    from trilho.tracking.registry import promote_by_hand

    settings = trained["settings"]
    name = trained["names"]["xgboost"]
    promote_by_hand(settings.tracking_uri, name, "1", "serve test: start from version 1", "tests")
    body = json.dumps({"dataframe_records": json.loads(_rows(3, 9).to_json(orient="records"))}).encode()
    env = {**trained["env"], "TRILHO_SERVE_REFRESH_S": "0.5", "TRILHO_SERVE_LOG": "false"}
    with trilho_server(f"models:/{name}@champion", env, tmp_path / "trilho.log") as (url, _):
        stop = threading.Event()
        seen: list[list[tuple[int, str]]] = [[] for _ in range(8)]

        def load(i: int) -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    got = s.post(url + "/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60)
                    seen[i].append((got.status_code, got.headers.get("X-Model-Version", "")))

        threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        promote_by_hand(settings.tracking_uri, name, "2", "serve test: the swap", "tests")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(s and s[-1][1] == "2" for s in seen):
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(60)
        metrics = requests.get(url + "/metrics", timeout=10).text
        version = requests.get(url + "/version", timeout=10).json()
    every = [r for s in seen for r in s]
    assert {status for status, _ in every} == {200}, len(every)
    for answers in seen:  # each client saw version 1, then version 2, never back
        versions = [v for _, v in answers]
        assert versions[0] == "1" and versions[-1] == "2"
        assert versions == sorted(versions)
    assert "trilho_model_swaps_total 1.0" in metrics and 'version="2"' in metrics and 'version="1"' not in metrics
    assert version["model"]["version"] == "2" and version["model"]["requested"] == f"models:/{name}@champion"


def test_safe_defaults_a_token_a_size_limit_and_errors_without_traces(trained, tmp_path):
    uri = f"models:/{trained['names']['xgboost']}/1"
    env = {**trained["env"], "TRILHO_SERVE_MAX_BODY_BYTES": "4000", "TRILHO_SERVE_LOG": "false"}
    rows = _rows(3, 2)
    body = {"dataframe_records": json.loads(rows.to_json(orient="records"))}
    with trilho_server(uri, env, tmp_path / "trilho.log", "--token", "s3cret") as (url, _):
        assert requests.get(url + "/health", timeout=5).status_code == 200  # a probe needs no token
        assert requests.post(url + "/invocations", json=body, timeout=30).status_code == 401
        wrong = requests.post(url + "/invocations", json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert requests.get(url + "/metrics", timeout=5).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert requests.post(url + "/invocations", json=body, headers=auth, timeout=30).status_code == 200
        big = {"dataframe_records": json.loads(_rows(60, 2).to_json(orient="records"))}
        too_big = requests.post(url + "/invocations", json=big, headers=auth, timeout=30)
        assert too_big.status_code == 413 and "TRILHO_SERVE_MAX_BODY_BYTES" in too_big.json()["message"]
        typed = {"dataframe_records": [{**body["dataframe_records"][0], "AGE": "old"}]}
        for bad, status, says in [(json.dumps(typed).encode(), 400, "column 'AGE' has non-numeric values ['old']"),
                                  (b'{"dataframe_records": [{"AGE": 1', 400, "not valid JSON"),
                                  (b"<xml/>", 415, "send application/json or text/csv")]:
            kind = "application/xml" if status == 415 else "application/json"
            got = requests.post(url + "/invocations", data=bad, headers={**auth, "Content-Type": kind}, timeout=30)
            assert got.status_code == status and says in got.json()["message"], got.text
            assert "Traceback" not in got.text and str(tmp_path) not in got.text and "site-packages" not in got.text
        metrics = requests.get(url + "/metrics", headers=auth, timeout=5).text
    assert 'trilho_request_errors_total{kind="unauthorized"} 2.0' in metrics
    assert 'trilho_request_errors_total{kind="too_large"} 1.0' in metrics


def _post(url: str, rows: pd.DataFrame, per: int) -> list[tuple[str, int]]:
    ids = []
    with requests.Session() as s:
        for start in range(0, len(rows), per):
            part = rows.iloc[start:start + per]
            got = s.post(url + "/invocations", json={"dataframe_records": json.loads(part.to_json(orient="records"))},
                         timeout=60)
            assert got.status_code == 200, got.text
            ids += [(got.headers["X-Request-ID"], i) for i in range(len(part))]
    return ids


def _monitor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trilho", "monitor", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_monitor_flags_shifted_traffic_and_not_traffic_like_the_training_data(trained, tmp_path):
    name = trained["names"]["logistic_regression"]
    uri = f"models:/{name}/1"
    env = {**trained["env"], "TRILHO_SERVE_LOG_PREFIX": "predictions/served-monitor"}
    like = diabetes(rows=600, seed=31)
    shifted = diabetes(rows=400, seed=32).drop(columns=DROP)
    shifted["HbA1c"] += 3.0
    shifted["BMI"] *= 1.4
    batch = tmp_path / "batch.csv"
    diabetes(rows=300, seed=33).to_csv(batch, index=False)
    from trilho.serving.predict import predict_batch

    predict_batch(uri, str(batch), trained["settings"])  # batch predictions of this version are monitored too
    with trilho_server(uri, env, tmp_path / "trilho.log") as (url, _):
        ids = _post(url, like.drop(columns=DROP), 20)
        time.sleep(1.1)  # a batch prediction's time is kept to the second
        between = datetime.now(UTC)
        time.sleep(0.05)
        _post(url, shifted, 50)
    # the labels of the first window come back, by request id and row
    labels = pd.DataFrame({"request_id": [r for r, _ in ids], "row": [i for _, i in ids],
                           "label": like["CLASS"].str.lower().to_numpy()})  # any case: matched to the classes
    labels.to_csv(tmp_path / "labels.csv", index=False)
    fed = subprocess.run([sys.executable, "-m", "trilho", "feedback", str(tmp_path / "labels.csv"), "-m", uri], env=env,
                         capture_output=True, text=True, timeout=300)
    assert fed.returncode == 0 and "600 labels kept, joined on ['request_id']" in fed.stdout, fed.stdout + fed.stderr

    clean = _monitor(env, uri, "--until", between.isoformat(), "--json")
    assert clean.returncode == 0, clean.stdout[-2000:] + clean.stderr[-2000:]
    report = json.loads(clean.stdout)
    assert report["traffic"]["sources"] == {"served": 600, "batch": 300}
    assert report["traffic"]["rows"] == 900 and report["flags"] == [] and not report["flagged"]
    assert report["live"]["rows"] == 600 and "f1_macro" in report["live"]["metrics"]
    assert report["live"]["metrics"]["f1_macro"]["cv"]["mean"] > 0

    drifted = _monitor(env, uri, "--since", between.isoformat())
    assert drifted.returncode == 3, drifted.stdout[-2000:] + drifted.stderr[-2000:]
    assert "FLAGGED HbA1c: PSI" in drifted.stdout and "FLAGGED BMI: PSI" in drifted.stdout
    lake = LocalLake(trained["settings"].lake)
    reports = [k for k in lake.list(f"reports/monitor/{name}/1/") if k.endswith("monitor.json")]
    assert len(reports) == 2
    latest = json.loads(lake.get_bytes(sorted(reports)[-1]))
    assert {f["feature"] for f in latest["flags"] if f["kind"] == "drift"} == {"HbA1c", "BMI"}
    assert lake.exists(sorted(reports)[-1].replace("monitor.json", "report.html"))
    from trilho.tracking.store import open_client

    client = open_client(trained["settings"].tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(f"{name}-monitor").experiment_id])
    assert sorted(r.data.tags["trilho.flagged"] for r in runs) == ["false", "true"]
    assert any(r.data.metrics.get("psi_HbA1c", 0) >= 0.25 for r in runs)


def test_the_cli_refuses_bad_options_in_one_line(trained):
    env = trained["env"]
    done = subprocess.run([sys.executable, "-m", "trilho", "serve", "models:/x/1", "--workers", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "--workers 0: must be at least 1" in done.stderr
    for workers in ("1", "2"):
        missing = subprocess.run([sys.executable, "-m", "trilho", "serve", "models:/no-such-model@champion", "--workers",
                                  workers], env=env, capture_output=True, text=True, timeout=120)
        assert missing.returncode == 1 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    bad = _monitor(env, f"models:/{trained['names']['xgboost']}/1", "--since", "yesterday")
    assert bad.returncode == 1 and "--since/--until 'yesterday'" in bad.stderr
