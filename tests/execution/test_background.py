"""Side work in a forked child where that is safe, in-line elsewhere; failures reach the parent."""

from __future__ import annotations

import gc
import os
import threading
import time

import pytest

from trilho.execution import background as parallel


@pytest.fixture(autouse=True)
def _no_idle_threads():
    """A fork needs a process with no other thread. Tests before these leave idle pool workers behind
    (MLflow's artifact repositories keep a ThreadPoolExecutor each); they exit once their owner is
    collected, which is up to the garbage collector: collect, and wait for them a moment."""
    gc.collect()
    deadline = time.monotonic() + 5
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def _write_pid(path):
    return lambda: path.write_text(str(os.getpid()))


def test_forked_when_no_other_thread_is_alive(tmp_path):
    done = parallel.start(_write_pid(tmp_path / "pid"))
    assert done.forked, f"threads alive: {threading.enumerate()}"
    done.wait()
    assert int((tmp_path / "pid").read_text()) != os.getpid()


def test_in_line_while_another_thread_is_alive(tmp_path):
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        done = parallel.start(_write_pid(tmp_path / "pid"))
    finally:
        stop.set()
        other.join()
    assert not done.forked
    done.wait()
    assert int((tmp_path / "pid").read_text()) == os.getpid()


def _fail():
    raise ValueError("no figure today")


def test_a_failure_in_the_child_is_raised_by_wait():
    done = parallel.start(_fail)
    assert done.forked
    with pytest.raises(RuntimeError, match="ValueError: no figure today"):
        done.wait()


def test_a_child_that_dies_is_reported():
    assert parallel.fork_safe(), f"threads alive: {threading.enumerate()}"  # in-line, os._exit would end pytest
    done = parallel.start(lambda: os._exit(3))
    # in-line, the work would end this process: stop here instead. Threads left alive by earlier
    # tests in this process (MLflow's artifact download pool, after a model load) prevent forking;
    # tests that load models in-process sort after this file
    assert done.forked, f"threads alive: {threading.enumerate()}"
    with pytest.raises(RuntimeError, match="died"):
        done.wait()


def test_a_child_that_hangs_is_killed_and_its_work_done_here(tmp_path):
    import time

    marker = tmp_path / "pid"

    def work():
        if os.getpid() != parent:
            time.sleep(60)  # a forked child that never answers
        marker.write_text(str(os.getpid()))

    parent = os.getpid()
    done = parallel.start(work)
    assert done.forked
    started = time.monotonic()
    done.wait(timeout_s=1)
    assert time.monotonic() - started < 10
    assert int(marker.read_text()) == parent
