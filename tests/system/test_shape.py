"""The code's shape, held by the machine: the import layers, one MLflow edge, trackers that never cross."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    found = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(found).exists():
        pytest.fail("lint-imports (import-linter, in the test extra) is not installed: pip install -e '.[test]'")
    return found


def test_the_contracts_hold_and_each_kind_of_break_fails(tmp_path):
    """Kept on the code as it is; on a copy with three breaks, each is named: the core importing
    MLflow, a lower layer importing a higher one, and a new module no layer places."""
    lint = _lint_imports()
    kept = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert kept.returncode == 0, kept.stdout[-3000:]
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "trilho", copy / "trilho", ignore=shutil.ignore_patterns("__pycache__"))
    package = copy / "trilho"
    for module, line in (("evaluation/cv.py", "import mlflow"), ("evaluation/stats.py", "from trilho.data import clean")):
        path = package / module
        path.write_text(path.read_text() + f"\n\ndef _peek():\n    {line}\n")
    (package / "helpers.py").write_text('"""Somewhere, nowhere."""\n')
    broken = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0
    for said in ("trilho.evaluation.cv -> mlflow", "trilho.evaluation.stats -> trilho.data.clean", "trilho.helpers"):
        assert said in broken.stdout, (said, broken.stdout[-3000:])


def test_the_house_keeps_its_shape():
    """The root holds at most 8 modules; no package more than 12; each package says what it holds."""
    package = ROOT / "src" / "trilho"
    assert len(list(package.glob("*.py"))) <= 8
    for folder in [p for p in package.rglob("*") if p.is_dir() and (p / "__init__.py").exists()]:
        assert len(list(folder.glob("*.py"))) - 1 <= 12, folder
        assert (folder / "__init__.py").read_text().lstrip().startswith('"""'), f"{folder} has no docstring"


def test_two_trackers_in_one_process_never_cross(tmp_path):
    import mlflow

    from trilho.tracking import Tracker

    before = mlflow.get_tracking_uri()
    a = Tracker(f"sqlite:///{tmp_path / 'a.db'}", "exp-a")
    b = Tracker(f"sqlite:///{tmp_path / 'b.db'}", "exp-b")
    with a.run("parent-a", {}) as parent, b.run("only-b", {}) as other, a.run("child-a", {}, parent=parent) as child:
        a.log_values(child, metrics=[("m", 1.0, 0)])
        b.log_values(other, metrics=[("m", 2.0, 0)])
    assert mlflow.get_tracking_uri() == before  # nothing process-wide was set
    in_a = {r.info.run_id for r in a.client.search_runs([a.experiment_id])}
    in_b = {r.info.run_id for r in b.client.search_runs([b.experiment_id])}
    assert in_a == {parent, child} and in_b == {other}
    assert a.client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert a.client.get_run(child).data.metrics == {"m": 1.0}
    assert b.client.get_run(other).data.metrics == {"m": 2.0}
    assert {a.client.get_run(r).info.status for r in in_a} == {"FINISHED"}
