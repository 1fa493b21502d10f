"""The Compose stack run for real, on a Docker engine: what a user types, offline.

Runs wherever a Docker engine answers (``DOCKER_HOST``, Compose v2) and skips with the reason elsewhere;
.ci/run starts one with ../shared/tools/docker-engine up. The store is SeaweedFS (compose.seaweedfs.yaml):
MinIO's image cannot be had offline. The tests run in file order on one stack, each a step a user takes:
up, train offline, train from a file in ./data, credentials, down and up again, serve, down -v.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = f"trilho-stack-test-{os.getpid()}"
FILES = ("-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "compose.seaweedfs.yaml"))
PORTS = ("MINIO_PORT", "MINIO_CONSOLE_PORT", "MLFLOW_PORT", "JUPYTER_PORT", "SERVE_PORT", "DASK_DASHBOARD_PORT")

pytestmark = [pytest.mark.services, pytest.mark.stack]


def _engine_missing() -> str | None:
    """Why the stack cannot run here, or None when a Docker engine and Compose v2 answer."""
    if shutil.which("docker") is None:
        return "no docker client on PATH (.ci/run starts one: ../shared/tools/docker-engine up)"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    if info.returncode != 0:
        return f"no Docker engine answers at DOCKER_HOST={os.environ.get('DOCKER_HOST', '(default)')}"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0 or "v2." not in version.stdout:
        return "Docker Compose v2 is not installed (`docker compose version`)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """One project of the stack: its .env, its ./data, and `docker compose` on them."""

    env_file: Path
    data: Path
    env: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True,
                extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", "compose", "-p", PROJECT, "--env-file", str(self.env_file), *FILES, *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(extra_env or {})})
        if check:
            assert done.returncode == 0, (f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                                          f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def url(self, port: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.env[port]}{path}"

    def services(self) -> dict[str, dict]:
        """Every container of the project (stopped ones too), by service."""
        out = self.compose("--profile", "*", "ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()] if not out.lstrip().startswith("[") \
            else json.loads(out)
        return {row["Service"]: row for row in rows}

    def mlflow(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url("MLFLOW_PORT"))


def _status(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    missing = _engine_missing()
    if missing:
        pytest.skip(missing)
    home = tmp_path_factory.mktemp("stack")
    data = home / "data"
    data.mkdir()
    env = {"MINIO_ROOT_USER": "stack-test-user", "MINIO_ROOT_PASSWORD": "stack-test-secret-0123456789",
           "POSTGRES_PASSWORD": "stacktestpassword0123456789", "JUPYTER_TOKEN": "stack-test-jupyter-token",
           "TRILHO_SERVE_TOKEN": "stack-test-serve-token", "TRILHO_DATA_DIR": str(data),
           "TRILHO_SERVE_REFRESH_S": "2", **{name: str(_free_port()) for name in PORTS}}
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():  # .env.example, its secrets filled in
        name = line.split("=", 1)[0]
        lines.append(f"{name}={env[name]}" if name in env else line)
    lines += [f"{name}={value}" for name, value in env.items() if f"\n{name}=" not in "\n" + "\n".join(lines)]
    env_file = home / "env"
    env_file.write_text("\n".join(lines) + "\n")
    stack = Stack(env_file, data, env)
    stack.compose("build", timeout=1800)
    try:
        yield stack
    finally:
        stack.compose("--profile", "*", "down", "-v", "--remove-orphans", check=False)


def test_up_reaches_a_healthy_stack_with_no_hand_step(stack):
    # offline: the experiment's Kaggle source is out of reach, and ingest says so and goes on
    stack.compose("up", "-d", "--wait", timeout=900)
    services = stack.services()
    for name in ("minio", "postgres", "mlflow", "jupyter"):
        assert services[name]["State"] == "running" and services[name]["Health"] == "healthy", services[name]
    for name in ("buckets", "ingest"):
        assert services[name]["State"] == "exited" and services[name]["ExitCode"] == 0, services[name]
    ingest = stack.compose("logs", "--no-log-prefix", "ingest").stdout
    assert "offline:" in ingest and "synthetic:diabetes" in ingest and "written" in ingest, ingest
    logs = stack.compose("logs").stdout
    assert "Failed to resolve installed pip version" not in logs


def test_train_tracks_registers_and_gates_offline(stack):
    done = stack.compose("run", "--rm", "train", timeout=900)
    out = done.stdout + done.stderr
    assert "offline:" in out and "diabetes-xgboost-offline" in out, out
    # the link a user is given opens in their browser: the published port, not the stack's own name
    assert f"http://localhost:{stack.env['MLFLOW_PORT']}/#/experiments/" in out, out
    assert "http://mlflow:5000/#" not in out and "Failed to resolve installed pip version" not in out
    version = stack.mlflow().get_model_version_by_alias("diabetes-xgboost-offline", "champion")
    run = stack.mlflow().get_run(version.run_id)
    assert run.info.status == "FINISHED" and "accuracy_ci_low" in run.data.metrics


def test_train_again_from_a_file_in_the_data_folder(stack):
    from trilho.data.synthetic import diabetes

    diabetes(rows=600, seed=7).to_csv(stack.data / "patients.csv", index=False)
    done = stack.compose("run", "--rm", "-e", "TRILHO_SOURCE=file:/data/patients.csv", "train", timeout=900)
    out = done.stdout + done.stderr
    assert "offline:" not in out, out
    version = stack.mlflow().get_model_version_by_alias("diabetes-xgboost", "champion")
    run = stack.mlflow().get_run(version.run_id)
    # the champion was trained on that file's bytes
    assert run.data.tags["trilho.data_sha256"] == hashlib.sha256((stack.data / "patients.csv").read_bytes()).hexdigest()


def test_jupyter_and_the_store_refuse_requests_without_their_credentials(stack):
    status, _ = _status(stack.url("JUPYTER_PORT", "/api/status"))
    assert status == 403
    status, body = _status(stack.url("JUPYTER_PORT", "/api/status"),
                           {"Authorization": f"token {stack.env['JUPYTER_TOKEN']}"})
    assert status == 200 and b"started" in body
    # S3: anonymous listing refused; the stack's identity lists the lake that ingest and train wrote
    status, _ = _status(stack.url("MINIO_PORT", "/trilho-data"))
    assert status == 403
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=stack.url("MINIO_PORT"), aws_access_key_id=stack.env["MINIO_ROOT_USER"],
                      aws_secret_access_key=stack.env["MINIO_ROOT_PASSWORD"], region_name="us-east-1",
                      config=Config(request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required"))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="trilho-data").get("Contents", [])]
    assert any(key.startswith("raw/") for key in keys) and any(key.startswith("reports/") for key in keys), keys
    wrong = boto3.client("s3", endpoint_url=stack.url("MINIO_PORT"), aws_access_key_id=stack.env["MINIO_ROOT_USER"],
                         aws_secret_access_key="not-the-secret-0123456789", region_name="us-east-1")
    with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        wrong.list_objects_v2(Bucket="trilho-data")


def test_runs_and_models_survive_down_and_up(stack):
    before = {v.version for v in stack.mlflow().search_model_versions("name='diabetes-xgboost'")}
    stack.compose("--profile", "*", "down", timeout=300)
    assert not [s for s in stack.services().values() if s["State"] == "running"]
    stack.compose("up", "-d", "--wait", timeout=900)
    after = stack.mlflow().search_model_versions("name='diabetes-xgboost'")
    assert {v.version for v in after} == before and before
    champion = stack.mlflow().get_model_version_by_alias("diabetes-xgboost", "champion")
    assert stack.mlflow().get_run(champion.run_id).info.status == "FINISHED"


def test_the_serve_profile_serves_the_champion_behind_its_token(stack):
    stack.compose("--profile", "serve", "up", "-d", "--wait", "serve", timeout=600)
    from trilho.data.synthetic import diabetes

    rows = {"dataframe_split": diabetes(rows=20, seed=3).drop(columns=["ID", "No_Pation", "CLASS"]).head(2).to_dict("split")}
    del rows["dataframe_split"]["index"]
    body = json.dumps(rows).encode()
    status, _ = _status(stack.url("SERVE_PORT", "/invocations"), {"Content-Type": "application/json"}, body)
    assert status == 401
    status, answer = _status(stack.url("SERVE_PORT", "/invocations"),
                             {"Content-Type": "application/json",
                              "Authorization": f"Bearer {stack.env['TRILHO_SERVE_TOKEN']}"}, body)
    assert status == 200, answer
    assert len(json.loads(answer)["predictions"]) == 2


def test_one_command_stops_everything_and_drops_the_data(stack):
    assert stack.services()["serve"]["State"] == "running"  # a profile's service is up, too (the test before)
    stack.compose("--profile", "*", "down", "-v", timeout=300)
    label = f"label=com.docker.compose.project={PROJECT}"
    containers = subprocess.run(["docker", "ps", "-a", "-q", "--filter", label], capture_output=True, text=True)
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", label], capture_output=True, text=True)
    assert containers.stdout.strip() == "" and volumes.stdout.strip() == ""
