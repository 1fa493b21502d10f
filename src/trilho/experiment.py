"""The experiment file: everything that is specific to one data set and one procedure.

TOML or YAML, validated once into a frozen object; ``--set key=value`` overrides any key and the
resolved result is what every run records.
"""

from __future__ import annotations

import copy
import posixpath
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from trilho.errors import ConfigError
from trilho.model.encoding import CALENDAR, WRITTEN_MISSING, normalise_map

__all__ = [
    "Experiment",
    "apply_overrides",
    "builtin_experiments",
    "load_experiment",
]


# interval methods, described in trilho.evaluation.stats and measured in STATISTICS.md
INTERVALS = ("percentile", "naive_t", "fold_bootstrap", "corrected_t", "row_bootstrap", "nested_cv")
CHEAP_INTERVALS = INTERVALS[:5]  # nested_cv costs k(k-1)/2 extra fits per nested repeat
SEED_MAX = 2**32 - 1           # numpy and scikit-learn take seeds from 0 to this, no others
SEED_PARAMS = ("random_state", "seed", "random_seed")  # model and resampler parameters that are seeds
MAX_FITS = 10_000              # folds and nested fits of one run: more is a typo, not a plan
# a date column's calendar parts when the file lists the column alone: every part but the hour
DATE_PARTS = [p for p in CALENDAR if p != "hour"]


