"""This process's worker processes, as the system lists them: what a test checks was ended."""

from __future__ import annotations

import os


def loky_children() -> set[int]:
    """The children of this process that are loky worker processes."""
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:  # a thread, or a child, may end while it is read
            with open(f"/proc/{os.getpid()}/task/{task}/children") as handle:
                children = handle.read().split()
        except FileNotFoundError:
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as cmd:
                    if b"popen_loky" in cmd.read():
                        found.add(int(child))
            except FileNotFoundError:
                continue
    return found
