"""`trilho init`'s core: profiling in chunks, and the choices it proposes (pure, no I/O)."""

from __future__ import annotations

import tomllib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from trilho.errors import ConfigError
from trilho.evaluation.metrics import probability_metrics
from trilho.experiment import Experiment
from trilho.init.profile import profile_chunks
from trilho.init.propose import propose, render
from trilho.model.encoding import normalise_text


def _chunks(frame: pd.DataFrame, size: int):
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size].reset_index(drop=True)


def _frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "Patient ID": np.arange(rows) * 7 + 3,               # unique integers, id-like name
        "ticket": [f"T-{i}" for i in rng.permutation(rows)],  # unique text
        "height": rng.normal(170, 10, rows).round(1),
        "visits": rng.integers(0, 40, rows),                  # integers, many values: a quantity
        "stage": rng.integers(1, 5, rows),                    # 4 integer codes
        "insured": rng.choice(["TRUE", "false", "True"], rows),
        "city": rng.choice(["Lisbon", "porto", " FARO "], rows),
        "note": [f"free text {i}" for i in rng.integers(0, 10_000, rows)],
        "label": rng.choice(["a", "b", "c"], rows, p=[0.6, 0.3, 0.1]),
    })


def test_profile_is_the_same_in_one_chunk_or_many():
    frame = _frame()
    frame.loc[[5, 250], "height"] = np.nan
    whole, parts = profile_chunks([frame], "label"), profile_chunks(_chunks(frame, 37), "label")
    assert whole.rows == parts.rows == 400
    for name, col in whole.columns.items():
        other = parts.columns[name]
        assert (col.nulls, col.text, col.integer, col.counts) == (other.nulls, other.text, other.integer, other.counts)
    assert whole.unique == parts.unique
    assert parts.columns["height"].nulls == 2
    assert parts.unique["Patient ID"] and parts.unique["ticket"] and not parts.unique.get("stage", False)


def test_duplicate_rows_are_counted_on_the_features_as_the_folds_see_them():
    from trilho.evaluation.splits import duplicate_groups

    rng = np.random.default_rng(3)
    base = pd.DataFrame({"visits": rng.integers(0, 5, 60), "city": rng.choice(["Lisbon", "Porto"], 60),
                         "outcome": rng.choice(["yes", "no"], 60)})
    copies = base.sample(25, random_state=1).assign(city=lambda f: f["city"].str.upper() + " ",  # other spelling
                                                    outcome=lambda f: np.where(f["outcome"] == "yes", "no", "yes"))
    frame = pd.concat([base, copies], ignore_index=True)
    frame.loc[[0, 70], "visits"] = np.nan  # chunks that read the column as floats, and ones that read integers
    features = frame.drop(columns=["outcome"]).assign(city=lambda f: normalise_text(f["city"]))
    groups = duplicate_groups(features)
    expected = len(frame) - len(np.unique(groups))
    assert expected > 25
    for chunks in ([frame], list(_chunks(frame, 20))):
        # named, or not named (the label is guessed), with conflicting labels on copies: the same count
        assert profile_chunks(chunks, "outcome").duplicate_rows("outcome") == expected
        guessed = propose(profile_chunks(chunks), "d", "file:d.csv")
        assert f"{expected} of the {len(frame)} rows repeat an earlier row's features" in " ".join(guessed.notes["cv"])


def test_a_repeat_across_chunks_is_seen():
    frame = pd.DataFrame({"key": list(range(100)) + [3], "x": np.arange(101) * 1.5, "y": ["a", "b"] * 50 + ["a"]})
    assert profile_chunks(_chunks(frame, 50), "y").unique["key"] is False
    assert profile_chunks(_chunks(frame.head(100), 50), "y").unique["key"] is True