def seed_error(key: str, value: Any, span: int = 1) -> str | None:
    """Why ``value`` (the first of ``span`` consecutive seeds) is no seed, or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{key} = {value!r}: seeds are whole numbers from 0 to {SEED_MAX:,}"
    if value < 0 or value > SEED_MAX:
        return f"{key} = {value}: seeds are whole numbers from 0 to {SEED_MAX:,} (numpy and scikit-learn take no others)"
    if value + span - 1 > SEED_MAX:
        return (f"{key} = {value}: its {span:,} repeats would take seeds up to {value + span - 1:,}, and seeds are "
                f"whole numbers from 0 to {SEED_MAX:,}; lower {key} to at most {SEED_MAX - span + 1:,}")
    return None


def _model_name_error(name: str) -> str | None:
    """Why MLflow would refuse ``name`` for a registered model (its own rule: mlflow.utils.validation and the
    file store's ``_validate_model_name``), or None."""
    if not name.strip():
        return "is blank"
    for char in ("/", ":", "%", "\\"):
        if char in name:
            return f"holds {char!r}"
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        return "reads as a path"
    return None


def _labels_from_list(items: list[Any]) -> Any:
    """["N", "Y"] -> {N: 0, Y: 1}; [["NO", "N"], ["YES", "Y"]] -> {NO: 0, N: 0, YES: 1, Y: 1}."""
    out: dict[str, int] = {}
    for code, item in enumerate(items):
        spellings = item if isinstance(item, list) else [item]
        if not spellings:
            raise ValueError(f"data.labels item {code} is an empty list; give the class at least one label")
        for label in spellings:
            key = str(label)
            if out.setdefault(key, code) != code:
                raise ValueError(f"data.labels lists {key!r} for two classes ({out[key]} and {code}); list it once")
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where the data comes from."""

    # kaggle:owner/dataset[/file], https://..., file:PATH, a lake key or synthetic:diabetes?rows=N&seed=S
    uri: str
    # the raw file's expected sha256: other bytes are refused (a changed upstream file never trains silently)
    sha256: str | None = None


class DataSpec(_Strict):
    """The table: its label, features and what each value means."""

    # the label column (classification), or the numeric target (regression)
    target: str
    # classification: {label: code} with codes 0..k-1, or a list of labels (codes in list order). Labels are kept
    # as written (stripped), and matched with case and surrounding spaces ignored (``codes``): the
    # data's labels and these, text in any case or integers alike, are stripped and upper-cased
    # before mapping. Several spellings of one class share its code ({Yes = 1, Y = 1, ...}, or a
    # list in the list: [["No", "N"], ["Yes", "Y"]]); the first one listed names the class, as it
    # is written (`trilho init` writes each class's most frequent spelling in the data).
    # Regression has no labels.
    labels: dict[str, int] = {}
    # regression: fit the model to the target as it is ("identity"), or to its log ("log", for a
    # positive target judged by relative errors, such as MAPE); a log model's predictions are taken
    # back with a smearing factor (trilho.model.catalog.fit_regressor) so that they estimate the
    # mean, not the median; every metric is scored in the target's own units
    target_scale: Literal["identity", "log"] = "identity"
    # columns that are no features (identifiers, free text): never trained on
    drop: list[str] = []
    # a list of columns (categories learned inside each training fold), or per column a
    # hand-written {value: code} map; values and keys are stripped and upper-cased alike
    categorical: dict[str, dict[str, int]] | list[str] = {}
    # plausible [low, high] per numeric column: values outside are counted in the validation report and kept
    ranges: dict[str, tuple[float, float]] = {}
    # fewer rows than this after cleaning: the data cannot run
    min_rows: int = Field(10, ge=1)
    # missing (or infinite) feature values: "impute" (median / most frequent code, fitted in each
    # training fold before any resampler), "native" (the model's own handling), "drop" the rows,
    # or "reject" the data. The logged model applies the same policy when it predicts.
    missing: Literal["impute", "native", "drop", "reject"] = "impute"
    # feature values that mean "missing" in this data (["?"] in many public sets), case and
    # surrounding spaces ignored; read as missing in training and by the logged model alike
    missing_markers: list[str] = []
    # words of trilho.model.encoding.WRITTEN_MISSING (NA, #N/A, NULL, null, NaN, N/A, <NA>: missing in every
    # column by default) that this data uses as values: ["NA"] where NA means North America
    not_missing: list[str] = []
    # date columns: read as dates and given to the model as calendar parts, derived the same way by
    # the logged model when it predicts (trilho.model.encoding.CALENDAR: year, month, day, weekday,
    # dayofyear, hour, days since the training fold's first day, season); a list of columns (every
    # part but the hour), or per column its parts: { signup = ["month", "weekday"] }
    dates: dict[str, list[str]] | list[str] = {}
    # how a date column is written when it is not ISO 8601 (2021-03-04, 2021-03-04 10:00): a strftime
    # pattern ("%d/%m/%Y", "%m/%d/%Y %H:%M"), or "epoch" for numbers of seconds since 1970
    date_formats: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "nonfinite" in data:  # the earlier name of data.missing (it knew "reject" and "drop")
                legacy = data.pop("nonfinite")
                if data.setdefault("missing", legacy) != legacy:
                    raise ValueError(f"data.nonfinite ({legacy!r}) is the earlier name of data.missing "
                                     f"({data['missing']!r}); set data.missing only")
            if isinstance(data.get("labels"), list):
                data["labels"] = _labels_from_list(data["labels"])
        return data

    @field_validator("labels")
    @classmethod
    def _codes_are_0_to_k(cls, v: dict[str, int]) -> dict[str, int]:
        if not v:  # a regression; a classification without labels is refused by Experiment
            return v
        codes = sorted(set(v.values()))
        if codes != list(range(len(codes))):
            raise ValueError(f"label codes must be 0..{len(codes) - 1}, each used at least once, got {v}")
        if len(codes) < 2:
            raise ValueError(f"need at least 2 classes, got {v}")
        normal: dict[str, int] = {}
        written: dict[str, int] = {}
        for label, code in v.items():
            key = label.strip().upper()
            if normal.setdefault(key, code) != code:
                raise ValueError(f"labels {sorted(v)} collide once stripped and upper-cased: {key!r} is given "
                                 f"codes {normal[key]} and {code}; list each label once")
            if len(normal) > len(written):  # the first spelling of a label stands for it ("yes" and "YES": "yes")
                written[label.strip()] = code
        return written

    @field_validator("missing_markers")
    @classmethod
    def _markers_are_normalised(cls, v: list[str]) -> list[str]:
        markers = list(dict.fromkeys(str(m).strip().upper() for m in v))
        if "" in markers:
            raise ValueError("data.missing_markers holds an empty value; empty cells are missing already")
        return markers

    @field_validator("not_missing")
    @classmethod
    def _kept_words_are_missing_words(cls, v: list[str]) -> list[str]:
        words = list(dict.fromkeys(str(w).strip() for w in v))
        odd = [w for w in words if w not in WRITTEN_MISSING]
        if odd:
            raise ValueError(f"data.not_missing holds {odd}, which are values already; it keeps words of "
                             f"{list(WRITTEN_MISSING)} as values (they are read as missing by default)")
        return words

    @field_validator("dates")
    @classmethod
    def _known_parts(cls, v: dict[str, list[str]] | list[str]) -> dict[str, list[str]]:
        found = {str(c): list(DATE_PARTS) for c in v} if isinstance(v, list) else dict(v)
        for col, parts in found.items():
            odd = [p for p in parts if p not in CALENDAR]
            if odd or not parts:
                raise ValueError(f"data.dates.{col} lists {odd or 'no parts'}; choose from {list(CALENDAR)}")
            found[col] = list(dict.fromkeys(parts))
        return found

    @property
    def date_parts(self) -> dict[str, list[str]]:
        """Per date column, its calendar parts."""
        return dict(self.dates) if isinstance(self.dates, dict) else {c: list(DATE_PARTS) for c in self.dates}

    @property
    def written_missing(self) -> list[str]:
        """The words read as a missing value in every column: the common writers' ones, less those kept."""
        return [w for w in WRITTEN_MISSING if w not in self.not_missing]

    @field_validator("categorical")
    @classmethod
    def _maps_are_normalised(cls, v: dict[str, dict[str, int]] | list[str]) -> dict[str, dict[str, int]] | list[str]:
        if isinstance(v, list):
            return list(dict.fromkeys(v))
        out = {}
        for col, mapping in v.items():
            normal = normalise_map(mapping)
            if len(normal) < len(mapping):
                raise ValueError(f"data.categorical.{col} keys {sorted(mapping)} collide once stripped and "
                                 "upper-cased; list each value once")
            out[col] = normal
        return out

    @property
    def categorical_maps(self) -> dict[str, dict[str, int] | None]:
        """Per categorical column its code map, or None where the codes are learned in each fold."""
        if isinstance(self.categorical, list):
            return dict.fromkeys(self.categorical)
        return dict(self.categorical)

    @property
    def codes(self) -> dict[str, int]:
        """What matching uses: each label stripped and upper-cased, with its code."""
        return {label.strip().upper(): code for label, code in self.labels.items()}

    @property
    def classes(self) -> list[str]:
        """Class names ordered by their code: of several spellings of one class, the first listed,
        as it is written (what reports and the summary show; the logged model names its outputs by
        the data's most frequent spelling, trilho.data.clean)."""
        first: dict[int, str] = {}
        for label, code in self.labels.items():
            first.setdefault(code, label.strip())
        return [first[code] for code in sorted(first)]

    @property
    def class_of(self) -> dict[str, str]:
        """Each label, stripped and upper-cased as the data's are matched, with its class's name."""
        names = self.classes
        return {label: names[code] for label, code in self.codes.items()}

    @property
    def spellings(self) -> dict[str, list[str]]:
        """Per class name, every label that means it, as written (the name first)."""
        names = self.classes
        out: dict[str, list[str]] = {name: [] for name in names}
        for label, code in self.labels.items():
            out[names[code]].append(label.strip())
        return out


class CVSpec(_Strict):
    """Repeated stratified cross-validation, or forward folds over time."""

    # "stratified": repeated, shuffled, stratified folds (rows in no order); "time": forward folds over
    # the date column ``time`` (data.dates): each fold tests a later period on the rows before it (an
    # expanding window, or the last ``max_train`` days), never training on its future; the latest
    # evaluation.holdout_fraction of the rows is held out of every fold and scored once
    scheme: Literal["stratified", "time"] = "stratified"
    # the date column that orders the rows (one of data.dates; "" with one date column: that one)
    time: str = ""
    # days left out between the last training row and the first test row of a fold (an embargo, for a
    # target that is known only some days later, or features that average over days)
    gap: float = Field(0.0, ge=0)
    # days of training rows before each fold's gap (0: every earlier row, an expanding window)
    max_train: float = Field(0.0, ge=0)
    # cv.scheme = "time": a column (a customer, a patient) whose rows stay whole: a fold, and the
    # latest period's fit, train only on the groups they do not test (a model for new customers)
    group: str = ""
    # folds per repeat
    n_splits: int = Field(5, ge=2)
    # repeats, each with its own shuffle
    n_repeats: int = Field(10, ge=1)
    # the first repeat's seed; repeat i uses first_seed + i
    first_seed: int = 0
    # rows with identical features: "group" keeps each set of copies in one fold (no leakage),
    # "drop" keeps the first copy only, "keep" splits them like any row (the reference's folds)
    duplicates: Literal["group", "drop", "keep"] = "group"

    @model_validator(mode="before")
    @classmethod
    def _forward_once(cls, data: Any) -> Any:
        """Forward folds have one order: one repeat unless the file says otherwise (and then it is refused)."""
        if isinstance(data, dict) and data.get("scheme") == "time" and "n_repeats" not in data:
            data = {**data, "n_repeats": 1}
        return data

    @model_validator(mode="after")
    def _one_forward_order(self) -> CVSpec:
        if self.scheme == "time" and self.n_repeats != 1:
            raise ValueError(f"cv.n_repeats = {self.n_repeats} under cv.scheme = 'time': forward folds have one "
                             "order, a repeat would be the same folds again; set cv.n_repeats = 1")
        return self

    @field_validator("first_seed")
    @classmethod
    def _seeds_in_range(cls, v: int, info: ValidationInfo) -> int:
        error = seed_error("cv.first_seed", v, info.data.get("n_repeats", 1))
        if error:
            raise ValueError(error)
        return v

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.n_repeats))


