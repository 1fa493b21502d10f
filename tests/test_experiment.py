import json

import pytest

from trilho import ConfigError, load_experiment
from trilho.experiment import DataSpec, apply_overrides, builtin_experiments


def test_builtin_diabetes_experiment_holds_everything_specific_to_the_data():
    exp = load_experiment("diabetes")
    assert "diabetes" in builtin_experiments()
    assert exp.data.target == "CLASS"
    assert exp.data.classes == ["N", "Y", "P"]
    assert exp.data.drop == ["ID", "No_Pation"]
    assert exp.data.categorical == {"Gender": {"F": 0, "M": 1}}
    assert exp.cv.seeds == list(range(10)) and exp.cv.n_splits == 5
    assert exp.resampler.name == "smote" and exp.model.name == "xgboost"
    assert exp.tracking.experiment == "experimento_xgboost"
    assert exp.source.uri.startswith("kaggle:marshalpatel3558/")


def test_overrides_reach_any_key_and_the_resolved_config_records_them():
    exp = load_experiment("diabetes", ["cv.n_repeats=3", "model.params.max_depth=4", "tracking.layout=nested"])
    resolved = exp.resolved()
    assert resolved["cv"]["n_repeats"] == 3 and exp.cv.seeds == [0, 1, 2]
    assert resolved["model"]["params"]["max_depth"] == 4
    assert resolved["model"]["params"]["objective"] == "multi:softprob"  # siblings kept
    assert resolved["tracking"]["layout"] == "nested"


def test_override_values_parse_as_toml_or_fall_back_to_text():
    out = apply_overrides({}, ["a.b=1.5", "a.c=true", "a.d=[1, 2]", "a.e=hello world"])
    assert out == {"a": {"b": 1.5, "c": True, "d": [1, 2], "e": "hello world"}}


@pytest.mark.parametrize("override, key", [
    ("cv.n_splits=1", "cv.n_splits"),
    ("cv.nsplits=3", "cv.nsplits"),
    ('evaluation.metrics=["accuracy", "auc_typo"]', "auc_typo"),
    ('data.labels={N=0, Y=2}', "data.labels"),
])
def test_bad_keys_are_named_in_the_error(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_experiment("diabetes", [override])


def test_malformed_override_and_missing_file_are_clear():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_experiment("diabetes", ["cv.n_repeats"])
    with pytest.raises(ConfigError, match="not found"):
        load_experiment("no-such-experiment.toml")


def test_yaml_experiment_files_load_too(tmp_path):
    data = load_experiment("diabetes").resolved()
    path = tmp_path / "exp.yaml"
    import yaml

    path.write_text(yaml.safe_dump(json.loads(json.dumps(data))))
    assert load_experiment(path).resolved() == data


def _labels(labels) -> DataSpec:
    return DataSpec(target="t", labels=labels)


def test_several_spellings_of_a_class_share_its_code_and_the_first_names_it():
    listed = _labels([["no", "N", "false"], ["Yes", "y", " TRUE "]])
    mapped = _labels({"NO": 0, "n": 0, "FALSE": 0, "yes": 1, "Y": 1, "true": 1})
    # matched with case and spaces ignored; kept (and named) as written, stripped
    assert listed.codes == mapped.codes == {"NO": 0, "N": 0, "FALSE": 0, "YES": 1, "Y": 1, "TRUE": 1}
    assert listed.labels == {"no": 0, "N": 0, "false": 0, "Yes": 1, "y": 1, "TRUE": 1}
    assert listed.classes == ["no", "Yes"] and mapped.classes == ["NO", "yes"]
    assert listed.spellings == {"no": ["no", "N", "false"], "Yes": ["Yes", "y", "TRUE"]}
    assert listed.class_of == {"NO": "no", "N": "no", "FALSE": "no", "YES": "Yes", "Y": "Yes", "TRUE": "Yes"}
    assert _labels({"Y": 1, "N": 0, "YES": 1}).classes == ["N", "Y"]  # by code, each class's first label
    assert _labels(listed.labels).classes == ["no", "Yes"]  # the resolved config loads again alike
    assert _labels(["N", "P", "Y"]).classes == ["N", "P", "Y"]  # one label per class, as before
    twice = _labels({"yes": 1, "YES": 1, "no": 0})  # one label written twice: its first spelling stands
    assert twice.labels == {"yes": 1, "no": 0} and twice.codes == {"YES": 1, "NO": 0}


@pytest.mark.parametrize(("labels", "message"), [
    ({"A": 0, "a": 1}, r"'A' is given codes 0 and 1"),
    ([["A", "B"], ["b"]], r"'B' is given codes 0 and 1"),
    ({"A": 0, "B": 2}, r"label codes must be 0\.\.1, each used at least once"),
    ({"A": 0, "B": 0}, r"need at least 2 classes"),
    ([["A"], []], r"data.labels item 1 is an empty list"),
    ([["A", "B"], ["B"]], r"lists 'B' for two classes \(0 and 1\)"),
])
def test_labels_that_cannot_be_classes_are_refused_by_name(labels, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        _labels(labels)
