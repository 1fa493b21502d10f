"""One page a person reads: every run, comparison and study writes a self-contained report.html,
opened here in a real headless Chromium, offline."""

from __future__ import annotations

import json
import re

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from tests.support import corpus
from tests.support.browser import assert_readable, open_page
from trilho.cli import app
from trilho.experiment import Experiment
from trilho.tracking.store import latest_run

pytestmark = pytest.mark.training


def _churn(workdir, **changes) -> Experiment:
    frame, *_ = corpus.churn(rows=400, seed=3)
    path = workdir / "churn.csv"
    frame.to_csv(path, index=False)
    config = {"name": "churn", "source": {"uri": f"file:{path}"},
              "data": {"target": "Churn", "labels": ["no", "yes"], "drop": ["customer_id"],
                       "categorical": ["contract", "internet"], "missing": "native"},
              "cv": {"n_repeats": 2}, "resampler": {"name": "none"},
              "model": {"name": "xgboost", "params": {"n_estimators": 30, "max_depth": 3}},
              "evaluation": {"groups": ["internet", "customer_id"], "baselines": ["majority"]},
              "tracking": {"experiment": "churn"}, "registry": {"model_name": "churn-page"}}
    return Experiment.model_validate(config | changes)


def test_a_run_page_shows_every_part_offline_and_trilho_report_writes_it_again(workdir, settings):
    from trilho.workflows.run import run_experiment

    exp = _churn(workdir)
    run_experiment(exp, settings)
    summary = run_experiment(exp, settings).summary  # a champion exists: side by side
    folder = workdir / "lake" / summary["lake"]["reports"]
    page = folder / "report.html"
    assert summary["report_html"] == page.as_uri()
    html = page.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # nothing to fetch: figures inline, links in-page
    seen = open_page(page, workdir)
    figures = {"cv_boxplot.png", "intervals.png", "confusion_matrix.png", "confusion_matrix_oof.png",
               "roc_pr_curves.png", "reliability.png", "importance.png", "groups.png"}
    assert figures <= {p.name for p in folder.glob("*.png")}
    assert_readable(seen, len(figures))
    assert seen["sections"] == ["Data and its validation", "Results, out of fold", "Baselines on the same folds",
                                "Calibration and the decision", "Which features drive the model", "Metrics by group",
                                "The gate's decision", "Where everything is"]
    assert f"Champion v{summary['registry']['champion_version']}" in html and "Challenger v2" in html
    for feature in summary["data"]["features"]:
        assert f"<td style=\"text-align:left\">{feature}</td>" in html
    assert "too few rows per fold to score" in html  # internet's missing values: 20 rows of 400 in 5 folds
    # an identifier as a group: 19 values named one by one (each too small to score, said, not
    # hidden), the rest together as "(other)"
    ids = summary["groups"]["customer_id"]
    assert set(ids["groups"]) == {"(other)"} and len(ids["too_small"]) == 19

    # written again from the lake alone, to the lake, to MLflow and here
    page.unlink()
    env = {"TRILHO_LAKE": settings.lake, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    done = CliRunner().invoke(app, ["report", summary["run_id"], "-o", str(workdir / "again.html")], env=env)
    assert done.exit_code == 0, done.output
    assert page.is_file() and (workdir / "again.html").read_bytes() == page.read_bytes()
    assert_readable(open_page(workdir / "again.html", workdir), len(figures))
    client = MlflowClient(settings.tracking_uri)
    assert "report.html" in {a.path for a in client.list_artifacts(summary["run_id"])}
    logged = client.get_run(summary["run_id"]).data
    gap = summary["groups"]["internet"]["gap"]["accuracy"]
    assert logged.metrics["group_internet_gap_accuracy"] == pytest.approx(gap["diff"])
    assert logged.metrics["importance_tenure"] == pytest.approx(summary["importance"]["features"]["tenure"]["mean"])
    assert set(logged.tags["trilho.top_features"].split(", ")) <= set(summary["data"]["features"])
    assert latest_run(settings.tracking_uri, "churn") == summary["run_id"]  # what `trilho report` takes by default
    done = CliRunner().invoke(app, ["report", "nosuchrun"], env=env)
    assert done.exit_code != 0 and "nosuchrun" in done.output


def test_compare_and_tune_write_their_own_pages(workdir, settings):
    from trilho.workflows.compare import compare, parse_candidates
    from trilho.workflows.tune import tune

    exp = _churn(workdir, cv={"n_repeats": 1})
    result = compare(exp, settings, parse_candidates(["xgboost[n_estimators=10]+none",
                                                       "random_forest[n_estimators=10]+none"], exp))
    page = workdir / "lake" / result.summary["lake"]["reports"] / "report.html"
    seen = open_page(page, workdir)
    assert_readable(seen, 1)
    assert "random_forest" in page.read_text(encoding="utf-8")

    tuned = _churn(workdir, cv={"n_repeats": 1},
                   tune={"trials": 3, "space": {"model.params.max_depth": {"int": [2, 4]}}})
    found = tune(tuned, settings, out=workdir / "tuned.toml").summary
    page = workdir / "lake" / found["lake"]["reports"] / "report.html"
    seen = open_page(page, workdir)
    assert_readable(seen, 1)
    text = page.read_text(encoding="utf-8")
    assert "held-out rows" in text and json.dumps(found["best"]["params"]["model.params.max_depth"]) in text


def test_the_gate_section_reads_every_kind_of_comparison():
    from trilho.reporting.html import render_run

    base = {"experiment": "x", "run_id": "r1", "tracking_uri": "sqlite:///m.db", "mlflow_experiment": "x",
            "data": {"source": "file:x.csv", "sha256": "0" * 64, "rows": 10, "features": ["a"], "warnings": []},
            "cv": {"n_splits": 5, "seeds": [0], "n_folds": 5, "duplicates": {"policy": "keep"}, "interval": "corrected_t",
                   "level": 0.95, "metrics": {"accuracy": {"mean": 0.8, "std": 0.1, "low": 0.7, "high": 0.9,
                                                            "ci": [0.75, 0.85]}}},
            "holdout": {"labels": ["a", "b"], "scores": {"accuracy": 0.8}}, "lake": {"uri": "file:///l", "reports": "reports/r1/"}}
    registry = {"name": "m", "version": "2", "aliases": ["challenger"], "promote": False, "reason": "kept",
                "metric": "accuracy", "margin": 0.01, "challenger_mean": 0.8, "champion_version": "1",
                "champion_mean": 0.79, "basis": "b", "drift": None}
    config = {"evaluation": {"holdout_fraction": 0.3}, "model": {"calibration": "none"}, "decision": {"objective": "argmax"}}
    shapes = {"same folds": {"mean_diff": 0.0123, "low": -0.01, "high": 0.03, "p_value": 0.4, "n": 5},
              "other data": {"challenger_low": 0.7123, "challenger_high": 0.9, "champion_low": 0.6, "champion_high": 0.9},
              "reference set": {"reference_rows": 200.0, "reference_diff": 0.0456, "reference_low": 0.01,
                                "reference_high": 0.08}}
    for comparison, shown in zip(shapes.values(), ["+0.0123", "0.7123", "+0.0456"], strict=True):
        html = render_run({**base, "registry": {**registry, "comparison": comparison}}, {}, config, {})
        assert shown in html and "Champion v1" in html