# what a distributed fit can do with imbalance: weights travel with their rows, synthetic rows do not
DISTRIBUTED_RESAMPLERS = ("none", "class_weight")


class EstimatorSpec(_Strict):
    """A model or a resampler, by name, with its parameters."""

    # a name `trilho.model.catalog` knows (xgboost, random_forest, ...; smote, none, ...)
    name: str
    # passed to the estimator as they are (n_estimators, max_depth, ...)
    params: dict[str, Any] = {}


class ModelSpec(EstimatorSpec):
    """The classifier: a model by name, its parameters, calibration and where it is fitted."""

    # the probabilities the model returns: "none" (the classifier's own), or calibrated by a
    # "sigmoid" (Platt) or "isotonic" map fitted inside each training fold on that fold's own inner
    # out-of-fold predictions, never on its test rows; the logged model applies the same map
    calibration: Literal["none", "sigmoid", "isotonic"] = "none"
    # the final fit through xgboost.dask on the lake's curated Parquet, spread over a Dask cluster's
    # workers (the folds stay single-machine fits of the same procedure): docs/scale.md
    distributed: bool = False


class EvaluationSpec(_Strict):
    """What is measured, and how it is reported."""

    # the metrics every fold, the holdout and the gate report
    metrics: list[str] = [
        "accuracy", "precision_weighted", "recall_weighted", "f1_weighted",
        "precision_macro", "recall_macro", "f1_macro",
    ]
    # share of rows held out once (stratified) and scored by the model fitted on the rest
    holdout_fraction: float = Field(0.3, gt=0, lt=1)
    interval_low: float = Field(2.5, ge=0, le=100)    # the percentile spread of fold scores
    interval_high: float = Field(97.5, ge=0, le=100)  # the upper percentile of that spread
    level: float = Field(0.95, gt=0, lt=1)            # of the confidence intervals for the mean
    interval: str = "corrected_t"                     # the headline interval (see STATISTICS.md)
    intervals: list[str] = list(CHEAP_INTERVALS)      # every method reported side by side
    nested_repeats: int = Field(10, ge=1)             # repeats that also get nested CV, when "nested_cv" is listed
    # what the model is measured against on the same folds: "majority" (its training folds' most
    # frequent class, on every fold, no fit) and default models (on the first ``baseline_repeats``
    # seeds: their fits cost time); [] for none
    baselines: list[str] = ["majority", "hist_gradient_boosting"]
    # the repeats (first seeds) whose folds the default baseline models are fitted on
    baseline_repeats: int = Field(1, ge=1)
    # the folds of the first ``explain_repeats`` seeds explain their models on their held-out rows
    # (TreeSHAP for XGBoost, permutation importance for the rest: every row once per repeat); 0: none
    explain_repeats: int = Field(1, ge=0)
    # feature columns whose values split every metric, out of fold, with intervals and the largest
    # gap between groups ("Gender"); a missing value is a group of its own
    groups: list[str] = []


