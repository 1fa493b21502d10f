"""The promotion gate on a pinned reference set: champion and challenger scored on the same rows,
never trained on; without one, a changed data set is never promoted by the gate alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trilho.data.clean import CleanData
from trilho.data.reference import ReferenceSet, without_reference
from trilho.evaluation.gate import judge, judge_changed_data, judge_on_reference, reference_score
from trilho.evaluation.stats import paired_row_bootstrap


def _model(y: np.ndarray, wrong: float, rng: np.random.Generator, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Predictions that get a share ``wrong`` of the rows wrong, and probabilities that agree."""
    pred = y.copy()
    flip = rng.random(len(y)) < wrong
    pred[flip] = (y[flip] + 1) % k
    proba = np.full((len(y), k), 0.1)
    proba[np.arange(len(y)), pred] = 0.8
    return pred, proba


def test_a_paired_row_bootstrap_of_identical_models_is_zero_and_of_a_better_one_positive():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    good, bad = _model(y, 0.05, rng), _model(y, 0.30, rng)

    def on(a, b):
        return lambda i: (reference_score("accuracy", y[i], a[0][i], a[1][i], 3),
                          reference_score("accuracy", y[i], b[0][i], b[1][i], 3))

    same = paired_row_bootstrap(on(good, good), len(y), n_boot=200)
    assert same["mean_diff"] == 0 and same["low"] == 0 and same["high"] == 0
    better = paired_row_bootstrap(on(good, bad), len(y), n_boot=200)
    assert better["mean_diff"] == pytest.approx(better["challenger"] - better["champion"])
    assert 0 < better["low"] < better["mean_diff"] < better["high"]
    with pytest.raises(ValueError, match="at least 2 rows"):
        paired_row_bootstrap(on(good, bad), 1)


def test_the_reference_decides_by_the_paired_interval_in_the_metrics_direction():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 500)
    champion, worse, alike = _model(y, 0.10, rng), _model(y, 0.35, rng), _model(y, 0.10, rng)
    kept = judge_on_reference(y, worse, champion, metric="f1_macro", margin=0.01, champion_version="1", n_boot=300)
    assert not kept.promote and "; worse than the champion" in kept.reason and "trilho promote" in kept.reason
    assert kept.basis == "reference set" and kept.comparison["reference_rows"] == 500
    assert kept.challenger_mean < kept.champion_mean
    promoted = judge_on_reference(y, alike, champion, metric="f1_macro", margin=0.05, champion_version="1", n_boot=300)
    assert promoted.promote and "not worse" in promoted.reason
    # log loss: lower is better, and a worse model's higher loss is not a gain
    lossy = judge_on_reference(y, worse, champion, metric="log_loss", margin=0.01, champion_version="1", n_boot=300)
    assert not lossy.promote and lossy.challenger_mean > lossy.champion_mean and "lower is better" in lossy.reason
    # on the same data and folds, both must pass: a decision that kept it keeps it
    before = judge(np.full(10, 0.5), np.full(10, 0.9), metric="f1_macro", margin=0.01, test_fraction=0.2,
                    champion_version="1")
    both = judge_on_reference(y, alike, champion, metric="f1_macro", margin=0.05, champion_version="1", n_boot=300,
                               before=before)
    assert not before.promote and not both.promote and both.basis == "reference set and same folds"
    # on other data the reference decides, and the drift report rides along
    drift = {"drifted": True, "reasons": ["label shares moved"]}
    changed = judge_on_reference(y, alike, champion, metric="f1_macro", margin=0.05, champion_version="1", n_boot=300,
                                  drift=drift)
    assert changed.promote and changed.drift == drift and "label shares moved" in changed.reason


def test_without_a_reference_a_changed_data_set_is_never_promoted_by_the_gate():
    rng = np.random.default_rng(2)
    champion = {"mean": 0.95, "low": 0.93, "high": 0.97}
    kwargs = dict(metric="f1_macro", margin=0.01, test_fraction=0.2, champion_version="3")
    for scores, drift in ((0.96 + rng.normal(0, 0.01, 50), {"drifted": False, "reasons": []}),
                          (0.95 + rng.normal(0, 0.01, 50), None)):
        decision = judge_changed_data(scores, champion, drift, **kwargs)
        assert not decision.promote and "cannot tell a better model from changed data" in decision.reason
        assert "registry.reference" in decision.reason and "no significant drop" in decision.reason


def test_training_rows_identical_to_a_reference_row_are_left_out():
    X = pd.DataFrame({"a": [1, 2, 3, 4, 5, 6], "c": ["X", "Y", None, "X", "Y", "X"]})
    y = np.array([0, 1, 0, 1, 0, 1])
    data = CleanData(X=X, y=y, spec={}, dropped_rows=0)
    # the same values read as floats (a column with a gap), a missing category, and one label changed
    ref = ReferenceSet("file:ref.csv", "raw/k", "s", pd.DataFrame({"a": [2.0, 3.0, 4.0], "c": ["Y", None, "X"]}),
                       np.array([1, 0, 0]))
    kept, left = without_reference(data, ref)
    assert left == 2 and kept.X["a"].tolist() == [1, 4, 5, 6] and kept.y.tolist() == [0, 1, 0, 1]
    assert without_reference(data, None) == (data, 0)


