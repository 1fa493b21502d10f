"""Exploration for people: tables and figures of a raw table and of a run's results.

Pure functions (frames and figures in and out) that the notebooks call, so that a notebook only
arranges what the package computes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from trilho.evaluation.splits import duplicate_groups
from trilho.experiment import Experiment
from trilho.model.encoding import normalise_text
from trilho.schemas import RunSummary, ValidationReport
from trilho.settings import LOCAL_UI

__all__ = [
    "class_balance_figure",
    "correlation_figure",
    "distributions_figure",
    "duplicates_table",
    "feature_boxplots_figure",
    "groups_table",
    "importance_table",
    "intervals_table",
    "report_tables",
    "run_link",
]


def _labels(raw: pd.DataFrame, exp: Experiment) -> pd.Series:
    """Each row's class name (every spelling of a class under its name); unknown labels as they are."""
    normal = normalise_text(raw[exp.data.target])
    named = normal.map(exp.data.class_of).astype("string")
    return named.where(named.notna(), normal).rename("class")


def _numeric(raw: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    features = raw.drop(columns=[exp.data.target, *exp.data.drop, *exp.data.categorical], errors="ignore")
    return features.apply(pd.to_numeric, errors="coerce")


def report_tables(report: ValidationReport | dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The validation report as small tables: overview, classes, problems, out-of-range values."""
    overview = pd.DataFrame({
        "rows": [report["rows"]], "columns": [len(report["columns"])],
        "errors": [len(report["errors"])], "warnings": [len(report["warnings"])],
        "rows copying another": [report.get("duplicates", {}).get("rows_duplicating_another", 0)],
        "of which with another label": [report.get("duplicates", {}).get("with_conflicting_label", 0)],
    })
    classes = pd.Series(report.get("class_counts", {}), name="rows").rename_axis("class").to_frame()
    classes["share"] = classes["rows"] / classes["rows"].sum()
    ranges = pd.DataFrame([{"column": c, "plausible range": f"{v['range'][0]}–{v['range'][1]}", "count": v["count"],
                            "min": v["min"], "max": v["max"], "file lines": v["lines"][:8]}
                           for c, v in report.get("out_of_range", {}).items()])
    problems = pd.DataFrame({"kind": ["error"] * len(report["errors"]) + ["warning"] * len(report["warnings"]),
                             "message": report["errors"] + report["warnings"]})
    return {"overview": overview, "classes": classes, "problems": problems, "out_of_range": ranges,
            "dtypes": pd.Series(report["dtypes"], name="dtype").to_frame()}


def class_balance_figure(raw: pd.DataFrame, exp: Experiment) -> Figure:
    counts = _labels(raw, exp).value_counts().reindex(exp.data.classes, fill_value=0)
    fig = Figure(figsize=(5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(counts.index, counts.to_numpy(), color=["tab:green", "tab:red", "tab:orange"][:len(counts)])
    for bar, n in zip(bars, counts.to_numpy(), strict=True):
        ax.annotate(f"{n} ({n / counts.sum():.0%})", (bar.get_x() + bar.get_width() / 2, n), ha="center", va="bottom")
    ax.set(title="Class balance", ylabel="rows", xlabel=exp.data.target)
    return fig


def _panels(names: list[str], title: str, height: float) -> tuple[Figure, list]:
    """A figure with one small panel per name, four to a row; unused panels hidden."""
    ncols = 4
    nrows = int(np.ceil(len(names) / ncols))
    fig = Figure(figsize=(3.2 * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, list(axes[:len(names)])


def distributions_figure(raw: pd.DataFrame, exp: Experiment, bins: int = 30) -> Figure:
    """One histogram per feature, classes overlaid (density, so small classes stay visible)."""
    numeric, labels = _numeric(raw, exp), _labels(raw, exp)
    fig, axes = _panels(list(numeric.columns), "Feature distributions by class (density)", 2.5)
    for ax, col in zip(axes, numeric.columns, strict=True):
        values = numeric[col]
        edges = np.histogram_bin_edges(values.dropna(), bins=bins)
        for label in exp.data.classes:
            ax.hist(values[labels == label].dropna(), bins=edges, density=True, alpha=0.45, label=label)
    axes[0].legend(fontsize=7)
    return fig


def feature_boxplots_figure(raw: pd.DataFrame, exp: Experiment) -> Figure:
    """One panel per feature: a box per class."""
    numeric, labels = _numeric(raw, exp), _labels(raw, exp)
    fig, axes = _panels(list(numeric.columns), "Feature boxplots by class", 2.6)
    for ax, col in zip(axes, numeric.columns, strict=True):
        ax.boxplot([numeric[col][labels == c].dropna() for c in exp.data.classes], tick_labels=exp.data.classes,
                   showfliers=True, flierprops={"markersize": 2})
    return fig


def correlation_figure(raw: pd.DataFrame, exp: Experiment) -> Figure:
    """Spearman correlation between features (rank-based: robust to the skewed lab values)."""
    corr = _numeric(raw, exp).corr(method="spearman")
    fig = Figure(figsize=(6.4, 5.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(corr.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(image, ax=ax, label="Spearman ρ")
    ax.set_xticks(range(len(corr)), corr.columns, rotation=60, fontsize=8)
    ax.set_yticks(range(len(corr)), corr.columns, fontsize=8)
    for (i, j), value in np.ndenumerate(corr.to_numpy()):
        ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=6,
                color="white" if abs(value) > 0.6 else "black")
    ax.set_title("Feature correlation")
    return fig


def duplicates_table(raw: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """Rows whose features repeat another row's, grouped, with whether the group's labels conflict."""
    features = raw.drop(columns=[exp.data.target, *exp.data.drop], errors="ignore")
    features = features.assign(**{c: normalise_text(features[c]) for c in exp.data.categorical if c in features})
    groups = pd.Series(duplicate_groups(features), index=raw.index)
    sizes = groups.map(groups.value_counts())
    labels = _labels(raw, exp)
    conflict = groups.map(labels.groupby(groups).nunique() > 1)
    out = raw.loc[sizes > 1].assign(group=groups[sizes > 1], copies=sizes[sizes > 1],
                                    conflicting_labels=conflict[sizes > 1], file_line=raw.index[sizes > 1] + 2)
    return out.sort_values(["conflicting_labels", "group"], ascending=[False, True])


def intervals_table(summary: RunSummary) -> pd.DataFrame:
    """Per metric: the fold mean and every interval method side by side (the headline marked)."""
    rows = []
    for metric, s in summary["cv"]["metrics"].items():
        row = {"metric": metric, "mean": round(s["mean"], 4), "std": round(s["std"], 4)}
        for method, bounds in s.get("intervals", {}).items():
            mark = " *" if method == s.get("ci_method") else ""
            row[method + mark] = f"{bounds[0]:.4f} – {bounds[1]:.4f}" if bounds else "–"
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def tune_table(summary: dict[str, Any]) -> pd.DataFrame:
    """A `trilho tune` result: the best trial's own CV score beside the scores on rows the search
    never saw (tuned and untuned, with their intervals), and the best trial's optimism."""
    s, metric = summary, summary["metric"]
    rows = [{"estimate": f"best trial #{s['best']['trial']}: its own CV ({s['search_rows']} search rows)",
             metric: round(s["best"]["cv_score"], 4), "interval": "none (it chose itself)"}]
    for key, label in (("honest", "tuned"), ("untuned", "untuned")):
        part = s[key]
        rows.append({"estimate": f"{label}, on the {s['held_out_rows']} rows set aside before the search",
                     metric: round(part["score"], 4),
                     "interval": f"{part['low']:.4f} – {part['high']:.4f} ({part['level']:.0%})"})
    rows.append({"estimate": "optimism of the best trial's score", metric: round(s["optimism"], 4), "interval": ""})
    return pd.DataFrame(rows).set_index("estimate")


def latest_tune(lake: Any, experiment: str) -> dict[str, Any] | None:
    """The newest `trilho tune` summary of this experiment in the lake, or None."""
    import json

    found = []
    for key in lake.list("reports/"):
        if key.endswith("/tune.json"):
            summary = json.loads(lake.get_bytes(key))
            if summary.get("experiment") == experiment:
                found.append(summary)
    return max(found, key=lambda s: s.get("finished", "")) if found else None


def run_link(tracking_uri: str, summary: RunSummary, ui: str = LOCAL_UI) -> str:
    """Where to see the run: the server's own page, or the UI that ``trilho ui`` opens on a local store."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else ui
    return f"{base}/#/experiments/{quote(str(summary['mlflow_experiment_id']))}/runs/{quote(summary['run_id'])}"


def importance_table(summary: RunSummary) -> pd.DataFrame:
    """The run's out-of-fold feature importance, most important first (what report.html shows)."""
    found = summary.get("importance")
    if not found:
        return pd.DataFrame(columns=["feature", "mean", "std", "low", "high"])
    return pd.DataFrame([{"feature": name, **entry} for name, entry in found["features"].items()]).set_index("rank")


def groups_table(summary: RunSummary, metric: str | None = None) -> pd.DataFrame:
    """Per group column and value: rows, share and one metric's mean and interval, out of fold;
    the groups too small to score are listed with their rows and no score."""
    rows = []
    metric = metric or next(iter(summary["cv"]["metrics"]))
    for column, entry in summary.get("groups", {}).items():
        for group, found in entry["groups"].items():
            score = found["metrics"].get(metric) or {}
            rows.append({"column": column, "group": group, "rows": found["rows"], "share": round(found["share"], 3),
                         metric: score.get("mean"), "low": score.get("low"), "high": score.get("high")})
        rows += [{"column": column, "group": group, "rows": n, "share": None, metric: None, "low": None, "high": None}
                 for group, n in entry["too_small"].items()]
    return pd.DataFrame(rows)