class ValidationSpec(_Strict):
    """What the validation stage does with leaks, small classes and date columns."""

    # a feature that alone predicts the label almost perfectly (a copy of the target, or known
    # only after the outcome), a class too small to score, a date column under shuffled folds:
    # "warn" names each on screen, in the reports and MLflow, and the gate does not promote a
    # leaking model; "reject" stops the run before any fit
    leaks: Literal["warn", "reject"] = "warn"
    leak_score: float = Field(0.99, gt=0.5, le=1.0)  # one feature's own out-of-fold ROC AUC at or above this leaks


DECISION_OBJECTIVES = ("argmax", "metric", "recall", "precision", "costs")


class DecisionSpec(_Strict):
    """How the logged model chooses a class from its probabilities."""

    # how a class is chosen from the probabilities. "argmax": the most probable class. Two classes:
    # "metric" (the threshold on the positive class that maximises ``metric``), "recall" (the most
    # precise threshold whose recall of the positive class is at least ``floor``), "precision" (the
    # most sensitive threshold whose precision is at least ``floor``). Any number of classes:
    # "costs" (the class of least expected cost, ``costs[true][predicted]``). Thresholds are
    # chosen inside each training fold, on its own inner out-of-fold predictions, so each test
    # fold is scored with a threshold it never saw; the logged model applies the final fit's.
    objective: Literal["argmax", "metric", "recall", "precision", "costs"] = "argmax"
    metric: str = ""          # for "metric": a metric of the confusion matrix ("" = registry.primary_metric)
    floor: float = Field(0.0, ge=0.0, le=1.0)  # for "recall" and "precision"
    positive: str = ""        # two classes: the class the threshold is on ("" = the second class, code 1)
    # for "costs": one row (true class) and column (predicted) per class, in code order. Regression:
    # { over = 1, under = 4 }, what a unit predicted too high and too low costs; the model then
    # predicts the quantile under / (over + under) of the target (the newsvendor fractile), fitted
    # with the quantile loss in each training fold and scored by the pinball loss
    costs: list[list[float]] | dict[str, float] = []

    @property
    def quantile(self) -> float | None:
        """Regression: the quantile ``costs = {over, under}`` calls for; None for the mean."""
        if isinstance(self.costs, dict) and self.costs:
            return self.costs["under"] / (self.costs["over"] + self.costs["under"])
        return None


