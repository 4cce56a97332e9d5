"""The run's pages read at a glance: timeline.html, latency.png, rate.png, plot.png and index.html, from a
synthetic history (tests/report_fixtures.py). No cluster, no browser: the browser looks in
test_report_browser.py."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from jepsen_like.history import FAIL, INFO, OK
from jepsen_like.report import columns, index, plots, timeline
from jepsen_like.report.ops import drawn_ops, faults, time_range
from jepsen_like.report.style import OP_COLOURS, OUTCOME_FILL, VERDICT_COLOURS, op_colour
from tests import report_fixtures as rf


@pytest.fixture(scope="module")
def run() -> tuple:
    events = rf.history()
    ops = drawn_ops(events)
    fs = faults(rf.windows(events), events)
    return events, ops, fs, time_range(ops, fs)


def page(run: tuple) -> str:
    _, ops, fs, span = run
    pages = timeline.render(ops, fs, span, "synthetic")
    assert list(pages) == ["timeline.html"]
    return pages["timeline.html"]


def test_the_timeline_opens_on_the_first_operation(run: tuple) -> None:
    """The old page put 2,486 px of nothing above the first box (its clock starts before the cluster)."""
    tops = [float(t) for t in re.findall(r"class='op [a-z]+' data-op=\d+ title=\"[^\"]*\" style='top:(\d+)px", page(run))]
    assert tops and min(tops) < 60, min(tops)


def test_the_timeline_has_a_time_axis_in_seconds(run: tuple) -> None:
    html = page(run)
    ticks = [float(t) for t in re.findall(r"class='tick[^']*' style='top:\d+px;width:\d+px'><span>([\d.]+) s<", html)]
    assert len(ticks) >= 5 and ticks == sorted(ticks), ticks
    assert ticks[0] >= 3.9 and any(t == int(t) for t in ticks), ticks  # seconds on the history's clock
    assert "position:sticky" in html  # the column names stay on screen


def test_columns_are_clients_grouped_by_region(run: tuple) -> None:
    _, ops, _, _ = run
    lay = columns.layout(ops)
    assert lay.slots == rf.SLOTS
    labels = {(c.group, c.label) for c in lay.columns}
    assert {("r1", "client 0"), ("r1", "client 3"), ("r2", "client 1"), ("r3", "client 5")} <= labels
    assert ("after heal", "final reads") in labels
    assert not any(re.fullmatch(r"p?\d+", c.label) for c in lay.columns)  # no bare process numbers
    # A slot's replacement processes (after an info) share its column: slot + 6k is client slot.
    for d in ops:
        p = d.op.process
        if p < columns.FINAL_PROCESS_BASE:
            assert lay.columns[lay.column_of[d.op.id]].label == f"client {p % rf.SLOTS}"
    html = page(run)
    assert "r1 · api-r1" in html and "<b>client 3</b>" in html and "<b>nemesis</b>" in html


def test_every_operation_is_a_box_coloured_by_outcome_with_its_details(run: tuple) -> None:
    _, ops, _, _ = run
    html = page(run)
    drawn = Counter(re.findall(r"class='op (ok|fail|info)'", html))
    assert drawn == Counter(d.outcome for d in ops)
    assert drawn[INFO] and drawn[FAIL]
    for outcome in (OK, FAIL):
        assert OUTCOME_FILL[outcome] in html
    first = re.search(r"class='op [a-z]+' data-op=\d+ title=\"([^\"]*)\"", html)
    assert first and "process" in first.group(1) and "invoked" in first.group(1) and " s (" in first.group(1)
    assert f"border-left-color:{op_colour('write')}" in html  # the operation's colour, as in the plots


def test_fault_windows_are_numbered_bands_across_the_columns(run: tuple) -> None:
    html = page(run)
    assert html.count("class=band") == 2
    assert "<b>1 partition</b>" in html and "<b>2 kill</b>" in html and "targets etcd2" in html


def test_a_long_history_is_cut_into_pages_that_say_so(run: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    _, ops, fs, span = run
    monkeypatch.setattr(timeline, "PAGE_OPS", 120)
    pages = timeline.render(ops, fs, span, "synthetic")
    assert len(pages) >= 3 and "timeline-2.html" in pages
    ids = set()
    for name, html in pages.items():
        assert re.search(r"page \d+ of \d+: [\d.]+–[\d.]+ s", html), name
        ids |= {int(i) for i in re.findall(r"data-op=(\d+)", html)}
    assert ids == {d.op.id for d in ops}  # every operation on some page (one spanning a cut on both)
    monkeypatch.setattr(timeline, "MAX_PAGES", 2)
    capped = timeline.render(ops, fs, span, "synthetic")
    assert len(capped) == 2 and "are not drawn" in capped["timeline.html"]


def _counts(fig: object) -> Counter:
    """(gid, offsets) of every scatter in a figure: what was plotted, by operation and outcome."""
    out: Counter = Counter()
    for ax in fig.axes:  # type: ignore[attr-defined]
        for c in ax.collections:
            if c.get_gid():
                out[c.get_gid()] += len(c.get_offsets())
    return out


def test_latency_plots_every_outcome_coloured_by_operation(run: tuple) -> None:
    _, ops, fs, span = run
    fig = plots.latency_figure(ops, fs, span)
    want = Counter(f"{d.f} {d.outcome}" for d in ops)
    assert _counts(fig) == want  # info writes (504s, timeouts) included: they were left out before
    assert want["write info"] > 0 and want["read fail"] > 0
    for c in fig.axes[0].collections:
        if c.get_gid():
            f, outcome = c.get_gid().split()
            colour = c.get_edgecolor()[0] if outcome == FAIL else c.get_facecolor()[0]
            assert _hex(colour) == op_colour(f), c.get_gid()
            if outcome == FAIL:
                assert len(c.get_facecolor()) == 0 or c.get_facecolor()[0][3] == 0  # hollow


def test_rate_draws_fail_and_info_above_ok_in_the_same_colours(run: tuple) -> None:
    _, ops, fs, span = run
    fig = plots.rate_figure(ops, fs, span)
    steps = {a.get_gid(): a for ax in fig.axes for a in ax.patches if a.get_gid()}
    assert {"read ok", "read fail", "write info"} <= set(steps)
    assert steps["read fail"].zorder > steps["read ok"].zorder
    for gid, step in steps.items():
        assert _hex(step.get_edgecolor()) == op_colour(gid.split()[0])
    assert (steps["read ok"].get_linestyle(), steps["read fail"].get_linestyle(),
            steps["write info"].get_linestyle()) == ("-", "--", ":")
    assert fig.axes[1].get_ylabel() == "fail, info / s"  # their own scale: a handful still shows


def test_no_operation_takes_an_outcome_colour() -> None:
    outcome_like = {"#d62728", "#ff7f0e"}  # matplotlib's red and orange: fail and info elsewhere
    assert not outcome_like & set(OP_COLOURS.values())


def test_the_plots_share_one_time_axis_and_margins(run: tuple) -> None:
    _, ops, fs, span = run
    figs = [plots.latency_figure(ops, fs, span), plots.rate_figure(ops, fs, span), plots.combined_figure(ops, fs, span)]
    assert {tuple(ax.get_xlim()) for fig in figs for ax in fig.axes} == {(span.start_s, span.end_s)}
    assert len({fig.get_figwidth() for fig in figs}) == 1
    assert len({(fig.subplotpars.left, fig.subplotpars.right) for fig in figs}) == 1


def test_plot_text_is_readable_and_faults_are_in_the_legend(run: tuple) -> None:
    from matplotlib.text import Text

    _, ops, fs, span = run
    for fig in (plots.latency_figure(ops, fs, span), plots.rate_figure(ops, fs, span)):
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()]
        assert min(sizes) >= 10, min(sizes)  # points, at 100 dpi
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "partition: 1" in legend and "kill: 2" in legend
        assert "info (outcome unknown)" in legend and any(t.startswith("write ") for t in legend)


def test_the_index_shows_verdicts_plots_and_files(tmp_path: Path) -> None:
    run_dir = rf.write_run(tmp_path, verdict="illegal")
    html = (run_dir / "index.html").read_text()
    assert f"background:{VERDICT_COLOURS['illegal']}'>INVALID<" in html
    assert f"background:{VERDICT_COLOURS['ok']}'>valid<" in html  # the linearizability checker
    assert "stale-read" in html and "overwritten value 7" in html  # the first violations
    assert "3 watchers, 9 events" in html  # each checker's one line
    for link in ("href=timeline.html", "src=plot.png", "href=latency.png", "href=rate.png", "href=history.jsonl",
                 "href=results.json", "href='cluster/logs/etcd1.log'"):
        assert link in html, link
    assert "partition, kill" in html and "3 etcd members, 3 regions" in html and "targets etcd2" in html
    for name in ("timeline.html", "latency.png", "rate.png", "plot.png"):
        assert (run_dir / name).stat().st_size > 0


def test_an_index_for_a_run_without_pictures(tmp_path: Path) -> None:
    events = rf.history()
    html = index.render(tmp_path, rf.results(events, tmp_path, verdict="ok"))
    assert ">valid<" in html and "no timeline or plots" in html and "INVALID" not in html


def _hex(rgba: object) -> str:
    from matplotlib.colors import to_hex

    return to_hex(rgba)  # type: ignore[arg-type]
