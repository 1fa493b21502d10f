"""Where side work runs: a forked child process when forking is safe, the calling thread otherwise.

A forked child inherits the parent's memory (results, figures' data, imported libraries) at no
cost and does not compete with the parent for the GIL. Forking is safe on Linux when no other
Python thread is alive: a thread that held a lock at the fork would leave it held forever in the
child. A notebook kernel or a program with threads of its own therefore runs the work in-line.
Native libraries can hold state that a child cannot use either (a process whose main thread has
fit an XGBoost model deadlocks a forked child's first XGBoost fit), so side work forked here must
not train models, and a child that does not answer in time is killed and its work done in-line.

A command told to stop (SIGTERM, or SIGINT: Ctrl-C) stops from its main thread: within
``stop_on_signals`` the first of them raises ``Stopped`` there, so that every ``with`` block and
``finally`` clause on the way out cleans up (the fits stop, temporary folders go, the MLflow run ends
KILLED), and the children started within a ``scope`` are killed on the way.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator

__all__ = ["Background", "Stopped", "fork_safe", "scope", "start", "stop_on_signals"]

log = logging.getLogger(__name__)


def fork_safe() -> bool:
    return sys.platform.startswith("linux") and threading.active_count() == 1


class Background:
    """Work started by ``start``; ``wait`` returns when it is done and raises if it failed."""

    def __init__(self, work: Callable[[], None], process=None, pipe=None, error: BaseException | None = None) -> None:
        self._work, self._process, self._pipe, self._error = work, process, pipe, error

    @property
    def forked(self) -> bool:
        return self._process is not None

    def wait(self, timeout_s: float = 120.0) -> None:
        if self._process is not None:
            process, pipe = self._process, self._pipe
            self._process = self._pipe = None
            if not pipe.poll(timeout_s):
                process.kill()
                process.join()
                log.warning("background work did not finish in %.0f s in a forked child; doing it here", timeout_s)
                self._work()
                return
            try:
                message = pipe.recv()
            except EOFError:  # it ended without a word: killed, or exited in the middle
                message = None
            process.join()
            if message is None:
                message = f"the child process died (exit code {process.exitcode})"
            if isinstance(message, OSError):  # a full disk, a permission: the parent's own kind of failure
                raise message
            if message:
                raise RuntimeError(f"background work failed: {message}")
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Kill the child still doing the work, if any; work done in-line is over already."""
        if self._process is not None:
            self._process.kill()
            self._process.join()
            self._pipe.close()
            self._process = self._pipe = None


def _child(work: Callable[[], None], pipe) -> None:
    # what the child inherited lives until it exits: its collections walk only what it makes
    # (walking the parent's objects would also copy every page they sit on)
    gc.freeze()
    try:
        work()
    except OSError as exc:  # noqa: BLE001 - the parent raises it again, as itself (ENOSPC is one line there)
        pipe.send(OSError(exc.errno, exc.strerror, exc.filename))
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
        return Background(work, process, receive)
    try:
        work()
    except Exception as exc:  # raised at wait(), like the forked case
        return Background(work, error=exc)
    return Background(work)


@contextlib.contextmanager
def scope() -> Iterator[list[Background]]:
    """``with scope() as started``: the work appended to ``started`` is killed when the block is left
    by an error or a stop; a block that ends normally leaves it to whoever waits for it."""
    started: list[Background] = []
    try:
        yield started
    except BaseException:
        for work in started:
            work.cancel()
        raise


class Stopped(KeyboardInterrupt):
    """The process was told to stop by ``signum``; raised in the main thread by ``stop_on_signals``.
    A KeyboardInterrupt, so that no ``except Exception`` takes it for an error; ``runs`` collects the
    MLflow runs ended KILLED on its way out (trilho.tracking), the outermost last."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # what a shell reports for a process that a signal ended
        self.runs: list[str] = []
        super().__init__(f"stopped by {self.signal_name}")


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within, the first of ``signals`` raises ``Stopped`` in the main thread; a second one, while the
    first is being cleaned up after, ends the process at once. Off the main thread (where Python
    runs no signal handler) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    told: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if told:  # asked again: the clean-up is taking too long for whoever is asking
            os._exit(128 + signum)
        told.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
