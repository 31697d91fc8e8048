"""Every picture the package writes can be read: one style per series of a panel, legends outside the
data areas, zero-byte values not drawn as lines down to the axis, and no text cut off at the edges
(the benchmark report's plots, from the committed report; the demos' charts)."""
import json
import math
import os

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "benchmarks", "results", "cpu-amd-epyc.json")
DEMO = os.path.join(ROOT, "docs", "results", "demo_vse.json")


def _benchmark_figures():
    if not os.path.isfile(REPORT):
        pytest.skip("no committed benchmark report")
    from benchmarks.report import build_figures

    with open(REPORT, encoding="utf-8") as f:
        return build_figures(json.load(f))


def _demo_figures():
    from vsl_ext.harness.demo import demo_figure
    from vsl_ext.harness.demo_shnet import comparison_figure

    with open(DEMO, encoding="utf-8") as f:
        res = json.load(f)
    return [("demo", "demo", demo_figure(res["results"])),
            ("demo-3shnet", "3shnet demo", comparison_figure({m: (res["results"], None) for m in ("vse", "3shnet")}))]


@pytest.fixture(scope="module")
def figures():
    figs = _benchmark_figures() + _demo_figures()
    for _, _, fig in figs:
        fig.canvas.draw()
    yield figs
    for _, _, fig in figs:
        plt.close(fig)


def test_the_report_draws_every_plot_it_links(figures):
    assert {suffix for suffix, _, _ in figures} >= {"time", "speedup", "memory", "large-n", "captions"}


def _labelled_lines(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_no_two_series_of_a_panel_look_alike(figures):
    for suffix, _, fig in figures:
        for ax in fig.axes:
            lines = _labelled_lines(ax)
            styles = {(matplotlib.colors.to_hex(line.get_color()), line.get_marker(), str(line.get_linestyle()))
                      for line in lines}
            assert len(styles) == len(lines), (suffix, ax.get_title(), [line.get_label() for line in lines])


def test_the_memory_plot_has_more_series_than_colours_and_still_tells_them_apart(figures):
    (memory,) = [fig for suffix, _, fig in figures if suffix == "memory"]
    lines = [line for ax in memory.axes for line in _labelled_lines(ax)]
    colours = {matplotlib.colors.to_hex(line.get_color()) for line in lines}
    assert len({line.get_label() for line in lines}) > len(colours)   # colours repeat: markers/lines differ


def test_zero_byte_values_are_not_drawn_as_lines_to_the_axis(figures):
    (memory,) = [fig for suffix, _, fig in figures if suffix == "memory"]
    for ax in memory.axes:
        for line in _labelled_lines(ax):
            if line.get_transform() != ax.transData or line.get_label() == "memory limit":
                continue
            ys = [float(y) for y in line.get_ydata()]
            assert all(y > 0 or math.isnan(y) for y in ys), (ax.get_title(), line.get_label(), ys)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1


def test_legends_cover_no_data_area(figures):
    for suffix, _, fig in figures:
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert legends, suffix
        renderer = fig.canvas.get_renderer()
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                assert not _overlaps(box, ax.get_window_extent(renderer)), (suffix, ax.get_title())


def test_no_text_is_cut_off_at_the_figure_edges(figures):
    for suffix, _, fig in figures:
        renderer = fig.canvas.get_renderer()
        page = fig.bbox
        texts = list(fig.texts) + [t for t in (fig._supxlabel,) if t is not None]
        for ax in fig.axes:
            texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
            for locs, labels, (lo, hi) in ((ax.get_xticks(), ax.get_xticklabels(), sorted(ax.get_xlim())),
                                           (ax.get_yticks(), ax.get_yticklabels(), sorted(ax.get_ylim()))):
                texts += [t for v, t in zip(locs, labels) if lo <= v <= hi]      # the ticks drawn
            if ax.get_legend() is not None:
                texts += list(ax.get_legend().get_texts())
        assert any(t.get_text() for t in texts)
        for t in texts:
            if not t.get_text():
                continue
            box = t.get_window_extent(renderer)
            assert (box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1
                    and box.y1 <= page.y1 + 1), (suffix, t.get_text()[:60])


def test_a_quick_report_draws_no_empty_panel_and_labels_its_ticks_in_units():
    """--quick measures forward+backward at one n: no forward panels, the one n in the middle of its
    axis, no n^3 slope through one point, and the minor ticks of a short log axis read 20 ms, not 2 x 10^-2."""
    if not os.path.isfile(REPORT):
        pytest.skip("no committed benchmark report")
    from benchmarks.report import build_figures

    with open(REPORT, encoding="utf-8") as f:
        report = json.load(f)
    report["records"] = [r for r in report["records"] if r.get("section") != "main"
                         or (r["pass"] == "forward+backward" and r["n"] == 128)]
    figures = {suffix: fig for suffix, _, fig in build_figures(report)}
    try:
        for suffix in ("time", "speedup", "memory"):
            titles = [ax.get_title() for ax in figures[suffix].axes]
            assert titles and all(t.endswith("forward+backward") for t in titles), (suffix, titles)
        time = figures["time"]
        time.canvas.draw()
        for ax in time.axes:
            assert "∝ n³" not in [line.get_label() for line in ax.get_lines()]
            lo, hi = ax.get_xlim()
            assert lo == pytest.approx(64) and hi == pytest.approx(256)
            labels = [t.get_text() for t in ax.get_yticklabels(minor=True) + ax.get_yticklabels() if t.get_text()]
            assert len(labels) >= 3, labels        # a short axis: minor ticks are labelled ...
            assert all(label.endswith("s") and "10^" not in label for label in labels), labels   # ... in seconds
    finally:
        for fig in figures.values():
            plt.close(fig)
