"""``propose`` turns a data set's profile (a ``trilho.init.census.Profile``, folded by trilho.init.profile)
into the experiment a careful data scientist would start from, every choice with the reason for
it; ``render`` writes it as a commented TOML file that ``trilho run -e FILE`` accepts unchanged.
Pure."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from trilho.data.validate import repeats_phrase
from trilho.errors import ConfigError
from trilho.experiment import REGRESSION_DEFAULTS
from trilho.init.census import CAP, COUNT_CAP, TARGET_NAME, Column, Profile, Repeats
from trilho.init.roles import columns as _columns
from trilho.model.encoding import CALENDAR

__all__ = ["MODEL_PARAMS", "Proposal", "chance_pairs", "expected_seconds", "looks_numeric", "propose", "render",
           "toml_document"]


@dataclass
class Proposal:
    config: dict[str, Any]
    notes: dict[str, list[str]]      # per section, why each choice was made
    rows: int = 0                    # of the data profiled
    features: int = 0                # columns the model gets


# the model init proposes: shallower trees and a smaller step than XGBoost's defaults (depth 6,
# learning rate 0.3, 100 trees). On the corpus of benchmarks/bench_defaults.py they ranked within
# 0.01 ROC AUC of a default HistGradientBoosting, or better, on 13 of 14 sets (120 features on 400
# rows: 0.012 below), where XGBoost's defaults fell up to 0.018 short (BENCHMARKS.md)
MODEL_PARAMS = {"n_estimators": 200, "learning_rate": 0.1, "max_depth": 3}
# one fit's seconds ~ FIT_FIXED_S + FIT_S_PER_UNIT x training rows x features x trees x depth:
# measured here (one core a fit, other work beside it) from 800 x 11 to 240,000 x 5 rows x features
# (bench_defaults.py --cli flights): a rough guide, said as one
FIT_FIXED_S, FIT_S_PER_UNIT = 0.05, 9e-9
RUN_FIXED_S = 15.0  # imports, MLflow, the model logged, figures: what a run costs besides its fits


def expected_seconds(proposal: Proposal, cores: int) -> tuple[float, float, int]:
    """What ``trilho run`` of the proposal should take on ``cores`` cores, roughly: the whole run,
    one fit, and the fits (folds, the holdout and the final fit, the baseline's first repeat)."""
    c = proposal.config
    params = {**MODEL_PARAMS, **c["model"]["params"]}
    train = proposal.rows * (1 - 1 / c["cv"]["n_splits"])
    fit = FIT_FIXED_S + FIT_S_PER_UNIT * train * max(1, proposal.features) * params["n_estimators"] * params["max_depth"]
    fits = c["cv"]["n_splits"] * c["cv"]["n_repeats"] + 2 + c["cv"]["n_splits"]
    return RUN_FIXED_S + fits * fit / max(1, cores), fit, fits


def _guess_target(profile: Profile) -> str:
    def plausible(c: Column) -> bool:
        return c.distinct is not None and 2 <= c.distinct <= 20

    named = [n for n, c in profile.columns.items() if TARGET_NAME.match(n) and plausible(c)]
    if len(named) == 1:
        return named[0]
    candidates = [n for n, c in profile.columns.items() if plausible(c) and not profile.unique.get(n)]
    which = f"several look like one: {named}" if named else "none is named like one"
    raise ConfigError(f"which column is the label? {which}"
                      f"; columns with 2-20 values: {candidates}; name it with --target COLUMN")


def _label_codes(col: Column) -> list[str]:
    labels = list(col.counts or {})
    if all(re.fullmatch(r"-?\d+(\.0+)?", v) for v in labels):
        return sorted(labels, key=lambda v: float(v))
    return sorted(labels)


_NO, _YES = ("NO", "N", "FALSE", "F"), ("YES", "Y", "TRUE", "T")


def _yes_no(counts: dict[str, int]) -> list[list[str]] | None:
    """A label spelled in more than two ways that all say yes or no: [no spellings, yes spellings]
    (stripped, upper-cased); None for any other label."""
    no, yes = [v for v in _NO if v in counts], [v for v in _YES if v in counts]
    if len(counts) <= 2 or not no or not yes or len(no) + len(yes) != len(counts):
        return None
    return [no, yes]


Notes = dict[str, list[str]]


def _check_target(profile: Profile, target: str, notes: Notes) -> tuple[list[str] | list[list[str]], dict[str, int]]:
    """The label's classes in code order (each a label, or its spellings, as the data writes each
    most: the class's first label names it in reports and summaries) and each class's rows; a
    column that cannot be a label is refused."""
    if target not in profile.columns:
        raise ConfigError(f"--target {target!r} is not a column; the data has {list(profile.columns)}")
    tcol = profile.columns[target]
    if tcol.distinct is None or tcol.distinct > CAP:
        raise ConfigError(f"--target {target!r} has more than {CAP} distinct values: a classification label "
                          "has a few; pick the label column, bin this one first, or for a number give --task "
                          "regression")
    if tcol.nulls:
        notes["labels"].append(_missing_target(target, tcol.nulls, profile.rows))
    counts = tcol.counts or {}
    merged = _yes_no(counts)
    if merged:
        # each spelling as the data writes it most; the side's most written spelling first: it names the class
        sides = [[tcol.shown(v) for v in sorted(side, key=lambda v: (-tcol.spelled_count(v), tcol.shown(v)))]
                 for side in merged]
        notes["labels"].append(f"{target!r} spells yes and no {len(counts)} ways, merged into two classes: "
                               + " and ".join(f"{side[0]} (also {', '.join(side[1:])})" if len(side) > 1
                                              else side[0] for side in sides)
                               + "; to keep a spelling as a class of its own, list it alone in data.labels")
        return sides, {side[0]: sum(counts[v] for v in group) for side, group in zip(sides, merged, strict=True)}
    labels = _label_codes(tcol)  # codes in the order of the matched (upper-cased) values, names as written
    if len(labels) < 2:
        raise ConfigError(f"--target {target!r} has a single value {labels}: nothing to classify")
    return [tcol.shown(v) for v in labels], {tcol.shown(v): counts[v] for v in labels}


IMBALANCED = 0.5  # smallest class / largest below this: the classes are imbalanced


def _resampler(counts: dict[str, int], notes: Notes) -> dict[str, Any]:
    """No resampler: with boosted trees, resampling mostly costs calibration and ranking, and a
    decision threshold reaches the same recall (van den Goorbergh et al. 2022; Elor and
    Averbuch-Elor 2022); SMOTE also needs complete rows and grows the training set."""
    smallest, largest = min(counts.values()), max(counts.values())
    imbalance = smallest / largest
    if imbalance >= IMBALANCED:
        notes["resampler"].append(f"classes are balanced enough (smallest/largest = {imbalance:.2f}): no resampler")
    else:
        notes["resampler"].append(
            f"classes are imbalanced (smallest/largest = {imbalance:.2f}), and still no resampler: with boosted trees "
            "resampling mostly costs calibrated probabilities and ranking, while a decision threshold gets the same "
            "recall (van den Goorbergh et al. 2022; Elor and Averbuch-Elor 2022)"
            + ("; see [decision]" if len(counts) == 2 else "; set [decision] costs to weigh the classes' errors"))
        notes["resampler"].append("to resample anyway, set name = 'class_weight' (no new rows), 'smote' or "
                                  "'random_over'; applied to training folds only")
    return {"name": "none", "params": {}}


def _decision(counts: dict[str, int], labels: list[Any], primary: str, notes: Notes) -> dict[str, Any]:
    """For two imbalanced classes, the threshold that maximises the primary metric, chosen inside
    each training fold; else the most probable class."""
    smallest, largest = min(counts.values()), max(counts.values())
    if len(labels) != 2 or smallest / largest >= IMBALANCED:
        notes["decision"].append("the most probable class is predicted (objective = 'argmax'); for two classes a "
                                 "threshold can be chosen instead: objective = 'metric', 'recall' or 'precision'")
        return {"objective": "argmax"}
    notes["decision"].append(f"two imbalanced classes: the threshold on the probability of {_name(labels[1])!r} that "
                             f"maximises {primary} is chosen inside each training fold (on its own inner "
                             "out-of-fold predictions), so each test fold is scored with a threshold it never saw")
    notes["decision"].append("objective = 'recall' with floor = 0.9 keeps 90% of that class found instead; "
                             "'costs' = [[0, 1], [5, 0]] weighs each kind of error (costs[true][predicted])")
    return {"objective": "metric", "metric": primary}


def _name(label: Any) -> str:
    """A class's name: the label, or of several spellings the first."""
    return label[0] if isinstance(label, list) else label


def _missing_policy(missing: dict[str, int], notes: Notes) -> str:
    if not missing:
        notes["missing"].append("no missing values; data.missing = 'impute' so that a row missing a value at "
                                "prediction time still gets one (training medians / most frequent codes)")
        return "impute"
    notes["missing"].append("missing values: " + ", ".join(f"{k} {v}" for k, v in missing.items()))
    notes["missing"].append("data.missing = 'native': XGBoost learns where missing values go; nothing is invented, "
                            "and a gap that says something keeps saying it")
    return "native"


def chance_pairs(profile: Profile, features: list[str]) -> float | None:
    """How many pairs of identical rows the features' own value shares would make by chance alone
    (each feature independent, a missing value one more value): n(n-1)/2 times the product of each
    feature's sum of squared shares. None where some feature has too many values to count: such
    rows rarely meet by chance."""
    n = profile.rows
    collide = 1.0
    for name in features:
        c = profile.columns[name]
        if c.counts is None or not n:
            return None
        shares = [v / n for v in c.counts.values()] + [c.gaps / n]
        collide *= sum(x * x for x in shares)
    return n * (n - 1) / 2 * collide


def _repeats_note(profile: Profile, target: str, features: list[str], repeats: Repeats | None
                  ) -> tuple[str, str | None]:
    """``cv.duplicates`` and what the folds will do with rows that repeat an earlier row, in the
    words the run uses (None when no row does). Copies stay in one fold ('group') where they are
    likely one entity written twice; where the features take so few values that identical rows are
    expected by chance (different people who answered alike), grouping would leave whole regions
    of the feature space out of training, so they are split like any row ('keep').
    ``repeats``: the count on the proposed features, as the run will count it (``init_experiment``
    counts it so); without it, the profile's own count."""
    if repeats is None:
        repeats = Repeats(profile.rows, profile.duplicate_rows(target), profile.rows, profile.duplicate_rows(target))
    if not repeats.repeats and not repeats.fold_repeats:
        return "group", None
    said = repeats_phrase(repeats.repeats, repeats.rows)
    if repeats.fold_rows != repeats.rows:
        said += (f"; {repeats_phrase(repeats.fold_repeats, repeats.fold_rows, 'the folds will use')} (the reference "
                 "set's rows, and rows identical to them, are never trained on)")
    expected = chance_pairs(profile, features)
    if expected is not None and expected >= repeats.repeats / 2:
        return "keep", (f"{said}, and the features' own value shares make about {expected:,.0f} identical pairs by "
                        "chance alone: these are different rows that look alike, so cv.duplicates = 'keep' splits "
                        "them like any row (grouping them would hold whole kinds of rows out of training)")
    chance = "" if expected is None else f" (chance alone would make about {expected:,.0f} identical pairs)"
    return "group", (f"{said}{chance}: likely the same record written twice, so cv.duplicates = 'group' keeps "
                     "every copy in one fold, and no row is tested on its own copy")


def _duplicates_and_repeats(profile: Profile, target: str, features: list[str], notes: Notes,
                            repeats: Repeats | None, rows: int) -> tuple[str, int]:
    """``cv.duplicates`` (with its note, where rows repeat) and the repeats for ``rows`` rows: more
    repeats, steadier estimates; fewer for large data."""
    duplicates, repeated = _repeats_note(profile, target, features, repeats)
    if repeated:
        notes["cv"].append(repeated)
    return duplicates, 10 if rows <= 20_000 else 3 if rows <= 200_000 else 1


def _missing_target(target: str, missing: int, rows: int) -> str:
    return (f"{target!r} is missing on {missing} of {rows} rows (empty, or written NA, NULL, ...): those rows are "
            "left out of training and scoring, and counted")


def _folds(profile: Profile, target: str, features: list[str], counts: dict[str, int], notes: Notes,
           repeats: Repeats | None = None) -> tuple[int, int, str]:
    smallest = min(counts.values())
    if smallest < 2:
        raise ConfigError(f"class {min(counts, key=lambda k: counts[k])!r} has a single row: no cross-validation can "
                          "test it; remove it or merge it into another class")
    n_splits = min(5, smallest)
    if n_splits < 5:
        notes["cv"].append(f"cv.n_splits = {n_splits}: the smallest class has {smallest} rows, and each fold needs one")
    duplicates, n_repeats = _duplicates_and_repeats(profile, target, features, notes, repeats, profile.rows)
    notes["cv"].append(f"{n_repeats} repeats of {n_splits}-fold stratified CV for {profile.rows} rows "
                       "(more repeats, steadier estimates; fewer for large data)")
    return n_splits, n_repeats, duplicates


def _numeric_target(col: Column) -> bool:
    """Numbers (a missing value marked aside), or text that is all numbers."""
    return (not col.text or col.marked) and not col.boolean and math.isfinite(col.low)


def looks_numeric(col: Column) -> bool:
    """A target that is a quantity rather than a label: numbers with many values (more than CAP, or
    more than 20 that are not all whole numbers). A whole number with a few values (a rating, a
    count of 0-10) stays a label unless the experiment says task = 'regression'."""
    if not _numeric_target(col):
        return False
    distinct = col.distinct
    return distinct is None or distinct > CAP or (distinct > 20 and not col.integer)


def propose(profile: Profile, name: str, source: str, target: str | None = None,
            repeats: Repeats | None = None, task: str | None = None) -> Proposal:
    """The experiment a careful data scientist would start from, with the reason for each choice.
    ``repeats``: the rows that repeat an earlier row, counted on this proposal's features as the
    run will count them (``init_experiment`` counts them); without it, the profile's count.
    ``task``: 'classification' or 'regression'; without it, a numeric target with many values
    (``looks_numeric``) is a regression."""
    if task not in (None, "classification", "regression"):
        raise ConfigError(f"--task {task!r}: choose 'classification' or 'regression'")
    if task == "regression" and not target:
        raise ConfigError("--task regression needs --target COLUMN: the numeric column to predict")
    target = target or _guess_target(profile)
    if target not in profile.columns:
        raise ConfigError(f"--target {target!r} is not a column; the data has {list(profile.columns)}")
    if task == "regression" or (task is None and looks_numeric(profile.columns[target])):
        return propose_regression(profile, name, source, target, repeats)
    notes: Notes = {k: [] for k in ("data", "labels", "columns", "missing", "cv", "resampler", "model", "decision")}
    labels, counts = _check_target(profile, target, notes)
    kind = "binary" if len(labels) == 2 else f"multiclass ({len(labels)} classes)"
    notes["labels"].insert(0, f"{target!r}: {kind}, counts {counts}; codes in this order")
    drop, categorical, ranges = _columns(profile, target, notes)
    features = [n for n in profile.columns if n != target and n not in drop]
    # what the kept numeric columns write for a missing value
    markers = {k for n in features if profile.columns[n].marked for k in profile.columns[n].markers or {}}
    if not features:
        raise ConfigError("no feature columns are left once the label and the identifiers are set aside")
    n_splits, n_repeats, duplicates = _folds(profile, target, features, counts, notes, repeats)
    resampler = _resampler(counts, notes)
    missing = {n: profile.columns[n].gaps for n in features if profile.columns[n].gaps}
    policy = _missing_policy(missing, notes)
    primary = "f1_macro"
    decision = _decision(counts, labels, primary, notes)
    notes["model"].append(f"xgboost: gradient-boosted trees, strong on tabular data of this size ({profile.rows} rows, "
                          f"{len(features)} features), handles missing values and codes as they are; "
                          "compare others with `trilho compare`")
    params = _model_params(profile.labelled_rows(target), notes)
    metrics = ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted",
               "mcc", "roc_auc_ovr", "log_loss", "brier", "ece"] + (["pr_auc"] if len(labels) == 2 else [])
    config = {
        "name": name,
        "description": f"{target} ({kind}) from {source}",
        "random_state": 42,
        "source": {"uri": source},
        "data": {"target": target, "labels": labels, "drop": drop, "categorical": categorical, "missing": policy,
                 **({"missing_markers": sorted(markers)} if markers else {}),
                 "min_rows": min(20, profile.labelled_rows(target)), "ranges": ranges},
        "cv": {"n_splits": n_splits, "n_repeats": n_repeats, "first_seed": 0, "duplicates": duplicates},
        "resampler": resampler,
        "model": {"name": "xgboost", "params": params},
        "evaluation": {"metrics": metrics},
        "tracking": {"experiment": name},
        "registry": {"model_name": f"{name}-xgboost", "primary_metric": primary, "margin": 0.01},
        "decision": decision,
    }
    return _finished(profile, config, notes, features, len(categorical), len(drop))


