"""``trilho serve``: a logged model behind MLflow's scoring protocol, fast, measured and logged.

Routes:

- ``POST /invocations``: MLflow's protocol (``trilho.serving.protocol``); the answer is MLflow's,
  ``{"predictions": [{"prediction": ..., "proba_<class>": ...}, ...]}``, with the headers
  ``X-Request-ID`` (the caller's, or a new one) and ``X-Model-Version``;
- ``GET /health`` (the process answers), ``/ready`` (a model is loaded; 503 before), ``/ping``
  (as MLflow's), ``/version`` (trilho's version and the model served), ``/metrics`` (Prometheus'
  text format).

Safe by default: it listens on 127.0.0.1 unless told otherwise; with ``TRILHO_SERVE_TOKEN`` set,
``/invocations``, ``/version`` and ``/metrics`` want ``Authorization: Bearer <token>`` (401);
a body over ``TRILHO_SERVE_MAX_BODY_BYTES`` is refused with 413 before it is read whole; a body
the model cannot read is a 400 that names the column; anything else is a 500 that names the
request id and nothing of the server (its log has the trace).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import shutil
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trilho import __version__
from trilho.errors import ConfigError, RequestError
from trilho.model.answers import answers, check_output
from trilho.model.encoding import input_columns
from trilho.monitoring.prediction_log import PredictionLog, Served
from trilho.serving.protocol import encode_request, params_of, parse_body
from trilho.serving.served_model import Batcher, Follower, ServedModel, load_served
from trilho.settings import Settings
from trilho.storage import open_lake

__all__ = ["create_app", "run_server"]

log = logging.getLogger(__name__)
_JSON = "application/json"
_BIG = 10_000  # rows: a request this big runs on a thread, so the loop goes on answering the small ones


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several workers: one directory
    that ``prometheus_client``'s multiprocess mode reads, named by PROMETHEUS_MULTIPROC_DIR)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("trilho_requests", "Requests answered, by route and status.", ["route", "status"], registry=r)
        self.errors = Counter("trilho_request_errors", "Requests refused or failed, by kind.", ["kind"], registry=r)
        self.latency = Histogram("trilho_request_seconds", "Time to answer /invocations.", registry=r,
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.rows = Counter("trilho_rows", "Rows predicted.", registry=r)
        self.batch = Histogram("trilho_batch_rows", "Rows per call of the model (batched requests).", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384))
        self.model = Gauge("trilho_model_info", "The model served (1) by name and version.", ["name", "version", "uri"],
                           registry=r, multiprocess_mode="liveall")
        self.swaps = Counter("trilho_model_swaps", "Swaps to a newly aliased version.", registry=r)
        self.refresh_errors = Counter("trilho_model_refresh_errors", "Failed looks at the followed alias.", ["kind"],
                                      registry=r)
        self.logged = Counter("trilho_prediction_log_rows", "Rows of the prediction log, written or dropped.",
                              ["outcome"], registry=r)
        self.answered = self.requests.labels("invocations", "200")  # the common case, looked up once

    def serving(self, model: ServedModel, old: ServedModel | None = None) -> None:
        if old is not None:
            self.model.remove(old.name, old.version, old.uri)
        self.model.labels(model.name, model.version, model.uri).set(1)

    def text(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=_JSON,
                    headers=headers)


def _unauthorized(headers: dict[str, str] | None = None) -> Response:
    return _json({"error_code": "UNAUTHORIZED", "message": "send Authorization: Bearer <token>"}, 401, headers)


def _refusal(exc: RequestError, rid: str) -> Response:
    return _json({"error_code": "BAD_REQUEST" if exc.status == 400 else exc.kind.upper(), "message": str(exc),
                  "request_id": rid}, exc.status, {"X-Request-ID": rid})


class App:
    """The routes' shared state: settings, metrics, the model and its follower, the batcher, the log."""

    def __init__(self, model_uri: str, settings: Settings, model: ServedModel | None = None) -> None:
        self.model_uri, self.settings, self.preloaded = model_uri, settings, model
        self.metrics = Metrics()
        token = settings.serve_token.get_secret_value() if settings.serve_token else ""
        self.token = f"Bearer {token}".encode() if token else b""
        self.batcher = Batcher(settings.serve_batch_wait_ms, settings.serve_max_batch_rows, self.metrics.batch.observe)
        self.follower: Follower | None = None
        self.log: PredictionLog | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="trilho-serve-"))

    # -- the life of the server -------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        model, self.preloaded = self.preloaded, None
        if model is None:
            model = await asyncio.to_thread(load_served, self.model_uri, s.tracking_uri, self.folder)
        self.metrics.serving(model)
        self.follower = Follower(model, s.tracking_uri, self.folder, s.serve_refresh_s, self._swapped,
                                 lambda kind: self.metrics.refresh_errors.labels(kind).inc())
        if s.serve_log:
            lake = await asyncio.to_thread(open_lake, s)
            self.log = PredictionLog(lake, s.serve_log_prefix, s.serve_log_queue_rows, s.serve_log_flush_s,
                                     on_count=lambda outcome, n: self.metrics.logged.labels(outcome).inc(n))
        self.follower.start()
        # what startup made (MLflow, pandas, the model: millions of objects) is kept for the server's life:
        # out of the collector's sight, a full collection no longer walks it all, which stalled every
        # request for about 0.2 s now and then (p99 193 ms at 32 clients before, BENCHMARKS.md)
        gc.collect()
        gc.freeze()
        log.info("serving %s (version %s)", model.requested, model.version or model.uri)

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        if self.log is not None:
            await asyncio.to_thread(self.log.close)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _swapped(self, old: ServedModel, new: ServedModel) -> None:
        self.metrics.swaps.inc()
        self.metrics.serving(new, old)

    # -- routes -----------------------------------------------------------------------------
    def _allowed(self, request: Request) -> bool:
        if not self.token:
            return True
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, self.token)

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.serve_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(f"the body is {int(declared)} bytes; the limit is {limit} "
                               "(TRILHO_SERVE_MAX_BODY_BYTES): send fewer rows per request", 413, "too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"the body is over {limit} bytes, the limit (TRILHO_SERVE_MAX_BODY_BYTES): "
                                   "send fewer rows per request", 413, "too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def invocations(self, request: Request) -> Response:
        start = time.perf_counter()
        given = request.headers.get("x-request-id", "")
        # the caller's id joins its labels later (trilho feedback); a long or unprintable one is not kept
        rid = given if given and len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
        m = self.metrics
        if not self._allowed(request):
            m.errors.labels("unauthorized").inc()
            m.requests.labels("invocations", "401").inc()
            return _unauthorized({"WWW-Authenticate": "Bearer", "X-Request-ID": rid})
        assert self.follower is not None
        model = self.follower.current
        try:
            parsed = parse_body(await self._body(request), request.headers.get("content-type", _JSON))
            output, explain = params_of(parsed.params)
            check_output(output, model.spec)
            X, gaps = encode_request(parsed, model.spec) if parsed.rows else (None, None)
            if X is None:
                rows: list[dict[str, Any]] = []
                proba = None
            elif explain:
                if model.explainer is None:
                    raise RequestError("params explain=true: this model was logged before trilho could explain its "
                                       "answers; log it again (trilho run) to explain them")
                encoded = model.encoded(X)
                proba = model.probabilities(X)  # once: the answer's and the log's
                rows = answers(model.proba, encoded, model.spec, output, records=True, explainer=model.explainer,
                               proba=proba)
            else:
                if len(X) >= _BIG:
                    proba = await asyncio.to_thread(model.probabilities, X)
                    m.batch.observe(len(X))
                else:
                    proba = await self.batcher.submit(model, X)
                rows = answers(model.proba, X, model.spec, output, records=True, proba=proba)
        except RequestError as exc:
            m.errors.labels(exc.kind).inc()
            m.requests.labels("invocations", str(exc.status)).inc()
            return _refusal(exc, rid)
        except ValueError as exc:  # the model's encoding names the column and the values
            m.errors.labels("bad_input").inc()
            m.requests.labels("invocations", "400").inc()
            return _refusal(RequestError(str(exc)), rid)
        except Exception:
            log.exception("request %s failed", rid)
            m.errors.labels("internal").inc()
            m.requests.labels("invocations", "500").inc()
            return _json({"error_code": "INTERNAL_ERROR", "message": f"the server failed on request {rid}; its log "
                          "says why", "request_id": rid}, 500, {"X-Request-ID": rid})
        body = orjson.dumps({"predictions": rows}, option=orjson.OPT_SERIALIZE_NUMPY)
        elapsed = time.perf_counter() - start
        m.latency.observe(elapsed)
        m.rows.inc(parsed.rows)
        m.answered.inc()
        if self.log is not None and parsed.rows:
            self._keep(rid, model, parsed, rows, proba, elapsed, X, gaps)
        return Response(body, media_type=_JSON, headers={"X-Request-ID": rid, "X-Model-Version": model.version})

    def _keep(self, rid: str, model: ServedModel, parsed: Any, rows: list[dict[str, Any]], proba: Any,
              elapsed: float, X: Any, gaps: Any) -> None:
        """The request's record to the prediction log's queue: references to what the request
        already holds (the log's own thread and its batches do the rest)."""
        assert self.log is not None
        source = parsed.columns if parsed.columns is not None else {c: parsed.frame[c].tolist() for c in model.kept
                                                                    if c in parsed.frame.columns}
        labels = [r["prediction"] for r in rows] if "prediction" in rows[0] or model.regression else \
            [model.spec["classes"][k] for k in model.decide(proba).tolist()]
        self.log.offer(Served(rid, time.time(), model.name, model.version, round(1000 * elapsed, 3), X, model.numeric,
                              {c: source[c] for c in model.kept if c in source}, labels, proba, model.classes,
                              model.numeric_at, gaps))

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if self.follower is None:
            return _json({"status": "loading"}, 503)
        return _json({"status": "ready", "model_version": self.follower.current.version})

    async def ping(self, request: Request) -> Response:
        return Response("\n", status_code=200 if self.follower is not None else 503, media_type=_JSON)

    async def version(self, request: Request) -> Response:
        if not self._allowed(request):
            return _unauthorized()
        current = self.follower.current if self.follower else None
        return _json({"trilho": __version__, "model": None if current is None else {
            "requested": current.requested, "uri": current.uri, "name": current.name, "version": current.version,
            "run_id": current.run_id, "classes": current.spec["classes"], "features": input_columns(current.spec)}})

    async def metrics_text(self, request: Request) -> Response:
        if not self._allowed(request):
            return _unauthorized()
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.metrics.text(), media_type=CONTENT_TYPE_LATEST)


