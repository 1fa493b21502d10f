"""The fit pool on this machine: worker processes started ahead of a session are the session's."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from tests.support.processes import loky_children
from trilho.execution.pool import Batch, LocalPool, Warm, fit_server, run_fits, started_fit_server


def _pid(X, y, threads) -> int:
    return os.getpid()


def test_worker_processes_started_ahead_run_the_sessions_fits_and_end_on_close():
    X, y = np.zeros((4, 1)), np.zeros(4)
    before = loky_children()
    warm = Warm(2, X, y, ("json.tool",))
    deadline = time.monotonic() + 60
    while len(loky_children() - before) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = loky_children() - before
    assert len(started) == 2
    batch = Batch()
    for k in range(6):
        batch.add((_pid, ()), f"fit {k}", gil_bound=True)
    try:
        results, pool, workers = run_fits(X, y, batch, 2, LocalPool(2, warm))
        assert (pool, workers) == ("processes", 2)
        assert set(results) <= started  # no process of the session's own
        other = run_fits(np.ones((4, 1)), y, batch, 2, LocalPool(2, warm))[0]
        assert not set(other) & started  # other data: the session starts its own
    finally:
        warm.close()
    assert not loky_children() & started


def _where(X, y, threads) -> tuple[int, int, bool, float]:
    return os.getpid(), os.getppid(), "tabnanny" in sys.modules, float(X.sum())


def test_worker_processes_forked_from_the_fit_server_have_its_imports_and_end_on_close():
    assert "tabnanny" not in sys.modules  # imported by the server only
    server = fit_server(("tabnanny",))
    assert server is not None and started_fit_server() is server
    X, y = np.arange(8.0).reshape(4, 2), np.zeros(4)
    before = loky_children()
    warm = Warm(2, X, y, server=server)
    batch = Batch()
    for k in range(6):
        batch.add((_where, ()), f"fit {k}", gil_bound=True)
    try:
        results = run_fits(X, y, batch, 2, LocalPool(2, warm))[0]
        forked = loky_children() - before
    finally:
        warm.close()
    pids = {pid for pid, _, _, _ in results}
    assert len(forked) == 2 and pids and pids <= forked  # its workers ran every fit, and are listed as ours
    assert all(parent != os.getpid() and has and total == 28.0 for _, parent, has, total in results)
    assert "tabnanny" not in sys.modules  # the server's imports, not this process's
    assert not loky_children() & forked  # ended on close
