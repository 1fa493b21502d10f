"""A model logged by trilho before its modules moved into packages loads and predicts with today's code.

The older trilho is taken from the project's own history (``git archive``), trains and logs a model
in a fresh interpreter, and today's trilho predicts with it and serves its answers' shape. Skipped
where the checkout has no history (a copy without ``.git``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import types
from io import BytesIO
from pathlib import Path

import pandas as pd
import pytest

from trilho.data.synthetic import diabetes
from trilho.serving.predict import predict_batch
from trilho.storage import LocalLake
from trilho.tracking.model import load_model

ROOT = Path(__file__).resolve().parents[2]
# the last commit whose modules all sat in one folder (before trilho/model, trilho/evaluation, ...)
FLAT = "4efb5c81b0497d506a2f220cd9dacddf453f2e60"

pytestmark = [pytest.mark.training, pytest.mark.processes]


def _old_source(to: Path) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git history here: the older trilho is taken from it")
    archive = subprocess.run(["git", "archive", "--format=tar", FLAT, "src"], cwd=ROOT, capture_output=True, timeout=60)
    if archive.returncode != 0:
        pytest.skip(f"commit {FLAT[:7]} is not in this checkout's history (a shallow clone?)")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(to, filter="data")
    return to / "src"


def test_a_model_logged_by_the_flat_layout_loads_and_predicts(tmp_path, settings):
    old = _old_source(tmp_path / "old")
    assert (old / "trilho" / "pipeline.py").exists() and not (old / "trilho" / "workflows").exists()
    env = {**os.environ, "PYTHONPATH": str(old), "TRILHO_LAKE": settings.lake, "MLFLOW_TRACKING_URI": settings.tracking_uri,
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    trained = subprocess.run(
        [sys.executable, "-m", "trilho", "run", "--source", "synthetic:diabetes?rows=300&seed=5",
         "--set", "cv.n_repeats=1", "--set", "cv.n_splits=3", "--set", "model.params.n_estimators=20"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert str(old) in subprocess.run([sys.executable, "-c", "import trilho; print(trilho.__file__)"], env=env,
                                      capture_output=True, text=True).stdout  # it was the older code that ran

    rows = diabetes(rows=40, seed=11)
    # another model's code, loaded earlier in this process under the same bare name, lacks what the
    # older model imports from its own encoding.py: the older model must get its own copy all the same
    sys.modules["encoding"] = types.ModuleType("encoding")
    model = load_model("models:/diabetes-xgboost/1", tmp_path / "loaded", settings.tracking_uri)
    answers = model.predict(rows.drop(columns=["CLASS"]))
    assert len(answers) == 40 and set(pd.DataFrame(answers).iloc[:, 0].astype(str)) <= {"N", "P", "Y"}
    # and batch prediction, which reads the model's own files and digests
    (tmp_path / "rows.csv").write_text(rows.drop(columns=["CLASS"]).to_csv(index=False))
    done = predict_batch("models:/diabetes-xgboost/1", f"file:{tmp_path / 'rows.csv'}", settings,
                         lake=LocalLake(settings.lake))
    assert done["rows"] == 40
