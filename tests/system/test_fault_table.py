"""Each of the 31 cases of the fault catalogue is pinned by at least one test named by its number
(``test_fault_NN_...``); `pytest -k fault_` runs the table. This keeps a case from losing its test."""

from __future__ import annotations

import re
from pathlib import Path


def test_every_case_of_the_fault_catalogue_has_a_numbered_test():
    found: dict[int, list[str]] = {}
    for path in Path(__file__).parents[1].rglob("test_*.py"):
        for name, number in re.findall(r"^def (test_fault_(\d\d)_\w+)\(", path.read_text(), re.M):
            found.setdefault(int(number), []).append(f"{path.name}::{name}")
    assert sorted(found) == list(range(1, 32)), f"cases without a test: {sorted(set(range(1, 32)) - set(found))}"
