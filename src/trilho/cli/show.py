"""What the commands print: tables of a run, a comparison, a tuning.

On a terminal a table fits the terminal's width; piped or redirected (no terminal: a file, a log,
``| less``) it is printed whole, however wide. Lines that carry a path, a URI or a run id are never
cut or broken by a newline either way: the terminal wraps them, a file keeps them on one line.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trilho.schemas import RunSummary

# the width given to output that is no terminal: wide enough for any table trilho prints, so none
# is cut to fit a width that is not there (rich would assume 80 columns)
UNBOUNDED = 10_000


def _console() -> Console:
    """Standard output: a terminal's own width, or (not a terminal) no width to fit at all."""
    out = Console(soft_wrap=True)
    return out if out.is_terminal else Console(width=UNBOUNDED, soft_wrap=True)


def run_summary(summary: RunSummary, tracking_uri: str, ui: str | None = None) -> None:
    """The run's table and lines. ``ui``: the MLflow UI as the user's browser reaches it, for the
    run's link (a server's in-network name, such as Compose's ``http://mlflow:5000``, is not)."""
    out = _console()
    cv = summary["cv"]
    dup = cv.get("duplicates", {})
    how = (f"forward over {summary['time']['column']!r}" if summary.get("time") else
           f"{cv['n_splits']}-fold × {len(cv['seeds'])} seeds, duplicates: {dup.get('policy', 'keep')}")
    table = Table(title=f"{summary['experiment']}: {cv['n_folds']} folds ({how})")
    level = f"{cv.get('level', 0.95):.0%}"
    for col in ("metric", "mean", "std", f"{level} CI", "fold spread", "holdout"):
        table.add_column(col, justify="right" if col != "metric" else "left", no_wrap=True)
    for metric, s in cv["metrics"].items():
        ci = s.get("ci")
        table.add_row(metric, f"{s['mean']:.4f}", f"{s['std']:.4f}", f"{ci[0]:.4f}–{ci[1]:.4f}" if ci else "-",
                      f"{s['low']:.4f}–{s['high']:.4f}", f"{summary['holdout']['scores'][metric]:.4f}")
    out.print(table)
    over_time = summary.get("time")
    if over_time:  # forward folds: the headline says what it is, period by period
        primary = over_time["latest"]["metric"]
        shown = ", ".join(f"{p['start']} {p['scores'][primary]:.4g}" for p in over_time["periods"])
        out.print(f"over time    {primary} by period: {shown}", highlight=False)
        out.print(f"headline     {escape(over_time['statement'])}", highlight=False)
    else:
        out.print(f"CI: {cv.get('interval', '-')} (see STATISTICS.md for its measured coverage); "
                  "fold spread: the 2.5–97.5 percentiles of single fold scores, not a CI")
    if dup.get("rows_copying_another"):
        out.print(f"duplicates   {_duplicates(dup, summary['data'].get('reference', {}))}")
    _findings(out, summary)
    for line in summary["data"].get("warnings", []):
        if "repeat an earlier row's features" not in line:  # the duplicates line says it
            out.print(f"[bold yellow]warning[/]      {escape(line)}", highlight=False)
    if summary["data"]["ingest_skipped"]:
        out.print("raw data already in the lake (same sha256): ingest skipped")
    out.print(f"MLflow run   {summary['run_id']} in experiment {summary['mlflow_experiment']!r} at {tracking_uri}")
    out.print(f"lake results {summary['lake']['uri']}/{summary['lake']['reports']}")
    if summary.get("report_html"):
        out.print(f"report       {summary['report_html']}")
    if "registry" in summary:
        reg = summary["registry"]
        out.print(f"model        models:/{reg['name']}/{reg['version']} ({', '.join(reg['aliases'])}): {reg['reason']}")
    if tracking_uri.startswith("sqlite:"):
        out.print(f"open the UI  trilho ui   (or: mlflow ui --backend-store-uri {tracking_uri})")
    elif ui:
        from trilho.reporting.explore import run_link  # matplotlib and pandas: loaded by the run already

        out.print(f"open the run {run_link(ui, summary)}")
    t = summary.get("timings", {})
    out.print(f"took {t['total_s']:.1f}s: cv {t['cv_s']:.1f}s, tracking {t['tracking_s']:.1f}s")


