import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import trilho
from tests.conftest import FAST
from trilho.cli import app
from trilho.storage import LocalLake

runner = CliRunner()


def _env(settings):
    return {"TRILHO_LAKE": settings.lake, "MLFLOW_TRACKING_URI": settings.tracking_uri}


@pytest.mark.training
def test_run_writes_a_summary(settings, small_csv, workdir):
    args = ["run", "--source", f"file:{small_csv}", "--summary-json", "s.json"]
    for item in FAST:
        args += ["--set", item]
    result = runner.invoke(app, args, env=_env(settings))
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "s.json").read_text())
    acc = summary["cv"]["metrics"]["accuracy"]
    assert set(acc) >= {"mean", "std", "low", "high", "n"} and acc["n"] == 5
    assert summary["holdout"]["labels"] == ["N", "Y", "P"] and len(summary["holdout"]["confusion_matrix"]) == 3
    assert summary["run_id"] and summary["lake"]["reports"] == f"reports/{summary['run_id']}/"
    assert summary["model_uri"].startswith("models:/")
    assert "MLflow run" in result.output and "mlflow ui --backend-store-uri" in result.output
    assert "…" not in result.output and f"mlflow ui --backend-store-uri {settings.tracking_uri}" in result.output


def _bad_files(tmp_path):
    good = "ID,No_Pation,Gender,AGE,Urea,Cr,HbA1c,Chol,TG,HDL,LDL,VLDL,BMI,CLASS\n"
    row = "1,2,F,50,4.7,46,4.9,4.2,0.9,2.4,1.4,0.5,24,{label}\n"
    rows = "".join(row.format(label=lab) for lab in ["N"] * 30 + ["Y"] * 30 + ["P"] * 30)
    cases = {
        "empty.csv": ("", "empty"),
        "header.csv": (good, "no data rows"),
        "unknown.csv": (good + rows + row.format(label="Q"), "unknown labels ['Q']"),
        "text.csv": (good + rows.replace("4.7", "abc", 1), "non-numeric values ['abc']"),
        "tiny_class.csv": (good + "".join(row.format(label=lab) for lab in ["N"] * 30 + ["Y"] * 30 + ["P"] * 2),
                           "class 'P' has 2 rows"),
        # files as other programs write them: each named, with the fix ("'utf-8' codec can't decode" before)
        "latin1.csv": ((good + rows).replace("F,", "Fê,", 1).encode("latin-1"), "is not UTF-8 text: line 2"),
        "utf16.csv": ((good + rows).encode("utf-16"), "is UTF-16 text"),
        "workbook.csv": (b"PK\x03\x04" + bytes(200), "is a spreadsheet (.xlsx)"),
        "twice.csv": (good.replace("Chol", "HbA1c") + rows, "'HbA1c' at columns [7, 8]"),  # silently 'HbA1c.1' before
        # a header and one row of 9 MB: refused before it is parsed (a MemoryError at 300 MB before)
        "long.csv": (good + "1," * (4_500_000) + "N\n", "has a line of 9,000,001 bytes"),
    }
    for name, (text, _) in cases.items():
        if isinstance(text, bytes):
            (tmp_path / name).write_bytes(text)
        else:
            (tmp_path / name).write_text(text)
    return cases


def test_bad_input_gives_one_clear_line_and_writes_raw_once(settings, tmp_path):
    for name, (_, message) in _bad_files(tmp_path).items():
        for _attempt in range(2):
            result = runner.invoke(app, ["run", "--source", f"file:{tmp_path / name}"], env=_env(settings))
            assert result.exit_code == 1, (name, result.output)
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error:"), (name, result.output)
            assert message in result.output.replace("\n", " "), (name, result.output)
    raw = LocalLake(settings.lake).list("raw/")
    # the parseable bad files were kept once each (data + manifest); the empty one, the long line and those
    # that are not UTF-8 CSV text (their head is read before anything is written) never entered
    assert len(raw) == 2 * 4 and len(set(raw)) == len(raw)


