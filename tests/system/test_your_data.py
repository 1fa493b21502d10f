"""Your own data: for each data set of a varied corpus, `trilho init` -> `trilho run -e` (the
generated file unedited) -> `trilho predict` on rows with a missing value and an unseen category
-> `mlflow models serve` answers /invocations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests

from tests.support import corpus
from tests.support.services import model_server
from trilho import load_experiment
from trilho.data.clean import clean
from trilho.data.tables import read_table
from trilho.data.validate import raise_for_errors, validate
from trilho.errors import ConfigError, DataValidationError
from trilho.experiment import Experiment
from trilho.storage import LocalLake

CLI = [sys.executable, "-m", "trilho"]


def _cli(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def env(workdir, settings):
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "TRILHO_LAKE": str(workdir / "lake"), "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "TRILHO_CACHE_DIR": str(workdir / "cache"), "PATH": path}


def summary_features(exp: Experiment, path) -> list[str]:
    """The data's columns the experiment keeps as features, as the file orders them."""
    return [c for c in read_table(path).columns if c not in {exp.data.target, *exp.data.drop}]


def _prediction_rows(path, target: str, drop: list[str], unseen: str | None, categorical=()) -> pd.DataFrame:
    """Six rows of the data with the label removed, one missing value, and one never-seen category."""
    rows = read_table(path).head(6).drop(columns=[target])
    numeric = [c for c in rows.columns if c not in {*drop, *categorical} and pd.api.types.is_numeric_dtype(rows[c])]
    rows[numeric[0]] = rows[numeric[0]].astype("float64")
    rows.loc[rows.index[0], numeric[0]] = np.nan
    if unseen:
        rows[unseen] = rows[unseen].astype(object)
        rows.loc[rows.index[1], unseen] = "never-seen-before"
        rows.loc[rows.index[2], unseen] = None
    return rows