TIME_ORDER_VALUES = 10  # a date column with at least this many distinct values orders the rows (forward folds)
TIME_FEW_VALUES = 20   # under this many distinct dates (a yearly panel: 16 years of 10 firms), 3 forward folds


def _date_format(c: Any, n: str, notes: Notes) -> str | None:
    """The format of a date column written day and month first (None: ISO 8601), from the data, or
    day first when the data cannot tell, said in one line."""
    if not c.date_example:
        return None
    sep = next(ch for ch in c.date_example if not ch.isdigit())  # "/" of 04/03/2021
    year = "%Y" if len(c.date_example.split()[0].split(sep)[-1]) == 4 else "%y"
    clock = c.date_example.split()[1] if len(c.date_example.split()) > 1 else ""
    time = " %H:%M:%S" if clock.count(":") == 2 else (" %H:%M" if clock else "")
    if c.date_orders == {"mdy"}:
        order, why = "mdy", "a second field over 12 is a day: month first"
    elif c.date_orders == {"dmy"}:
        order, why = "dmy", "a first field over 12 is a day: day first"
    else:
        order, why = "dmy", ("no field over 12 tells day from month: day first is assumed; if the month comes first, "
                             f"set data.date_formats.{n} = \"%m{sep}%d{sep}{year}{time}\"")
    fmt = (f"%d{sep}%m{sep}{year}" if order == "dmy" else f"%m{sep}%d{sep}{year}") + time
    notes["columns"].append(f"{n!r}: written like {c.date_example!r}, read as {fmt} ({why})")
    return fmt