def test_ingest_twice_says_skipped(settings, small_csv):
    first = runner.invoke(app, ["ingest", "--source", f"file:{small_csv}"], env=_env(settings))
    second = runner.invoke(app, ["ingest", "--source", f"file:{small_csv}"], env=_env(settings))
    assert first.exit_code == second.exit_code == 0
    assert "written" in first.output and "already there, skipped" in second.output


def test_config_prints_the_resolved_experiment(settings):
    result = runner.invoke(app, ["config", "--set", "cv.n_repeats=2"], env=_env(settings))
    assert result.exit_code == 0 and json.loads(result.output)["cv"]["n_repeats"] == 2
    bad = runner.invoke(app, ["config", "--set", "cv.n_repeats=zero"], env=_env(settings))
    assert bad.exit_code == 1 and "cv.n_repeats" in bad.output


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "trilho", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ingest" in out.stdout


@pytest.mark.training
def test_models_promote_and_predict_from_the_command_line(settings, small_csv, workdir):
    args = ["run", "--source", f"file:{small_csv}"]
    for item in FAST:
        args += ["--set", item]
    for _ in range(2):
        assert runner.invoke(app, args, env=_env(settings)).exit_code == 0
    listed = runner.invoke(app, ["models"], env=_env(settings))
    assert listed.exit_code == 0 and "promoted" in listed.output and "challenger" in listed.output
    promoted = runner.invoke(app, ["promote", "1", "--reason", "roll back for a demo"], env=_env(settings))
    assert promoted.exit_code == 0 and "v1 is now champion (was v2)" in promoted.output
    assert LocalLake(settings.lake).list("reports/registry/diabetes-xgboost/")
    empty_reason = runner.invoke(app, ["promote", "2", "--reason", " "], env=_env(settings))
    assert empty_reason.exit_code == 1 and "--reason" in empty_reason.output
    done = runner.invoke(app, ["predict", "-m", "models:/diabetes-xgboost@champion", "-i", str(small_csv)],
                         env=_env(settings))
    assert done.exit_code == 0 and "300 rows by models:/diabetes-xgboost/1" in done.output
    missing = runner.invoke(app, ["predict", "-m", "models:/diabetes-xgboost@champion", "-i", "nope.csv"],
                            env=_env(settings))
    assert missing.exit_code == 1 and "nope.csv" in missing.output


@pytest.mark.training
def test_run_goes_offline_in_one_line_when_the_source_cannot_be_reached(settings, workdir):
    import socket

    with socket.socket() as s:  # a port nobody listens on: the source's host does not answer
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["run", "--set", f'source.uri="http://127.0.0.1:{port}/diabetes.csv"', "--set", 'source.sha256=""',
            "--offline-source", "synthetic:diabetes?rows=300&seed=1", "--summary-json", "s.json"]
    for item in FAST:
        args += ["--set", item]
    result = runner.invoke(app, args, env=_env(settings))
    assert result.exit_code == 0, result.output
    assert "offline: 'http://127.0.0.1:" in result.output and "cannot be reached (ConnectionError)" in result.output
    assert "running on synthetic:diabetes" in result.output
    summary = json.loads((workdir / "s.json").read_text())
    assert summary["data"]["source"].startswith("synthetic:diabetes") and summary["registry"]["name"] == "diabetes-xgboost-offline"
    refused = runner.invoke(app, args[:5] + ["--summary-json", "t.json"], env=_env(settings))  # no fallback: one clear error
    assert refused.exit_code == 1 and "cannot fetch" in refused.output


def _unanswered_source() -> str:
    import socket

    with socket.socket() as s:  # a port nobody listens on: the source's host does not answer
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/diabetes.csv"


