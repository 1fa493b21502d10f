"""Fits on a real Dask cluster: a ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

(Named to sort after test_parallel: a Dask client leaves threads in this process, and the fork tests
there need a process with none.)
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pandas as pd
import pytest

from tests.support.services import DaskCluster, free_port
from trilho import load_settings
from trilho.errors import ClusterError
from trilho.evaluation import cv as evaluate
from trilho.evaluation.metrics import METRICS
from trilho.execution.cluster import open_executor
from trilho.model.encoding import feature_spec

pytest.importorskip("distributed", reason="Dask is an extra: pip install -e '.[dask]' (the test extra has it)")

SCORES = list(METRICS)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    cluster = DaskCluster(tmp_path_factory.mktemp("dask")).start(workers=2)
    yield cluster
    cluster.stop()


def _data(n: int = 1200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers with gaps and a text category, typed as trilho.data.clean types them."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=list("abcde"))
    X["kind"] = rng.choice(["X", "Y", "Z"], n).astype(object)
    X.loc[rng.random(n) < 0.05, "b"] = np.nan
    y = (X.a + (X.kind == "Y") + rng.normal(size=n) > 1.0).astype(int).to_numpy()
    return X, y


SPEC = feature_spec(list("abcde") + ["kind"], {"kind": None}, ["NO", "YES"], [], "impute")


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_the_cluster_computes_what_this_machine_does(dask_cluster, workdir):
    X, y = _data()
    kw = dict(model={"name": "xgboost", "params": {"n_estimators": 30, "max_depth": 3}},
              resampler={"name": "smotenc", "params": {}}, random_state=3, n_splits=4, seeds=[1, 2],
              holdout_fraction=0.25, final_fit=True, nested_repeats=1,
              encoding=SPEC)
    here_cv, here_held, here_final = evaluate.evaluate_all(X, y, evaluate.Task(**kw), evaluate.Runner(n_jobs=2))
    settings = load_settings(env_file=None, dask_scheduler=dask_cluster.address)
    assert settings.executor == "dask"  # a scheduler alone means the cluster
    seen = []
    with open_executor(settings) as executor:
        assert executor.threads() == 2
        cv, held, final = evaluate.evaluate_all(X, y, evaluate.Task(**kw), evaluate.Runner(n_jobs=1, executor=executor, progress=lambda done, total: seen.append((done, total))))
    assert cv.pool == "dask" and here_cv.pool == "threads"
    _same(cv.folds[["seed", "fold", "n_train", "n_test", *SCORES]],
          here_cv.folds[["seed", "fold", "n_train", "n_test", *SCORES]])
    _same(cv.oof, here_cv.oof)
    _same(cv.nested, here_cv.nested)
    assert held.scores == here_held.scores
    np.testing.assert_array_equal(final.predict_proba(X), here_final.predict_proba(X))
    assert seen[-1] == (8 + 6, 8 + 6) and [d for d, _ in seen] == list(range(1, 15))  # folds and nested fits


def test_a_run_and_a_comparison_on_the_cluster(dask_cluster, workdir, small_experiment, settings):
    from trilho.workflows.compare import compare, parse_candidates
    from trilho.workflows.run import run_experiment

    on_cluster = settings.model_copy(update={"executor": "dask", "dask_scheduler": dask_cluster.address})
    here = run_experiment(small_experiment, settings).summary
    there = run_experiment(small_experiment, on_cluster).summary
    assert there["cv"]["pool"] == "dask" and there["cv"]["workers"] == 2
    assert here["cv"]["pool"] != "dask"
    assert there["cv"]["metrics"] == here["cv"]["metrics"]
    assert there["holdout"]["scores"] == here["holdout"]["scores"]
    assert str(there["registry"]["version"]) == "2"  # registered like any run

    candidates = parse_candidates(["xgboost+smote", "random_forest+none"], small_experiment)
    result = compare(small_experiment, on_cluster, candidates)
    local = compare(small_experiment, settings, candidates)
    pd.testing.assert_frame_equal(result.table, local.table)


def test_a_worker_that_dies_mid_run_loses_nothing(dask_cluster, workdir):
    from distributed import Client

    X, y = _data(4000, seed=1)
    kw = dict(model={"name": "random_forest", "params": {"n_estimators": 120}}, resampler={"name": "none", "params": {}},
              random_state=5, n_splits=5, seeds=[1, 2], encoding=SPEC)
    here = evaluate.cross_validate(X, y, evaluate.Task(**kw), evaluate.Runner(n_jobs=2))
    doomed = dask_cluster.add_worker()
    killed: dict[str, object] = {}
    with Client(dask_cluster.address, timeout="5s") as watcher, \
            open_executor(load_settings(env_file=None, dask_scheduler=dask_cluster.address)) as executor:
        address = next(a for a, w in watcher.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == "w2")

        def kill_when_busy(done: int, total: int) -> None:
            if not killed and watcher.processing(workers=[address])[address]:
                killed["busy_with"] = list(watcher.processing(workers=[address])[address])
                os.kill(doomed.pid, signal.SIGKILL)
                doomed.wait(10)

        cv = evaluate.cross_validate(X, y, evaluate.Task(**kw), evaluate.Runner(n_jobs=1, executor=executor, progress=kill_when_busy))
    assert killed["busy_with"], "the worker was killed while it had fits to do"
    assert doomed.returncode == -signal.SIGKILL
    _same(cv.folds[SCORES], here.folds[SCORES])
    assert dask_cluster.n_workers() == 2  # the two others are still there


def test_an_unreachable_scheduler_is_one_error_before_anything_is_read(workdir, settings, small_experiment):
    from trilho.storage import LocalLake
    from trilho.workflows.run import run_experiment

    port = free_port()
    away = settings.model_copy(update={"executor": "dask", "dask_scheduler": f"tcp://127.0.0.1:{port}",
                                       "dask_wait_s": 1.0})
    with pytest.raises(ClusterError, match=rf"Dask scheduler tcp://127.0.0.1:{port} not reachable: waited \d+s.*"
                                           r"TRILHO_DASK_SCHEDULER"):
        run_experiment(small_experiment, away)
    assert LocalLake(settings.lake).list("raw/") == []  # nothing ingested, nothing fitted


def test_a_scheduler_without_workers_is_named(tmp_path, workdir):
    lonely = DaskCluster(tmp_path / "lonely").start(workers=0)
    try:
        settings = load_settings(env_file=None, dask_scheduler=lonely.address, dask_wait_s=1.0)
        with pytest.raises(ClusterError, match=r"has no workers after 1s: start some \(dask worker tcp://"), \
                open_executor(settings):
            pass
    finally:
        lonely.stop()


def test_the_executor_setting(workdir, monkeypatch):
    monkeypatch.setenv("TRILHO_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    assert load_settings(env_file=None).executor == "dask"
    monkeypatch.setenv("TRILHO_EXECUTOR", "local")  # said outright, this machine wins
    assert load_settings(env_file=None).executor == "local"
    monkeypatch.setenv("TRILHO_EXECUTOR", "spark")
    with pytest.raises(Exception, match="TRILHO_EXECUTOR|executor"):
        load_settings(env_file=None)
    with open_executor(load_settings(env_file=None, executor="local")) as none:
        assert none is None  # the default needs no Dask



def _churn_experiment(path, rows: int, **extra: object):
    from trilho.experiment import Experiment

    config = {
        "name": "churn", "random_state": 7, "source": {"uri": f"file:{path}"},
        "data": {"target": "Churn", "labels": ["NO", "YES"], "drop": ["customer_id"],
                 "categorical": ["contract", "internet"], "missing": "impute"},
        "cv": {"n_splits": 3, "n_repeats": 1},
        "resampler": {"name": "class_weight"},
        "model": {"name": "xgboost", "params": {"n_estimators": 40, "max_depth": 3}, "distributed": True},
        "evaluation": {"holdout_fraction": 0.25},
        "tracking": {"experiment": "churn"}, "registry": {"model_name": "churn-xgb"},
    }
    for key, value in extra.items():
        section, _, name = key.partition("__")
        config[section] = {**config[section], name: value}
    return Experiment.model_validate(config)


@pytest.mark.parametrize("where", ["folder", "seaweedfs"])
def test_a_distributed_final_fit_reads_the_lake_on_the_workers(where, dask_cluster, workdir, settings, request,
                                                               monkeypatch):
    import mlflow

    from tests.support import corpus
    from tests.system.test_services import live_settings
    from trilho.data import curate
    from trilho.data.tables import read_table
    from trilho.model.catalog import build_pipeline
    from trilho.storage import open_lake
    from trilho.workflows import run as pipeline

    monkeypatch.setattr(curate, "CURATED_ROW_GROUP", 700)  # several partitions from a small set
    frame, target, _, _ = corpus.churn(rows=3000, seed=4)
    path = workdir / "churn.csv"
    frame.to_csv(path, index=False)
    exp = _churn_experiment(path, 3000)
    if where == "seaweedfs":  # the workers read from the store with the lake's own endpoint and keys
        seaweed = request.getfixturevalue("seaweed")
        settings = live_settings(workdir, seaweed.endpoint, settings.tracking_uri)
    on_cluster = settings.model_copy(update={"executor": "dask", "dask_scheduler": dask_cluster.address})
    summary = pipeline.run_experiment(exp, on_cluster).summary
    assert summary["final_fit"]["where"] == "xgboost.dask"
    assert summary["final_fit"]["rows"] == 3000 and summary["final_fit"]["partitions"] == 5
    assert summary["final_fit"]["workers"] == 2 and summary["final_fit"]["weights"] is True
    assert summary["registry"]["version"] in (1, "1")

    # the model logged from the cluster serves like any other, and agrees with a one-machine fit
    mlflow.set_tracking_uri(settings.tracking_uri)
    served = mlflow.pyfunc.load_model(summary["model_uri"])
    raw = read_table(path).drop(columns=[target])
    answer = served.predict(raw)
    _, _, _, data = curate.load_clean(exp, settings)
    here = build_pipeline(exp.model.model_dump(), exp.resampler.model_dump(), exp.random_state, 2,
                          data.spec).fit(data.X, data.y)
    names = data.spec["classes"]  # as the data spells them most ("No", "Yes"), whatever case the file lists
    labels = np.asarray(names)[here.predict(data.X)]
    assert (answer["prediction"].to_numpy() == labels).mean() > 0.95
    proba = here.predict_proba(data.X)[:, 1]
    assert np.abs(answer[f"proba_{names[1]}"].to_numpy() - proba).mean() < 0.03
    # the learned encoding is the cluster's, computed from every partition
    spec = json.loads(open_lake(settings).get_bytes(summary["lake"]["reports"] + "model/spec.json"))
    assert spec["categorical"] == here.named_steps["encode"].spec_["categorical"]
    assert spec["fill"]["contract"] == here.named_steps["encode"].spec_["fill"]["contract"]
    assert spec["fill"] == here.named_steps["encode"].spec_["fill"]  # exact medians, not approximations


def test_a_regressor_is_fit_on_the_cluster_and_answers_with_its_interval(dask_cluster, workdir, settings, monkeypatch):
    import mlflow

    from tests.workflows.test_regression import houses
    from trilho.data import curate
    from trilho.experiment import Experiment
    from trilho.workflows import run as pipeline

    monkeypatch.setattr(curate, "CURATED_ROW_GROUP", 300)  # several partitions from a small set
    frame = houses(1200, 2)
    frame.to_csv(workdir / "houses.csv", index=False)
    exp = Experiment.model_validate({
        "name": "houses", "task": "regression", "source": {"uri": f"file:{workdir / 'houses.csv'}"},
        "data": {"target": "price", "drop": ["house_id"], "categorical": ["town"], "missing": "impute"},
        "cv": {"n_splits": 3, "n_repeats": 1},
        "model": {"name": "xgboost", "params": {"n_estimators": 60, "max_depth": 3}, "distributed": True},
        "tracking": {"experiment": "houses"}, "registry": {"model_name": "houses-dask"}})
    on_cluster = settings.model_copy(update={"executor": "dask", "dask_scheduler": dask_cluster.address})
    summary = pipeline.run_experiment(exp, on_cluster).summary
    fit = summary["final_fit"]
    assert fit["where"] == "xgboost.dask" and fit["partitions"] >= 3 and fit["rows"] == summary["data"]["rows"]
    mlflow.set_tracking_uri(settings.tracking_uri)
    answer = mlflow.pyfunc.load_model(summary["model_uri"]).predict(frame.drop(columns=["price"]).head(50))
    half = summary["prediction_interval"]["half_width"]
    assert np.allclose(answer["upper"] - answer["prediction"], half, rtol=1e-5)
    truth = pd.to_numeric(frame["price"].head(50), errors="coerce")
    assert np.corrcoef(answer["prediction"][truth.notna()], truth.dropna())[0, 1] > 0.8


def test_a_distributed_fit_is_checked_before_anything_is_read(workdir, settings):
    from trilho.errors import ConfigError
    from trilho.storage import LocalLake
    from trilho.workflows.run import run_experiment

    path = workdir / "none.csv"
    with pytest.raises(ValueError, match=r"model.distributed = true cannot resample: resampler.name 'smote'.*"
                                         r"'class_weight'"):
        _churn_experiment(path, 10, resampler__name="smote")
    with pytest.raises(ValueError, match=r"fits through xgboost.dask; model.name is 'random_forest'"):
        _churn_experiment(path, 10, model__name="random_forest")
    with pytest.raises(ConfigError, match=r"model.distributed = true fits the final model on a Dask cluster: set "
                                          r"TRILHO_DASK_SCHEDULER"):
        run_experiment(_churn_experiment(path, 10), settings)
    assert LocalLake(settings.lake).list() == []


def test_the_clusters_medians_are_exactly_pandas_medians(monkeypatch):
    import dask
    import dask.dataframe as dd

    from trilho.execution import cluster

    monkeypatch.setattr(cluster, "_MEDIAN_GATHER", 100)  # so that the small columns take several passes
    rng = np.random.default_rng(0)
    with dask.config.set(scheduler="synchronous"):
        for trial in range(25):
            n = int(rng.integers(1, 4000))
            frame = pd.DataFrame({"normal": rng.normal(size=n), "few": rng.integers(0, 5, n).astype(float),
                                  "sorted": np.sort(rng.exponential(size=n)), "constant": np.full(n, 3.0),
                                  "empty": np.full(n, np.nan)})
            frame.loc[rng.random(n) < 0.2, "normal"] = np.nan
            got = cluster._exact_medians(dd.from_pandas(frame, npartitions=int(rng.integers(1, 8))), list(frame))
            for column in frame:
                want = frame[column].median()
                assert got[column] == want or (np.isnan(want) and np.isnan(got[column])), (trial, column)


def test_dated_rows_fit_on_the_cluster_with_the_calendar_learned_as_one_process_learns_it(dask_cluster, workdir,
                                                                                           settings, monkeypatch):
    import mlflow

    from tests.workflows.test_time import shop
    from trilho.data import curate
    from trilho.experiment import Experiment
    from trilho.workflows import run as pipeline

    monkeypatch.setattr(curate, "CURATED_ROW_GROUP", 200)  # several partitions from a small set
    frame = shop(900, 4).drop(columns=["busy"])
    frame.loc[5, "temp"] = np.nan
    frame.to_csv(workdir / "sales.csv", index=False)
    exp = Experiment.model_validate({
        "name": "sales", "task": "regression", "source": {"uri": f"file:{workdir / 'sales.csv'}"},
        "data": {"target": "sales", "dates": ["date"], "missing": "impute"},
        "cv": {"scheme": "time", "n_splits": 3, "n_repeats": 1},
        "model": {"name": "xgboost", "params": {"n_estimators": 80, "max_depth": 3}, "distributed": True},
        "evaluation": {"holdout_fraction": 0.2},
        "tracking": {"experiment": "sales"}, "registry": {"model_name": "sales-dask"}})
    on_cluster = settings.model_copy(update={"executor": "dask", "dask_scheduler": dask_cluster.address})
    result = pipeline.run_experiment(exp, on_cluster)
    summary = result.summary
    assert summary["final_fit"]["where"] == "xgboost.dask" and summary["final_fit"]["partitions"] >= 4
    assert summary["time"]["latest"]["rows"] == 180
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.pyfunc.load_model(summary["model_uri"])
    answer = model.predict(frame.drop(columns=["sales"]).tail(100))
    assert np.corrcoef(answer["prediction"], frame["sales"].tail(100))[0, 1] > 0.8
    # the cluster's encoder learned what one process learns from every row: the origin and the medians
    from trilho.model.table_encoder import TableEncoder
    from trilho.storage import open_lake

    _, _, _, data = curate.load_clean(exp, settings)
    here = TableEncoder(data.spec).fit(data.X)
    spec = json.loads(open_lake(settings).get_bytes(summary["lake"]["reports"] + "model/spec.json"))
    assert spec["dates"]["date"]["origin"] == here.spec_["dates"]["date"]["origin"]
    assert spec["fill"] == here.spec_["fill"]  # the calendar parts' medians, exact
    assert spec["fill"]["date.weekday"] == 3.0
