"""Python's cyclic garbage collector in a command's process, while it starts and when it ends.

While a command starts (its imports, its settings, its data read, its tracking store opened), what
survives a full collection is the program itself, and it lives until the process ends: each full
collection of that time sets its survivors aside (``gc.freeze``), so that the next one walks only
what came after. At exit, the interpreter's teardown would walk the whole heap again, several
times, to free a process that is ending: everything is set aside first. Reference counting frees
frozen objects as usual; only a reference cycle among them is never collected, which is why the
start-up window ends (``started``) before the command's own work makes and drops its objects.

Measured on the default diabetes run (BENCHMARKS.md): eight full collections during start-up took
1.15 s and freed at most 2,000 objects each; the teardown took 1.8 s after the last line printed.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
from typing import Any

__all__ = ["started", "starting"]


def _set_aside(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def starting() -> None:
    """The command starts: each full collection's survivors are set aside until ``started``; at
    exit, everything is, once the exit handlers registered after this call have run."""
    if _set_aside not in gc.callbacks:
        gc.callbacks.append(_set_aside)
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def started() -> None:
    """The command's own work begins: collections go back to the usual."""
    with contextlib.suppress(ValueError):
        gc.callbacks.remove(_set_aside)
