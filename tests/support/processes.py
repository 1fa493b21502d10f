"""This process's worker processes, as the system lists them: what a test checks was ended."""

from __future__ import annotations

import os


def loky_children() -> set[int]:
    """The children of this process that are loky worker processes."""
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as handle:
            for child in handle.read().split():
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as cmd:
                        if b"popen_loky" in cmd.read():
                            found.add(int(child))
                except FileNotFoundError:
                    continue
    return found
