"""The run's figures: drawn as PNGs, with nothing drawn over anything else."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from trilho.reporting import plots


def _summary() -> dict:
    # bounds as a short run gives them: the headline interval reaches the metric's ceiling
    intervals = {"percentile": (0.9266, 0.9889), "naive_t": (0.9323, 0.9963), "fold_bootstrap": (0.9419, 0.9814),
                 "corrected_t": (0.9163, 1.0), "row_bootstrap": (0.9411, 0.9849)}
    return {"f1_macro": {"mean": 0.9643, "intervals": intervals}}


def test_the_intervals_legend_covers_no_bar_bound_or_label(tmp_path):
    fig = plots.intervals_figure(_summary(), "f1_macro")
    fig.savefig(tmp_path / "intervals.png", dpi=110)  # the PNG the run keeps
    assert (tmp_path / "intervals.png").stat().st_size > 0
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    legends = [*fig.legends, *([ax.get_legend()] if ax.get_legend() else [])]
    assert len(legends) == 1 and "fold mean 0.964" in legends[0].get_texts()[0].get_text()
    box = legends[0].get_window_extent(renderer)
    # outside the plotting area: no bar or mean line can be under it
    assert not box.overlaps(ax.get_window_extent(renderer))
    texts = [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible() and t not in legends[0].get_texts()]
    shown = {t.get_text() for t in texts}
    assert {"[0.927, 0.989]", "[0.916, 1.000]", "percentile", "corrected_t"} <= shown
    covered = [t.get_text() for t in texts if t.get_window_extent(renderer).overlaps(box)]
    assert not covered, f"the legend covers {covered}"
    # each interval's bounds inside the figure, none over another's
    bounds = [t.get_window_extent(renderer) for t in texts if t.get_text().startswith("[")]
    assert len(bounds) == 5 and all(fig.bbox.contains(b.x1, b.y1) and fig.bbox.contains(b.x0, b.y0) for b in bounds)
    assert not any(a.overlaps(b) for i, a in enumerate(bounds) for b in bounds[i + 1:])