def _dates_count(profile: Profile, n: str) -> str:
    """How many distinct dates a column holds, as counted (over COUNT_CAP: not counted further)."""
    found = profile.columns[n].distinct
    return f"over {COUNT_CAP:,}" if found is None else f"{found:,}"


def _dated(profile: Profile, config: dict[str, Any], notes: Notes, features: list[str]) -> None:
    """Date columns as dates with their calendar parts; the most varied one, with enough distinct
    days, orders forward folds over time (cv.scheme = "time") with the latest fifth held out."""
    dates = [n for n in features if profile.columns[n].text and profile.columns[n].dates]
    if not dates:
        return
    data = config["data"]
    data["dates"] = {}
    for n in dates:
        c = profile.columns[n]
        timed = c.date_times
        data["dates"][n] = [p for p in CALENDAR if p != "hour" or timed]
        fmt = _date_format(c, n, notes)
        if fmt:
            data.setdefault("date_formats", {})[n] = fmt
    distinct = {n: (profile.columns[n].distinct or profile.rows) for n in dates}
    order = max(dates, key=lambda n: distinct[n])
    if distinct[order] < TIME_ORDER_VALUES:
        notes["cv"].append(f"{order!r} has {distinct[order]} distinct dates, too few to order forward folds by "
                           f"(under {TIME_ORDER_VALUES}); the folds are shuffled, and the leak checks say how far "
                           "training rows are later than test rows")
        return
    n_splits = 5 if profile.rows >= 60 and distinct[order] >= TIME_FEW_VALUES else 3
    config["cv"] = {"scheme": "time", "time": order, "n_splits": n_splits, "n_repeats": 1, "gap": 0.0,
                    "first_seed": 0, "duplicates": config["cv"]["duplicates"]}
    config["evaluation"]["holdout_fraction"] = 0.2
    notes["cv"][:] = [
        f"the rows are dated ({order!r}, {_dates_count(profile, order)} distinct dates): forward folds over time, "
        "not shuffled ones, which would train on the future of the rows they test and flatter a model that will "
        "predict later rows",
        f"the latest fifth of the rows is held out of every fold and scored once (evaluation.holdout_fraction = 0.2); "
        f"the rows before it are cut into {n_splits + 1} periods of about equal rows, and each fold tests one period "
        "on every row before it (an expanding window; max_train = DAYS keeps the last DAYS only)",
        "gap = DAYS leaves that many days out between training and test rows: set it when the target is known only "
        "some days after its row, or when features average over past days",
        "one repeat: forward folds have one order; the run reports each period's score, their trend, and the latest "
        "period with a row-bootstrap interval, and claims no pooled interval for folds that are not exchangeable"]


