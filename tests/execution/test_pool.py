"""The fit pool on this machine: worker processes started ahead of a session are the session's."""

from __future__ import annotations

import os
import time

import numpy as np

from tests.support.processes import loky_children
from trilho.execution.pool import Batch, LocalPool, Warm, run_fits


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
