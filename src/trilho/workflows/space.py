"""The search space of ``trilho tune``: each family's usual ranges, the experiment file's
``[tune.space]`` read and checked against the model and resampler it names, and the experiment a
set of chosen values makes. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trilho.errors import ConfigError
from trilho.evaluation.metrics import LOWER_IS_BETTER as _LOSSES
from trilho.experiment import Experiment

__all__ = ["DEFAULT_SPACES", "LOWER_IS_BETTER", "Param", "default_space", "parse_space", "tuned_config"]

# what each family is usually searched over; keys as in the experiment file's [tune.space]
DEFAULT_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "xgboost": {
        "model.params.n_estimators": {"int": [50, 400], "step": 50},
        "model.params.max_depth": {"int": [2, 10]},
        "model.params.learning_rate": {"float": [0.01, 0.3], "log": True},
        "model.params.subsample": {"float": [0.5, 1.0]},
        "model.params.colsample_bytree": {"float": [0.5, 1.0]},
        "model.params.min_child_weight": {"float": [0.5, 10.0], "log": True},
    },
    "hist_gradient_boosting": {
        "model.params.max_iter": {"int": [50, 400], "step": 50},
        "model.params.learning_rate": {"float": [0.01, 0.3], "log": True},
        "model.params.max_leaf_nodes": {"int": [8, 64], "log": True},
        "model.params.l2_regularization": {"float": [1e-4, 10.0], "log": True},
    },
    "random_forest": {
        "model.params.n_estimators": {"int": [100, 400], "step": 50},
        "model.params.max_depth": {"choice": [None, 4, 8, 16]},
        "model.params.min_samples_leaf": {"int": [1, 10]},
        "model.params.max_features": {"choice": ["sqrt", "log2", 0.5]},
    },
    "extra_trees": {
        "model.params.n_estimators": {"int": [100, 400], "step": 50},
        "model.params.min_samples_leaf": {"int": [1, 10]},
        "model.params.max_features": {"choice": ["sqrt", "log2", 0.5]},
    },
    "logistic_regression": {
        "model.params.C": {"float": [1e-3, 100.0], "log": True},
    },
    "ridge": {
        "model.params.alpha": {"float": [1e-3, 1000.0], "log": True},
    },
}
RESAMPLER_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "smote": {"resampler.params.k_neighbors": {"int": [3, 10]}},
    "smotenc": {"resampler.params.k_neighbors": {"int": [3, 10]}},
    "borderline_smote": {"resampler.params.k_neighbors": {"int": [3, 10]}},
}
_KINDS = ("int", "float", "choice")
LOWER_IS_BETTER = set(_LOSSES)  # the metrics a search minimises


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``section`` is "model" or "resampler"."""

    key: str
    section: str
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            # Optuna stores choices by position; a None or a mix of types stays as written
            return self.choices[trial.suggest_categorical(self.key, list(range(len(self.choices))))]
        assert self.low is not None and self.high is not None  # set for "int" and "float" by _entry
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)


def default_space(model: str, resampler: str) -> dict[str, dict[str, Any]]:
    """The family's usual space (and its resampler's), for an experiment with no [tune.space]."""
    from trilho.model.catalog import model_kind

    family = model_kind(model).name
    if family not in DEFAULT_SPACES:
        raise ConfigError(f"trilho has no default search space for model {model!r}: give one in the experiment "
                          "file, e.g. [tune.space] \"model.params.C\" = { float = [0.001, 100.0], log = true }")
    return {**DEFAULT_SPACES[family], **RESAMPLER_SPACES.get(resampler, {})}


def parse_space(exp: Experiment) -> list[Param]:
    """The experiment's search space, every entry checked before any data is read or any trial runs:
    the key names a parameter the model or resampler takes, the range is not empty, a log range is
    positive, a choice has options. One ``ConfigError`` line names the entry and the fix."""
    space = exp.tune.space or default_space(exp.model.name, exp.resampler.name)
    params = [_entry(key, spec) for key, spec in space.items()]
    _check_names(exp, params)
    return params


def _entry(key: str, spec: Any) -> Param:
    where = f"tune.space {key!r}"
    section, _, name = key.partition(".params.")
    if section not in ("model", "resampler") or not name or "." in name:
        raise ConfigError(f"{where}: keys are model.params.NAME or resampler.params.NAME")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: give a table, e.g. {{ int = [2, 10] }}, {{ float = [0.01, 0.3], log = true }} "
                          'or { choice = ["a", "b"] }')
    kinds = [k for k in _KINDS if k in spec]
    unknown = sorted(set(spec) - {*_KINDS, "log", "step"})
    if len(kinds) != 1 or unknown:
        raise ConfigError(f"{where}: give exactly one of {list(_KINDS)} (and optionally log, step); got {sorted(spec)}")
    kind, values = kinds[0], spec[kinds[0]]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: choice needs a non-empty list of options")
        return Param(key, section, name, kind, choices=tuple(values))
    if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, int | float) for v in values)):
        raise ConfigError(f"{where}: {kind} needs [low, high], two numbers")
    low, high = values
    if kind == "int" and not all(float(v).is_integer() for v in values):
        raise ConfigError(f"{where}: int needs whole numbers, got {values}; use float for a real range")
    if not low < high:
        raise ConfigError(f"{where}: the range [{low}, {high}] is empty; give low < high")
    log_scale = bool(spec.get("log", False))
    if log_scale and low <= 0:
        raise ConfigError(f"{where}: a log range must be positive, got [{low}, {high}]")
    step = spec.get("step")
    if step is not None and (not isinstance(step, int | float) or step <= 0 or log_scale):
        raise ConfigError(f"{where}: step must be a positive number, and cannot go with log = true")
    return Param(key, section, name, kind, float(low), float(high), log_scale, None if step is None else float(step))


def _check_names(exp: Experiment, params: list[Param]) -> None:
    """Every searched name is a parameter of the model or resampler, checked as the run's own
    configuration is (XGBoost's names included: trilho.model.catalog)."""
    from trilho.model.catalog import RESAMPLERS, check_estimator

    probe: dict[str, dict[str, Any]] = {"model": {}, "resampler": {}}
    for p in params:
        probe[p.section][p.name] = p.choices[0] if p.kind == "choice" else (int(p.low or 0) if p.kind == "int" else p.low)
    if RESAMPLERS[exp.resampler.name].path is None and probe["resampler"]:
        raise ConfigError(f"tune.space: resampler {exp.resampler.name!r} takes no parameters to search")
    try:
        check_estimator({"name": exp.model.name, "params": {**exp.model.params, **probe["model"]}},
                        {"name": exp.resampler.name, "params": {**exp.resampler.params, **probe["resampler"]}},
                        exp.data.missing, exp.task)
    except ConfigError as exc:
        raise ConfigError(f"tune.space: {exc}") from None


def tuned_config(exp: Experiment, best: dict[str, Any]) -> dict[str, Any]:
    """The experiment as plain data with the search's best parameters in place."""
    config = exp.resolved()
    for key, value in best.items():
        section, _, name = key.partition(".params.")
        config[section]["params"][name] = value
    return config


