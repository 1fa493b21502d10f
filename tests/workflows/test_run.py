"""End to end on the embedded default: a real local lake and a real SQLite MLflow store."""

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FAST
from tests.support.processes import loky_children
from trilho import EvaluationError, TrackingError, load_experiment
from trilho.storage import LocalLake
from trilho.workflows.run import run_experiment


@pytest.mark.training
def test_embedded_run_tracks_everything(settings, small_experiment, small_csv):
    result = run_experiment(small_experiment, settings)
    s = result.summary
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(s["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "experimento_xgboost"
    # the resolved config as params
    assert run.data.params["cv.n_repeats"] == "1" and run.data.params["model.params.n_estimators"] == "15"
    assert run.data.params["data.rows"] == "300"
    # fold scores as one series per metric, summaries beside them
    history = client.get_metric_history(s["run_id"], "accuracy_fold")
    assert [m.step for m in history] == list(range(5))
    assert [m.value for m in history] == pytest.approx(list(result.cv.folds["accuracy"]))
    acc = s["cv"]["metrics"]["accuracy"]
    assert run.data.metrics["accuracy_mean"] == pytest.approx(acc["mean"])
    assert run.data.metrics["accuracy_pct_low"] == pytest.approx(acc["low"])
    assert run.data.metrics["holdout_f1_weighted"] == pytest.approx(s["holdout"]["scores"]["f1_weighted"])
    # artifacts, in MLflow and copied to the lake
    names = {a.path for a in client.list_artifacts(s["run_id"])}
    expected = {"cv_boxplot.png", "confusion_matrix.png", "confusion_matrix_oof.png", "classification_report.txt",
                "classification_report.json", "results.csv", "results.json", "validation_report.json",
                "manifest.json", "config.json", "intervals.png", "roc_pr_curves.png", "intervals.csv",
                "reliability.png", "reliability.csv"}
    assert expected <= names
    lake = LocalLake(settings.lake)
    reports = {k.rsplit("/", 1)[1] for k in lake.list(f"reports/{s['run_id']}/")}
    assert expected | {"summary.json"} <= reports
    assert json.loads(lake.get_bytes(f"reports/{s['run_id']}/summary.json"))["run_id"] == s["run_id"]
    assert lake.exists(s["lake"]["curated"]) and lake.exists(s["lake"]["raw"])
    # dataset lineage
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name == "diabetes"
    assert inputs[0].dataset.digest == s["data"]["sha256"][:10]  # by reference: the lake's digest, not a re-hash
    assert s["data"]["sha256"] in inputs[0].dataset.source
    profile = json.loads(inputs[0].dataset.profile)
    assert profile == {"num_rows": 300, "num_elements": 300 * 14, "sha256": s["data"]["sha256"]}
    assert [t.value for t in inputs[0].tags if t.key == "mlflow.data.context"] == ["training"]
    assert "Gender" in inputs[0].dataset.schema
    # holdout: 30% of 300 rows
    cm = s["holdout"]["confusion_matrix"]
    assert 80 <= sum(map(sum, cm)) <= 100 and s["holdout"]["labels"] == ["N", "Y", "P"]  # whole groups: about 30%
    assert s["timings"]["tracking_s"] > 0


@pytest.mark.training
def test_logged_model_is_pickle_free_and_predicts_labels(settings, small_experiment, small_csv, tmp_path):
    s = run_experiment(small_experiment, settings).summary
    raw = pd.read_csv(small_csv)
    sample = raw.head(40).copy()
    sample.loc[0, "Gender"] = " f "  # the same normalisation as training
    sample.to_csv(tmp_path / "sample.csv", index=False)
    script = (  # as a serving environment without trilho: any import of it fails
        "import sys, importlib.abc\n"
        "class NoTrilho(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'trilho' or name.startswith('trilho.'):\n"
        "            raise ImportError(f'{name}: trilho is not installed here')\n"
        "sys.meta_path.insert(0, NoTrilho())\n"
        "import mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "assert not [k for k in sys.modules if k.split('.')[0] == 'trilho'], 'trilho was imported'\n"
        "df = pd.read_csv(sys.argv[2])\n"
        "print(','.join(m.predict(df.drop(columns=['CLASS']), params={'output': 'labels'})))\n"
        "p = m.predict(df.drop(columns=['CLASS']), params={'output': 'proba'})\n"
        "print(list(p.columns), bool(abs(p.sum(axis=1) - 1).max() < 1e-5))\n"
        "both = m.predict(df.drop(columns=['CLASS']))\n"
        "print(list(both.columns), bool((both['prediction'] == p.idxmax(axis=1).str[6:]).all()))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri,
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    out = subprocess.run([sys.executable, "-c", script, s["model_uri"], str(tmp_path / "sample.csv")],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    labels_line, proba_line, both_line = out.stdout.strip().splitlines()[-3:]
    assert proba_line == "['proba_N', 'proba_Y', 'proba_P'] True"
    assert both_line == "['prediction', 'proba_N', 'proba_Y', 'proba_P'] True"
    predicted = labels_line.split(",")
    truth = sample["CLASS"].str.strip().tolist()
    assert set(predicted) <= {"N", "Y", "P"} and len(predicted) == 40
    assert sum(p == t for p, t in zip(predicted, truth, strict=True)) >= 32  # fit on all rows: it must know them
    from trilho.tracking.model import download_model

    local = download_model(s["model_uri"], tmp_path / "downloaded", settings.tracking_uri)
    files = [p.name for p in local.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]
    assert "booster.ubj" in files and "servable.py" in files and "encoding.py" in files
    mlmodel = (local / "MLmodel").read_text()
    assert "signature" in mlmodel and "Gender" in mlmodel
    requirements = (local / "requirements.txt").read_text()
    assert "xgboost==" in requirements and "mlflow==" in requirements
    import importlib.metadata

    # the installed versions themselves: why MLflow's check against the installed packages is skipped
    pins = dict(line.split("==") for line in requirements.split() if "==" in line)
    assert pins == {name: importlib.metadata.version(name) for name in pins}
    from mlflow.utils import environment

    from trilho.tracking.model import _pinned_here

    check = environment.warn_dependency_requirement_mismatches
    with _pinned_here():
        assert environment.warn_dependency_requirement_mismatches is not check
    assert environment.warn_dependency_requirement_mismatches is check


@pytest.mark.training
def test_nested_layout_has_one_child_per_repeat(settings, small_csv):
    exp = load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', *FAST,
                                       "cv.n_repeats=2", "tracking.layout=nested", "tracking.log_model=false"])
    s = run_experiment(exp, settings).summary
    client = MlflowClient(settings.tracking_uri)
    children = client.search_runs([s["mlflow_experiment_id"]], f"tags.mlflow.parentRunId = '{s['run_id']}'")
    assert sorted(c.data.tags["seed"] for c in children) == ["0", "1"]
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "accuracy")) == 5
        assert "accuracy_mean_seed" in child.data.metrics


