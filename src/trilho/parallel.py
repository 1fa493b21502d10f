"""Where side work runs: forked child processes when forking is safe, the calling thread otherwise.

A forked child inherits the parent's memory (data, fitted models, imported libraries) at no cost
and does not compete with the parent for the GIL. Forking is safe on Linux when no other Python
thread is alive: a thread that held a lock at the fork would leave it held forever in the child.
A notebook kernel or a program with threads of its own therefore runs the work in-line.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import traceback
from collections.abc import Callable

__all__ = ["Background", "fork_safe", "start"]


def fork_safe() -> bool:
    return sys.platform.startswith("linux") and threading.active_count() == 1


class Background:
    """Work started by ``start``; ``wait`` returns when it is done and raises if it failed."""

    def __init__(self, process=None, pipe=None, error: BaseException | None = None) -> None:
        self._process, self._pipe, self._error = process, pipe, error

    @property
    def forked(self) -> bool:
        return self._process is not None

    def wait(self) -> None:
        if self._process is not None:
            try:
                message = self._pipe.recv()
            except EOFError:  # it ended without a word: killed, or exited in the middle
                message = None
            self._process.join()
            if message is None:
                message = f"the child process died (exit code {self._process.exitcode})"
            self._process, self._pipe = None, None
            if message:
                raise RuntimeError(f"background work failed: {message}")
        if self._error is not None:
            raise self._error


def _child(work: Callable[[], None], pipe) -> None:
    try:
        work()
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        pipe.send(traceback.format_exc(limit=5))
    else:
        pipe.send("")


def start(work: Callable[[], None]) -> Background:
    """Run ``work`` in a forked child if that is safe, else now, in this thread."""
    if fork_safe():
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child, args=(work, send), daemon=True)
        process.start()
        send.close()
        return Background(process, receive)
    try:
        work()
    except Exception as exc:  # raised at wait(), like the forked case
        return Background(error=exc)
    return Background()
