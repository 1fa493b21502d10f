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

import dataclasses
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from trilho.errors import ConfigError
from trilho.evaluation import cv as evaluate
from trilho.evaluation import stats
from trilho.evaluation.metrics import (
    CONFUSION_METRICS,
    metrics_for,
    probability_metrics,
    regression_scores,
    scores_from_confusions,
)
from trilho.evaluation.splits import TimeOrder, holdout_split
from trilho.experiment import Experiment
from trilho.reporting import publish as reports
from trilho.settings import Settings
from trilho.workflows.context import Progress, conduct, experiment_task
from trilho.workflows.space import LOWER_IS_BETTER, Param, parse_space, tuned_config

__all__ = ["TuneResult", "tune"]

log = logging.getLogger(__name__)


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
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def _honest_interval(y: np.ndarray, proba: np.ndarray, labels: np.ndarray, metric: str, point: float,
                     level: float, seed: int, n_boot: int = 1000) -> tuple[float, float]:
    """A percentile bootstrap over the held-out rows of the held-out score ``point``."""
    if metric in CONFUSION_METRICS:
        offsets = stats.row_bootstrap_intervals(y, proba.argmax(axis=1)[None, :], len(labels),
                                                scores_from_confusions, [metric], level, n_boot, seed)[metric]
        return point + offsets[0], point + offsets[1]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot // 2):  # the probability metrics are not vectorised: fewer replicates
        rows = rng.integers(0, len(y), len(y))
        if len(np.unique(y[rows])) == len(labels):
            draws.append(probability_metrics(y[rows], proba[rows], labels)[metric])
    tail = (1 - level) / 2 * 100
    return tuple(float(v) for v in np.percentile(draws, [tail, 100 - tail]))  # type: ignore[return-value]


def _honest_regression(y: np.ndarray, pred: np.ndarray, metric: str, level: float, seed: int,
                       quantile: float | None, n_boot: int = 1000) -> tuple[float, float]:
    """A percentile bootstrap over the held-out rows of a regression's held-out score."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(y), len(y))
        draws.append(regression_scores(y[rows], pred[rows], quantile)[metric])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class _Rows:
    """The rows of a tune: the folds' view of the data, split into the rows the search sees and
    the rows set aside for the honest score."""

    X: Any
    y: np.ndarray
    groups: Any
    duplicates: dict[str, Any]
    search: np.ndarray
    held: np.ndarray
    spec: dict[str, Any]
    order: TimeOrder | None = None  # dated rows: the held rows are the latest, the search's folds go forward

    @functools.cached_property
    def searched(self) -> tuple[Any, np.ndarray, Any]:
        """The search rows (X, y, groups), cut once for every trial and repeat."""
        X, y, g = self.X.iloc[self.search].reset_index(drop=True), self.y[self.search], self.groups
        return X, y, None if g is None else g[self.search]

    @functools.cached_property
    def searched_order(self) -> TimeOrder | None:
        """The search rows' times: forward folds on them, none held out again."""
        if self.order is None:
            return None
        o = self.order
        return dataclasses.replace(o, days=o.days[self.search], holdout=0.0,
                                   groups=None if o.groups is None else o.groups[self.search])


def tune(exp: Experiment, settings: Settings, *, trials: int | None = None, timeout_s: float | None = None,
         study_name: str | None = None, out: Path | None = None, progress: Progress | None = None) -> TuneResult:
    """Search, on the experiment's folds, then score the best configuration on rows the search never saw."""
    space = parse_space(exp)  # a bad space is one line, before anything is read
    metric = exp.tune.metric or exp.registry.primary_metric
    known = metrics_for(exp.task)
    if metric not in known:
        raise ConfigError(f"tune.metric {metric!r} is unknown for {exp.task}; choose from {list(known)}")
    budget = (trials if trials is not None else exp.tune.trials, timeout_s if timeout_s is not None else exp.tune.timeout_s)
    with conduct(exp, settings) as ctx:
        inputs, tracker = ctx.inputs, ctx.tracker
        rows = _Rows(inputs.X, inputs.y, inputs.groups, inputs.duplicates,
                     *holdout_split(inputs.y, exp.tune.holdout_fraction, exp.random_state, inputs.groups, inputs.order),
                     inputs.data.spec, inputs.order)
        name = study_name or f"{exp.name}-{inputs.sha256[:12]}-{exp.model.name}+{exp.resampler.name}-{metric}"
        study, storage = _open_study(exp, settings, name, metric, (len(rows.held), inputs.sha256))
        search = _Search(exp, rows, metric, space, ctx.runner())
        with tracker.run(f"{exp.name}-tune", search.tags(name, inputs.sha256)) as parent:
            tracker.log_values(parent, params={
                "tune.metric": metric, "tune.study": name, "tune.storage": storage,
                "tune.holdout_fraction": str(exp.tune.holdout_fraction),
                "tune.space": json.dumps({p.key: p.kind for p in space})})
            search.run(study, tracker, parent, budget, progress)
            config, summary = _conclude(search, study, {"study": name, "storage": storage, "run_id": parent,
                                                        "lake": {"uri": ctx.lake.uri, "reports": f"reports/{parent}/",
                                                                 "curated": inputs.validation["curated_key"]}})
            tracker.log_values(parent, metrics=_summary_metrics(summary))
            out = out or Path(f"{exp.name}-tuned.toml")
            out.write_text(_render(config, summary))
            summary["experiment_file"] = str(out)
            reports.publish_tune(tracker, ctx.lake, parent, study, summary, out)
    return TuneResult(summary=summary, config=config, experiment_file=out, trials=search.records)


