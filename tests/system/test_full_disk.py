"""A full temporary disk during a run is one line, the run ends FAILED, and nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.training


@pytest.fixture
def small_tmpfs(tmp_path: Path, request):
    """A tmpfs of the size asked for (root only: skipped where it cannot be mounted)."""
    folder = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here ({done.stderr.strip() or done.returncode})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# 8k: the first temporary file fails; 120k: the model's files are written, a later one fails; 400k: the
# figures' children and the gate's download of the model fail (five tracebacks and 380 lines before)
@pytest.mark.parametrize("small_tmpfs", ["8k", "120k", "400k"], indirect=True)
def test_a_full_temporary_disk_during_a_run_is_one_line(workdir, small_tmpfs):
    env = {**os.environ, "TMPDIR": str(small_tmpfs), "TRILHO_LAKE": str(workdir / "lake"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "TRILHO_CACHE_DIR": str(workdir / "cache")}
    done = subprocess.run([sys.executable, "-m", "trilho", "run", "--source", "synthetic:diabetes?rows=300&seed=3",
                           "--set", "cv.n_repeats=1", "--set", "model.params.n_estimators=15"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "╭" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], done.stderr
    assert "TMPDIR" in errors[0] and str(small_tmpfs) in errors[0]
    assert list(small_tmpfs.rglob("*")) == []  # the run's temporary folder went with it
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert all(r.info.status == "FAILED" for r in runs)  # where it got as far as a run (120k), it ended FAILED


def test_a_store_left_half_built_by_a_full_disk_is_named_with_what_to_do(workdir):
    """A write that fails while a fresh mlflow.db is created leaves it half-built: every later command
    printed 448 lines of traceback (`trilho models`), or one line that did not say the file can go."""
    db = workdir / "mlflow.db"
    create = ("import resource, signal\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))\n"
              "from mlflow.tracking import MlflowClient\n"
              f"MlflowClient('sqlite:///{db}').search_experiments()\n")
    assert subprocess.run([sys.executable, "-c", create], capture_output=True, timeout=120).returncode != 0
    assert db.is_file()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "TRILHO_LAKE": str(workdir / "lake"),
           "TRILHO_CACHE_DIR": str(workdir / "cache")}
    for args in (["models"], ["run", "--source", "synthetic:diabetes?rows=200&seed=1", "--set", "cv.n_repeats=1"]):
        done = subprocess.run([sys.executable, "-m", "trilho", *args], env=env, capture_output=True, text=True,
                              timeout=300)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1 and len(lines) == 1, done.stderr[-3000:]
        assert f"the tracking store {db} is half-built" in lines[0] and f"rm {db}" in lines[0], lines
        assert "It holds no run and no model" in lines[0]