def _serve(model_uri: str, env: dict, workdir, rows: pd.DataFrame, classes: list[str], features: list[str]) -> None:
    with model_server(model_uri, env, workdir / "serve.log") as url:
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        answer = requests.post(url + "/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == len(rows)
        assert all(p["prediction"] in classes for p in predictions)
        assert all(abs(sum(p[f"proba_{c}"] for c in classes) - 1) < 1e-6 for p in predictions)
        # on request, each feature's contribution to each row's answer (TreeSHAP: adding up to the margin)
        answer = requests.post(url + "/invocations", json={**body, "params": {"explain": True}}, timeout=30)
        assert answer.status_code == 200, answer.text
        for row in answer.json()["predictions"]:
            assert [k for k in row if k.startswith("contrib_")] == [f"contrib_{f}" for f in features]
            assert row["explained_class"] in classes


@pytest.mark.training
@pytest.mark.slow
@pytest.mark.parametrize("name", list(corpus.CORPUS))
def test_init_run_predict_serve(name, workdir, env):
    path, target, unseen = corpus.write(name, workdir)
    file = workdir / f"{name}.toml"
    shown = _cli(["init", f"file:{path}", "--target", target, "-o", str(file)], env)
    assert "categorical" in shown.stderr or "numeric" in shown.stderr  # the choices are explained on screen
    config = tomllib.loads(file.read_text())
    exp = Experiment.model_validate(config)  # the generated file loads as it is
    assert exp.data.target == target
    assert exp.data.missing_markers == corpus.MARKERS.get(name, [])

    summary_path = workdir / "summary.json"
    grouped = [*exp.data.categorical, *summary_features(exp, path)][:1]  # a category where there is one
    _cli(["run", "-e", str(file), "--set", "cv.n_repeats=1", "--set", f"evaluation.groups={json.dumps(grouped)}",
          "--summary-json", str(summary_path)], env)
    summary = json.loads(summary_path.read_text())
    assert summary["registry"]["promote"] is True
    # every feature judged out of fold, by the data's own column name; every metric by group
    assert set(summary["importance"]["features"]) == set(summary["data"]["features"])
    assert list(summary["groups"]) == grouped and summary["groups"][grouped[0]]["groups"]
    classes = summary["holdout"]["labels"]
    assert classes == exp.data.classes and len(classes) == corpus.CLASSES[name]

    rows = _prediction_rows(path, target, exp.data.drop, unseen, exp.data.categorical)
    rows_path = workdir / "rows.csv"
    rows.to_csv(rows_path, index=False)
    model_uri = f"models:/{exp.registry.model_name}@champion"
    _cli(["predict", "-m", model_uri, "-i", str(rows_path), "--explain"], env)
    manifests = list((workdir / "lake" / "predictions").rglob("manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["rows"] == len(rows)
    assert sum(manifest["missing_values"].values()) >= 1
    if unseen:
        assert manifest["unseen_categories"] == {unseen: 1}
    if name in corpus.MARKERS:  # the row with "?" is predicted, its value counted as missing
        assert manifest["missing_values"].get("x3") == 1
    predicted = pq.read_table(workdir / "lake" / manifest["key"]).to_pandas()
    assert predicted["prediction"].notna().all() and set(predicted["prediction"]) <= set(classes)
    for ident in exp.data.drop:  # identifiers travel beside the predictions
        assert ident in predicted.columns
    features = summary["data"]["features"]
    assert [c for c in predicted.columns if c.startswith("contrib_")] == [f"contrib_{f}" for f in features]
    assert predicted[[f"contrib_{f}" for f in features]].notna().all().all()

    _serve(model_uri, env, workdir, rows.drop(columns=exp.data.drop), classes, features)


def test_init_explains_and_guesses_the_label(workdir, env):
    path, target, _ = corpus.write("churn", workdir)
    file = workdir / "churn.toml"
    shown = _cli(["init", f"file:{path}", "-o", str(file)], env)  # 'Churn' is clearly the label
    text = file.read_text()
    config = tomllib.loads(text)
    assert config["data"]["target"] == "Churn"
    assert config["data"]["labels"] == ["No", "Yes"]  # as most rows write them ("No", " No ", "no", "NO")
    assert config["data"]["drop"] == ["customer_id"]
    assert set(config["data"]["categorical"]) == {"contract", "internet"}
    assert config["data"]["missing"] in {"impute", "native"}
    assert "identifier" in text and "imbalanced" in text and "missing values: internet 20, tenure 30" in text
    assert "customer_id" in shown.stderr

    frame = pd.DataFrame({"a": [1, 2, 3, 4] * 10, "b": ["x", "y"] * 20, "c": [0.5, 1.5] * 20})
    frame.to_csv(workdir / "unclear.csv", index=False)
    refused = _cli(["init", f"file:{workdir / 'unclear.csv'}"], env, check=False)
    assert refused.returncode == 1 and "--target" in refused.stderr and "'a'" in refused.stderr


# --- the bugs quoted in the issue, each pinned ---------------------------------------------------

def _people(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sex = rng.choice(["female", "male"], rows)
    return pd.DataFrame({"sex": sex, "age": rng.integers(20, 70, rows),
                         "survived": np.where((sex == "female") ^ (rng.random(rows) < 0.2), "yes", "no")})


def _exp(**data) -> Experiment:
    base = {"name": "people", "source": {"uri": "file:x.csv"}, "model": {"name": "xgboost"},
            "data": {"target": "survived", "labels": {"no": 0, "yes": 1}, **data}}
    return Experiment.model_validate(base)


def test_a_categorical_map_in_the_datas_own_spelling_is_accepted():
    exp = _exp(categorical={"sex": {"female": 0, "male": 1}}, missing="reject")
    report = validate(_people(), exp)
    assert report["errors"] == []
    assert report["missing"]["rows"] == 0


def test_a_missing_categorical_value_is_handled_by_every_policy():
    df = _people()
    df.loc[3, "sex"] = None
    for policy in ("impute", "native", "drop"):
        exp = _exp(categorical={"sex": {"F": 0, "M": 1, "FEMALE": 0, "MALE": 1}} if policy == "drop" else ["sex"],
                   missing=policy)
        report = validate(df, exp)
        raise_for_errors(report)
        assert report["missing"]["by_column"] == {"sex": 1}
        data = clean(df, exp)
        assert len(data.y) == (59 if policy == "drop" else 60)
    with pytest.raises(DataValidationError, match=r"1 rows have missing .*by column: \{'sex': 1\}"):
        raise_for_errors(validate(df, _exp(categorical=["sex"], missing="reject")))


def test_unknown_model_resampler_or_parameter_fail_when_the_file_loads(workdir):
    with pytest.raises(ConfigError, match=r"model.name 'xgbost' is unknown"):
        load_experiment("diabetes", ["model.name=xgbost"])
    with pytest.raises(ConfigError, match=r"resampler.name 'smot' is unknown"):
        load_experiment("diabetes", ["resampler.name=smot"])
    with pytest.raises(ConfigError, match=r"\['colour'\] are not parameters of random_forest"):
        load_experiment("diabetes", ["model.name=random_forest", "model.params={colour=1}"])
    with pytest.raises(ConfigError, match="needs complete rows"):
        load_experiment("diabetes", ["data.missing=native"])
    with pytest.raises(ConfigError, match="handles missing values itself"):
        load_experiment("diabetes", ["data.missing=native", "resampler.name=none", "model.name=logistic_regression",
                                     "model.params={}"])
    exp = load_experiment("diabetes", ["model.name=sklearn.svm.SVC", "model.params={probability=true}"])
    assert exp.model.name == "sklearn.svm.SVC"


@pytest.mark.parametrize("model", ["random_forest", "extra_trees", "logistic_regression", "hist_gradient_boosting",
                                   "sklearn.neighbors.KNeighborsClassifier"])
@pytest.mark.training
def test_every_family_is_logged_without_pickle_and_predicts_missing_and_unseen(model, workdir, settings):
    from trilho.serving.predict import predict_batch
    from trilho.workflows.run import run_experiment

    path, target, unseen = corpus.write("churn", workdir)
    base = {"name": "churn", "source": {"uri": f"file:{path}"},
            "data": {"target": target, "labels": ["no", "yes"], "drop": ["customer_id"],
                     "categorical": ["contract", "internet"], "missing": "impute"},
            "cv": {"n_repeats": 1}, "resampler": {"name": "smotenc"}, "model": {"name": model},
            "registry": {"model_name": "churn-model"}}
    if model != "sklearn.neighbors.KNeighborsClassifier":
        base["model"]["params"] = {"n_estimators": 20} if "tree" in model or "forest" in model else {}
    summary = run_experiment(Experiment.model_validate(base), settings).summary
    files = {p.name for p in (workdir / "lake" / summary["lake"]["reports"]).rglob("*")}
    assert "classifier.skops" in files and not any(n.endswith((".pkl", ".pickle", ".joblib")) for n in files)
    rows = _prediction_rows(path, target, ["customer_id"], unseen, ["contract", "internet"])
    rows.to_csv(workdir / "rows.csv", index=False)
    manifest = predict_batch("models:/churn-model@champion", str(workdir / "rows.csv"), settings)
    assert manifest["rows"] == 6 and manifest["unseen_categories"] == {unseen: 1}
    out = pq.read_table(LocalLake(workdir / "lake").root / manifest["key"]).to_pandas()
    # the file lists "no" and "yes"; the model names them as most of the data's rows write them
    assert set(out["prediction"]) <= {"No", "Yes"} and out[["proba_No", "proba_Yes"]].notna().all().all()


class Smuggled:
    """A type no trusted package defines: a skops file holding it must not be built."""

    built = False

    def __setstate__(self, state):
        Smuggled.built = True
        self.__dict__.update(state)


def test_a_skops_model_holding_an_untrusted_type_is_refused(workdir):
    import skops.io

    from trilho.model.code import servable as _servable

    path = workdir / "classifier.skops"
    skops.io.dump({"model": Smuggled()}, path)
    servable = _servable()
    with pytest.raises(ValueError, match=r"names types .* not classes of .*Smuggled"):
        servable.load_classifier({"format": "skops"}, str(path))
    assert not Smuggled.built


def test_compare_takes_the_same_names_and_checks_them():
    from trilho.workflows.compare import parse_candidates

    exp = load_experiment("diabetes")
    found = parse_candidates(["xgboost+smote", "extra_trees+none", "hist_gradient_boosting+random_over"], exp)
    assert [c["label"] for c in found] == ["xgboost+smote", "extra_trees+none", "hist_gradient_boosting+random_over"]
    with pytest.raises(ConfigError, match=r"candidate 'xgbost\+smote': model 'xgbost' is unknown"):
        parse_candidates(["xgboost+smote", "xgbost+smote"], exp)
    with pytest.raises(ConfigError, match=r"candidate 'sklearn.linear_model.RidgeClassifier\+none'.*predict_proba"):
        parse_candidates(["xgboost+smote", "sklearn.linear_model.RidgeClassifier+none"], exp)


@pytest.mark.training
@pytest.mark.parametrize("model", ["xgboost", "random_forest", "logistic_regression", "hist_gradient_boosting"])
def test_class_weight_weights_the_rare_class_without_resampling(model):
    from trilho.model.catalog import build_pipeline

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(0, 1, 2000), "b": rng.normal(0, 1, 2000)})
    y = ((X["a"] + rng.normal(0, 1.5, 2000)) > 2.2).astype(int).to_numpy()  # about 8% positive
    params = {"n_estimators": 30} if model in {"xgboost", "random_forest"} else {}
    plain = build_pipeline({"name": model, "params": params}, {"name": "none"}, 0).fit(X, y)
    weighted = build_pipeline({"name": model, "params": params}, {"name": "class_weight"}, 0).fit(X, y)
    assert "resampler" not in weighted.named_steps  # nothing resampled
    # the rare class gets more of the probability mass once it weighs as much as the common one
    assert weighted.predict_proba(X)[:, 1].mean() > 1.5 * plain.predict_proba(X)[:, 1].mean()


def test_class_weight_is_refused_for_a_model_that_cannot_weight_classes():
    with pytest.raises(ConfigError, match="KNeighborsClassifier takes no class weights"):
        load_experiment("diabetes", ["model.name=sklearn.neighbors.KNeighborsClassifier", "model.params={}",
                                     "resampler.name=class_weight"])
    exp = load_experiment("diabetes", ["resampler.name=class_weight"])
    assert exp.resampler.name == "class_weight"


@pytest.mark.training
def test_a_class_weighted_xgboost_run_logs_the_booster_and_predicts(workdir, settings):
    from trilho.serving.predict import predict_batch
    from trilho.workflows.run import run_experiment

    path, target, unseen = corpus.write("churn", workdir)
    exp = Experiment.model_validate({
        "name": "churn", "source": {"uri": f"file:{path}"},
        "data": {"target": target, "labels": ["no", "yes"], "drop": ["customer_id"],
                 "categorical": ["contract", "internet"], "missing": "native"},
        "cv": {"n_repeats": 1}, "resampler": {"name": "class_weight"},
        "model": {"name": "xgboost", "params": {"n_estimators": 30}}, "registry": {"model_name": "churn-weighted"}})
    summary = run_experiment(exp, settings).summary
    files = {p.name for p in (workdir / "lake" / summary["lake"]["reports"]).rglob("*")}
    assert "booster.ubj" in files and "classifier.skops" not in files
    rows = _prediction_rows(path, target, ["customer_id"], unseen, ["contract", "internet"])
    rows.to_csv(workdir / "rows.csv", index=False)
    manifest = predict_batch("models:/churn-weighted@champion", str(workdir / "rows.csv"), settings)
    assert manifest["rows"] == 6 and manifest["missing_policy"] == "native"
