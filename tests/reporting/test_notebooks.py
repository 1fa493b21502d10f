"""The notebooks: stored without outputs, executed top to bottom with a real kernel, same numbers as the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest
from mlflow.tracking import MlflowClient

from tests.support.services import ACCESS_KEY, SECRET_KEY
from trilho import load_settings
from trilho.reporting.notebooks import execute_notebook, publish, strip_outputs
from trilho.storage import open_lake

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMALL = ["cv.n_repeats=1", "model.params.n_estimators=15", "model.params.max_depth=3"]
SOURCE = "synthetic:diabetes?rows=400&seed=1"
pytestmark = pytest.mark.timeout(600)


def test_there_is_a_notebook_and_it_is_stored_without_outputs():
    assert NOTEBOOKS, "notebooks/ is empty"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert not strip_outputs(nb), f"{path.name} has outputs: clear them before committing"
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), f"{path.name} has no parameters cell"


def _images(executed: Path) -> int:
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_notebook_on_the_embedded_default_shows_the_clis_numbers(workdir):
    params = {"SOURCE": SOURCE, "OVERRIDES": SMALL, "LAKE": str(workdir / "lake"),
              "TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    run = execute_notebook(ROOT / "notebooks" / "diabetes.ipynb", params, workdir / "out", cwd=workdir)
    # every plot the notebook promises: class balance, distributions, boxplots, correlation, fold scores,
    # two confusion matrices, ROC/PR curves
    assert _images(run.executed) >= 8
    settings = load_settings(env_file=None, lake=params["LAKE"], tracking_uri=params["TRACKING_URI"])
    keys = publish(run, settings)
    run_id = run.summary["run_id"]
    assert open_lake(settings).exists(f"reports/{run_id}/notebook/diabetes.html") and len(keys) == 2
    artifacts = {a.path for a in MlflowClient(params["TRACKING_URI"]).list_artifacts(run_id, "notebook")}
    assert artifacts == {"notebook/diabetes.html", "notebook/diabetes.ipynb"}
    # the CLI on the same configuration, in its own lake and store: a person reading the HTML sees its numbers
    cli_dir = workdir / "cli"
    cli_dir.mkdir()
    env = {**os.environ, "TRILHO_LAKE": str(cli_dir / "lake"), "MLFLOW_TRACKING_URI": f"sqlite:///{cli_dir / 'm.db'}"}
    args = [sys.executable, "-m", "trilho", "run", "--source", SOURCE, "--summary-json", str(cli_dir / "s.json")]
    for item in SMALL:
        args += ["--set", item]
    done = subprocess.run(args, cwd=cli_dir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cli = json.loads((cli_dir / "s.json").read_text())
    html = run.html.read_text()
    for metric, s in cli["cv"]["metrics"].items():
        assert s["mean"] == pytest.approx(run.summary["cv"]["metrics"][metric]["mean"], abs=1e-12)
        low, high = s["ci"]
        assert f"{low:.4f} – {high:.4f}" in html, metric
    assert cli["holdout"]["confusion_matrix"] == run.summary["holdout"]["confusion_matrix"]


def test_notebook_on_the_live_services(workdir, seaweed, mlflow_server, monkeypatch):
    for name, value in {"TRILHO_S3_ENDPOINT_URL": seaweed.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                        "AWS_SECRET_ACCESS_KEY": SECRET_KEY}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits them, as the jupyter service's container does
    params = {"SOURCE": SOURCE, "OVERRIDES": SMALL, "LAKE": f"s3://nb-{uuid.uuid4().hex[:8]}/lake",
              "TRACKING_URI": mlflow_server.url}
    run = execute_notebook(ROOT / "notebooks" / "diabetes.ipynb", params, workdir / "out", cwd=workdir)
    assert _images(run.executed) >= 8
    settings = load_settings(env_file=None, lake=params["LAKE"], tracking_uri=mlflow_server.url)
    publish(run, settings)
    run_id = run.summary["run_id"]
    assert open_lake(settings).exists(f"reports/{run_id}/notebook/diabetes.ipynb")
    assert MlflowClient(mlflow_server.url).get_run(run_id).info.status == "FINISHED"
