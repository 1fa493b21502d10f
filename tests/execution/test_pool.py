"""The fit pool's threads: OpenMP's team is capped in the thread of each fit that would take every core."""

from __future__ import annotations

import os

import numpy as np
import pytest
import sklearn.ensemble  # noqa: F401 - loads scikit-learn's OpenMP runtime, which the cap acts on
from threadpoolctl import threadpool_info

from trilho.execution.pool import Batch, run_fits


def _openmp_threads(X, y, threads) -> int:
    teams = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]
    assert teams, "no OpenMP runtime is loaded"
    return max(teams)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the cap is seen only where OpenMP's default team is larger")
def test_a_gil_bound_fit_kept_in_a_thread_is_still_capped_to_its_share():
    X, y = np.zeros((4, 1)), np.zeros(4)
    batch = Batch()
    kept = batch.add((_openmp_threads, ()), "a histogram-boosting fit kept in a thread", gil_bound=False, openmp=True)
    free = batch.add((_openmp_threads, ()), "a fit that sets its own threads", gil_bound=False)
    results, pool, workers = run_fits(X, y, batch, n_jobs=2)
    assert (pool, workers) == ("threads", 2)
    assert results[kept] == 1  # two fits at once on two cores: one core each
    assert results[free] > 1  # uncapped: OpenMP's default team, every core
