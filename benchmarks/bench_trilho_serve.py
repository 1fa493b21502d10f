"""Serving under load: `trilho serve` beside `mlflow models serve`, the same model, the same client.

    python benchmarks/bench_trilho_serve.py [--rounds 3] [--seconds 8] [--client wrk|python]

In a fresh folder a `trilho run` on ``synthetic:diabetes?rows=1000&seed=1`` registers the
shipped XGBoost model. Each server then serves it on 127.0.0.1, one after the other, in every
round (the order kept, the rounds interleaved):

* ``mlflow``: ``mlflow models serve --env-manager local --workers 1`` (its best here: two workers
  answered a twentieth as fast, BENCHMARKS.md);
* ``trilho``: ``trilho serve`` with one worker, its defaults (prediction log on, batching of the
  requests that arrive together);
* ``trilho, 2 workers``;
* ``mlflow, numbers as text`` and ``trilho, numbers as text``: the same rows with every number sent as
  a JSON string ("50"), as a CSV-to-JSON client or a web form sends them;
* ``trilho, no batching`` (``TRILHO_SERVE_MAX_BATCH_ROWS=1``: every request its own model call) and
  ``trilho, batch wait 2 ms`` (``TRILHO_SERVE_BATCH_WAIT_MS=2``): what batching buys.

The client is ``wrk`` (C, keep-alive connections, one request at a time per connection) where it
is installed, else a small asyncio client; ``dataframe_split`` bodies of 1 and 100 rows. Per cell:
requests/s, p50 and p99 latency, the server's CPU time per answered request (its processes' user +
system time from /proc, Linux) and errors (non-2xx answers and socket errors); medians over the
rounds, then the ratios trilho / mlflow. Load is only ever sent to 127.0.0.1, every run is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve import Served, _cpu_seconds, _free_port, load  # noqa: E402

CELLS = [(1, 1), (1, 32), (1, 200), (100, 32)]     # (rows per request, clients)
TEXT_CELLS = [(1, 32), (100, 32)]                   # numbers sent as JSON strings
BATCH_CELLS = [(1, 32), (1, 200)]
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}", "rb"):read("*a")
"""


class TrilhoServed(Served):
    """`trilho serve` of one model, on a free port, stopped on exit (its own process group)."""

    def __init__(self, uri: str, workers: int, env: dict[str, str], log: Path) -> None:  # noqa: D107
        self.port = _free_port()
        self.start([sys.executable, "-m", "trilho", "serve", uri, "--port", str(self.port), "--workers", str(workers)],
                   env, log, "/ready", "trilho serve")