def test_ingest_goes_offline_in_one_line_and_reads_its_options_from_the_environment(settings, workdir):
    """What Compose's ingest service runs (`trilho ingest`, everything from the environment)."""
    unreachable = _unanswered_source()
    experiment = workdir / "far.toml"  # the diabetes experiment, its source on a host that does not answer
    lines = (Path(trilho.__file__).parent / "experiments/diabetes.toml").read_text().splitlines()
    experiment.write_text("\n".join('name = "far"' if line.startswith("name = \"diabetes\"")
                                    else f'uri = "{unreachable}"' if line.startswith("uri = ")
                                    else 'sha256 = ""' if line.startswith("sha256 = ") else line for line in lines))
    env = {**_env(settings), "TRILHO_EXPERIMENT": str(experiment),
           "TRILHO_OFFLINE_SOURCE": "synthetic:diabetes?rows=200&seed=2"}
    done = runner.invoke(app, ["ingest"], env=env)
    assert done.exit_code == 0, done.output
    assert f"offline: '{unreachable}' cannot be reached (ConnectionError); running on synthetic:diabetes" in done.output
    assert "written (200 rows" in done.output
    assert [k for k in LocalLake(settings.lake).list("raw/far/") if k.endswith(".csv")]
    # a source given (here through TRILHO_SOURCE) is the one wanted: no fallback, one clear error
    refused = runner.invoke(app, ["ingest"], env={**env, "TRILHO_SOURCE": unreachable})
    assert refused.exit_code == 1 and "cannot fetch" in refused.output and "offline:" not in refused.output
    # no fallback set (empty counts as unset): the same error
    alone = runner.invoke(app, ["ingest"], env={**env, "TRILHO_OFFLINE_SOURCE": ""})
    assert alone.exit_code == 1 and "cannot fetch" in alone.output


def test_every_command_prints_its_help():
    """Help texts go through rich's markup: a bracket in one (kaggle:owner/dataset[/file]) must be
    escaped, or `--help` ends in a MarkupError traceback instead of the help."""
    import typer

    names = sorted(typer.main.get_command(app).commands)
    assert {"run", "init", "predict", "tune"} <= set(names)
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, (name, result.output[-500:])


def _summary(folder: str) -> dict:
    """A run's summary as `trilho run` prints it: nine metrics, a long lake path, a registered model."""
    metrics = {m: {"mean": 0.95, "std": 0.0123, "low": 0.9311, "high": 0.9788, "ci": [0.9402, 0.9711]}
               for m in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted",
                         "mcc", "roc_auc_ovr", "log_loss")}
    return {"experiment": "diabetes", "run_id": "58d1a030822d46ae9025b45cefd19c43", "mlflow_experiment": "experimento_xgboost",
            "mlflow_experiment_id": "3",
            "cv": {"n_folds": 50, "n_splits": 5, "seeds": list(range(10)), "level": 0.95, "interval": "corrected_t",
                   "duplicates": {"policy": "group", "rows": 1000, "distinct_feature_rows": 826,
                                  "rows_copying_another": 174, "rows_used": 1000},
                   "metrics": metrics},
            "holdout": {"scores": dict.fromkeys(metrics, 0.9916)},
            "data": {"ingest_skipped": False},
            "lake": {"uri": f"file://{folder}/a/lake/folder/deep/enough/to/pass/eighty/columns",
                     "reports": "reports/58d1a030822d46ae9025b45cefd19c43/"},
            "registry": {"name": "diabetes-xgboost", "version": "12", "aliases": ["challenger", "champion"],
                         "reason": "no champion yet: the first model is promoted"},
            "timings": {"total_s": 14.4, "cv_s": 3.2, "tracking_s": 9.1}}


