"""Summaries of fold scores and comparisons between models: pure functions over arrays.

Repeated k-fold CV gives J = k * r scores that are not independent: every row is a test row
once per repeat and a training row k - 1 times. The naive t interval treats them as independent
and is far too narrow. Nadeau and Bengio (2003) correct the variance of the mean by replacing
1/J with 1/J + n_test/n_train; Bouckaert and Frank (2004) apply the same correction to the
paired difference between two models evaluated on the same folds. Bates, Hastie and
Tibshirani (2023) estimate the mean squared error of the CV estimate itself with nested CV
(``nested_cv_interval``): it costs k(k-1)/2 extra fits per repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = [
    "corrected_t_interval",
    "fold_bootstrap_interval",
    "intervals",
    "row_bootstrap_intervals",
    "row_bootstrap_regression",
    "naive_t_interval",
    "nested_cv_interval",
    "paired_corrected_t",
    "paired_row_bootstrap",
    "percentile_spread",
    "summarise",
]


def percentile_spread(scores: np.ndarray, low: float = 2.5, high: float = 97.5) -> tuple[float, float]:
    """The low..high percentile range of the fold scores (numpy's linear interpolation).

    This is the reference's "95% CI": a spread of individual fold scores, not a confidence
    interval for the mean score.

    >>> [round(v, 4) for v in percentile_spread(np.array([0.80, 0.82, 0.85, 0.79, 0.84]))]
    [0.791, 0.849]
    """
    lo, hi = np.percentile(np.asarray(scores, dtype="float64"), [low, high])
    return float(lo), float(hi)


def naive_t_interval(scores: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student t interval for the mean as if the fold scores were independent (they are not)."""
    x = np.asarray(scores, dtype="float64")
    half = _st.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def corrected_t_interval(scores: np.ndarray, test_fraction: float, level: float = 0.95) -> tuple[float, float]:
    """Nadeau–Bengio corrected resampled t interval for the expected score.

    ``test_fraction`` is n_test / n (1/k for k-fold); the variance of the mean becomes
    (1/J + n_test/n_train) * s², with J - 1 degrees of freedom: wider than the naive interval.

    >>> scores = np.array([0.80, 0.82, 0.85, 0.79, 0.84])
    >>> [round(v, 4) for v in corrected_t_interval(scores, test_fraction=0.2)]
    [0.7725, 0.8675]
    >>> [round(v, 4) for v in naive_t_interval(scores)]
    [0.7883, 0.8517]
    """
    x = np.asarray(scores, dtype="float64")
    J = len(x)
    ratio = test_fraction / (1.0 - test_fraction)
    half = _st.t.ppf(0.5 + level / 2, J - 1) * np.sqrt((1.0 / J + ratio) * x.var(ddof=1))
    return float(x.mean() - half), float(x.mean() + half)


def fold_bootstrap_interval(scores: np.ndarray, level: float = 0.95, n_boot: int = 2000,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap of the mean over the fold scores (resamples folds as if independent)."""
    x = np.asarray(scores, dtype="float64")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


# up to this many rows, each bootstrap replicate draws its rows one by one (the figures of small
# data sets such as the diabetes one stay as they were); above it, a replicate draws how many rows
# of each (label, predictions) pattern it holds from the multinomial those row draws imply: the
# same distribution, in time that does not grow with the rows (BENCHMARKS.md, "A million rows")
EXACT_BOOTSTRAP_ROWS = 50_000


def row_bootstrap_intervals(y: np.ndarray, pred: np.ndarray, n_classes: int,
                            score_fn: Callable[[np.ndarray], dict[str, np.ndarray]], metrics: list[str],
                            level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Bootstrap over rows of the out-of-fold predictions, the sampling unit of the data.

    ``y`` holds each row's label, ``pred`` its out-of-fold prediction per repeat (repeats x rows),
    ``score_fn`` scores a stack of confusion matrices (..., K, K). Each replicate draws n rows with
    replacement, scores every repeat's pooled confusion matrix on them and averages over repeats.
    Returns, per metric, the replicates' percentile range as offsets from the full-data pooled
    score, to be added to the reported fold mean.

    A row enters the statistic only through its pattern (its label and its prediction in each
    repeat), so a replicate is fully described by how many rows of each pattern it drew. Above
    ``EXACT_BOOTSTRAP_ROWS`` rows those counts are drawn directly, multinomial(n, pattern shares).
    """
    pred = np.atleast_2d(np.asarray(pred))
    repeats, n = pred.shape
    cells = np.asarray(y)[None, :] * n_classes + pred                     # (repeats, n)
    rng = np.random.default_rng(seed)
    if n > EXACT_BOOTSTRAP_ROWS:
        base = n_classes**2
        if repeats * np.log2(base) < 62:  # each row's pattern as one integer: a fast 1-D unique
            key = np.zeros(n, dtype=np.int64)
            for r in range(repeats):
                key = key * base + cells[r]
            keys, counts = np.unique(key, return_counts=True)
            patterns = np.stack([keys // base**(repeats - 1 - r) % base for r in range(repeats)])
        else:
            rows, counts = np.unique(cells.T, axis=0, return_counts=True)
            patterns = rows.T
        cells, units = patterns, len(counts)                          # (repeats, P), (P,)

        def draw(size: int) -> np.ndarray:
            return rng.multinomial(n, counts / n, size=size).astype("float64")
        full = counts.astype("float64")
    else:
        units = n

        def draw(size: int) -> np.ndarray:
            return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(size)]).astype("float64")
        full = np.ones(n)
    onehot = np.zeros((repeats, units, n_classes**2))
    np.put_along_axis(onehot, cells[..., None], 1.0, axis=-1)

    by_unit = onehot.transpose(1, 0, 2).reshape(units, repeats * n_classes**2)  # one matrix product a block

    def pooled(weights: np.ndarray) -> dict[str, np.ndarray]:            # weights: (boots, units)
        cms = (weights @ by_unit).reshape(len(weights), repeats, n_classes, n_classes)
        return {m: v.mean(axis=1) for m, v in score_fn(cms).items() if m in metrics}

    point = pooled(full[None, :])
    draws: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    block = max(1, min(n_boot, 4_000_000 // max(units, 1)))              # bounded memory per block
    for start in range(0, n_boot, block):
        for m, v in pooled(draw(min(block, n_boot - start))).items():
            draws[m].append(v)
    out = {}
    for m in metrics:
        lo, hi = np.quantile(np.concatenate(draws[m]), [0.5 - level / 2, 0.5 + level / 2])
        out[m] = (float(lo - point[m][0]), float(hi - point[m][0]))
    return out


def row_bootstrap_regression(y: np.ndarray, pred: np.ndarray, metrics: list[str], level: float = 0.95,
                             quantile: float | None = None, n_boot: int = 1000, seed: int = 0
                             ) -> dict[str, tuple[float, float]]:
    """The row bootstrap of a numeric target's metrics, as ``row_bootstrap_intervals`` does for
    labels: ``pred`` holds each row's out-of-fold prediction per repeat (repeats x rows); a
    replicate weighs each row by how often it was drawn (Poisson counts, blocks of replicates at a
    time) and scores every repeat on them, averaged over the repeats. Every metric that is a sum
    over rows (all but ``median_ae``, which gets none) comes back as the percentile offsets from
    the full-data score. Above 100,000 rows 200 replicates are drawn (a percentile of 200 draws
    moves its bounds by a few percent of their width)."""
    from trilho.evaluation.metrics import row_losses

    y = np.asarray(y, dtype="float64")
    pred = np.atleast_2d(np.asarray(pred, dtype="float64"))
    n = len(y)
    wanted = [m for m in metrics if m in ("rmse", "mae", "r2", "mape", "pinball")]
    if not wanted or n < 2:
        return {}
    n_boot = n_boot if n <= 100_000 else min(n_boot, 200)
    losses = {m: np.stack([row_losses(y, p, m, quantile) for p in pred], axis=1) for m in wanted}  # (n, repeats)

    def scored(w: np.ndarray) -> dict[str, np.ndarray]:  # w: (boots, n)
        total = w.sum(axis=1, keepdims=True)
        out = {}
        for m in wanted:
            mean = (w @ losses[m]) / total  # (boots, repeats)
            if m == "rmse":
                mean = np.sqrt(mean)
            elif m == "r2":
                centre = (w @ y)[:, None] / total
                spread = (w @ (y[:, None] ** 2)) / total - centre**2
                mean = 1.0 - mean / np.where(spread > 0, spread, np.nan)
            out[m] = mean.mean(axis=1)
        return out

    point = scored(np.ones((1, n)))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {m: [] for m in wanted}
    block = max(1, min(n_boot, 20_000_000 // n))
    for start in range(0, n_boot, block):
        for m, v in scored(rng.poisson(1.0, (min(block, n_boot - start), n)).astype("float64")).items():
            draws[m].append(v)
    out = {}
    for m in wanted:
        found = np.concatenate(draws[m])
        found = found[np.isfinite(found)]
        if len(found):
            lo, hi = np.quantile(found, [0.5 - level / 2, 0.5 + level / 2])
            out[m] = (float(lo - point[m][0]), float(hi - point[m][0]))
    return out


def nested_cv_interval(outer_loss: np.ndarray, outer_key: np.ndarray, inner_loss: np.ndarray,
                       inner_key: np.ndarray, n_folds: int, n_rows: int, level: float = 0.95,
                       debias: bool = True) -> dict[str, float]:
    """Nested-CV interval for the expected loss (Bates, Hastie & Tibshirani 2023, Algorithm 1).

    Per-row losses of a decomposable loss (0/1 error, log loss), keyed by (repeat, outer fold):

    - ``outer_loss``/``outer_key``: each outer fold's test rows, scored by the model trained on
      the other k - 1 folds (the ordinary CV fits);
    - ``inner_loss``/``inner_key``: for outer fold j, the rows of every other fold l, scored by
      the model trained without folds j and l (the inner CV of the data outside fold j).

    With e_in and e_out the mean inner and outer loss of one outer fold, the mean squared error
    of the CV estimate is estimated as mean[(e_in - e_out)² - var(outer losses)/n_j] and rescaled by
    (k - 1)/k to a data set of n rows; its root is kept between the naive standard error
    sd(inner losses)/√n and √k times that. The centre is the mean inner loss minus the estimated
    bias of training on (k - 2)/k of the rows, (1 + (k - 2)/k)(Err_NCV - Err_CV); the interval is
    centre ± z·se.
    """
    outer_loss, inner_loss = np.asarray(outer_loss, "float64"), np.asarray(inner_loss, "float64")
    keys = np.unique(outer_key)
    if len(keys) < 2 or not np.isin(keys, inner_key).all():
        raise ValueError("nested_cv_interval needs inner losses for every outer fold, and at least two folds")
    terms = []
    for key in keys:
        out = outer_loss[outer_key == key]
        inn = inner_loss[inner_key == key]
        var_out = out.var(ddof=1) if len(out) > 1 else 0.0
        terms.append((inn.mean() - out.mean()) ** 2 - var_out / len(out))
    mse = float(np.mean(terms)) * (n_folds - 1) / n_folds
    naive = float(inner_loss.std(ddof=1) / np.sqrt(n_rows))
    se = min(max(np.sqrt(max(mse, 0.0)), naive), naive * np.sqrt(n_folds))
    err_ncv = float(inner_loss.mean())
    err_cv = float(outer_loss[np.isin(outer_key, keys)].mean())
    bias = (1 + (n_folds - 2) / n_folds) * (err_ncv - err_cv) if debias else 0.0
    centre = err_ncv - bias
    half = float(_st.norm.ppf(0.5 + level / 2) * se)
    return {"centre": centre, "low": centre - half, "high": centre + half, "se": float(se),
            "se_naive": naive, "mse": mse, "err_ncv": err_ncv, "err_cv": err_cv, "bias": bias}


def intervals(scores: np.ndarray, methods: list[str], *, test_fraction: float, level: float = 0.95,
              low: float = 2.5, high: float = 97.5, row_offsets: tuple[float, float] | None = None,
              nested: tuple[float, float] | None = None) -> dict[str, tuple[float, float] | None]:
    """Every requested interval for one metric's fold scores (``row_offsets`` from the row
    bootstrap, ``nested`` the bounds of the nested-CV interval when it was computed)."""
    x = np.asarray(scores, dtype="float64")
    out: dict[str, tuple[float, float] | None] = {}
    for method in methods:
        if method == "percentile":
            out[method] = percentile_spread(x, low, high)
        elif len(x) < 2:
            out[method] = None
        elif method == "naive_t":
            out[method] = naive_t_interval(x, level)
        elif method == "corrected_t":
            out[method] = corrected_t_interval(x, test_fraction, level)
        elif method == "fold_bootstrap":
            out[method] = fold_bootstrap_interval(x, level)
        elif method == "nested_cv":
            out[method] = nested
        elif method == "row_bootstrap":
            out[method] = (float(x.mean() + row_offsets[0]), float(x.mean() + row_offsets[1])) if row_offsets else None
        else:
            raise ValueError(f"unknown interval method {method!r}")
    return out


def paired_corrected_t(a: np.ndarray, b: np.ndarray, test_fraction: float, level: float = 0.95) -> dict[str, float]:
    """Corrected resampled paired t-test of mean(a - b) over the same folds.

    Returns the mean difference, its interval, the t statistic and the two-sided p-value. When
    every difference is the same the variance is zero: the interval is that one value and the
    p-value is 1 when it is 0 (identical models) and 0 otherwise.
    """
    d = np.asarray(a, dtype="float64") - np.asarray(b, dtype="float64")
    if d.shape != np.shape(b) or d.ndim != 1 or len(d) < 2:
        raise ValueError(f"paired scores must be two 1-d arrays of the same length >= 2, got {np.shape(a)} and {np.shape(b)}")
    J, mean = len(d), float(d.mean())
    ratio = test_fraction / (1.0 - test_fraction)
    se = float(np.sqrt((1.0 / J + ratio) * d.var(ddof=1)))
    if se == 0.0:
        return {"mean_diff": mean, "low": mean, "high": mean, "t": 0.0 if mean == 0 else float("inf") * np.sign(mean),
                "p_value": 1.0 if mean == 0 else 0.0, "n": J}
    t = mean / se
    half = _st.t.ppf(0.5 + level / 2, J - 1) * se
    return {"mean_diff": mean, "low": mean - half, "high": mean + half, "t": float(t),
            "p_value": float(2 * _st.t.sf(abs(t), J - 1)), "n": J}


def paired_row_bootstrap(score: Callable[[np.ndarray], tuple[float, float]], n: int, level: float = 0.95,
                         n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Two models scored on the same ``n`` rows: the difference of their scores (a - b) with its
    paired percentile bootstrap interval, rows drawn with replacement, each replicate scoring both
    models on the same draw. ``score(index)`` gives both models' scores on the rows ``index``."""
    if n < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 rows, got {n}")
    a, b = score(np.arange(n))
    rng = np.random.default_rng(seed)
    diffs = np.array([np.subtract(*score(rng.integers(0, n, n))) for _ in range(n_boot)], dtype="float64")
    diffs = diffs[np.isfinite(diffs)]
    low, high = (np.quantile(diffs, [0.5 - level / 2, 0.5 + level / 2]) if len(diffs) else (np.nan, np.nan))
    return {"mean_diff": float(a - b), "low": float(low), "high": float(high), "challenger": float(a),
            "champion": float(b), "n": n, "n_boot": int(len(diffs))}


def summarise(scores: dict[str, np.ndarray], low: float = 2.5, high: float = 97.5) -> dict[str, dict[str, Any]]:
    """Per metric: mean, std (ddof=1), the percentile spread of fold scores, and n."""
    out = {}
    for metric, values in scores.items():
        values = np.asarray(values, dtype="float64")
        lo, hi = percentile_spread(values, low, high)
        out[metric] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "low": lo,
            "high": hi,
            "interval": f"percentile {low:g}-{high:g} of fold scores",
            "n": int(len(values)),
        }
    return out


def nested_bounds(oof: Any, nested: Any, n_splits: int, level: float = 0.95,
                  seeds: list[int] | None = None) -> dict[str, tuple[float, float]]:
    """The nested-CV interval of the row-decomposable metrics (accuracy from the 0/1 error, log
    loss) from the out-of-fold predictions ``oof`` and the nested fits' per-row losses ``nested``
    (trilho.evaluation.results.CVResult's frames) of ``seeds`` (default: every seed that has them)."""
    from trilho.evaluation.metrics import row_log_loss

    nested = nested if seeds is None else nested[nested["seed"].isin(seeds)]
    oof = oof[oof["seed"].isin(nested["seed"].unique())]
    outer_key = oof["seed"].to_numpy() * n_splits + oof["fold"].to_numpy()
    inner_key = nested["seed"].to_numpy() * n_splits + nested["outer"].to_numpy()
    proba = oof[[c for c in oof.columns if c.startswith("proba_")]].to_numpy()
    if not proba.size:  # a regression: the squared error (RMSE's, taken back by a square root) and the absolute
        error = oof["y"].to_numpy(dtype="float64") - oof["pred"].to_numpy(dtype="float64")
        outer = {"rmse": error**2, "mae": np.abs(error)}
        inner = {"rmse": nested["error"].to_numpy(), "mae": nested["logloss"].to_numpy()}
    else:
        outer = {"accuracy": (oof["pred"] != oof["y"]).to_numpy(dtype="float64"),
                 "log_loss": row_log_loss(proba, oof["y"].to_numpy())}
        inner = {"accuracy": nested["error"].to_numpy(), "log_loss": nested["logloss"].to_numpy()}
    out = {}
    for metric in outer:
        found = nested_cv_interval(outer[metric], outer_key, inner[metric], inner_key, n_splits,
                                   n_rows=int(oof["row"].nunique()), level=level)
        if metric == "accuracy":
            out[metric] = (1 - found["high"], 1 - found["low"])
        elif metric == "rmse":
            out[metric] = (float(np.sqrt(max(found["low"], 0.0))), float(np.sqrt(max(found["high"], 0.0))))
        else:
            out[metric] = (found["low"], found["high"])
    return out