def test_proposal_sorts_columns_into_roles_and_loads():
    proposal = propose(profile_chunks(_chunks(_frame(), 64), "label"), "people", "file:people.csv", "label")
    data = proposal.config["data"]
    assert set(data["drop"]) == {"Patient ID", "ticket", "note"}
    assert data["categorical"] == ["stage", "insured", "city"]
    assert set(data["ranges"]) == {"height", "visits"}
    assert data["labels"] == ["a", "b", "c"]  # as the data writes them
    exp = Experiment.model_validate(tomllib.loads(render(proposal)))  # the rendered file is the proposal
    assert exp.data.categorical == data["categorical"] and exp.cv.n_splits == 5
    assert proposal.config["resampler"]["name"] == "none"  # 0.1 vs 0.6: imbalanced, and still no resampler
    assert proposal.config["decision"] == {"objective": "argmax"}  # three classes: no threshold


def test_rare_class_lowers_the_folds_and_the_neighbours():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 200), "z": rng.normal(0, 1, 200),
                          "y": ["big"] * 196 + ["tiny"] * 4})
    config = propose(profile_chunks([frame], "y"), "r", "file:r.csv", "y").config
    assert config["cv"]["n_splits"] == 4
    assert config["resampler"] == {"name": "none", "params": {}}
    assert config["decision"] == {"objective": "metric", "metric": "f1_macro"}  # two imbalanced classes
    frame.loc[frame.index[-3:], "y"] = "big"
    with pytest.raises(ConfigError, match="'tiny' has a single row"):
        propose(profile_chunks([frame], "y"), "r", "file:r.csv", "y")


def test_missing_values_choose_the_policy():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 300), "y": rng.choice([0, 1], 300)})
    frame.loc[::10, "x"] = np.nan
    config = propose(profile_chunks([frame], "y"), "m", "file:m.csv", "y").config
    assert config["data"]["missing"] == "native" and config["resampler"]["name"] == "none"
    assert config["data"]["labels"] == ["0", "1"]


def test_the_label_is_guessed_only_when_it_is_clear():
    frame = _frame()
    assert propose(profile_chunks([frame]), "p", "file:p.csv").config["data"]["target"] == "label"
    with pytest.raises(ConfigError, match=r"'stage'.*--target COLUMN"):
        propose(profile_chunks([frame.drop(columns=["label"])]), "p", "file:p.csv")
    # a number with many values is a regression target; asked to classify it, init says how
    assert propose(profile_chunks([frame]), "p", "file:p.csv", "height").config["task"] == "regression"
    with pytest.raises(ConfigError, match="more than 50 distinct values.*--task regression"):
        propose(profile_chunks([frame]), "p", "file:p.csv", "height", task="classification")


def test_integer_codes_read_as_floats_normalise_to_the_integers():
    assert list(normalise_text(pd.Series([2.0, np.nan, 10.0]))) == ["2", pd.NA, "10"]
    assert list(normalise_text(pd.Series([2.5, 1.0]))) == ["2.5", "1.0"]


def test_pr_auc_matches_scikit_learn_for_two_and_more_classes():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1).round(2)
    proba = np.column_stack([1 - p1, p1])
    assert probability_metrics(y, proba, np.array([0, 1]))["pr_auc"] == pytest.approx(average_precision_score(y, p1))
    y3 = rng.integers(0, 3, 300)
    raw = rng.random((300, 3)) + np.eye(3)[y3]
    proba3 = raw / raw.sum(axis=1, keepdims=True)
    expected = np.mean([average_precision_score(y3 == k, proba3[:, k]) for k in range(3)])
    assert probability_metrics(y3, proba3, np.array([0, 1, 2]))["pr_auc"] == pytest.approx(expected)