class PredictionSpec(_Strict):
    """Regression: the interval every prediction comes with."""

    # the share of new rows the interval [lower, upper] should hold, built from the cross-validated
    # residuals (split-conformal, with the finite-sample correction); the run measures it out of fold
    level: float = Field(0.9, gt=0, lt=1)


class TrackingSpec(_Strict):
    """What MLflow records."""

    # the MLflow experiment the runs go to
    experiment: str = "trilho"
    # "nested": a child run per repeat with its folds' metrics, beside the run's own; "flat": the run alone
    layout: Literal["flat", "nested"] = "flat"
    # the logged model's rows: "all" (a final fit on every row) or "holdout" (the model scored on the holdout)
    final_fit: Literal["all", "holdout"] = "all"
    # log the model (without pickle) to the run; false: metrics and reports only
    log_model: bool = True


class TuneSpec(_Strict):
    """`trilho tune`: the search, its budget and its honest score."""

    trials: int = Field(30, ge=1)                     # per `trilho tune` (a resumed study adds as many again)
    timeout_s: float | None = Field(None, gt=0)       # stop starting trials after this long
    metric: str = ""                                  # what the search optimises ("" = registry.primary_metric)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)  # rows set aside before the search, for the honest score
    space: dict[str, dict[str, Any]] = {}             # "model.params.NAME" = { int|float = [low, high] | choice = [...] }


class RegistrySpec(_Strict):
    """The registered model and the promotion gate that guards its champion alias."""

    model_name: str = ""              # register each run's model under this name ("" = do not register)
    primary_metric: str = "f1_macro"  # what the promotion gate compares
    margin: float = Field(0.01, ge=0) # promote unless the challenger may be worse by more than this
    # the level of the gate's interval on the challenger - champion difference
    level: float = Field(0.95, gt=0, lt=1)
    # labelled rows (any source URI) kept in the lake and never trained on: the gate scores the
    # champion and the challenger on them before any promotion ("" = none: on changed data the
    # gate then cannot tell a better model from easier data, and keeps the challenger)
    reference: str = ""
    reference_sha256: str = ""        # pin the reference's bytes, as source.sha256 pins the data's

    @field_validator("model_name")
    @classmethod
    def _mlflow_takes_it(cls, v: str) -> str:
        why = _model_name_error(v) if v else None
        if why:
            raise ValueError(f"registry.model_name {v!r} {why}, and MLflow refuses such names: use letters, digits, "
                             "'-', '_', '.' and spaces, e.g. 'diabetes-xgboost'")
        return v


TASKS = ("classification", "regression")
# what a regression experiment takes instead of classification's defaults, where the file is silent
REGRESSION_DEFAULTS = {("evaluation", "metrics"): ["rmse", "mae", "r2", "median_ae"],
                       ("evaluation", "baselines"): ["mean", "hist_gradient_boosting"],
                       ("registry", "primary_metric"): "rmse"}


def _classification_keys(data: dict[str, Any]) -> str | None:
    """The first key of a regression experiment file that only classification takes, in one line."""
    def section(name: str) -> dict[str, Any]:
        found = data.get(name)
        return found if isinstance(found, dict) else {}

    resampler, model, decision = section("resampler"), section("model"), section("decision")
    found = [
        ("data.labels", section("data").get("labels"), "a numeric target has no classes"),
        ("resampler.name", resampler.get("name") not in (None, "none") and resampler.get("name"),
         "resamplers balance classes"),
        ("model.calibration", model.get("calibration") not in (None, "none") and model.get("calibration"),
         "calibration maps class probabilities"),
        ("decision.objective", decision.get("objective") not in (None, "argmax", "costs") and decision.get("objective"),
         "thresholds choose a class; for a numeric target give decision.costs = { over = 1, under = 4 }"),
        ("decision.positive", decision.get("positive"), "a numeric target has no positive class"),
        ("decision.floor", decision.get("floor"), "a numeric target has no threshold"),
        ("decision.costs", isinstance(decision.get("costs"), list) and decision.get("costs"),
         "a numeric target's costs are { over = ..., under = ... }, what a unit too high and too low costs"),
        ("evaluation.baselines", "majority" in (section("evaluation").get("baselines") or []) and "majority",
         "use 'mean' (the training folds' mean) or 'median'"),
    ]
    for key, value, why in found:
        if value:
            return f"{key} = {value!r} is for classification ({why}); this experiment's task is regression: remove it"
    return None


