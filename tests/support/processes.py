"""This process's worker processes, as the system lists them: what a test checks was ended."""

from __future__ import annotations

import os


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:  # a thread, or a child, may end while it is read
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
        except FileNotFoundError:
            continue
    return found


def _command(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmd:
            return cmd.read()
    except FileNotFoundError:
        return b""


def fork_servers(pid: int | None = None) -> dict[int, set[int]]:
    """The fork servers among the children of ``pid`` (this process), each with the worker processes
    forked from it (its children)."""
    return {child: set(_children(child)) for child in _children(pid or os.getpid())
            if b"multiprocessing.forkserver" in _command(child)}


def running(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (not ended, nor ended and waiting to be reaped)."""
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(pid)
        except FileNotFoundError:
            continue
    return alive


def loky_children() -> set[int]:
    """This process's worker processes: loky's, started by exec, and those forked from its fork
    server (trilho.execution.pool.fit_server), which are the server's children."""
    found = {child for child in _children(os.getpid()) if b"popen_loky" in _command(child)}
    for workers in fork_servers().values():
        found |= workers
    return found
