"""Fits on a real Dask cluster: a ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

(Named to sort after test_parallel: a Dask client leaves threads in this process, and the fork tests
there need a process with none.)
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest

from trilho import evaluate, load_settings
from trilho.cluster import open_executor
from trilho.encoding import feature_spec
from trilho.errors import ClusterError

from .services import DaskCluster, free_port

pytest.importorskip("distributed", reason="Dask is an extra: pip install -e '.[dask]' (the test extra has it)")

SCORES = list(evaluate.METRICS)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    cluster = DaskCluster(tmp_path_factory.mktemp("dask")).start(workers=2)
    yield cluster
    cluster.stop()


def _data(n: int = 1200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers with gaps and a text category, typed as trilho.clean types them."""
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
    here_cv, here_held, here_final = evaluate.evaluate_all(X, y, n_jobs=2, **kw)
    settings = load_settings(env_file=None, dask_scheduler=dask_cluster.address)
    assert settings.executor == "dask"  # a scheduler alone means the cluster
    seen = []
    with open_executor(settings) as executor:
        assert executor.threads() == 2
        cv, held, final = evaluate.evaluate_all(X, y, n_jobs=1, executor=executor,
                                                progress=lambda done, total: seen.append((done, total)), **kw)
    assert cv.pool == "dask" and here_cv.pool == "threads"
    _same(cv.folds[["seed", "fold", "n_train", "n_test", *SCORES]],
          here_cv.folds[["seed", "fold", "n_train", "n_test", *SCORES]])
    _same(cv.oof, here_cv.oof)
    _same(cv.nested, here_cv.nested)
    assert held.scores == here_held.scores
    np.testing.assert_array_equal(final.predict_proba(X), here_final.predict_proba(X))
    assert seen[-1] == (8 + 6, 8 + 6) and [d for d, _ in seen] == list(range(1, 15))  # folds and nested fits


def test_a_run_and_a_comparison_on_the_cluster(dask_cluster, workdir, small_experiment, settings):
    from trilho.compare import compare, parse_candidates
    from trilho.pipeline import run_experiment

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
    here = evaluate.cross_validate(X, y, n_jobs=2, **kw)
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

        cv = evaluate.cross_validate(X, y, n_jobs=1, executor=executor, progress=kill_when_busy, **kw)
    assert killed["busy_with"], "the worker was killed while it had fits to do"
    assert doomed.returncode == -signal.SIGKILL
    _same(cv.folds[SCORES], here.folds[SCORES])
    assert dask_cluster.n_workers() == 2  # the two others are still there


def test_an_unreachable_scheduler_is_one_error_before_anything_is_read(workdir, settings, small_experiment):
    from trilho.pipeline import run_experiment
    from trilho.storage import LocalLake

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
        with pytest.raises(ClusterError, match=r"has no workers after 1s: start some \(dask worker tcp://"):
            with open_executor(settings):
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