class Experiment(_Strict):
    # "classification" (a label with a few classes) or "regression" (a numeric target)
    task: Literal["classification", "regression"] = "classification"
    # names the lake's folders (raw/NAME/, curated/NAME/) and the run: letters, digits, _ . -
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # free text, recorded with every run
    description: str = ""
    # the seed of the holdout split, the resampler and the final fit (the folds' seeds are cv.first_seed's)
    random_state: int = 42
    source: SourceSpec
    data: DataSpec
    cv: CVSpec = CVSpec()
    resampler: EstimatorSpec = EstimatorSpec(name="none")
    model: ModelSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    tracking: TrackingSpec = TrackingSpec()
    registry: RegistrySpec = RegistrySpec()
    tune: TuneSpec = TuneSpec()
    validation: ValidationSpec = ValidationSpec()
    decision: DecisionSpec = DecisionSpec()
    prediction: PredictionSpec = PredictionSpec()

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """A regression file: classification-only keys refused, its own defaults where it is silent."""
        if not isinstance(data, dict) or data.get("task") != "regression":
            return data
        said = _classification_keys(data)
        if said:
            raise ValueError(said)
        data = copy.deepcopy(data)
        decision = data.get("decision")
        quantile = isinstance(decision, dict) and isinstance(decision.get("costs"), dict) and bool(decision["costs"])
        for (section, key), value in REGRESSION_DEFAULTS.items():
            if quantile and (section, key) == ("evaluation", "metrics"):
                value = [*value, "pinball"]  # a quantile model is judged by the loss it fits
            if quantile and (section, key) == ("registry", "primary_metric"):
                value = "pinball"
            if isinstance(data.setdefault(section, {}), dict):
                data[section].setdefault(key, value)
        if quantile:
            decision.setdefault("objective", "costs")
        return data

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @field_validator("random_state")
    @classmethod
    def _seed_in_range(cls, v: int) -> int:
        error = seed_error("random_state", v)
        if error:
            raise ValueError(f"{error}; use e.g. random_state = 42")
        return v

    def _check_task_metrics(self) -> None:
        from trilho.evaluation.metrics import metrics_for  # the one list of metric names

        known = metrics_for(self.task)
        unknown = [m for m in self.evaluation.metrics if m not in known]
        if unknown:
            raise ValueError(f"unknown metrics {unknown} for {self.task}; choose from {sorted(known)}")
        if "pinball" in self.evaluation.metrics and self.decision.quantile is None:
            raise ValueError("evaluation.metrics lists 'pinball', the loss of a quantile: it needs "
                             "decision.costs = { over = ..., under = ... } (which quantile)")
        if self.data.target_scale == "log" and not self.regression:
            raise ValueError("data.target_scale = 'log' is for a numeric target (task = 'regression')")
        if self.data.target_scale == "log" and self.model.distributed:
            raise ValueError("data.target_scale = 'log' needs model.distributed = false: the cluster's fit takes the "
                             "target as it is")

    @model_validator(mode="after")
    def _known_metrics(self) -> Experiment:
        from trilho.model.catalog import check_estimator

        if not self.regression and not self.data.labels:
            raise ValueError("data.labels is missing: a classification needs its classes (e.g. labels = ['no', 'yes']); "
                             "for a numeric target set task = 'regression'")

        for section, params in (("model", self.model.params), ("resampler", self.resampler.params)):
            for name in SEED_PARAMS:  # None is scikit-learn's "unseeded"
                error = None if params.get(name) is None else seed_error(f"{section}.params.{name}", params[name])
                if error:
                    raise ValueError(error)
        try:  # an unknown model, resampler or parameter is found before anything is ingested
            check_estimator(self.model.model_dump(), self.resampler.model_dump(), self.data.missing, self.task)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        self._check_fits()
        if self.model.distributed:
            self._check_distributed()
        overlap = sorted(set(self.data.categorical) & {self.data.target, *self.data.drop})
        if overlap:
            raise ValueError(f"data.categorical lists {overlap}, which are the target or in data.drop")
        if self.data.target in self.evaluation.groups:
            raise ValueError(f"evaluation.groups lists the target {self.data.target!r}: name a feature or a column "
                             "in data.drop")

        self._check_dates()
        self._check_baselines()
        self._check_task_metrics()
        if self.registry.model_name and self.registry.primary_metric not in self.evaluation.metrics:
            raise ValueError(f"registry.primary_metric {self.registry.primary_metric!r} is not one of "
                             f"evaluation.metrics {self.evaluation.metrics}")
        self._check_decision()
        unknown = [m for m in self.evaluation.intervals if m not in INTERVALS]
        if unknown or self.evaluation.interval not in INTERVALS:
            raise ValueError(f"unknown interval methods {unknown or [self.evaluation.interval]}; "
                             f"choose from {list(INTERVALS)}")
        return self

    def _check_dates(self) -> None:
        dates = self.data.date_parts
        odd = sorted(set(dates) & {self.data.target, *self.data.drop, *self.data.categorical})
        if odd:
            raise ValueError(f"data.dates lists {odd}, which are the target, in data.drop or in data.categorical")
        stray = sorted(set(self.data.date_formats) - set(dates))
        if stray:
            raise ValueError(f"data.date_formats names {stray}, which are not in data.dates; list them there too")
        if self.cv.group and self.cv.scheme != "time":
            raise ValueError(f"cv.group {self.cv.group!r} keeps groups whole across forward folds (cv.scheme = 'time'); "
                             "shuffled folds keep copies of a row together with cv.duplicates = 'group'")
        if self.cv.group == self.data.target:
            raise ValueError(f"cv.group names the target {self.data.target!r}: name the column whose rows stay whole")
        if self.cv.scheme != "time":
            return
        if self.cv.time and self.cv.time not in dates:
            raise ValueError(f"cv.time {self.cv.time!r} is not one of data.dates {sorted(dates)}; list it there")
        if not self.cv.time and len(dates) != 1:
            raise ValueError(f"cv.scheme = 'time' needs the column that orders the rows: set cv.time to one of "
                             f"data.dates {sorted(dates)}" if dates else
                             "cv.scheme = 'time' needs a date column: list it in data.dates and set cv.time")
        if self.cv.max_train and self.model.distributed:
            raise ValueError("cv.max_train with model.distributed = true: the cluster's final fit reads every row of "
                             "the curated data; leave cv.max_train out, or set model.distributed = false")
        if "nested_cv" in (*self.evaluation.intervals, self.evaluation.interval):
            raise ValueError("evaluation.intervals lists 'nested_cv' under cv.scheme = 'time': its pairs of folds "
                             "train on the future; leave it out")

    @property
    def time_column(self) -> str | None:
        """The date column that orders the folds (cv.scheme = "time"), else None."""
        if self.cv.scheme != "time":
            return None
        return self.cv.time or next(iter(self.data.date_parts))

    def _check_baselines(self) -> None:
        from trilho.model.catalog import check_estimator, model_kind, quantile_params

        plain = ("mean", "median") if self.regression else ("majority",)
        for name in self.evaluation.baselines:
            if name in ("majority", "mean", "median") and name not in plain:
                raise ValueError(f"evaluation.baselines: {name!r} is for "
                                 f"{'classification' if name == 'majority' else 'regression'}; use {list(plain)}")
            if name not in plain:
                try:
                    check_estimator({"name": name, "params": {}}, {"name": "none"},
                                    "native" if model_kind(name).native_missing else "impute", self.task)
                    if self.regression and self.decision.quantile is not None:  # it fits the same quantile
                        quantile_params(name, self.decision.quantile)
                except ConfigError as exc:
                    raise ValueError(f"evaluation.baselines: {exc}; or {' or '.join(map(repr, plain))}") from None

    def _check_decision(self) -> None:
        """The decision's objective fits the classes: thresholds for two, costs for any number."""
        from trilho.evaluation.metrics import CONFUSION_METRICS

        d, classes = self.decision, self.data.classes
        if self.regression:
            self._check_quantile()
            return
        if isinstance(d.costs, dict):
            raise ValueError(f"decision.costs {d.costs} names over and under costs, which are a numeric target's; "
                             f"a classification's are a matrix costs[true][predicted] over the classes {classes}")
        if d.objective == "argmax":
            return
        if d.objective != "costs" and len(classes) != 2:
            raise ValueError(f"decision.objective = {d.objective!r} sets a threshold, which needs two classes; "
                             f"this experiment has {len(classes)} ({classes}): use 'costs' (a matrix "
                             "costs[true][predicted]) or 'argmax'")
        if d.objective == "metric" and (d.metric or self.registry.primary_metric) not in CONFUSION_METRICS:
            raise ValueError(f"decision.metric {d.metric or self.registry.primary_metric!r} does not depend on a "
                             f"threshold; choose one of {list(CONFUSION_METRICS)}")
        if d.objective in ("recall", "precision") and not 0 < d.floor < 1:
            raise ValueError(f"decision.objective = {d.objective!r} needs decision.floor between 0 and 1 "
                             f"(the {d.objective} the positive class must keep), got {d.floor}")
        if d.positive and d.positive.strip().upper() not in self.data.class_of:
            raise ValueError(f"decision.positive {d.positive!r} is not a class; the classes are {classes}")
        if d.objective == "costs":
            k = len(classes)
            if len(d.costs) != k or any(len(row) != k for row in d.costs):
                raise ValueError(f"decision.costs must be {k} rows of {k} numbers (true class by predicted class, "
                                 f"in the order {classes}), got {d.costs}")
            if any(not 0 <= c < float("inf") for row in d.costs for c in row):
                raise ValueError(f"decision.costs {d.costs}: each cost is a finite number of at least 0")

    def _check_quantile(self) -> None:
        """Regression's decision: none (the mean), or over and under costs (a quantile)."""
        from trilho.model.catalog import quantile_params

        costs = self.decision.costs
        if not costs:
            if self.decision.objective == "costs":
                raise ValueError("decision.objective = 'costs' needs decision.costs = { over = ..., under = ... }")
            return
        assert isinstance(costs, dict)
        if set(costs) != {"over", "under"} or any(not 0 < v < float("inf") for v in costs.values()):
            raise ValueError(f"decision.costs {costs}: a numeric target's costs are {{ over = ..., under = ... }}, "
                             "what a unit predicted too high and too low costs, each a positive number")
        try:
            quantile_params(self.model.name, 0.5)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def decision_rule(self) -> dict[str, Any] | None:
        """The decision as the fits apply it (None for argmax): the objective, the metric resolved,
        the floor, the positive class's code and the costs."""
        d = self.decision
        if self.regression:
            return None if d.quantile is None else {"objective": "quantile", "quantile": d.quantile}
        if d.objective == "argmax":
            return None
        positive = self.data.codes[d.positive.strip().upper()] if d.positive else 1
        return {"objective": d.objective, "metric": d.metric or self.registry.primary_metric, "floor": d.floor,
                "positive": positive, "costs": d.costs}

    def _check_fits(self) -> None:
        """Refuse a run of more than MAX_FITS fits (folds, plus nested-CV pairs), before it starts."""
        cv, ev = self.cv, self.evaluation
        folds = cv.n_splits * cv.n_repeats
        nested = min(ev.nested_repeats, cv.n_repeats) if "nested_cv" in (*ev.intervals, ev.interval) else 0
        pairs = nested * cv.n_splits * (cv.n_splits - 1) // 2
        if folds + pairs > MAX_FITS:
            extra = f" + {nested:,} nested repeats of {pairs // nested:,} fits" if pairs else ""
            raise ValueError(f"this experiment asks for about {folds + pairs:,} fits ({cv.n_splits} folds x "
                             f"{cv.n_repeats:,} repeats{extra}), over {MAX_FITS:,}, the most one run may make: lower "
                             f"cv.n_repeats{' or evaluation.nested_repeats' if pairs else ''} (or cv.n_splits)")

    def _check_distributed(self) -> None:
        from trilho.model.catalog import model_kind

        if model_kind(self.model.name).format != "xgboost":
            raise ValueError(f"model.distributed = true fits through xgboost.dask; model.name is {self.model.name!r}: "
                             "use model.name = 'xgboost', or model.distributed = false")
        if self.resampler.name not in DISTRIBUTED_RESAMPLERS:
            raise ValueError(f"model.distributed = true cannot resample: resampler.name {self.resampler.name!r} needs "
                             "every row in one process. Use resampler.name = 'class_weight' (each row weighted by its "
                             "class's share, the same answer to imbalance) or 'none'")
        if self.model.calibration != "none":
            raise ValueError(f"model.distributed = true fits the final model on the cluster, where no inner folds can "
                             f"fit a calibration map: model.calibration = {self.model.calibration!r} needs "
                             "model.distributed = false (or calibration = 'none')")
        if self.decision.objective != "argmax":
            raise ValueError(f"model.distributed = true fits the final model on the cluster, where no inner folds can "
                             f"choose its threshold: decision.objective = {self.decision.objective!r} needs "
                             "model.distributed = false (or objective = 'argmax')")
        if self.tracking.final_fit != "all" or not self.tracking.log_model:
            raise ValueError("model.distributed = true distributes the final fit on all rows: it needs "
                             "tracking.final_fit = 'all' and tracking.log_model = true")

    def resolved(self) -> dict[str, Any]:
        """The fully resolved configuration, as plain data."""
        return self.model_dump(mode="json")


def builtin_experiments() -> list[str]:
    """Names of the experiment files that ship with trilho."""
    folder = resources.files("trilho") / "experiments"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_file(ref: str | Path) -> dict[str, Any]:
    path = Path(ref)
    if not path.exists() and str(ref) in builtin_experiments():
        text = (resources.files("trilho") / "experiments" / f"{ref}.toml").read_text("utf-8")
        return tomllib.loads(text)
    if not path.is_file():
        raise ConfigError(
            f"experiment file {str(ref)!r} not found; give a .toml/.yaml path or one of "
            f"{builtin_experiments()}"
        )
    text = path.read_text("utf-8")
    try:
        if path.suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"experiment file {str(path)!r} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"experiment file {str(path)!r} must hold a table of settings")
    return data


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied (values parsed as TOML)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = _parse_value(raw.strip())
    return out


def load_experiment(ref: str | Path = "diabetes", overrides: list[str] | None = None) -> Experiment:
    """Load an experiment by path or built-in name, apply overrides, validate."""
    data = apply_overrides(_read_file(ref), overrides or [])
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"experiment {str(ref)!r}, key {key!r}: {first['msg']}") from exc