def _open_study(exp: Experiment, settings: Settings, name: str, metric: str, held: tuple[int, str]) -> tuple[Any, str]:
    """The study, created or resumed, with a sampler seeded past the trials it already has; a
    resumed study must have set aside the same number of rows (``held``: that and the data digest)."""
    import optuna

    storage = _storage_url(settings)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    direction="minimize" if _direction(metric) == "minimize" else "maximize")
    except Exception as exc:  # a storage that cannot be opened: one line, nothing started
        raise ConfigError(f"Optuna storage {storage!r} cannot hold study {name!r} ({type(exc).__name__}: "
                          f"{exc}); set TRILHO_TUNE_STORAGE to a database URL") from exc
    earlier, (n_held, sha) = len(study.trials), held
    if earlier and study.user_attrs.get("trilho.holdout_rows") not in (None, n_held):
        raise ConfigError(f"study {name!r} was searched on other rows (holdout of "
                          f"{study.user_attrs['trilho.holdout_rows']} rows, now {n_held}); give --study a new name")
    study.set_user_attr("trilho.holdout_rows", n_held)
    study.set_user_attr("trilho.data_sha256", sha)
    # a resumed study draws new points: the sampler's seed moves on with the trials already made
    study.sampler = optuna.samplers.TPESampler(seed=exp.random_state + earlier)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    return study, storage


class _Search:
    """The trials: each one a configuration scored on the experiment's folds of the search rows,
    one repeat at a time (the pruner may stop it between repeats), each an MLflow child run."""

    def __init__(self, exp: Experiment, rows: _Rows, metric: str, space: list[Param], runner: evaluate.Runner) -> None:
        self.exp, self.rows, self.metric, self.space, self.runner = exp, rows, metric, space, runner
        self.records: list[dict[str, Any]] = []
        self.search_s = 0.0
        self._tags: dict[str, str] = {}

    def tags(self, name: str, sha: str) -> dict[str, str]:
        self._tags = {"trilho.experiment": self.exp.name, "trilho.kind": "tune", "trilho.study": name,
                      "trilho.data_sha256": sha}
        return self._tags

    def run(self, study: Any, tracker: Any, parent: str, budget: tuple[int, float | None],
            progress: Progress | None) -> None:
        import optuna

        n_trials, timeout_s = budget

        def count(_study: Any, trial: Any) -> None:
            if trial.state == optuna.trial.TrialState.FAIL and self.records and "state" not in self.records[-1]:
                self.records[-1]["state"] = "failed"
                self.records[-1]["error"] = trial.system_attrs.get("fail_reason", "")
            if progress:
                progress("tune", len(self.records), n_trials)

        started = time.perf_counter()
        study.optimize(lambda trial: self.objective(trial, tracker, parent), n_trials=n_trials, timeout=timeout_s,
                       catch=(Exception,), callbacks=[count])
        self.search_s = time.perf_counter() - started

    def objective(self, trial: Any, tracker: Any, parent: str) -> float:
        import optuna

        chosen = {p.key: p.suggest(trial) for p in self.space}
        config = tuned_config(self.exp, chosen)  # what the trial fits is what the written file holds
        trial.set_user_attr("trilho.params", json.dumps(chosen))
        record: dict[str, Any] = {"number": trial.number, "params": chosen, "fold_scores": []}
        self.records.append(record)
        tags = {**self._tags, "trilho.trial": str(trial.number)}
        with tracker.run(f"{self.exp.name}-trial-{trial.number}", tags, parent=parent) as child:
            tracker.log_values(child, params={k: json.dumps(v) for k, v in chosen.items()})
            scores = self._repeats(trial, tracker, child, config, record)
            tracker.set_tag(child, "trilho.trial.state", record.get("state", "complete"))
            tracker.log_values(child, metrics=[(f"cv_{self.metric}", float(np.mean(scores)), 0)])
        if record.get("state") == "pruned":
            raise optuna.TrialPruned()
        record["state"], record["value"] = "complete", float(np.mean(scores))
        return record["value"]

    def _repeats(self, trial: Any, tracker: Any, child: str, config: dict[str, Any], record: dict[str, Any]) -> list[float]:
        """The trial's fold scores, one repeat (seed) at a time, until the pruner stops it."""
        exp, metric = self.exp, self.metric
        X, y, groups = self.rows.searched
        scores: list[float] = []
        for step, seed in enumerate(exp.cv.seeds):  # the experiment's folds, one repeat at a time
            task = experiment_task(exp, self.rows.spec, groups, self.rows.searched_order, model=config["model"],
                                   resampler=config["resampler"], seeds=[seed])
            fold = evaluate.cross_validate(X, y, task, self.runner).scores(metric).tolist()
            tracker.log_values(child, metrics=[(f"fold_{metric}", v, len(scores) + i) for i, v in enumerate(fold)])
            scores += fold
            record["fold_scores"] = scores
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                record["state"] = "pruned"
                break
        return scores