def _finished(profile: Profile, config: dict[str, Any], notes: Notes, features: list[str], categorical: int,
              dropped: int) -> Proposal:
    """The proposal, with the data's line and the expected cost said."""
    _dated(profile, config, notes, features)
    dated = len(config["data"].get("dates") or {})
    notes["data"].append(f"{profile.rows} rows, {len(profile.columns)} columns: {len(features)} features "
                         f"({len(features) - categorical - dated} numeric, {categorical} categorical"
                         f"{f', {dated} dates' if dated else ''}), {dropped} set aside")
    proposal = Proposal(config=config, notes=notes, rows=profile.rows, features=len(features))
    total, fit, fits = expected_seconds(proposal, 1)
    notes["model"].append(f"expected cost: {fits} fits of about {_duration(fit)} each on one core "
                          f"(about {_duration(total)} for `trilho run` on one core; fits run side by side on more)")
    return proposal


SMALL_ROWS = 300  # under this many labelled rows, trees that need the weight of about 20 rows a leaf
SMALL_PARAMS = {"n_estimators": 200, "learning_rate": 0.05, "max_depth": 3, "min_child_weight": 5, "reg_lambda": 5}


LARGE_ROWS = 20_000  # from this many labelled rows, deeper trees: the data can carry their interactions
LARGE_PARAMS = {"n_estimators": 300, "learning_rate": 0.1, "max_depth": 6}