def _findings(out: Console, summary: RunSummary) -> None:
    """The decision, the baselines, the importance and the groups, a line each."""
    if summary.get("prediction_interval"):
        out.print(f"interval     {escape(_interval(summary))}", highlight=False)
    if summary.get("decision", {}).get("objective") == "quantile":
        d = summary["decision"]
        out.print(f"decision     the {d['quantile']:.3g} quantile, from costs {d['costs']} (scored by pinball loss)",
                  highlight=False)
    elif summary.get("decision"):
        out.print(f"decision     {escape(_decision(summary['decision'], summary['holdout']['labels']))}", highlight=False)
    if summary.get("baselines"):
        out.print(f"baselines    {escape(_baselines(summary['baselines']))}", highlight=False)
    if summary.get("importance"):
        out.print(f"importance   {escape(_importance(summary['importance']))}", highlight=False)
    for column, entry in summary.get("groups", {}).items():
        out.print(f"by {escape(column):<10}{escape(_groups(entry, summary))}", highlight=False)


def _interval(summary: RunSummary) -> str:
    """A regression's prediction interval: its level, width and measured coverage."""
    pi = summary["prediction_interval"]
    cover = pi["coverage"]
    said = (f"{pi['level']:.0%}: prediction ± {pi['half_width']:.4g} (width {pi['width']:.4g}); out of fold it covers "
            f"{cover['mean']:.1%} (folds {cover['low']:.0%}-{cover['high']:.0%})")
    held = summary["holdout"].get("interval")
    return said + (f"; holdout {held['coverage']:.1%} of {held['rows']:,} rows" if held else "")


def _importance(found: dict[str, Any], top: int = 5) -> str:
    """The most important features, out of fold, with their intervals."""
    shown = [f"{name} {e['mean']:.3g} [{e['low']:.3g}, {e['high']:.3g}]" for name, e in list(found["features"].items())[:top]]
    more = len(found["features"]) - len(shown)
    return f"{'; '.join(shown)}{f'; {more} more' if more > 0 else ''} ({found['measure']}, {found['folds']} folds)"


def _groups(entry: dict[str, Any], summary: RunSummary) -> str:
    """Each group's primary metric and the largest gap between groups."""
    from trilho.reporting.summary import primary_metric  # on use: it imports the statistics

    metric = primary_metric(summary)
    parts = [f"{g} {e['metrics'][metric]['mean']:.4f}" for g, e in entry["groups"].items() if e["metrics"].get(metric)]
    gap = entry["gap"].get(metric)
    if gap and "low" in gap:
        parts.append(f"gap {gap['best']} - {gap['worst']} {gap['diff']:+.4f} [{gap['low']:+.4f}, {gap['high']:+.4f}]")
    if entry["too_small"]:
        parts.append("too small to score: " + ", ".join(f"{g} ({n} rows)" for g, n in entry["too_small"].items()))
    return f"{metric}: " + "; ".join(parts)


def _decision(d: dict[str, Any], classes: list[str]) -> str:
    """The rule, and the threshold each fold chose on its own training rows."""
    if d["objective"] == "costs":
        return f"the class of least expected cost (costs[true][predicted] = {d['costs']})"
    goal = {"metric": f"maximising {d.get('metric') or 'the primary metric'}",
            "recall": f"keeping recall at {d['floor']:g} or more, the most precise",
            "precision": f"keeping precision at {d['floor']:g} or more, the most sensitive"}[d["objective"]]
    t = d.get("threshold")
    if not t:
        return goal
    positive = classes[1] if not d.get("positive") else d["positive"]
    model = f"; the logged model's {t['model']:.4f}" if t.get("model") is not None else ""
    return (f"threshold on P({positive}) {goal}: {t['mean']:.4f} on average over the folds "
            f"({t['low']:.4f}–{t['high']:.4f}, each chosen on its fold's training rows){model}")


