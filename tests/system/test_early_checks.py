"""Bad values are refused when the experiment loads (or before a byte of data is read), in one line."""

import os
import re
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from trilho.cli import app
from trilho.errors import ConfigError, DataValidationError, SourceError
from trilho.experiment import load_experiment

runner = CliRunner()


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.mark.parametrize(("override", "key"), [
    ("cv.first_seed=-5", "cv.first_seed"),
    ("random_state=-1", "random_state"),
    ("random_state=4294967296", "random_state"),
    ("cv.first_seed=4294967290", "cv.first_seed"),  # its tenth repeat's seed is over 2**32 - 1
    ("model.params.random_state=-1", "model.params.random_state"),
    ("model.params.seed=-3", "model.params.seed"),
    ("resampler.params.random_state=4294967296", "resampler.params.random_state"),
])
def test_a_seed_out_of_range_is_refused_at_load(override, key):
    with pytest.raises(ConfigError, match=re.escape(key) + r".*0 to 4,294,967,295"):
        load_experiment("diabetes", [override])


def test_the_largest_seeds_still_load():
    exp = load_experiment("diabetes", ["random_state=4294967295", "cv.first_seed=4294967286"])
    assert exp.cv.seeds[-1] == 2**32 - 1


def test_a_negative_seed_is_one_line_on_the_command_line(workdir):
    line = _one_error_line(runner.invoke(app, ["config", "--set", "cv.first_seed=-5"]))
    assert "ConfigError" in line and "cv.first_seed = -5" in line


def test_an_xgboost_parameter_typo_is_refused_with_the_close_name():
    with pytest.raises(ConfigError, match=r"model.params \['max_dept'\] .*Did you mean 'max_depth'"):
        load_experiment("diabetes", ["model.params.max_dept=3"])
    # XGBoost's own names (num_class, eta, lambda) load as before, beside the scikit-learn ones
    exp = load_experiment("diabetes", ["model.params.eta=0.1", "model.params.lambda=2", "model.params.max_depth=3"])
    assert exp.model.params["num_class"] == 3


def test_an_objective_xgboost_does_not_know_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"model.params.*'multi:softprb'.*XGBoost"):
        load_experiment("diabetes", ['model.params.objective="multi:softprb"'])


def test_a_scikit_learn_parameter_typo_names_the_close_name():
    with pytest.raises(ConfigError, match=r"\['n_estimator'\] .*Did you mean 'n_estimators'"):
        load_experiment("diabetes", ["model.name=random_forest", "model.params={n_estimator=10}"])


def test_tune_checks_its_space_by_the_same_names():
    from trilho.workflows.space import parse_space

    exp = load_experiment("diabetes")
    searched = {"model.params.eta": {"float": [0.01, 0.3]}, "model.params.max_depth": {"int": [2, 5]}}
    assert [p.name for p in parse_space(exp.model_copy(update={"tune": exp.tune.model_copy(
        update={"space": searched})}))] == ["eta", "max_depth"]
    typo = {"model.params.max_dept": {"int": [2, 5]}}
    with pytest.raises(ConfigError, match=r"tune.space: model.params \['max_dept'\] .*Did you mean 'max_depth'"):
        parse_space(exp.model_copy(update={"tune": exp.tune.model_copy(update={"space": typo})}))


def test_an_xgboost_typo_is_one_line_on_the_command_line(workdir):
    line = _one_error_line(runner.invoke(app, ["config", "--set", "model.params.max_dept=3"]))
    assert "max_dept" in line and "'max_depth'" in line


@pytest.mark.parametrize("name", ["../../x", "a/b", "team:model", "50%", "/abs", "./x", "x/..", "   "])
def test_a_model_name_mlflow_would_refuse_is_refused_at_load(name):
    with pytest.raises(ConfigError, match=r"registry.model_name"):
        load_experiment("diabetes", [f'registry.model_name="{name}"'])


def test_a_path_like_model_name_is_one_line_on_the_command_line(workdir):
    line = _one_error_line(runner.invoke(app, ["config", "--set", 'registry.model_name="../../x"']))
    assert "'../../x'" in line and "registry.model_name" in line


def test_a_plain_model_name_still_loads():
    assert load_experiment("diabetes", ['registry.model_name="churn model.v2-b"']).registry.model_name


def test_an_absurd_number_of_fits_is_refused_with_its_estimate():
    with pytest.raises(ConfigError, match=r"5,000,000 fits.*over 10,000.*cv\.n_repeats"):
        load_experiment("diabetes", ["cv.n_repeats=1000000"])
    load_experiment("diabetes", ["cv.n_repeats=2000"])  # 10,000 fits: at the limit, not over it