def test_a_piped_run_prints_its_table_whole_and_its_paths_on_one_line(monkeypatch, workdir, settings):
    """Standard output that is no terminal (CliRunner's, like a pipe's) has no width: nothing is cut
    to 80 columns (``0.9402–0.97…``, ``holdo…``) and no path or URI is broken over two lines."""
    import types

    import trilho.workflows.run

    summary = _summary(str(workdir))
    monkeypatch.setattr(trilho.workflows.run, "run_experiment",
                        lambda *a, **k: types.SimpleNamespace(summary=summary, offline=None))
    tracking = f"sqlite:///{workdir}/a/tracking/store/with/a/long/enough/name/mlflow.db"
    result = runner.invoke(app, ["run"], env={**_env(settings), "MLFLOW_TRACKING_URI": tracking, "COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "…" not in result.output
    header = next(line for line in lines if "metric" in line)
    assert "holdout" in header and "95% CI" in header and "fold spread" in header
    row = next(line for line in lines if "balanced_accuracy" in line)
    assert "0.9402–0.9711" in row and "0.9311–0.9788" in row and "0.9916" in row
    assert max(map(len, lines)) > 80  # wider than rich's guess for a terminal it cannot see
    whole = [f"{summary['lake']['uri']}/{summary['lake']['reports']}", tracking, "models:/diabetes-xgboost/12",
             f"mlflow ui --backend-store-uri {tracking}"]
    for text in whole:
        assert any(text in line for line in lines), (text, result.output)
    # the duplicates in the words `trilho init` uses, for the rows the folds use
    assert "duplicates   174 of the 1,000 rows the folds use repeat an earlier row's features: cv.duplicates = " \
        "'group', each set of copies stays in one fold" in lines


def test_a_run_on_a_server_links_to_the_ui_a_browser_opens(monkeypatch, workdir, settings):
    """In Compose the tracking URI names the stack's own host (http://mlflow:5000); the link printed
    for the user is TRILHO_MLFLOW_UI's, else the server's own."""
    import types

    import trilho.workflows.run

    summary = _summary(str(workdir))
    monkeypatch.setattr(trilho.workflows.run, "run_experiment",
                        lambda *a, **k: types.SimpleNamespace(summary=summary, offline=None))
    env = {**_env(settings), "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    run = f"/#/experiments/3/runs/{summary['run_id']}"
    result = runner.invoke(app, ["run"], env={**env, "TRILHO_MLFLOW_UI": "http://localhost:5123/"})
    assert result.exit_code == 0, result.output
    assert f"open the run http://localhost:5123{run}" in result.output and f"mlflow:5000{run}" not in result.output
    result = runner.invoke(app, ["run"], env=env)
    assert f"open the run http://mlflow:5000{run}" in result.output


def test_a_terminal_table_still_fits_the_terminal(monkeypatch, capsys):
    from rich.console import Console

    from trilho.cli import show

    monkeypatch.setattr(show, "Console", lambda **kw: Console(force_terminal=True, color_system=None, width=80, **kw))
    show.run_summary(_summary("/tmp/" + "x" * 80), "sqlite:///mlflow.db")
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line.startswith(("┃", "│"))]
    assert table and max(map(len, table)) <= 80  # a terminal's width is the table's
    assert any(line.startswith("lake results file:///tmp/" + "x" * 80) for line in lines)  # the terminal wraps it


@pytest.mark.training
def test_a_first_run_on_a_fresh_store_prints_no_line_of_the_libraries(settings, small_csv, workdir):
    """A new SQLite store: MLflow creates its tables (through alembic) and checks the model's input
    example, each an INFO note of its own loggers; at the default level none of them is printed."""
    import os
    import re

    assert not (workdir / "mlflow.db").exists()
    args = [sys.executable, "-m", "trilho", "run", "--source", f"file:{small_csv}"]
    for item in FAST:
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}
    done = subprocess.run(args, env={**env, **_env(settings)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MLflow run" in done.stdout and (workdir / "mlflow.db").exists()
    theirs = re.compile(r"\b(INFO|DEBUG)\b|mlflow\.(store|pyfunc|tracking|models)|alembic|urllib3|botocore|sqlalchemy")
    noise = [line for line in (done.stdout + done.stderr).splitlines() if theirs.search(line)]
    assert not noise, noise