def wrk_load(port: int, body_file: Path, clients: int, seconds: int, server: list[int], lua: Path) -> dict:
    """``wrk`` for ``seconds`` at ``clients`` connections; its figures and the server's CPU per request."""
    lua.write_text(LUA.format(body=body_file))
    threads = 1 if clients < 64 else 2
    before = _cpu_seconds(server)
    done = subprocess.run(["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                           "-s", str(lua), f"http://127.0.0.1:{port}/invocations"], capture_output=True, text=True,
                          timeout=seconds + 60)
    after = _cpu_seconds(server)
    out = done.stdout
    if "requests in" not in out:
        raise SystemExit(f"wrk gave no figures (exit {done.returncode}):\n{out}\n{done.stderr}")

    def ms(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not found:
            return float("nan")
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(g) for g in sockets.groups()) if sockets else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    cpu = 1000 * (after - before) / total if before is not None and after is not None and total else float("nan")
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"), "server_cpu_ms": cpu, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="per cell (wrk)")
    parser.add_argument("--requests", type=int, default=2000, help="per cell (the python client)")
    parser.add_argument("--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trilho-serve-") as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRILHO_", "MLFLOW_"))}
        env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "TRILHO_CACHE_DIR": str(folder / "cache"),
                "TRILHO_LAKE": str(folder / "lake"), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        subprocess.run([sys.executable, "-m", "trilho", "run", "--source", "synthetic:diabetes?rows=1000&seed=1",
                        "--set", "cv.n_repeats=1"], cwd=tmp, env=env, check=True, capture_output=True)
        from trilho.data.synthetic import diabetes

        rows = diabetes(rows=100, seed=5).drop(columns=["CLASS", "ID", "No_Pation"])
        bodies = {n: json.dumps({"dataframe_split": json.loads(rows.head(n).to_json(orient="split", index=False))}
                                ).encode() for n in (1, 100)}
        # numbers as a CSV-to-JSON client or a web form sends them: "50" for 50
        texts = {f"{n}t": json.dumps({"dataframe_split": {**json.loads(bodies[n])["dataframe_split"], "data": [
            [str(v) if isinstance(v, int | float) else v for v in row]
            for row in json.loads(bodies[n])["dataframe_split"]["data"]]}}).encode() for n in (1, 100)}
        for n, body in [*bodies.items(), *texts.items()]:
            (folder / f"body{n}.json").write_bytes(body)
        uri = "models:/diabetes-xgboost@champion"
        servers = {
            "mlflow": (lambda log: Served(uri, 1, env, log), CELLS),
            "trilho": (lambda log: TrilhoServed(uri, 1, env, log), CELLS),
            "trilho, 2 workers": (lambda log: TrilhoServed(uri, 2, env, log), CELLS),
            "trilho, no batching": (lambda log: TrilhoServed(uri, 1, {**env, "TRILHO_SERVE_MAX_BATCH_ROWS": "1"}, log),
                                    BATCH_CELLS),
            "trilho, batch wait 2 ms": (lambda log: TrilhoServed(uri, 1, {**env, "TRILHO_SERVE_BATCH_WAIT_MS": "2"}, log),
                                        BATCH_CELLS),
            "mlflow, numbers as text": (lambda log: Served(uri, 1, env, log), TEXT_CELLS),
            "trilho, numbers as text": (lambda log: TrilhoServed(uri, 1, env, log), TEXT_CELLS),
        }
        cells: dict[tuple[str, int, int], list[dict]] = {}
        for _ in range(args.rounds):
            for name, (start, wanted) in servers.items():
                with start(folder / "serve.log") as served:
                    load(served.port, bodies[1], 8, 200)  # warm every worker
                    pids = served.pids()
                    suffix = "t" if name.endswith("as text") else ""
                    for n, clients in wanted:
                        if args.client == "wrk":
                            found = wrk_load(served.port, folder / f"body{n}{suffix}.json", clients, args.seconds, pids,
                                             folder / "post.lua")
                        else:
                            found = load(served.port, (folder / f"body{n}{suffix}.json").read_bytes(), clients,
                                         args.requests, server=pids)
                        cells.setdefault((name, n, clients), []).append(found)
    print(f"{os.cpu_count()} CPUs; client {args.client}; medians of {args.rounds} rounds\n")
    print("| server | rows / request | clients | requests/s | p50 ms | p99 ms | server CPU ms / request | errors |")
    print("|---|---|---|---|---|---|---|---|")
    med: dict[tuple[str, int, int], dict[str, float]] = {}
    for key, found in cells.items():
        med[key] = {k: statistics.median(r[k] for r in found) for k in ("rps", "p50_ms", "p99_ms", "server_cpu_ms")}
        m = med[key]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
              f"{m['server_cpu_ms']:.2f} | {sum(r['errors'] for r in found)} |")
    print()
    for name in ("trilho", "trilho, 2 workers"):
        for n, clients in CELLS:
            base = med[("mlflow", n, clients)]["rps"]
            ratio = med[(name, n, clients)]["rps"] / base if base else float("inf")
            print(f"{name} / mlflow, {n} row(s) at {clients} clients: {ratio:.1f}x requests/s")
    for n, clients in TEXT_CELLS:
        text, plain = med[("trilho, numbers as text", n, clients)]["rps"], med[("trilho", n, clients)]["rps"]
        print(f"trilho, numbers as text / numbers, {n} row(s) at {clients} clients: {text / plain:.2f}x requests/s; "
              f"/ mlflow as text: {text / med[('mlflow, numbers as text', n, clients)]['rps']:.1f}x")
    for name in ("trilho, no batching", "trilho, batch wait 2 ms"):
        for n, clients in BATCH_CELLS:
            ratio = med[("trilho", n, clients)]["rps"] / med[(name, n, clients)]["rps"]
            print(f"trilho (default) / {name}, {n} row(s) at {clients} clients: {ratio:.2f}x requests/s")


if __name__ == "__main__":
    main()