def _conclude(search: _Search, study: Any, where: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best configuration, scored with the untuned one on the rows set aside, and the summary.
    ``where``: the study's name and storage, the parent run and the lake's keys."""
    import optuna

    exp, rows, metric = search.exp, search.rows, search.metric
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        failures = [r.get("error", "") for r in search.records if r.get("state") == "failed"]
        first = "; first failure: " + failures[0].splitlines()[-1] if failures and failures[0] else ""
        raise ConfigError(f"no trial of study {where['study']!r} completed ({len(search.records)} tried{first}); "
                          "check the search space")
    best = study.best_trial
    best_params = json.loads(best.user_attrs["trilho.params"])
    config = tuned_config(exp, best_params)
    honest = _score_on_held(exp, config, rows, metric, search.runner.n_jobs)
    untuned = _score_on_held(exp, exp.resolved(), rows, metric, search.runner.n_jobs)
    states = optuna.trial.TrialState
    summary = {
        "experiment": exp.name, "study": where["study"], "storage": where["storage"], "metric": metric,
        "direction": _direction(metric), "run_id": where["run_id"],
        "trials": {"this_command": len(search.records), "in_study": len(study.trials), "complete": len(done),
                   "pruned": sum(t.state == states.PRUNED for t in study.trials),
                   "failed": sum(t.state == states.FAIL for t in study.trials)},
        "search_rows": int(len(rows.search)), "held_out_rows": int(len(rows.held)),
        "folds": {"n_splits": exp.cv.n_splits, "seeds": exp.cv.seeds, "duplicates": rows.duplicates["policy"]},
        "best": {"trial": best.number, "params": best_params, "cv_score": float(best.value)},
        "honest": honest, "untuned": untuned,
        # how much better the best trial's own score looks than what held-out rows show
        "optimism": (float(best.value) - honest["score"]) * (1 if _direction(metric) == "maximize" else -1),
        "search_s": search.search_s,
        "finished": datetime.now(UTC).isoformat(),
        "lake": where["lake"],
    }
    return config, summary


def _summary_metrics(summary: dict[str, Any]) -> list[tuple[str, float, int]]:
    metric, honest = summary["metric"], summary["honest"]
    return [(k, v, 0) for k, v in {
        f"best_cv_{metric}": summary["best"]["cv_score"], f"honest_{metric}": honest["score"],
        f"honest_{metric}_low": honest["low"], f"honest_{metric}_high": honest["high"],
        f"untuned_{metric}": summary["untuned"]["score"], "optimism": summary["optimism"]}.items()]


def _score_on_held(exp: Experiment, config: dict[str, Any], rows: _Rows, metric: str, cores: int) -> dict[str, Any]:
    """Fit the configuration on every row but the held-out ones, score it on them, with an interval."""
    task = experiment_task(exp, rows.spec, None, model=config["model"], resampler=config["resampler"])
    labels = np.arange(len(exp.data.classes))
    row = evaluate.fold_fit(rows.X, rows.y, cores, task.estimator, 0, 0, rows.held, labels, quantile=task.quantile,
                            train=rows.search)  # dated rows: the search rows, before the latest ones less the gap
    if exp.regression:
        low, high = _honest_regression(rows.y[rows.held], row["pred"], metric, exp.evaluation.level, exp.random_state,
                                       task.quantile)
        return {"score": float(row[metric]), "low": float(low), "high": float(high), "level": exp.evaluation.level}
    low, high = _honest_interval(rows.y[rows.held], row["proba"], labels, metric, float(row[metric]),
                                 exp.evaluation.level, exp.random_state)
    return {"score": float(row[metric]), "low": float(low), "high": float(high), "level": exp.evaluation.level}


def _render(config: dict[str, Any], summary: dict[str, Any]) -> str:
    from trilho.init.propose import toml_document

    head = [f"Written by `trilho tune` (study {summary['study']!r}, best of {summary['trials']['complete']} "
            "complete trials).",
            f"Best trial's CV {summary['metric']}: {summary['best']['cv_score']:.4f} (optimistic: it chose itself); "
            f"on {summary['held_out_rows']} rows the search never saw: {summary['honest']['score']:.4f} "
            f"[{summary['honest']['low']:.4f}, {summary['honest']['high']:.4f}].",
            "`trilho run -e THIS_FILE` runs it; the promotion gate decides whether it replaces the champion."]
    return toml_document({k: v for k, v in config.items() if not k.startswith("__")}, head)
