"""The one context every conductor (run, compare, tune) stands on, and the offline fallback in the API."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import FAST
from tests.support.services import free_port
from trilho import SourceUnreachableError, TrackingError, load_experiment
from trilho.data.curate import fold_data, load_clean
from trilho.storage import LocalLake
from trilho.workflows.context import check_leaks, conduct, experiment_task


def _exp(small_csv, *extra):
    return load_experiment("diabetes", [f'source.uri="file:{small_csv}"', 'source.sha256=""', *FAST, *extra])


def test_the_context_holds_the_prepared_data_the_folds_see(settings, small_csv):
    exp = _exp(small_csv)
    with conduct(exp, settings) as ctx:
        inputs = ctx.inputs
        ingested, _raw, validation, data = load_clean(exp, settings, LocalLake(settings.lake))
        X, y, groups, duplicates = fold_data(data, exp)
        check_leaks(validation, X, y, exp, groups)  # on the rows the folds see, as prepare does
        assert inputs.sha256 == ingested.manifest["sha256"] and inputs.validation == validation
        assert inputs.X.equals(X) and (inputs.y == y).all() and duplicates == inputs.duplicates
        assert (groups is None) == (inputs.groups is None)
        assert inputs.reference is None and inputs.reference_rows_left_out == 0  # only `run` asks for it
        # the small set's 12 P rows are 2.4 a test fold: named as a class too small to score
        assert ctx.tags("compare") == {"trilho.experiment": exp.name, "trilho.data_sha256": inputs.sha256,
                                       "trilho.kind": "compare", "trilho.small_classes": "P"}
        assert [f["kind"] for f in inputs.validation["leaks"]] == ["small_class"] and inputs.leaks == ()
        assert ctx.timings["data_s"] > 0
        with ctx.timed("step_s"):
            pass
        with pytest.raises(ValueError), ctx.timed("step_s"):
            raise ValueError("a stage that fails still has its time")
        assert ctx.timings["step_s"] >= 0 and set(ctx.timings) == {"data_s", "step_s"}
        ctx.tracker.submit(lambda: None).result()
        assert any(t.name.startswith("trilho-tracking") for t in threading.enumerate())
    assert not any(t.name.startswith("trilho-tracking") for t in threading.enumerate())  # closed on the way out


def test_the_experiments_task_is_built_in_one_place(settings, small_csv):
    exp = _exp(small_csv, 'resampler.name="random_over"', "cv.n_splits=4", "random_state=7")
    task = experiment_task(exp, {"missing": "native"}, None)
    assert task.model == exp.model.model_dump() and task.resampler == exp.resampler.model_dump()
    assert (task.random_state, task.n_splits, task.seeds) == (7, 4, exp.cv.seeds)
    assert task.encoding == {"missing": "native"} and task.holdout_fraction is None and not task.final_fit
    other = experiment_task(exp, {}, None, model={"name": "random_forest", "params": {}}, seeds=[3], label="rf")
    assert other.model["name"] == "random_forest" and other.seeds == [3] and other.label == "rf"
    assert other.n_splits == 4  # the experiment's folds, whatever the estimator


def _gone(settings):
    """The settings with a tracking server nobody runs (a port nobody listens on), waited for briefly."""
    return settings.model_copy(update={"tracking_uri": f"http://127.0.0.1:{free_port()}", "mlflow_wait_s": 0.5})


def test_the_tracking_store_is_checked_after_the_data_and_before_any_fit(settings, small_csv):
    with pytest.raises(TrackingError), conduct(_exp(small_csv), _gone(settings)):
        pytest.fail("the context opened without a tracking store")
    assert list(LocalLake(settings.lake).list("curated/"))  # the data stage ran: its Parquet is in the lake


def test_a_tracking_store_opened_beside_the_fits_stops_them_at_its_error(settings, small_csv):
    """compare's way: the store opens on a thread of its own; the fits' progress raises its error."""
    ticks = 0
    with pytest.raises(TrackingError), conduct(_exp(small_csv), _gone(settings), tracker_beside=True) as ctx:
        report = ctx.runner().progress  # no progress asked for: the check alone
        assert report is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a fit ends every 50 ms
            report(ticks, 1000)
            ticks += 1
            time.sleep(0.05)
        pytest.fail("the fits went on without a tracking store")
    assert ticks >= 1  # the context opened, and the fits began, before the store's error was known
    assert not any(t.name == "trilho-tracker-open" for t in threading.enumerate())


def test_a_tracking_store_opened_beside_is_the_same_store(settings, small_csv):
    with conduct(_exp(small_csv), settings, tracker_beside=True) as ctx:
        ctx.check_tracker()
        tracker = ctx.tracker  # waits for it
        assert tracker is ctx.tracker and tracker.uri == settings.tracking_uri and tracker.experiment_id
    assert not any(t.name.startswith("trilho-tracker") for t in threading.enumerate())


def _closed_port_source() -> str:
    return f"http://127.0.0.1:{free_port()}/diabetes.csv"  # a port nobody listens on: the source's host does not answer


@pytest.mark.training
def test_the_api_runs_on_the_offline_source_when_its_own_cannot_be_reached(settings):
    from trilho.workflows.run import run_experiment

    exp = load_experiment("diabetes", [f'source.uri="{_closed_port_source()}"', 'source.sha256=""', *FAST])
    result = run_experiment(exp, settings, offline_source="synthetic:diabetes?rows=300&seed=1")
    assert result.offline == {"unreachable": exp.source.uri, "cause": "ConnectionError",
                              "source": "synthetic:diabetes?rows=300&seed=1", "model_name": "diabetes-xgboost-offline"}
    assert result.summary["data"]["source"].startswith("synthetic:diabetes")
    assert result.summary["registry"]["name"] == "diabetes-xgboost-offline"
    with pytest.raises(SourceUnreachableError):  # no fallback asked for: the error, as before
        run_experiment(exp, settings)


def test_the_contexts_task_takes_another_encoding_and_groups(settings, small_csv):
    """The gate re-evaluates the champion with its own missing-value policy on the challenger's folds."""
    with conduct(_exp(small_csv), settings) as ctx:
        task = ctx.task(encoding={**ctx.inputs.data.spec, "missing": "impute"}, random_state=3)
        assert task.encoding["missing"] == "impute" and task.random_state == 3 and task.groups is ctx.inputs.groups
        assert ctx.task().encoding == ctx.inputs.data.spec
