"""The command line starts light (issue 23): `import trilho`, `trilho --help` and a source or input
refused for its size import none of pandas, NumPy, MLflow, scikit-learn, XGBoost, Matplotlib or
PyArrow (seconds of imports). Checked by what a fresh interpreter has imported, not by a clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.processes  # every test starts trilho in fresh interpreters

HEAVY = ("pandas", "numpy", "mlflow", "sklearn", "xgboost", "matplotlib", "pyarrow", "imblearn", "optuna")

# the command line in a fresh interpreter; its last line on stdout: the heavy modules it imported
_CLI = textwrap.dedent(f"""
    import json, sys
    from trilho.cli import app
    try:
        app(sys.argv[1:], prog_name="trilho")
        code = 0
    except SystemExit as exc:
        code = exc.code
    print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    sys.exit(code)
""")


def _heavy_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json\n"
                          f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out.splitlines()[-1])


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, list[str]]:
    done = subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})
    *lines, heavy = done.stdout.splitlines() or [""]
    return done.returncode, "\n".join(lines), done.stderr, json.loads(heavy)


def test_importing_the_package_and_the_command_line_imports_nothing_heavy():
    assert _heavy_after("import trilho") == []
    assert _heavy_after("import trilho.cli") == []
    assert _heavy_after("import trilho.data.ingest, trilho.data.synthetic, trilho.settings, trilho.storage") == []


def test_the_public_names_still_load_on_first_use():
    import trilho
    from trilho.experiment import Experiment, load_experiment
    from trilho.settings import Settings, load_settings

    assert (trilho.Experiment, trilho.load_experiment) == (Experiment, load_experiment)
    assert (trilho.Settings, trilho.load_settings) == (Settings, load_settings)
    assert {"Experiment", "load_settings"} <= set(dir(trilho))
    with pytest.raises(AttributeError, match="no_such_name"):
        trilho.no_such_name  # noqa: B018 - the attribute access is the test


def test_help_lists_every_command_and_imports_nothing_heavy():
    from trilho.cli import app

    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert len(names) >= 10
    code, out, err, heavy = _cli("--help")
    assert code == 0, err
    assert all(f" {name} " in out for name in names), out
    assert heavy == []
    for name in ("run", "predict", "ingest"):
        code, out, err, heavy = _cli(name, "--help")
        assert code == 0 and "Usage: trilho " + name in out, err
        assert heavy == [], name


@pytest.fixture
def env(workdir):
    """A local lake and tracking store, and a size limit of 1 MB."""
    return {"TRILHO_LAKE": str(workdir / "lake"), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
            "TRILHO_MAX_SOURCE_BYTES": "1000000"}


def _sparse(path, size=20 << 20):
    with open(path, "wb") as fh:
        fh.truncate(size)  # no bytes written, so no time spent
    return path


def _refused(args: list[str], env: dict[str, str], message: str) -> None:
    code, out, err, heavy = _cli(*args, env=env)
    lines = [line for line in (out + "\n" + err).splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert message in lines[0], lines[0]
    assert heavy == [], f"{args}: refused after importing {heavy}"


def test_an_input_over_the_size_limit_is_refused_before_the_heavy_imports(env, workdir):
    big = _sparse(workdir / "big.csv")
    over = "is 20,971,520 bytes, over TRILHO_MAX_SOURCE_BYTES=1,000,000"
    _refused(["predict", "-m", "models:/no-such-model/1", "-i", str(big)], env, f"SourceError: source {str(big)!r} {over}")
    _refused(["predict", "-m", "models:/no-such-model/1", "-i", "file:big.csv"], env, f"source 'file:big.csv' {over}")
    for command in (["ingest"], ["run"], ["validate"], ["compare"], ["tune"]):
        _refused([*command, "--source", "file:big.csv"], env, f"SourceError: source 'file:big.csv' {over}")
    _refused(["init", "file:big.csv"], env, f"SourceError: source 'file:big.csv' {over}")
    assert not (workdir / "lake").exists() and not (workdir / "mlflow.db").exists()


def test_a_synthetic_source_too_large_is_refused_before_the_heavy_imports(env, workdir):
    source = "synthetic:diabetes?rows=200000"
    said = "ConfigError: synthetic:diabetes?rows=200000 would be about 12,000,000 bytes as CSV, over TRILHO_MAX_SOURCE_BYTES"
    for args in (["ingest", "--source", source], ["run", "--source", source], ["init", source]):
        _refused(args, env, said)
    assert not (workdir / "lake").exists()


def test_sources_within_the_limit_or_not_sized_here_go_their_usual_way(env, workdir):
    """What the early refusal leaves alone still meets the command's own checks, in their words."""
    _sparse(workdir / "big.csv")
    code, out, err, _ = _cli("config", "--source", "file:big.csv", env=env)  # config fetches nothing
    assert code == 0 and '"uri": "file:big.csv"' in out, err
    code, out, err, _ = _cli("ingest", "--source", "synthetic:diabetes?rows=5", env=env)
    assert code == 1 and "at least 20 rows" in out + err, out + err
    code, out, err, _ = _cli("ingest", "--source", "file:missing.csv", env=env)
    assert code == 1 and "no file at" in out + err, out + err
