"""`trilho init`'s defaults hold up: no resampler, grouped folds only where copies are likely one
record, a decision threshold for two imbalanced classes (each failed on the earlier defaults)."""

from __future__ import annotations

import tomllib

import numpy as np
import pandas as pd
import pytest

from tests.support import corpus
from trilho.errors import ConfigError
from trilho.experiment import Experiment
from trilho.init.profile import profile_chunks
from trilho.init.propose import chance_pairs, propose, render


def _proposal(frame: pd.DataFrame, target: str):
    return propose(profile_chunks([frame], target), "t", "file:t.csv", target)


def test_imbalanced_classes_get_no_resampler_but_a_threshold():
    frame, target, _, _ = corpus.credit(rows=3_000)
    proposal = _proposal(frame, target)
    config = proposal.config
    assert config["resampler"] == {"name": "none", "params": {}}  # SMOTE-NC before
    assert config["decision"] == {"objective": "metric", "metric": config["registry"]["primary_metric"]}
    said = " ".join(proposal.notes["resampler"])
    assert "imbalanced" in said and "'smote'" in said  # resamplers stay explained and available
    exp = Experiment.model_validate(tomllib.loads(render(proposal)))
    assert exp.decision.objective == "metric" and exp.resampler.name == "none"
    assert exp.decision_rule() == {"objective": "metric", "metric": "f1_macro", "floor": 0.0, "positive": 1,
                                   "costs": []}


def test_missing_values_stay_missing_without_a_resampler():
    frame, target, _, _ = corpus.churn()
    config = _proposal(frame, target).config
    assert config["resampler"]["name"] == "none"
    assert config["data"]["missing"] == "native"  # SMOTE forced 'impute' before


def test_identical_rows_of_a_small_feature_space_are_split_like_any_row():
    frame, target, _, _ = corpus.voyage()
    proposal = _proposal(frame, target)
    assert proposal.config["cv"]["duplicates"] == "keep"  # 'group' before: AUC fell from 0.83 to 0.61
    said = " ".join(proposal.notes["cv"])
    assert "by chance alone" in said and "cv.duplicates = 'keep'" in said
    exp = Experiment.model_validate(tomllib.loads(render(proposal)))
    assert exp.cv.duplicates == "keep"


def test_copies_among_continuous_features_are_still_grouped():
    frame, target, _, _ = corpus.repeats()  # a continuous feature: copies are one record written twice
    proposal = _proposal(frame, target)
    assert proposal.config["cv"]["duplicates"] == "group"
    assert "likely the same record" in " ".join(proposal.notes["cv"])


def test_chance_pairs_count_the_pairs_independent_features_make():
    rng = np.random.default_rng(0)
    n = 4_000
    frame = pd.DataFrame({"a": rng.choice(["x", "y"], n), "b": rng.choice(["p", "q", "r", "s"], n),
                          "y": rng.choice(["0", "1"], n)})
    profile = profile_chunks([frame], "y")
    expected = chance_pairs(profile, ["a", "b"])
    # two independent uniform features of 2 and 4 values: one pair in 8 is identical
    assert abs(expected / (n * (n - 1) / 2) - 1 / 8) < 0.01
    frame["c"] = rng.normal(0, 1, n)  # too many values to count: copies are not expected by chance
    assert chance_pairs(profile_chunks([frame], "y"), ["a", "b", "c"]) is None


def test_the_proposal_says_what_a_run_should_cost_and_grows_with_the_rows():
    from trilho.init.propose import expected_seconds

    small = _proposal(*corpus.credit(rows=1_000)[:2])
    large = _proposal(*corpus.credit(rows=30_000)[:2])
    assert "expected cost" in " ".join(small.notes["model"])
    assert small.config["model"]["params"] == {"n_estimators": 200, "learning_rate": 0.1, "max_depth": 3}
    (_, fit_small, _), (total_large, fit_large, fits_large) = (expected_seconds(small, 2),
                                                                         expected_seconds(large, 2))
    assert fit_large > 5 * fit_small > 0
    assert fits_large == 5 * large.config["cv"]["n_repeats"] + 2 + 5  # folds, holdout and final, the baseline
    assert expected_seconds(large, 1)[0] > total_large  # fewer cores, longer


def test_init_prints_its_notes_as_written_and_the_expected_time(workdir):
    from typer.testing import CliRunner

    from trilho.cli import app

    frame, target, _, _ = corpus.credit(rows=1_200)
    frame.to_csv(workdir / "credit.csv", index=False)
    result = CliRunner().invoke(app, ["init", f"file:{workdir / 'credit.csv'}", "--target", target, "-o",
                                      str(workdir / "credit.toml")])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "see [decision]" in flat and "costs[true][predicted]" in flat  # brackets are text, not markup
    assert "expected: about" in flat and "core" in flat


def _prices(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.gamma(3.0, 40.0, rows)
    return pd.DataFrame({"size": size.round(1), "kind": rng.choice(["flat", "house"], rows),
                         "stars": rng.integers(1, 6, rows),
                         "price": (size * 3 + rng.normal(0, 20, rows)).clip(5).round(2)})


def test_a_numeric_target_with_many_values_gets_a_regression_that_loads():
    frame = _prices(400)
    frame.loc[[3, 7], "price"] = np.nan  # rows with no target: left out, and said
    proposal = propose(profile_chunks([frame]), "prices", "file:prices.csv", "price")
    config = proposal.config
    assert config["task"] == "regression" and "labels" not in config["data"] and "resampler" not in config
    assert config["evaluation"]["metrics"] == ["rmse", "mae", "r2", "median_ae", "mape"]  # positive: mape
    assert config["registry"]["primary_metric"] == "rmse" and config["registry"]["margin"] > 0
    assert any("missing on 2 of 400 rows" in n for n in proposal.notes["labels"])
    text = render(proposal)
    exp = Experiment.model_validate(tomllib.loads(text))
    assert exp.regression and exp.prediction.level == 0.9 and exp.cv.n_splits == 5


def test_a_few_whole_numbers_stay_a_label_unless_the_task_says_regression():
    frame = _prices(300)
    assert "task" not in propose(profile_chunks([frame]), "p", "file:p.csv", "stars").config  # a rating: classes
    forced = propose(profile_chunks([frame]), "p", "file:p.csv", "stars", task="regression")
    assert forced.config["task"] == "regression"
    assert any("--task regression" in n for n in forced.notes["labels"])
    with pytest.raises(ConfigError, match="'kind' is not numeric"):
        propose(profile_chunks([frame]), "p", "file:p.csv", "kind", task="regression")
    with pytest.raises(ConfigError, match="needs --target"):
        propose(profile_chunks([frame]), "p", "file:p.csv", task="regression")


def test_init_picks_a_regression_reference_set_across_the_targets_range(workdir, settings):
    from trilho.experiment import load_experiment
    from trilho.init.profile import init_experiment

    frame = _prices(2000, 4)
    frame.to_csv(workdir / "prices.csv", index=False)
    proposal = init_experiment(f"file:{workdir / 'prices.csv'}", settings, "price", "prices",
                               reference_to=workdir / "prices.reference.csv")
    picked = pd.read_csv(workdir / "prices.reference.csv")
    assert 150 <= len(picked) <= 250  # about a tenth
    low, high = frame["price"].quantile([0.1, 0.9])
    assert picked["price"].min() < low and picked["price"].max() > high  # from the whole range, not one end
    (workdir / "prices.toml").write_text(render(proposal))
    assert load_experiment(workdir / "prices.toml").registry.reference.endswith("prices.reference.csv")
