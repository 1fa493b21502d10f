"""trilho tune: a hyperparameter search with Optuna whose reported score the search never saw.

Before the search a stratified share of the rows is set aside (``tune.holdout_fraction``,
duplicate-aware like the folds). The search runs on the rest, every trial on the same folds as
the experiment's CV (same seeds, same duplicate policy), so trials pair up; a trial's folds are
scored one repeat at a time and a median pruner stops a trial that is clearly worse than the ones
before it at the same repeat. The best trial's own CV score is the maximum of many noisy estimates
on the folds that chose it, so it is optimistic; the tuned configuration is then fitted on every
search row and scored once on the rows set aside, with a bootstrap interval: that is the honest
score, and the gap between the two is reported.

The study lives in Optuna's storage beside the tracking store (``optuna.db`` next to a SQLite
``mlflow.db``; the same database for a ``postgresql://`` store; ``TRILHO_TUNE_STORAGE`` to choose),
so a second ``trilho tune`` resumes it. Each trial is an MLflow child run of one parent run per
command. The best configuration is written as an experiment file that ``trilho run`` takes, so the
usual run, its intervals and the promotion gate decide whether it replaces the champion.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from trilho import evaluate, stats
from trilho.errors import ConfigError
from trilho.experiment import Experiment
from trilho.settings import Settings

__all__ = ["TuneResult", "default_space", "parse_space", "tune", "tuned_config"]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]

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
}
RESAMPLER_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "smote": {"resampler.params.k_neighbors": {"int": [3, 10]}},
    "smotenc": {"resampler.params.k_neighbors": {"int": [3, 10]}},
    "borderline_smote": {"resampler.params.k_neighbors": {"int": [3, 10]}},
}
_KINDS = ("int", "float", "choice")
_LOWER_IS_BETTER = {"log_loss"}


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
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)


def default_space(model: str, resampler: str) -> dict[str, dict[str, Any]]:
    """The family's usual space (and its resampler's), for an experiment with no [tune.space]."""
    from trilho.models import model_kind

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
    configuration is, and, since XGBoost takes any name without complaint, against the ones its
    estimator exposes."""
    from trilho.models import RESAMPLERS, check_estimator, model_kind

    kind = model_kind(exp.model.name)
    if kind.format == "xgboost":
        known = set(kind.cls()().get_params())
        unknown = sorted(p.name for p in params if p.section == "model" and p.name not in known)
        if unknown:
            raise ConfigError(f"tune.space: model.params {unknown} are not parameters of {exp.model.name} "
                              f"({kind.cls().__name__}); it takes {sorted(known)}")
    probe: dict[str, dict[str, Any]] = {"model": {}, "resampler": {}}
    for p in params:
        probe[p.section][p.name] = p.choices[0] if p.kind == "choice" else (int(p.low) if p.kind == "int" else p.low)
    if RESAMPLERS[exp.resampler.name].path is None and probe["resampler"]:
        raise ConfigError(f"tune.space: resampler {exp.resampler.name!r} takes no parameters to search")
    try:
        check_estimator({"name": exp.model.name, "params": {**exp.model.params, **probe["model"]}},
                        {"name": exp.resampler.name, "params": {**exp.resampler.params, **probe["resampler"]}},
                        exp.data.missing)
    except ConfigError as exc:
        raise ConfigError(f"tune.space: {exc}") from None


def tuned_config(exp: Experiment, best: dict[str, Any]) -> dict[str, Any]:
    """The experiment as plain data with the search's best parameters in place."""
    config = exp.resolved()
    for key, value in best.items():
        section, _, name = key.partition(".params.")
        config[section]["params"][name] = value
    return config


@dataclass
class TuneResult:
    summary: dict[str, Any]
    config: dict[str, Any]
    experiment_file: Path | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)


def _storage_url(settings: Settings) -> str:
    """Where the study lives: TRILHO_TUNE_STORAGE, else beside the tracking store."""
    from trilho.tracking import sqlite_file

    if settings.tune_storage:
        return settings.tune_storage
    db = sqlite_file(settings.tracking_uri)
    if db is not None:
        return f"sqlite:///{db.parent.resolve() / 'optuna.db'}"
    if settings.tracking_uri.startswith(("postgresql", "mysql")):
        return settings.tracking_uri  # Optuna keeps its own tables in the team's database
    return f"sqlite:///{Path('optuna.db').resolve()}"