def test_nested_fits_count_toward_the_limit():
    with pytest.raises(ConfigError, match=r"evaluation.nested_repeats"):
        load_experiment("diabetes", ["cv.n_splits=20", "cv.n_repeats=400", "evaluation.nested_repeats=400",
                                     'evaluation.intervals=["nested_cv"]'])


def test_absurd_repeats_are_one_line_on_the_command_line(workdir):
    line = _one_error_line(runner.invoke(app, ["config", "--set", "cv.n_repeats=1000000"]))
    assert "5,000,000" in line and "cv.n_repeats" in line


def test_a_classifier_outside_an_installed_package_is_refused_without_running_its_module(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "loose_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Foo: pass\n")
    package = tmp_path / "loose_package"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (package / "models.py").write_text("class Foo: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("loose_module.Foo", "loose_package.models.Foo", "loose_package.models:Foo"):
        with pytest.raises(ConfigError, match=r"model.name .*not part of an installed package"):
            load_experiment("diabetes", [f'model.name="{name}"', "model.params={}"])
    assert not marker.exists()


def test_a_standard_library_module_is_not_imported_to_refuse_it():
    code = textwrap.dedent("""
        import sys
        from trilho.errors import ConfigError
        from trilho.experiment import load_experiment
        try:
            load_experiment("diabetes", ['model.name="this.Foo"', "model.params={}"])
        except ConfigError as exc:
            print(exc)
        print("imported" if "this" in sys.modules else "not imported")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "not part of an installed package" in out and out.strip().endswith("not imported"), out


def test_an_installed_package_classifier_still_loads():
    assert load_experiment("diabetes", ["model.name=sklearn.svm.SVC", "model.params={probability=true}"])


def test_an_import_path_classifier_is_one_line_on_the_command_line(workdir):
    line = _one_error_line(runner.invoke(app, ["config", "--set", 'model.name="this.Foo"', "--set", "model.params={}"]))
    assert "'this.Foo'" in line and "installed package" in line


def test_a_synthetic_source_too_large_is_refused_before_it_is_made():
    from trilho.data import synthetic

    with pytest.raises(ConfigError, match=r"rows=200000000 .*12,000,000,000 bytes.*TRILHO_MAX_SOURCE_BYTES"):
        synthetic.diabetes(rows=200_000_000, max_bytes=2 * 1024**3)


def test_a_synthetic_source_over_the_limit_is_refused_by_fetch(settings, tmp_path):
    from trilho.data.ingest import fetch
    from trilho.settings import load_settings

    low = load_settings(env_file=None, lake=settings.lake, tracking_uri=settings.tracking_uri, max_source_bytes=1_000_000)
    with pytest.raises(ConfigError, match=r"rows=200000 .*over TRILHO_MAX_SOURCE_BYTES=1,000,000"):
        fetch("synthetic:diabetes?rows=200000", low, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was generated


def test_a_synthetic_source_too_large_is_one_line_on_the_command_line(settings, monkeypatch):
    monkeypatch.setenv("TRILHO_MAX_SOURCE_BYTES", "1000000")
    env = {"TRILHO_LAKE": settings.lake, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    line = _one_error_line(runner.invoke(app, ["run", "--source", "synthetic:diabetes?rows=200000"], env=env))
    assert "ConfigError" in line and "rows=200000" in line and "TRILHO_MAX_SOURCE_BYTES" in line


def _sparse(path, size):
    with open(path, "wb") as fh:
        fh.truncate(size)  # no bytes written: a hole of zeros, no line break anywhere
    return path


def test_predict_refuses_an_input_over_the_size_limit_before_reading_it(settings, workdir):
    from trilho.serving.predict import predict_batch
    from trilho.settings import load_settings

    low = load_settings(env_file=None, lake=settings.lake, tracking_uri=settings.tracking_uri, max_source_bytes=1_000_000)
    big = _sparse(workdir / "big.csv", 20 << 20)
    with pytest.raises(SourceError, match=r"20,971,520 bytes, over TRILHO_MAX_SOURCE_BYTES=1,000,000"):
        predict_batch("models:/no-such-model/1", str(big), low)


def test_predict_refuses_an_input_whose_first_line_does_not_end(settings, workdir):
    from trilho.serving.predict import predict_batch

    big = _sparse(workdir / "one-line.csv", 20 << 20)
    with pytest.raises(DataValidationError, match=r"'one-line.csv' has no line break in its first 8,388,608 bytes"):
        predict_batch("models:/no-such-model/1", str(big), settings)


def test_predict_refuses_a_file_with_no_line_break_in_one_line(settings, workdir):
    big = _sparse(workdir / "one-line.csv", 20 << 20)
    env = {"TRILHO_LAKE": settings.lake, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    line = _one_error_line(runner.invoke(app, ["predict", "-m", "models:/no-such-model/1", "-i", str(big)], env=env))
    assert "one-line.csv" in line and "no line break" in line
    assert os.path.getsize(big) == 20 << 20