@pytest.mark.training
def test_fault_18_a_failing_run_is_marked_failed(settings, small_csv):
    exp = load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', *FAST,
                                       "model.params.max_depth=-3"])
    with pytest.raises(EvaluationError, match="failed: XGBoostError: value -3 for Parameter max_depth"):
        run_experiment(exp, settings)
    client = MlflowClient(settings.tracking_uri)
    exp_id = client.get_experiment_by_name("experimento_xgboost").experiment_id
    runs = client.search_runs([exp_id])
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.training
def test_tracking_server_down_fails_fast_before_training(settings, small_experiment):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    down = settings.model_copy(update={"tracking_uri": f"http://127.0.0.1:{port}"})
    before = loky_children()
    start = time.monotonic()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port} is not reachable"):
        run_experiment(small_experiment, down)
    assert time.monotonic() - start < 15
    assert LocalLake(settings.lake).list("reports/") == []
    assert loky_children() <= before  # the baselines' process, started before the store was tried, has ended


@pytest.mark.training
def test_a_process_started_ahead_fits_the_small_baselines_or_is_ended(settings, small_csv):
    """`trilho run` starts a worker process before its own imports: the small baselines' folds are
    fit there, with the scores a run without it gives; a run that needs none ends it."""
    from trilho.execution.pool import Apart

    keys = [f"source.uri={json.dumps('file:' + str(small_csv))}", 'source.sha256=""', *FAST,
            "tracking.log_model=false", "evaluation.explain_repeats=0", "evaluation.groups=[]"]
    before = loky_children()
    spare = Apart(("trilho.evaluation.cv",))
    spared = run_experiment(load_experiment("diabetes", keys), settings, spare=spare).summary["baselines"]
    assert not spare.free and loky_children() <= before
    alone = run_experiment(load_experiment("diabetes", keys), settings).summary["baselines"]
    assert spared["models"]["hist_gradient_boosting"] == alone["models"]["hist_gradient_boosting"]
    idle = Apart()
    summary = run_experiment(load_experiment("diabetes", [*keys, 'evaluation.baselines=["majority"]']), settings,
                             spare=idle).summary
    assert list(summary["baselines"]["models"]) == ["majority"]
    assert not idle.free and loky_children() <= before


@pytest.mark.training
def test_fault_29_text_labels_reach_the_model_as_fixed_codes_logged_as_a_param(settings, small_experiment):
    from mlflow.tracking import MlflowClient

    result = run_experiment(small_experiment, settings)
    params = MlflowClient(settings.tracking_uri).get_run(result.run_id).data.params
    assert {k: int(v) for k, v in params.items() if k.startswith("data.labels.")} == {
        "data.labels.N": 0, "data.labels.Y": 1, "data.labels.P": 2}
    assert result.summary["holdout"]["labels"] == ["N", "Y", "P"]
    assert result.summary["holdout"]["label_codes"] == [0, 1, 2]


def test_params_and_metrics_named_after_any_column_are_accepted(workdir):
    """A column named "weight (kg)" reaches MLflow in param names (data.ranges.<column>); MLflow
    refuses such names, so trilho writes them as MLflow takes them, apart from one another."""
    from trilho.tracking import Tracker
    from trilho.tracking.runs import tracking_key

    assert tracking_key("data.ranges.weight (kg)") == "data.ranges.weight _kg_"
    assert tracking_key("data.ranges.km/h") == "data.ranges.km/h"  # valid names stay as they are
    assert tracking_key("data.ranges.país") == "data.ranges.país"
    assert tracking_key("data.ranges.x/") == "data.ranges.x_" and tracking_key("a//b") == "a__b"  # odd paths
    assert len(tracking_key("a" * 400)) == 250 and tracking_key("a" * 400) != tracking_key("a" * 401)
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}", "names")
    run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
    names = ["data.ranges.weight (kg)", "data.ranges.weight _kg_", "data.ranges.weight [kg]", "ok.name", "x:y/",
             "a" * 300]
    tracker.log_values(run_id, params={n: str(i) for i, n in enumerate(names)},
                       metrics=[("f1 (macro)", 0.5, 0), ("f1 (macro)", 0.6, 1)])
    data = tracker.client.get_run(run_id).data
    assert len(data.params) == len(names) and sorted(data.params.values()) == sorted(map(str, range(len(names))))
    assert data.params["data.ranges.weight _kg_"] == "1" and data.params["ok.name"] == "3"  # valid names kept
    assert [m.value for m in tracker.client.get_metric_history(run_id, "f1 _macro_")] == [0.5, 0.6]
