"""Serving under load: `mlflow models serve` of a trilho model against MLflow's own floor.

    python benchmarks/bench_serve.py [--rounds 3] [--workers 2] [--requests 2000]

In a fresh folder: a `trilho run` on ``synthetic:diabetes?rows=1000&seed=1`` registers the shipped
XGBoost model; beside it, MLflow's floor: a trivial pyfunc model (it returns one number per row)
with the same input signature, so the server parses and checks the same columns. Each is served by
``mlflow models serve --env-manager local --workers W`` on 127.0.0.1, and a small asyncio client
(keep-alive connections, one request at a time per client, ``dataframe_split`` JSON bodies) sends
1-row and 100-row requests at 1, 32 and 200 clients. Per cell: requests/s, p50 and p99 latency in
ms, the server's CPU time per request (its processes' user + system time from /proc, Linux) and
errors, medians over ``--rounds`` (models interleaved within each round). The load is only
ever sent to 127.0.0.1 and every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENTS = (1, 32, 200)
ROWS = (1, 100)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _client(port: int, request: bytes, count: int, latencies: list[float], errors: list[str],
                   deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            if time.perf_counter() > deadline:
                errors.append("deadline")
                return
            start = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if b" 200 " not in status:
                errors.append(status.decode("latin-1").strip())
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    finally:
        writer.close()


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command's name (Linux): state is [0], pgrp [2],
    utime [11], stime [12]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pids: list[int]) -> float | None:
    """CPU time (user + system) used so far by these processes, from /proc (Linux); None elsewhere."""
    try:
        total = 0
        for pid in pids:
            fields = _stat(pid)
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def load(port: int, body: bytes, clients: int, requests: int, limit_s: float = 120.0,
         server: list[int] | None = None) -> dict:
    """``requests`` requests spread over ``clients`` keep-alive connections, one at a time each;
    with the server's process ids, also the server's CPU time per answered request."""
    request = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> float:
        deadline = time.perf_counter() + limit_s
        each = [requests // clients + (i < requests % clients) for i in range(clients)]
        start = time.perf_counter()
        await asyncio.gather(*[_client(port, request, n, latencies, errors, deadline) for n in each if n])
        return time.perf_counter() - start

    before = _cpu_seconds(server or [])
    wall = asyncio.run(main())
    after = _cpu_seconds(server or [])
    ordered = sorted(latencies) or [float("nan")]
    cpu_ms = (1000 * (after - before) / len(latencies) if server and before is not None and after is not None
              and latencies else float("nan"))
    return {"rps": len(latencies) / wall, "p50_ms": 1000 * ordered[len(ordered) // 2],
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], "errors": len(errors),
            "server_cpu_ms": cpu_ms}


class Served:
    """`mlflow models serve` of one model, on a free port, stopped on exit."""

    def __init__(self, uri: str, workers: int, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.start([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                    "--host", "127.0.0.1", "-p", str(self.port), "-w", str(workers)], env, log, "/ping",
                   "mlflow models serve")

    def start(self, command: list[str], env: dict[str, str], log: Path, probe: str, what: str) -> None:
        """Start ``command`` in its own process group; return once ``probe`` answers 200 (bounded)."""
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{what} exited:\n{log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(f"GET {probe} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                    if b" 200 " in s.recv(100):
                        return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"{what} did not answer:\n{log.read_text()[-3000:]}")

    def __enter__(self) -> Served:
        return self

    def pids(self) -> list[int]:
        """The server's processes (`mlflow models serve`, the uvicorn it starts and any workers): its
        own process group, read from Linux's /proc; empty elsewhere."""
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if int(_stat(entry.name)[2]) == self.proc.pid:  # its process group
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
        return found

    def __exit__(self, *exc: object) -> None:
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


FLOOR = """
import sys
import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, Schema

class Floor(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)

rows = pd.read_json(sys.argv[1], orient="split")
mlflow.set_tracking_uri(sys.argv[2])
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(name="floor", python_model=Floor(), pip_requirements=["mlflow"],
                                   signature=ModelSignature(inputs=Schema([ColSpec(AnyType(), c) for c in rows])))
print(info.model_uri)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000, help="per cell at 32 and 200 clients (1 client: a fifth)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trilho-serve-") as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_"))}
        env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "TRILHO_CACHE_DIR": str(folder / "cache"),
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                # mlflow models serve starts `uvicorn` by name: this environment's
                "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        subprocess.run([sys.executable, "-m", "trilho", "run", "--source", "synthetic:diabetes?rows=1000&seed=1",
                        "--set", "cv.n_repeats=1"], cwd=tmp, env=env, check=True, capture_output=True)
        from trilho.data.synthetic import diabetes

        rows = diabetes(rows=100, seed=5).drop(columns=["CLASS", "ID", "No_Pation"])
        (folder / "rows.json").write_text(rows.to_json(orient="split", index=False))
        floor = subprocess.run([sys.executable, "-c", FLOOR, str(folder / "rows.json"), env["MLFLOW_TRACKING_URI"]],
                               cwd=tmp, env=env, check=True, capture_output=True, text=True).stdout.split()[-1]
        models = {"MLflow floor (trivial pyfunc)": floor, "trilho (XGBoost champion)": "models:/diabetes-xgboost@champion"}
        bodies = {n: json.dumps({"dataframe_split": json.loads(rows.head(n).to_json(orient="split", index=False))}
                                ).encode() for n in ROWS}
        cells: dict[tuple[str, int, int], list[dict]] = {}
        for _ in range(args.rounds):
            for name, uri in models.items():
                with Served(uri, args.workers, env, folder / "serve.log") as served:
                    load(served.port, bodies[1], 8, 200)  # warm every worker
                    pids = served.pids()
                    for n in ROWS:
                        for clients in CLIENTS:
                            count = args.requests if clients > 1 else max(50, args.requests // 5)
                            cells.setdefault((name, n, clients), []).append(
                                load(served.port, bodies[n], clients, count, server=pids))
    print(f"{os.cpu_count()} CPUs; mlflow models serve --workers {args.workers}; medians of {args.rounds} rounds\n")
    print("| model | rows / request | clients | requests/s | p50 ms | p99 ms | server CPU ms / request | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, n, clients), found in cells.items():
        med = {k: statistics.median(r[k] for r in found) for k in ("rps", "p50_ms", "p99_ms", "server_cpu_ms")}
        print(f"| {name} | {n} | {clients} | {med['rps']:.0f} | {med['p50_ms']:.1f} | {med['p99_ms']:.1f} | "
              f"{med['server_cpu_ms']:.2f} | {sum(r['errors'] for r in found)} |")
    for n in ROWS:
        floor_rps = statistics.median(r["rps"] for r in cells[(next(iter(models)), n, 32)])
        ours = statistics.median(r["rps"] for r in cells[(list(models)[1], n, 32)])
        print(f"\n{n} row(s), 32 clients: floor / trilho = {floor_rps / ours:.2f}")


if __name__ == "__main__":
    main()