def _direction(metric: str) -> str:
    return "minimize" if metric in _LOWER_IS_BETTER else "maximize"


def _honest_interval(y: np.ndarray, proba: np.ndarray, labels: np.ndarray, metric: str, point: float,
                     level: float, seed: int, n_boot: int = 1000) -> tuple[float, float]:
    """A percentile bootstrap over the held-out rows of the held-out score ``point``."""
    if metric in evaluate.CONFUSION_METRICS:
        offsets = stats.row_bootstrap_intervals(y, proba.argmax(axis=1)[None, :], len(labels),
                                                evaluate.scores_from_confusions, [metric], level, n_boot, seed)[metric]
        return point + offsets[0], point + offsets[1]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot // 2):  # the probability metrics are not vectorised: fewer replicates
        rows = rng.integers(0, len(y), len(y))
        if len(np.unique(y[rows])) == len(labels):
            draws.append(evaluate.probability_metrics(y[rows], proba[rows], labels)[metric])
    tail = (1 - level) / 2 * 100
    return tuple(float(v) for v in np.percentile(draws, [tail, 100 - tail]))  # type: ignore[return-value]


def tune(exp: Experiment, settings: Settings, *, trials: int | None = None, timeout_s: float | None = None,
         study_name: str | None = None, out: Path | None = None, progress: Progress | None = None) -> TuneResult:
    """Search, on the experiment's folds, then score the best configuration on rows the search never saw."""
    import optuna

    from trilho.cluster import open_executor
    from trilho.pipeline import fold_data, load_clean, open_tracker
    from trilho.storage import open_lake

    space = parse_space(exp)  # a bad space is one line, before anything is read
    metric = exp.tune.metric or exp.registry.primary_metric
    if metric not in evaluate.METRICS:
        raise ConfigError(f"tune.metric {metric!r} is unknown; choose from {list(evaluate.METRICS)}")
    n_trials = trials if trials is not None else exp.tune.trials
    timeout_s = timeout_s if timeout_s is not None else exp.tune.timeout_s
    lake = open_lake(settings)
    with open_executor(settings) as executor:
        ingested, _, validation, data = load_clean(exp, settings, lake)
        tracker = open_tracker(settings, exp.tracking.experiment)
        X, y, groups, duplicates = fold_data(data, exp)
        search, held = evaluate.holdout_split(y, exp.tune.holdout_fraction, exp.random_state, groups)
        Xs, ys = X.iloc[search].reset_index(drop=True), y[search]
        gs = None if groups is None else groups[search]
        labels = np.arange(len(exp.data.classes))
        cores = settings.free_cores()
        sha = ingested.manifest["sha256"]
        name = study_name or f"{exp.name}-{sha[:12]}-{exp.model.name}+{exp.resampler.name}-{metric}"
        storage = _storage_url(settings)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                        direction=_direction(metric))
        except Exception as exc:  # a storage that cannot be opened: one line, nothing started
            raise ConfigError(f"Optuna storage {storage!r} cannot hold study {name!r} ({type(exc).__name__}: "
                              f"{exc}); set TRILHO_TUNE_STORAGE to a database URL") from exc
        earlier = len(study.trials)
        if earlier and study.user_attrs.get("trilho.holdout_rows") not in (None, len(held)):
            raise ConfigError(f"study {name!r} was searched on other rows (holdout of "
                              f"{study.user_attrs['trilho.holdout_rows']} rows, now {len(held)}); "
                              "give --study a new name")
        study.set_user_attr("trilho.holdout_rows", len(held))
        study.set_user_attr("trilho.data_sha256", sha)
        # a resumed study draws new points: the sampler's seed moves on with the trials already made
        study.sampler = optuna.samplers.TPESampler(seed=exp.random_state + earlier)
        study.pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
        seeds = exp.cv.seeds
        records: list[dict[str, Any]] = []
        tags = {"trilho.experiment": exp.name, "trilho.kind": "tune", "trilho.study": name,
                "trilho.data_sha256": sha}
        started = time.perf_counter()
        with tracker.run(f"{exp.name}-tune", tags) as parent:
            tracker.log_values(parent, params={"tune.metric": metric, "tune.study": name, "tune.storage": storage,
                                               "tune.holdout_fraction": str(exp.tune.holdout_fraction),
                                               "tune.space": json.dumps({p.key: p.kind for p in space})})

            def objective(trial: Any) -> float:
                chosen = {p.key: p.suggest(trial) for p in space}
                config = tuned_config(exp, chosen)  # what the trial fits is what the written file holds
                trial.set_user_attr("trilho.params", json.dumps(chosen))
                record = {"number": trial.number, "params": chosen, "fold_scores": []}
                records.append(record)
                child_tags = {**tags, "trilho.trial": str(trial.number)}
                with tracker.run(f"{exp.name}-trial-{trial.number}", child_tags, nested=True) as child:
                    tracker.log_values(child, params={k: json.dumps(v) for k, v in chosen.items()})
                    scores: list[float] = []
                    for step, seed in enumerate(seeds):  # the experiment's folds, one repeat at a time
                        task = evaluate.Task(model=config["model"], resampler=config["resampler"],
                                             random_state=exp.random_state, n_splits=exp.cv.n_splits, seeds=[seed],
                                             groups=gs, encoding=data.spec)
                        cv = evaluate.cross_validate(Xs, ys, task, evaluate.Runner(cores, executor))
                        fold = cv.scores(metric).tolist()
                        tracker.log_values(child, metrics=[(f"fold_{metric}", v, len(scores) + i)
                                                           for i, v in enumerate(fold)])
                        scores += fold
                        record["fold_scores"] = scores
                        trial.report(float(np.mean(scores)), step)
                        if trial.should_prune():
                            record["state"] = "pruned"
                            break
                    tracker.set_tag(child, "trilho.trial.state", record.get("state", "complete"))
                    tracker.log_values(child, metrics=[(f"cv_{metric}", float(np.mean(scores)), 0)])
                if record.get("state") == "pruned":
                    raise optuna.TrialPruned()
                record["state"], record["value"] = "complete", float(np.mean(scores))
                return record["value"]

            def count(study_: Any, trial: Any) -> None:
                if trial.state == optuna.trial.TrialState.FAIL and records and "state" not in records[-1]:
                    records[-1]["state"] = "failed"
                    records[-1]["error"] = trial.system_attrs.get("fail_reason", "")
                if progress:
                    progress("tune", len(records), n_trials)

            study.optimize(objective, n_trials=n_trials, timeout=timeout_s, catch=(Exception,), callbacks=[count])
            search_s = time.perf_counter() - started
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if not done:
                failures = [r.get("error", "") for r in records if r.get("state") == "failed"]
                raise ConfigError(f"no trial of study {name!r} completed ({len(records)} tried"
                                  f"{'; first failure: ' + failures[0].splitlines()[-1] if failures and failures[0] else ''}); "
                                  "check the search space")
            best = study.best_trial
            best_params = json.loads(best.user_attrs["trilho.params"])
            config = tuned_config(exp, best_params)
            honest = _score_on_held(exp, config, data.spec, X, y, held, labels, metric, cores)
            untuned = _score_on_held(exp, exp.resolved(), data.spec, X, y, held, labels, metric, cores)
            summary = {
                "experiment": exp.name, "study": name, "storage": storage, "metric": metric,
                "direction": _direction(metric), "run_id": parent,
                "trials": {"this_command": len(records), "in_study": len(study.trials),
                           "complete": len(done),
                           "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
                           "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)},
                "search_rows": int(len(search)), "held_out_rows": int(len(held)),
                "folds": {"n_splits": exp.cv.n_splits, "seeds": seeds, "duplicates": duplicates["policy"]},
                "best": {"trial": best.number, "params": best_params, "cv_score": float(best.value)},
                "honest": honest, "untuned": untuned,
                # how much better the best trial's own score looks than what held-out rows show
                "optimism": (float(best.value) - honest["score"]) * (1 if _direction(metric) == "maximize" else -1),
                "search_s": search_s,
                "finished": datetime.now(UTC).isoformat(),
                "lake": {"uri": lake.uri, "reports": f"reports/{parent}/", "curated": validation["curated_key"]},
            }
            tracker.log_values(parent, metrics=[(k, v, 0) for k, v in {
                f"best_cv_{metric}": float(best.value), f"honest_{metric}": honest["score"],
                f"honest_{metric}_low": honest["low"], f"honest_{metric}_high": honest["high"],
                f"untuned_{metric}": untuned["score"], "optimism": summary["optimism"]}.items()])
            out = out or Path(f"{exp.name}-tuned.toml")
            out.write_text(_render(config, summary))
            summary["experiment_file"] = str(out)
            _publish(tracker, lake, parent, study, summary, out)
    return TuneResult(summary=summary, config=config, experiment_file=out, trials=records)


def _score_on_held(exp: Experiment, config: dict[str, Any], spec: dict[str, Any], X: Any, y: np.ndarray,
                   held: np.ndarray, labels: np.ndarray, metric: str, cores: int) -> dict[str, Any]:
    """Fit the configuration on every row but the held-out ones, score it on them, with an interval."""
    estimator = {"model": config["model"], "resampler": config["resampler"], "random_state": exp.random_state,
                 "encoding": spec}
    row = evaluate._fold_fit(X, y, cores, estimator, 0, 0, held, labels)
    low, high = _honest_interval(y[held], row["proba"], labels, metric, float(row[metric]), exp.evaluation.level,
                                 exp.random_state)
    return {"score": float(row[metric]), "low": float(low), "high": float(high), "level": exp.evaluation.level}


def _render(config: dict[str, Any], summary: dict[str, Any]) -> str:
    from trilho.profile import toml_document

    head = [f"Written by `trilho tune` (study {summary['study']!r}, best of {summary['trials']['complete']} "
            "complete trials).",
            f"Best trial's CV {summary['metric']}: {summary['best']['cv_score']:.4f} (optimistic: it chose itself); "
            f"on {summary['held_out_rows']} rows the search never saw: {summary['honest']['score']:.4f} "
            f"[{summary['honest']['low']:.4f}, {summary['honest']['high']:.4f}].",
            "`trilho run -e THIS_FILE` runs it; the promotion gate decides whether it replaces the champion."]
    return toml_document({k: v for k, v in config.items() if not k.startswith("__")}, head)


def _publish(tracker: Any, lake: Any, run_id: str, study: Any, summary: dict[str, Any], out: Path) -> None:
    """The summary, the tuned experiment file and Optuna's figures: to the lake first, then MLflow."""
    with tempfile.TemporaryDirectory(prefix="trilho-tune-") as tmp:
        folder = Path(tmp)
        (folder / "tune.json").write_text(json.dumps(summary, indent=2, default=str))
        (folder / out.name).write_text(out.read_text())
        try:
            _figures(study, folder)
        except Exception as exc:  # a figure that cannot be drawn loses no result
            log.warning("Optuna's figures were not drawn: %s: %s", type(exc).__name__, exc)
        for path in sorted(folder.iterdir()):
            lake.put_file(summary["lake"]["reports"] + path.name, path, overwrite=True)
        tracker.log_folder(run_id, folder)


def _figures(study: Any, folder: Path) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():  # Optuna marks its matplotlib figures experimental; they are what we need
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # e.g. "importances will be equal" on a handful of trials
        _draw(study, folder, ovm, plt)


def _draw(study: Any, folder: Path, ovm: Any, plt: Any) -> None:
    ax = ovm.plot_optimization_history(study)
    ax.figure.savefig(folder / "optimization_history.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) >= 2 and len(study.best_trial.params) >= 1:
        ax = ovm.plot_param_importances(study)
        ax.figure.savefig(folder / "param_importances.png", dpi=110, bbox_inches="tight")
        plt.close(ax.figure)

