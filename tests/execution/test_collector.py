"""The garbage collector while a command starts and when it ends (trilho.execution.collector)."""

from __future__ import annotations

import gc
import subprocess
import sys

from trilho.execution import collector


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_start_up_survivors_are_set_aside_and_the_usual_collection_comes_back():
    gc.unfreeze()
    try:
        collector.starting()
        kept = [_Node() for _ in range(10)]
        gc.collect()  # a full collection while the command starts: its survivors are set aside
        assert gc.get_freeze_count() >= len(kept)
        collector.started()
        gc.unfreeze()
        gc.collect()
        assert gc.get_freeze_count() == 0  # no longer set aside after a full collection
        _Node()
        assert gc.collect() >= 1  # a cycle made once started is collected as usual
    finally:
        collector.started()
        gc.unfreeze()


def test_everything_is_set_aside_once_the_exit_handlers_have_run():
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('frozen at teardown', gc.get_freeze_count() > 0))\n"
            "from trilho.execution import collector\n"
            "collector.starting()\n"
            "collector.started()\n"
            "atexit.register(lambda: print('handlers after it run first', gc.get_freeze_count() == 0))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == ["handlers after it run first True", "frozen at teardown True"]
