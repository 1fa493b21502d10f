"""One self-contained HTML page per run, comparison and study: what a person reads. Pure.

The pages are rendered from what the run already wrote (its summary, validation report and
configuration) and its figures, inlined as PNG data; they load nothing from anywhere, so one
file can be mailed, archived or opened offline. ``render_run``, ``render_compare`` and
``render_tune`` share one style (``templates/base.html``).
"""

from __future__ import annotations

import base64
import functools
import struct
from datetime import UTC, datetime
from typing import Any

__all__ = ["png_size", "prepare", "render_compare", "render_monitor", "render_run", "render_tune"]


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height, from its header; (0, 0) for anything else."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _figures(figures: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Each figure as the page inlines it, shown at its size for 110 dpi on a 96-dpi screen."""
    out = {}
    for name, data in figures.items():
        width, height = png_size(data)
        if width and height:
            out[name] = {"data": base64.b64encode(data).decode("ascii"),
                         "width": round(width * 96 / 110), "height": round(height * 96 / 110)}
    return out


@functools.cache
def _environment() -> Any:
    """One environment a process: it keeps each template once compiled (``prepare``)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("trilho.reporting", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.ChainableUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def prepare(page: str = "run.html") -> None:
    """Compile ``page``'s template (and those it includes) ahead, while the caller waits on
    something else: rendering it later costs the rendering alone."""
    for name in (page, "base.html", "macros.html"):  # the page, what it extends and the macros it imports
        _environment().get_template(name)


def _common() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("trilho")
    except PackageNotFoundError:
        found = "(not installed)"
    return {"version": found, "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def render_run(summary: dict[str, Any], validation: dict[str, Any], config: dict[str, Any],
               figures: dict[str, bytes]) -> str:
    """The run's page: its data and validation, results with intervals, baselines, calibration and
    the decision, explanations, metrics by group, the gate's decision (the champion beside the
    challenger) and where everything is."""
    from trilho.evaluation.groups import MIN_ROWS
    from trilho.reporting.summary import primary_metric

    metrics = list(summary["cv"]["metrics"])
    wanted = (primary_metric(summary), "accuracy", "roc_auc_ovr", "rmse", "mae", "r2")
    shown = list(dict.fromkeys(m for m in wanted if m in metrics))
    if summary.get("prediction_interval"):  # a regression's groups carry the interval's coverage
        shown.append("coverage")
    return _environment().get_template("run.html").render(
        s=summary, validation=validation, config=config, figures=_figures(figures), shown_metrics=shown,
        min_group_rows=MIN_ROWS, **_common())


def render_compare(summary: dict[str, Any], table: list[dict[str, Any]], figures: dict[str, bytes]) -> str:
    """A comparison's page: every candidate against the baseline on the same folds."""
    return _environment().get_template("compare.html").render(
        s=summary, table=table, figures=_figures(figures), **_common())


def render_tune(summary: dict[str, Any], figures: dict[str, bytes]) -> str:
    """A study's page: the best trial, its score on rows the search never saw, and the search's figures."""
    return _environment().get_template("tune.html").render(s=summary, figures=_figures(figures), **_common())


def render_monitor(report: dict[str, Any], figures: dict[str, bytes]) -> str:
    """A monitoring report's page: what crossed a threshold, inputs against training, live metrics."""
    return _environment().get_template("monitor.html").render(r=report, figures=_figures(figures), **_common())