def create_app(model_uri: str, settings: Settings, model: ServedModel | None = None) -> Starlette:
    """The ASGI application serving ``model_uri`` (loaded at startup, unless ``model`` is it
    already; ``/ready`` says when)."""
    state = App(model_uri, settings, model)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(routes=[
        Route("/invocations", state.invocations, methods=["POST"]),
        Route("/health", state.health), Route("/ready", state.ready), Route("/ping", state.ping),
        Route("/version", state.version), Route("/metrics", state.metrics_text),
    ], lifespan=lifespan)
    app.state.trilho = state
    return app


def _listening_socket(host: str, port: int):
    """A socket of its own for one worker: SO_REUSEPORT lets every worker bind the port (the kernel
    spreads the connections), and TCP_NODELAY, which accepted connections inherit, keeps small
    answers from waiting on the client's delayed ACK (uvicorn's one socket shared by its workers
    left Nagle's algorithm on: about 40 ms a keep-alive request, BENCHMARKS.md)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(model_uri: str, host: str, port: int) -> None:
    """One worker process: its own socket, its own model, settings from the environment."""
    import uvicorn

    from trilho.settings import load_settings

    config = uvicorn.Config(create_app(model_uri, load_settings()), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=30)
    uvicorn.Server(config).run(sockets=[_listening_socket(host, port)])


def run_server(model_uri: str, settings: Settings, host: str = "127.0.0.1", port: int = 5001, workers: int = 1) -> None:
    """Serve until stopped (SIGINT or SIGTERM: requests in flight finish, the log is flushed).

    Several workers are processes started fresh (spawned: a forked copy of a process that has
    used XGBoost's threads can deadlock), each with its own socket on the port and its own model;
    their metrics are merged through prometheus_client's multiprocess directory."""
    import uvicorn

    if workers <= 1:  # loaded first: a model that cannot be served is one line, not a failed startup's trace
        with tempfile.TemporaryDirectory(prefix="trilho-serve-") as folder:
            model = load_served(model_uri, settings.tracking_uri, Path(folder))
            uvicorn.run(create_app(model_uri, settings, model), host=host, port=port, log_level="warning",
                        access_log=False, timeout_graceful_shutdown=30)
        return
    import multiprocessing
    import signal
    import socket
    from multiprocessing.connection import wait

    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers above 1 needs SO_REUSEPORT (Linux, macOS); run one worker per process "
                          "behind a load balancer instead")
    from trilho.tracking.model import resolve_model

    resolve_model(model_uri, settings.tracking_uri)  # a model that is not there: one line, before any worker starts
    _listening_socket(host, port).close()  # the port is free and ours to take, said now rather than in a worker
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="trilho-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # the children read it as they import prometheus_client
        children = [context.Process(target=_worker, args=(model_uri, host, port), name=f"trilho-serve-{i}")
                    for i in range(workers)]
        for child in children:
            child.start()

        def stop(signum: int, _frame: Any) -> None:
            for child in children:
                if child.is_alive() and child.pid:
                    os.kill(child.pid, signal.SIGTERM)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while any(c.is_alive() for c in children):
                wait([c.sentinel for c in children if c.is_alive()])
                if any(c.exitcode not in (None, 0) for c in children):  # one failed (its model, its port): all stop
                    stop(signal.SIGTERM, None)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        failed = [c.exitcode for c in children if c.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT)]
        if failed:
            raise ConfigError(f"a worker of trilho serve exited with status {failed[0]}; its messages are above")