def _model_params(rows: int, notes: Notes) -> dict[str, Any]:
    """The model's settings for this many rows, with the reason."""
    if rows >= LARGE_ROWS:
        notes["model"].append(
            f"{rows:,} rows: 300 trees of depth 6 (XGBoost's own depth) at learning rate 0.1; trees of depth 3 left "
            "interactions that this much data shows unlearned (ggplot2::diamonds' cut, 54,000 rows: 0.931 ROC AUC "
            "against a default HistGradientBoosting's 0.950; depth 6: 0.951, BENCHMARKS.md), at about three times "
            "the cost of a fit")
        return dict(LARGE_PARAMS)
    if rows < SMALL_ROWS:
        notes["model"].append(
            f"{rows} rows: 200 trees of depth 3 at learning rate 0.05, each leaf holding a hessian weight of at least "
            "5 (about 20 rows, as a default HistGradientBoosting's min_samples_leaf) and an L2 penalty of 5; with "
            "XGBoost's leaf weight of 1 the trees learned the noise of so few rows (vcd::Arthritis, 84 rows: 0.60 ROC "
            "AUC against 0.68, BENCHMARKS.md)")
        return dict(SMALL_PARAMS)
    notes["model"].append("200 trees of depth 3 at learning rate 0.1 (XGBoost's own defaults: 100 of depth 6 at 0.3): "
                          "on all but one of the 14 sets of trilho's benchmark corpus these ranked within 0.01 ROC AUC "
                          "of a default HistGradientBoosting or better, XGBoost's defaults up to 0.018 below it")
    return dict(MODEL_PARAMS)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def _comment(lines: list[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


def toml_document(config: dict[str, Any], head: list[str]) -> str:
    """A plain-data configuration as TOML under a comment: scalars first, then one table per
    nested dict (``[a]``, ``[a.b]``); keys whose value is None are left out (TOML has no null)."""

    def table(prefix: str, d: dict[str, Any]) -> list[str]:
        flat = [f"{_key(k)} = {_value(v)}\n" for k, v in d.items() if v is not None and not isinstance(v, dict)]
        # a dict of plain values stays inline, as `params = { ... }` does in the shipped files
        inline = [f"{_key(k)} = {_value({a: b for a, b in v.items() if b is not None})}\n" for k, v in d.items()
                  if isinstance(v, dict) and v and not any(isinstance(x, dict) for x in v.values()) and prefix]
        nested = [(k, v) for k, v in d.items() if isinstance(v, dict) and (not prefix or any(
            isinstance(x, dict) for x in v.values()) or not v)]
        out = ([f"\n[{prefix}]\n"] if prefix and (flat or inline) else []) + flat + inline
        for k, v in nested:
            out += table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)
        return out

    return _comment(head) + "".join(table("", config))


def _head_and_data(proposal: Proposal, keys: tuple[str, ...]) -> list[str]:
    """The file's head, its scalars, [source] and [data] (with [data.ranges]), for either task."""
    c, notes = proposal.config, proposal.notes
    out = ["# Written by `trilho init`; every choice below says why. Edit freely, then `trilho run -e THIS_FILE`.\n"]
    out.append(_comment(notes["data"]))
    for key in keys:
        out.append(f"{key} = {_value(c[key])}\n")
    out.append(f"\n[source]\nuri = {_value(c['source']['uri'])}\n")
    d = c["data"]
    out.append("\n[data]\n" + _comment(notes["labels"]))
    out.append(f"target = {_value(d['target'])}\n" + (f"labels = {_value(d['labels'])}\n" if "labels" in d else ""))
    out.append(_comment(notes["columns"]))
    out.append(f"drop = {_value(d['drop'])}\ncategorical = {_value(d['categorical'])}\n")
    if d.get("dates"):
        out.append(f"dates = {_value(d['dates'])}\n")
    if d.get("date_formats"):
        out.append(f"date_formats = {_value(d['date_formats'])}\n")
    out.append(_comment(notes["missing"]))
    out.append(f"missing = {_value(d['missing'])}\nmin_rows = {d['min_rows']}\n")
    if d.get("missing_markers"):
        out.append(f"missing_markers = {_value(d['missing_markers'])}   # read as missing values, in training and "
                   "by the logged model\n")
    if d["ranges"]:
        out.append("\n[data.ranges]   # observed [min, max]: values outside are flagged, and kept\n")
        out += [f"{_key(k)} = {_value(v)}\n" for k, v in d["ranges"].items()]
    out.append("\n[cv]\n" + _comment(notes["cv"]))
    out += [f"{k} = {_value(v)}\n" for k, v in c["cv"].items()]
    return out


def _holdout(c: dict[str, Any]) -> str:
    """The holdout's line, where the proposal sets one (the latest period, under forward folds)."""
    share = c["evaluation"].get("holdout_fraction")
    return "" if share is None else f"holdout_fraction = {share}   # the latest rows, scored once\n"


def render(proposal: Proposal) -> str:
    """The experiment as a commented TOML file."""
    if proposal.config.get("task") == "regression":
        return render_regression(proposal)
    c, notes = proposal.config, proposal.notes
    out = _head_and_data(proposal, ("name", "description", "random_state"))
    out.append("\n[resampler]\n" + _comment(notes["resampler"]))
    out.append(f"name = {_value(c['resampler']['name'])}\nparams = {_value(c['resampler']['params'])}\n")
    out.append("\n[decision]\n" + _comment(notes["decision"]))
    out += [f"{k} = {_value(v)}\n" for k, v in c["decision"].items()]
    out.append("\n[model]\n" + _comment(notes["model"]))
    out.append(f"name = {_value(c['model']['name'])}\nparams = {_value(c['model']['params'])}\n")
    out.append("\n[evaluation]\n# pr_auc is for two classes; roc_auc_ovr is one-vs-rest for more; brier and ece (expected "
               "calibration error)\n# say whether the probabilities mean what they say (lower is better, as for log_loss)\n")
    out.append(f"metrics = {_value(c['evaluation']['metrics'])}\n{_holdout(c)}")
    out.append(f"\n[tracking]\nexperiment = {_value(c['tracking']['experiment'])}\n")
    out.append("\n[registry]\n# each run's model becomes the challenger; the gate promotes it unless it may be worse\n")
    out.append(_comment(notes.get("registry", [])))
    out += [f"{k} = {_value(v)}\n" for k, v in c["registry"].items()]
    return "".join(out)




# a numeric target's model: on the regression corpus of benchmarks/bench_regression.py these ranked
# with a default HistGradientBoostingRegressor (BENCHMARKS.md); smaller steps than classification's,
# rows and columns sampled per tree: a regression's trees fit the noise of each row's value
REGRESSION_PARAMS = {"n_estimators": 500, "learning_rate": 0.05, "max_depth": 4, "subsample": 0.8,
                     "colsample_bytree": 0.8}


def _target_notes(profile: Profile, target: str, notes: Notes) -> tuple[float, float]:
    """A regression's target: numbers (refused otherwise), its range, its missing values; returns (low, high)."""
    col = profile.columns[target]
    if not _numeric_target(col):
        shown = sorted(col.counts or {})[:5]
        raise ConfigError(f"--target {target!r} is not numeric (values such as {shown}): a regression predicts a "
                          "number; pick a numeric column, or leave out --task regression to classify it")
    why = ("--task regression" if not looks_numeric(col) else
           f"numbers with {'over ' + str(COUNT_CAP) if col.distinct is None else col.distinct} distinct values")
    notes["labels"].append(f"{target!r}: a numeric target, from {col.low:.6g} to {col.high:.6g} ({why}): task = "
                           "'regression', scored by its errors in the target's own units")
    if col.gaps:
        notes["labels"].append(_missing_target(target, col.gaps, profile.rows))
    if col.low > 0:
        notes["labels"].append(
            "always positive: mape (mean absolute percentage error, a share) is among the metrics; the model is fit "
            "on the target as it is, not on its log, however skewed: RMSE is judged in the target's units, trees "
            "need no transform to fit a skewed target, and a model of the log trades some RMSE for relative "
            "errors; where relative errors are what matter, set target_scale = 'log' here (taken back to the mean "
            "with a smearing factor) and registry.primary_metric = 'mape'")
    return col.low, col.high


def _regression_folds(profile: Profile, target: str, features: list[str], notes: Notes,
                      repeats: Repeats | None) -> tuple[int, int, str]:
    rows = profile.labelled_rows(target)
    if rows < 10:
        raise ConfigError(f"--target {target!r} has a value on {rows} rows: too few to cross-validate a regression "
                          "(10 at least)")
    n_splits = 5 if rows >= 50 else 3
    duplicates, n_repeats = _duplicates_and_repeats(profile, target, features, notes, repeats, rows)
    notes["cv"].append(f"{n_repeats} repeats of {n_splits}-fold CV for {rows} rows, stratified on the target's "
                       "quantiles (up to 10 bins) so that every fold sees its low and high values")
    return n_splits, n_repeats, duplicates


def propose_regression(profile: Profile, name: str, source: str, target: str, repeats: Repeats | None) -> Proposal:
    """A regression experiment for a numeric ``target``: its metrics, folds, model, prediction
    interval and gate, every choice with the reason for it."""
    notes: Notes = {k: [] for k in ("data", "labels", "columns", "missing", "cv", "model", "decision", "prediction")}
    low, high = _target_notes(profile, target, notes)
    drop, categorical, ranges = _columns(profile, target, notes)
    features = [n for n in profile.columns if n != target and n not in drop]
    if not features:
        raise ConfigError("no feature columns are left once the target and the identifiers are set aside")
    markers = {k for n in [*features, target] if profile.columns[n].marked for k in profile.columns[n].markers or {}}
    n_splits, n_repeats, duplicates = _regression_folds(profile, target, features, notes, repeats)
    missing = {n: profile.columns[n].gaps for n in features if profile.columns[n].gaps}
    policy = _missing_policy(missing, notes)
    rows = profile.labelled_rows(target)
    params = dict(REGRESSION_PARAMS)
    notes["model"].append(
        f"xgboost regressor (squared error): 500 trees of depth 4 at learning rate 0.05, each on 80% of the rows "
        f"and of the columns; gradient-boosted trees, strong on tabular data of this size ({rows} rows, "
        f"{len(features)} features), with missing values and codes as they are; compare others (ridge, random forest, "
        "hist_gradient_boosting) with `trilho compare`")
    metrics = [*REGRESSION_DEFAULTS[("evaluation", "metrics")], *(["mape"] if low > 0 else [])]
    # the gate's margin: about 1% of the target's standard deviation (its range / 4 for a rough one)
    margin = float(f"{max((high - low) / 4 * 0.01, 1e-12):.2g}")
    notes["decision"].append(
        "the model predicts the mean (squared error); where over- and under-predicting cost differently, "
        "give costs = { over = 1, under = 4 } here and it predicts the quantile they call for (0.8 there), "
        "scored by pinball loss")
    notes["prediction"].append(
        "each prediction comes with lower and upper bounds at this level, from the cross-validated residuals "
        "(split-conformal, with the finite-sample correction); the run reports their coverage out of fold")
    config: dict[str, Any] = {
        "name": name,
        "task": "regression",
        "description": f"{target} (regression) from {source}",
        "random_state": 42,
        "source": {"uri": source},
        "data": {"target": target, "drop": drop, "categorical": categorical, "missing": policy,
                 **({"missing_markers": sorted(markers)} if markers else {}),
                 "min_rows": min(20, rows), "ranges": ranges},
        "cv": {"n_splits": n_splits, "n_repeats": n_repeats, "first_seed": 0, "duplicates": duplicates},
        "model": {"name": "xgboost", "params": params},
        "evaluation": {"metrics": metrics, "baselines": ["mean", "hist_gradient_boosting"]},
        "prediction": {"level": 0.9},
        "tracking": {"experiment": name},
        "registry": {"model_name": f"{name}-xgboost", "primary_metric": "rmse", "margin": margin},
    }
    notes.setdefault("registry", []).append(
        f"margin = {margin:g}: about 1% of the target's spread ((max - min) / 4 as a rough standard deviation), in "
        "RMSE's units; a challenger whose paired RMSE may be worse by more is kept as challenger")
    return _finished(profile, config, notes, features, len(categorical), len(drop))


def render_regression(proposal: Proposal) -> str:
    """A regression experiment as a commented TOML file."""
    c, notes = proposal.config, proposal.notes
    out = _head_and_data(proposal, ("name", "task", "description", "random_state"))
    out.append("\n[model]\n" + _comment(notes["model"]))
    out.append(f"name = {_value(c['model']['name'])}\nparams = {_value(c['model']['params'])}\n")
    out.append("\n[decision]\n" + _comment(notes["decision"]))
    out.append("\n[prediction]\n" + _comment(notes["prediction"]))
    out.append(f"level = {_value(c['prediction']['level'])}\n")
    out.append("\n[evaluation]\n# rmse, mae and median_ae in the target's units (lower is better); r2 the share of its "
               "variance explained;\n# baselines: the training folds' mean and a default HistGradientBoostingRegressor, "
               "on the same folds\n")
    out.append(f"metrics = {_value(c['evaluation']['metrics'])}\nbaselines = {_value(c['evaluation']['baselines'])}\n"
               f"{_holdout(c)}")
    out.append(f"\n[tracking]\nexperiment = {_value(c['tracking']['experiment'])}\n")
    out.append("\n[registry]\n# each run's model becomes the challenger; the gate promotes it unless its paired RMSE "
               "may be worse\n")
    out.append(_comment(notes.get("registry", [])))
    out += [f"{k} = {_value(v)}\n" for k, v in c["registry"].items()]
    return "".join(out)