def _answers(rows: int = 300, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    said_yes = rng.random(rows) < 0.4
    return pd.DataFrame({"x": rng.normal(0, 1, rows) + said_yes,
                         "answer": np.where(said_yes, rng.choice(["Yes", "y", "TRUE"], rows),
                                            rng.choice(["no", "No", "N", "false"], rows))})


def test_yes_and_no_spelled_many_ways_are_proposed_as_two_classes():
    frame = _answers()
    proposal = propose(profile_chunks([frame], "answer"), "a", "file:a.csv", "answer")
    data = proposal.config["data"]
    normal = normalise_text(frame["answer"]).value_counts()
    written = frame["answer"].value_counts()
    # every spelling as the data writes it most ("no" 61 times, "No" 57: "no"), the side's most written
    # spelling first: it names the class
    no = max(["no", "No"], key=lambda v: written[v])
    assert data["labels"] == [sorted([no, "N", "false"], key=lambda v: -written[v]),
                              sorted(["Yes", "y", "TRUE"], key=lambda v: -written[v])]
    assert "pr_auc" in proposal.config["evaluation"]["metrics"]  # a binary label
    text = render(proposal)
    assert "binary" in text and "merged into two classes" in text
    exp = Experiment.model_validate(tomllib.loads(text))
    assert exp.data.classes == [data["labels"][0][0], data["labels"][1][0]]
    codes = normalise_text(frame["answer"]).map(exp.data.codes)
    assert codes.notna().all() and (codes == 1).sum() == normal[["YES", "Y", "TRUE"]].sum()


@pytest.mark.parametrize("other", ["MAYBE", "1"])
def test_labels_are_not_merged_when_one_is_not_a_yes_or_no(other):
    frame = _answers()
    frame.loc[frame.index[:20], "answer"] = other
    labels = propose(profile_chunks([frame], "answer"), "a", "file:a.csv", "answer").config["data"]["labels"]
    assert all(isinstance(v, str) for v in labels) and other in labels and len(labels) == 7
    two = pd.DataFrame({"x": [i % 7 for i in range(40)], "y": ["True", "false"] * 20})  # two spellings: two classes
    assert propose(profile_chunks([two], "y"), "b", "file:b.csv", "y").config["data"]["labels"] == ["false", "True"]


def test_numbers_with_a_missing_marker_are_numbers_with_gaps():
    """A public set's "?" for a missing number: the column stays numeric (or integer codes), the
    marker is proposed as data.missing_markers and counted among the missing values."""
    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"chol": rng.normal(200, 30, 400).round(0), "ca": rng.integers(0, 4, 400),
                          "note": rng.normal(0, 1, 400).round(2), "y": rng.choice(["a", "b"], 400)})
    frame = frame.astype({"chol": object, "ca": object, "note": object})
    frame.loc[[5, 300, 301], "chol"] = ["?", " ? ", "?"]
    frame.loc[[7, 350], "ca"] = ["?", "-"]
    frame.loc[[9, 390], "note"] = ["?", "see file"]  # a word that is no marker: text, as before
    for chunks in ([frame], list(_chunks(frame, 100))):  # the first chunks hold only numbers
        proposal = propose(profile_chunks(chunks, "y"), "m", "file:m.csv", "y")
        data = proposal.config["data"]
        assert data["missing_markers"] == ["-", "?"]
        assert "chol" in data["ranges"] and data["categorical"] == ["ca"]
        assert "note" in data["drop"]  # free text: over 50 distinct values
        shown = " ".join(proposal.notes["columns"] + proposal.notes["missing"])
        assert "'chol': numeric with '?' on 3 rows read as missing" in shown and "chol 3, ca 2" in shown
    exp = Experiment.model_validate(tomllib.loads(render(proposal)))
    assert exp.data.missing_markers == ["-", "?"]
    plain = frame.assign(chol=frame["chol"].replace({"?": None, " ? ": None}))
    assert "missing_markers" not in propose(profile_chunks([plain.drop(columns=["ca"])], "y"), "m", "file:m.csv",
                                            "y").config["data"]