def _run(csv, reference, *extra):
    import json

    from tests.conftest import FAST
    from trilho import load_experiment
    from trilho.workflows.run import run_experiment

    return load_experiment("diabetes", [f"source.uri={json.dumps('file:' + str(csv))}", 'source.sha256=""', *FAST,
                                        'registry.model_name="reference-gate"', *extra,
                                        *([f"registry.reference={json.dumps('file:' + str(reference))}"] if reference else [])]), run_experiment


@pytest.mark.training
def test_the_gate_scores_champion_and_challenger_on_the_pinned_reference_set(settings, workdir):
    from mlflow.tracking import MlflowClient

    from trilho.data.synthetic import diabetes

    reference = workdir / "reference.csv"
    ref = diabetes(rows=400, seed=21)
    ref.to_csv(reference, index=False)
    first_csv = workdir / "first.csv"  # 25 of the reference's rows slipped into the training data
    pd.concat([diabetes(rows=300, seed=3), ref.head(25)], ignore_index=True).to_csv(first_csv, index=False)
    exp, run = _run(first_csv, reference, "registry.margin=0.1")
    first = run(exp, settings).summary
    assert first["registry"]["promote"] and first["data"]["reference"]["rows"] == 400
    assert first["data"]["reference"]["training_rows_left_out"] == 25 and first["data"]["rows"] == 300
    assert first["data"]["reference"]["key"].startswith("raw/diabetes-reference/")

    fresh = workdir / "fresh.csv"  # a new sample of the same population: as good on the same rows
    diabetes(rows=300, seed=11).to_csv(fresh, index=False)
    exp, run = _run(fresh, reference, "registry.margin=0.1")
    second = run(exp, settings).summary["registry"]
    assert second["basis"] == "reference set" and "on the reference set (400 rows never trained on)" in second["reason"]
    assert second["promote"], second["reason"]
    assert second["drift"] is not None and "data drift" in second["reason"]

    easy = workdir / "easy.csv"  # labels that follow one feature: a near-perfect estimate on its own data
    frame = diabetes(rows=300, seed=12)
    frame["CLASS"] = pd.qcut(frame["AGE"].rank(method="first"), 3, labels=["N", "P", "Y"]).astype(str)
    frame.to_csv(easy, index=False)
    # AGE alone scores 0.99 here, so the leak check (trilho.data.leaks) would keep it out of champion
    # before the reference set is asked: it is set to flag only a perfect copy, so the reference decides
    exp, run = _run(easy, reference, "registry.margin=0.1", "validation.leak_score=1.0")
    third = run(exp, settings).summary
    assert third["cv"]["metrics"]["f1_macro"]["mean"] > 0.9  # its own estimate looks excellent
    decision = third["registry"]
    assert not decision["promote"] and "worse than the champion" in decision["reason"], decision["reason"]
    assert decision["comparison"]["reference_high"] < -0.1  # far worse on rows both were scored on
    client = MlflowClient(settings.tracking_uri)
    assert str(client.get_model_version_by_alias("reference-gate", "champion").version) == second["version"]


def test_init_writes_and_pins_a_reference_set_for_data_large_enough(workdir, settings):
    import hashlib
    import tomllib

    from trilho.data.synthetic import diabetes
    from trilho.experiment import load_experiment
    from trilho.init.profile import REFERENCE_MIN_ROWS, init_experiment
    from trilho.init.propose import render

    frame = diabetes(rows=3000, seed=4)
    frame = pd.concat([frame, frame.head(40)], ignore_index=True)  # 40 rows written twice
    data = workdir / "big.csv"
    frame.to_csv(data, index=False)
    to = workdir / "big.reference.csv"
    proposal = init_experiment(f"file:{data}", settings, reference_to=to)
    registry = proposal.config["registry"]
    assert registry["reference"] == f"file:{to}"
    assert registry["reference_sha256"] == hashlib.sha256(to.read_bytes()).hexdigest()
    picked = pd.read_csv(to)
    assert 0.07 * len(frame) < len(picked) < 0.13 * len(frame) and list(picked.columns) == list(frame.columns)
    # every copy of a row is on the same side
    counts = frame.astype(str).value_counts()
    assert all(counts[tuple(row)] == n for row, n in picked.astype(str).value_counts().items())
    file = workdir / "big.toml"
    file.write_text(render(proposal))
    assert "reference set:" in file.read_text()
    assert load_experiment(file).registry.reference == f"file:{to}"
    assert tomllib.loads(file.read_text())["registry"]["reference_sha256"] == registry["reference_sha256"]

    small = workdir / "small-data.csv"
    diabetes(rows=REFERENCE_MIN_ROWS - 1, seed=4).to_csv(small, index=False)
    none = init_experiment(f"file:{small}", settings, reference_to=workdir / "small-data.reference.csv")
    assert "reference" not in none.config["registry"] and not (workdir / "small-data.reference.csv").exists()
    assert any("no reference set" in line for line in none.notes["registry"])


