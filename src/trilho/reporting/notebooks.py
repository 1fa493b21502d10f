"""Run a notebook top to bottom with a real kernel, parameters injected, and publish what it shows.

Parameters work like papermill's: the cell tagged ``parameters`` holds the defaults and a cell
tagged ``injected-parameters`` is inserted after it. The executed notebook and its HTML rendering
go to the lake's ``reports/<run id>/notebook/`` and to the MLflow run the notebook made (it writes
its summary to ``SUMMARY_PATH``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trilho.errors import ConfigError, NotebookError

__all__ = ["NotebookRun", "execute_notebook", "inject_parameters", "publish", "strip_outputs"]


@dataclass(frozen=True)
class NotebookRun:
    executed: Path
    html: Path
    summary: dict[str, Any] | None


def inject_parameters(nb, parameters: dict[str, Any]):
    """Insert a cell that overrides the defaults of the ``parameters`` cell (papermill's convention)."""
    import nbformat

    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ConfigError("the notebook has no cell tagged 'parameters'")
    lines = ["# Injected parameters"] + [f"{k} = {v!r}" for k, v in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)
    return nb


def strip_outputs(nb) -> bool:
    """Remove outputs and execution counts in place; True if anything was removed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
    return changed


def execute_notebook(path: str | Path, parameters: dict[str, Any], output_dir: str | Path, *,
                     timeout_s: int = 900, cwd: str | Path | None = None) -> NotebookRun:
    """Execute every cell (a raising cell stops the run with NotebookError); write .ipynb and .html."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    path, out = Path(path), Path(output_dir)
    if not path.is_file():
        raise ConfigError(f"notebook {str(path)!r} not found")
    out.mkdir(parents=True, exist_ok=True)
    summary_path = (out / f"{path.stem}.summary.json").resolve()
    nb = inject_parameters(nbformat.read(path, as_version=4), {**parameters, "SUMMARY_PATH": str(summary_path)})
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(cwd or path.parent).resolve())}})
    executed = out / f"{path.stem}.ipynb"
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(nb, executed)  # keep what ran, for the reader
        raise NotebookError(f"notebook {path.name} failed; executed cells are in {executed}:\n{exc}") from None
    nbformat.write(nb, executed)
    html, _ = HTMLExporter().from_notebook_node(nb)
    html_path = out / f"{path.stem}.html"
    html_path.write_text(html, encoding="utf-8")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return NotebookRun(executed=executed, html=html_path, summary=summary)


def publish(run: NotebookRun, settings) -> list[str]:
    """Copy the executed notebook and its HTML to the lake and to the notebook's MLflow run."""
    from trilho.storage import open_lake
    from trilho.tracking.store import open_client

    if not run.summary:
        raise ConfigError("the notebook wrote no summary (SUMMARY_PATH), so it has no run to attach to")
    lake = open_lake(settings)
    run_id = run.summary["run_id"]
    keys = []
    client = open_client(settings.tracking_uri)
    for file in (run.executed, run.html):
        key = f"reports/{run_id}/notebook/{file.name}"
        lake.put_file(key, file, overwrite=True)
        keys.append(key)
        client.log_artifact(run_id, str(file), artifact_path="notebook")
    return keys