def test_profile_and_propose_import_each_other_one_way_only(tmp_path):
    """profile -> propose -> census: propose reading the profile's module again (even for type
    hints) is a circle, and the layers contract says so."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import trilho.init.census
    import trilho.init.profile
    import trilho.init.propose

    assert trilho.init.census.Column.__module__ == "trilho.init.census" == trilho.init.census.Profile.__module__
    root = Path(__file__).resolve().parents[2]
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    copy = tmp_path / "src"
    shutil.copytree(root / "src" / "trilho", copy / "trilho", ignore=shutil.ignore_patterns("__pycache__"))
    propose_py = copy / "trilho" / "init" / "propose.py"
    text = propose_py.read_text()
    propose_py.write_text(text.replace("from typing import Any\n", "from typing import TYPE_CHECKING, Any\n", 1)
                          + "\n\nif TYPE_CHECKING:\n    from trilho.init.profile import Column  # noqa: F401\n")
    broken = subprocess.run([lint, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0, broken.stdout[-3000:]
    assert "trilho.init.propose -> trilho.init.profile" in broken.stdout, broken.stdout[-3000:]


def test_init_counts_repeated_rows_as_the_run_does(workdir, settings):
    """The count `trilho init` says is the run's: on the proposed features only (an id-like name
    that is a feature counts, free text that is dropped does not), over the data's rows and over
    the rows the folds will use once the reference set is set apart."""
    from trilho.data.clean import clean
    from trilho.data.curate import fold_data
    from trilho.data.reference import ReferenceSet, without_reference
    from trilho.data.synthetic import diabetes
    from trilho.data.tables import read_table
    from trilho.data.validate import repeats_phrase, validate
    from trilho.init.profile import init_experiment

    rng = np.random.default_rng(8)
    frame = diabetes(rows=1200, seed=8).drop(columns=["No_Pation"])
    frame["num_children"] = rng.integers(0, 4, len(frame))            # an id-like name, but a feature
    frame["comment"] = [f"seen by {i % 300}" for i in range(len(frame))]  # free text: dropped
    copies = frame.sample(150, random_state=2).assign(comment="copied", ID=lambda f: f["ID"] + 10_000)
    path = workdir / "visits.csv"
    pd.concat([frame, copies], ignore_index=True).to_csv(path, index=False)
    to = workdir / "visits.reference.csv"
    proposal = init_experiment(f"file:{path}", settings, target="CLASS", reference_to=to)
    exp = Experiment.model_validate(proposal.config)
    assert "comment" in exp.data.drop and "num_children" not in exp.data.drop

    raw = read_table(path)  # what the run does with the same file
    validation = validate(raw, exp)
    reference = clean(read_table(to), exp)
    data, _ = without_reference(clean(raw, exp), ReferenceSet("file:" + str(to), "", "", reference.X, reference.y))
    folds = fold_data(data, exp)[3]
    said = " ".join(proposal.notes["cv"])
    assert validation["duplicates"]["rows_duplicating_another"] >= 150
    assert repeats_phrase(validation["duplicates"]["rows_duplicating_another"], len(raw)) in said
    assert repeats_phrase(folds["rows_copying_another"], folds["rows"], "the folds will use") in said
    assert f"{repeats_phrase(validation['duplicates']['rows_duplicating_another'], len(raw))} (" \
        in " ".join(validation["warnings"])

    small = workdir / "few.csv"  # no reference set: the folds use every row, one number
    again = frame.head(500).sample(40, random_state=3).assign(comment="copied")
    pd.concat([frame.head(500), again], ignore_index=True).to_csv(small, index=False)
    few = init_experiment(f"file:{small}", settings, target="CLASS", reference_to=workdir / "few.reference.csv")
    exp = Experiment.model_validate(few.config)
    folds = fold_data(clean(read_table(small), exp), exp)[3]
    assert folds["rows"] == 540 and folds["rows_copying_another"] >= 40
    said = " ".join(few.notes["cv"])
    assert repeats_phrase(folds["rows_copying_another"], 540) in said and "cv.duplicates = 'group'" in said