# the classic titanic table's counts (R's datasets::Titanic): class, sex, age, survived -> passengers
_TITANIC = {
    ("No", "Child", "Male"): (0, 0, 35, 0), ("No", "Child", "Female"): (0, 0, 17, 0),
    ("No", "Adult", "Male"): (118, 154, 387, 670), ("No", "Adult", "Female"): (4, 13, 89, 3),
    ("Yes", "Child", "Male"): (5, 11, 13, 0), ("Yes", "Child", "Female"): (1, 13, 14, 0),
    ("Yes", "Adult", "Male"): (57, 14, 75, 192), ("Yes", "Adult", "Female"): (140, 80, 76, 20),
}


def _titanic_like(seed: int = 0) -> pd.DataFrame:
    """2,201 passengers in four categorical columns: 24 distinct rows, most written hundreds of
    times, in a shuffled order."""
    rows = [(klass, sex, age, survived)
            for (survived, age, sex), counts in _TITANIC.items()
            for klass, n in zip(("1st", "2nd", "3rd", "Crew"), counts, strict=True) for _ in range(n)]
    # written in lower case as some exports write it ("yes", "crew"): the hash of these rows took one class only
    frame = pd.DataFrame(rows, columns=["Class", "Sex", "Age", "Survived"]).apply(lambda c: c.str.lower())
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.training
def test_init_on_a_table_of_few_distinct_rows_writes_a_file_that_runs(workdir, settings):
    """Every copy of a row goes to the same side: a reference set picked by hashing rows took one
    class only, and `trilho run -e` on the file init had just written stopped ("need at least 2
    classes to classify, found only ['yes']"). Now it is picked class by class, or not at all."""
    from trilho.experiment import load_experiment
    from trilho.init.profile import init_experiment
    from trilho.init.propose import render
    from trilho.workflows.run import run_experiment

    frame = _titanic_like()
    assert len(frame) == 2_201 and len(frame.drop_duplicates()) == 24
    data, to = workdir / "titanic.csv", workdir / "titanic.reference.csv"
    frame.to_csv(data, index=False)
    proposal = init_experiment(f"file:{data}", settings, target="Survived", reference_to=to)
    file = workdir / "titanic.toml"
    file.write_text(render(proposal))
    if to.exists():  # each class is there, and in a usable number
        counts = pd.read_csv(to)["Survived"].value_counts()
        assert set(counts.index) == {"yes", "no"} and counts.min() >= 5
    else:
        assert any("no reference set" in n for n in proposal.notes["registry"])
    exp = load_experiment(file, ["cv.n_repeats=1"])
    summary = run_experiment(exp, settings).summary
    if to.exists():
        assert summary["data"]["reference"]["rows"] == len(pd.read_csv(to))
    assert not any("cannot serve the gate" in w for w in summary["data"]["warnings"])


def test_a_reference_set_that_cannot_serve_the_gate_is_a_warning_and_the_gate_uses_the_folds(workdir, settings):
    from trilho.data.reference import load_reference
    from trilho.data.synthetic import diabetes
    from trilho.experiment import load_experiment
    from trilho.storage import open_lake

    one_class = diabetes(rows=60, seed=2)
    one_class = one_class[one_class["CLASS"] == one_class["CLASS"].iloc[0]]
    path = workdir / "one-class.csv"
    one_class.to_csv(path, index=False)
    exp = load_experiment("diabetes", [f"registry.reference={json.dumps('file:' + str(path))}"])
    chosen, why = load_reference(exp, settings, open_lake(settings))
    assert chosen is None and "cannot serve the gate" in why and "compares on the folds instead" in why


@pytest.mark.parametrize("metric", ["rmse", "log_loss"])
def test_a_loss_on_the_same_folds_is_judged_lower_is_better(metric):
    rng = np.random.default_rng(4)
    champion = rng.normal(3.0, 0.3, 10)
    worse, same, better = champion + 0.5 + rng.normal(0, 0.02, 10), champion.copy(), champion - 0.5
    kw = {"metric": metric, "margin": 0.05, "test_fraction": 0.2, "champion_version": "1"}
    assert not judge(worse, champion, **kw).promote  # a higher loss on every fold is worse
    assert judge(same, champion, **kw).promote
    decided = judge(better, champion, **kw)
    assert decided.promote and "lower is better" in decided.reason
    # on other data: a loss whose whole interval sits above the champion's estimate is a drop
    changed = judge_changed_data(champion + 2.0, {"mean": 3.0, "low": 2.8, "high": 3.2}, None, **kw)
    assert "a significant drop" in changed.reason
