"""The reference pages are generated from the code: every experiment key and CLI option has its entry."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from trilho.cli import app
from trilho.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[2]


def _reference():
    found = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "reference.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


def _keys(config: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in config.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key not in {"params", "labels", "categorical", "ranges", "space"}:
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_every_experiment_key_has_an_entry_that_says_what_it_does():
    rows = {row["key"]: row for row in _reference().experiment_keys()}
    resolved = load_experiment("diabetes").resolved()  # what a run records: every key a file may hold
    missing = sorted(_keys(resolved) - set(rows))
    assert not missing, f"keys with no reference entry: {missing}"
    silent = sorted(key for key, row in rows.items() if not row["what"].strip())
    assert not silent, f"keys whose entry does not say what they do (a comment above the field): {silent}"
    page = _reference().experiment_page()
    assert all(f"| `{key}` |" in page for key in rows)


def test_every_cli_command_and_option_has_an_entry():
    page = _reference().cli_page()
    sections = dict(re.findall(r"## `trilho (\S+)`\n(.*?)(?=\n## `trilho |\Z)", page, re.S))
    runner = CliRunner()
    commands = typer.main.get_command(app).commands
    assert set(sections) == set(commands)
    for name in commands:
        shown = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"}).output
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", shown)) - {"--help"}
        missing = sorted(flag for flag in flags if flag not in sections[name])
        assert not missing, f"trilho {name}: {missing} shown by --help but not in the reference"