def _baselines(found: dict[str, Any]) -> str:
    """Each baseline's primary metric and the model's paired difference from it, with its interval."""
    metric, parts = found["primary_metric"], []
    for name, entry in found["models"].items():
        s = entry["metrics"].get(metric)
        if not s:
            continue
        diff = f"; model {s['diff']:+.4f} [{s['low']:+.4f}, {s['high']:+.4f}]" if "diff" in s else ""
        parts.append(f"{name} {s['mean']:.4f}{diff} ({entry['folds']} folds)")
    return f"{metric}: " + "; ".join(parts)


def _duplicates(dup: dict[str, Any], reference: dict[str, Any]) -> str:
    """What the folds did with rows that repeat an earlier row, in the words `trilho init` uses."""
    from trilho.data.validate import repeats_phrase  # pandas: loaded by the run already

    said = repeats_phrase(dup["rows_copying_another"], dup["rows"], "the folds use")
    left = reference.get("training_rows_left_out", 0)
    if left:
        said += f" (after {left:,} rows identical to reference rows were left out)"
    policy = dup.get("policy", "keep")
    done = {"group": "each set of copies stays in one fold",
            "drop": f"only the first of each is used ({dup.get('rows_used', 0):,} rows)"}.get(policy, "split like any row")
    return f"{said}: cv.duplicates = {policy!r}, {done}"


def compare_summary(s: dict[str, Any]) -> None:
    table = Table(title=f"{s['metric']} on {s['n_folds']} identical folds (duplicates: {s['duplicates']['policy']}); "
                        f"baseline {s['baseline']}")
    for col in ("candidate", "mean", "95% CI", "diff vs baseline", "diff CI", "p"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for r in s["candidates"]:
        table.add_row(r["candidate"], f"{r['mean']:.4f}", f"{r['ci_low']:.4f} – {r['ci_high']:.4f}",
                      f"{r['mean_diff']:+.4f}", f"{r['diff_low']:+.4f} – {r['diff_high']:+.4f}", f"{r['p_value']:.3g}")
    out = _console()
    out.print(table)
    out.print(f"MLflow run {s['run_id']} (one child per candidate); lake {s['lake']['uri']}/{s['lake']['reports']}")


def tune_summary(s: dict[str, Any]) -> None:
    out = _console()
    t = s["trials"]
    out.print(f"study {s['study']}: {t['this_command']} trials now, {t['in_study']} in all "
              f"({t['complete']} complete, {t['pruned']} pruned, {t['failed']} failed); storage {s['storage']}")
    table = Table(title=f"{s['metric']}: the best trial's own CV score against rows the search never saw")
    for col in ("score", "value", f"{s['honest']['level']:.0%} interval"):
        table.add_column(col, justify="left" if col == "score" else "right")
    table.add_row(f"best trial #{s['best']['trial']}, its CV on {s['search_rows']} search rows",
                  f"{s['best']['cv_score']:.4f}", "(optimistic: it chose itself)")
    for key, label in (("honest", "tuned, on the held-out rows"), ("untuned", "untuned, on the same rows")):
        table.add_row(f"{label} ({s['held_out_rows']})", f"{s[key]['score']:.4f}",
                      f"{s[key]['low']:.4f} – {s[key]['high']:.4f}")
    out.print(table)
    out.print(f"optimism of the best trial's score: {s['optimism']:+.4f}; best params {json.dumps(s['best']['params'])}")
    out.print(f"tuned experiment: {s['experiment_file']} (trilho run -e {s['experiment_file']}); MLflow run {s['run_id']}")
