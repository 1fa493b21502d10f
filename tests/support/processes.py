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


def loky_children() -> set[int]:
    """This process's worker processes: loky's, started by exec, and those forked from its fork
    server (trilho.execution.pool.fit_server), which are the server's children."""
    found = set()
    for child in _children(os.getpid()):
        command = _command(child)
        if b"popen_loky" in command:
            found.add(child)
        elif b"multiprocessing.forkserver" in command:
            found |= set(_children(child))
    return found
