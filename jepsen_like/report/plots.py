"""latency.png, rate.png and plot.png (both, stacked on one time axis), in the language of style.py.

Every figure has the same width, margins and x range (the run's seconds,
style.FIG_WIDTH_IN and MARGIN_*), so latency.png and rate.png line up when
stacked. Colour is the operation, fill the outcome (ok filled, fail hollow,
info `x`), every outcome is drawn (an info at the moment the client gave up
on it), and the fault windows are bands named in the legend and numbered as
in the timeline. Watches are left out: each lasts the whole run.

matplotlib's Agg backend: no display needed. The figure builders return the
Figure so tests can count what was drawn.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..history import FAIL, INFO, OK
from .ops import Drawn, Fault, TimeRange
from .style import (DPI, FIG_WIDTH_IN, FONT_PT, MARGIN_LEFT, MARGIN_RIGHT, OUTCOME_LINE, OUTCOME_MARKER,
                    OUTCOME_WORDS, fault_colour, op_colour)

OUTCOMES = (OK, FAIL, INFO)
SKIPPED = {"watch"}
MAX_BINS = 300          # rate bins: 1 s each, wider when a run is longer than this many seconds


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plotted(ops: list[Drawn]) -> list[Drawn]:
    return [d for d in ops if d.f not in SKIPPED]


def latency_figure(ops: list[Drawn], faults: list[Fault], span: TimeRange) -> Any:
    plt = _pyplot()
    with plt.rc_context({"font.size": FONT_PT}):
        fig = plt.figure(figsize=(FIG_WIDTH_IN, 5.2), dpi=DPI)
        ax = fig.add_subplot(1, 1, 1)
        fig.subplots_adjust(left=MARGIN_LEFT, right=MARGIN_RIGHT, top=0.90, bottom=0.12)
        latency_panel(ax, ops, faults, span)
        ax.set_xlabel("time since the test started (s)")
        ax.set_title(_title("latency of each operation, at its invocation", ops))
        legend(fig, ops, faults, lines=False)
    return fig


def rate_figure(ops: list[Drawn], faults: list[Fault], span: TimeRange) -> Any:
    plt = _pyplot()
    with plt.rc_context({"font.size": FONT_PT}):
        fig = plt.figure(figsize=(FIG_WIDTH_IN, 5.2), dpi=DPI)
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        fig.subplots_adjust(left=MARGIN_LEFT, right=MARGIN_RIGHT, top=0.90, bottom=0.12, hspace=0.12)
        rate_panels(top, bottom, ops, faults, span)
        bottom.set_xlabel("time since the test started (s)")
        top.set_title(_title("throughput: completions per second", ops))
        legend(fig, ops, faults, lines=True)
    return fig


def combined_figure(ops: list[Drawn], faults: list[Fault], span: TimeRange) -> Any:
    plt = _pyplot()
    with plt.rc_context({"font.size": FONT_PT}):
        fig = plt.figure(figsize=(FIG_WIDTH_IN, 9.5), dpi=DPI)
        lat, ok, bad = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [5, 3, 2]})
        fig.subplots_adjust(left=MARGIN_LEFT, right=MARGIN_RIGHT, top=0.95, bottom=0.07, hspace=0.10)
        latency_panel(lat, ops, faults, span)
        rate_panels(ok, bad, ops, faults, span, numbers=False)
        bad.set_xlabel("time since the test started (s)")
        lat.set_title(_title("latency (top) and throughput (below) on one time axis", ops))
        legend(fig, ops, faults, lines=True)
    return fig


def write(out: Path, ops: list[Drawn], faults: list[Fault], span: TimeRange) -> list[str]:
    """Write latency.png, rate.png and plot.png; return their names."""
    plt = _pyplot()
    names = []
    for name, build in (("latency.png", latency_figure), ("rate.png", rate_figure), ("plot.png", combined_figure)):
        fig = build(ops, faults, span)
        fig.savefig(out / name, dpi=DPI)
        plt.close(fig)
        names.append(name)
    return names


def latency_panel(ax: Any, ops: list[Drawn], faults: list[Fault], span: TimeRange) -> None:
    bands(ax, faults, numbers=True)
    shown = plotted(ops)
    for f in sorted({d.f for d in shown}):
        colour = op_colour(f)
        for outcome in OUTCOMES:
            ds = [d for d in shown if d.f == f and d.outcome == outcome]
            if not ds:
                continue
            marker, filled = OUTCOME_MARKER[outcome]
            style: dict[str, Any] = ({"color": colour, "s": 14, "alpha": 0.55, "linewidths": 0} if outcome == OK
                                     else {"facecolors": "none", "edgecolors": colour, "s": 42, "linewidths": 1.4}
                                     if not filled else {"color": colour, "s": 55, "linewidths": 1.8})
            ax.scatter([d.start_s for d in ds], [max(0.1, d.latency_ms) for d in ds], marker=marker,
                       zorder={OK: 2, FAIL: 4, INFO: 5}[outcome], label=f"{f} {outcome}", gid=f"{f} {outcome}",
                       **style)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_xlim(span.start_s, span.end_s)
    ax.grid(True, which="major", axis="both", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)


def rate_panels(ok_ax: Any, bad_ax: Any, ops: list[Drawn], faults: list[Fault], span: TimeRange,
                numbers: bool = True) -> None:
    """ok completions per second above; fail and info below, on their own scale so a handful still shows."""
    width = max(1.0, math.ceil(span.seconds / MAX_BINS))
    bins = max(1, int(math.ceil(span.seconds / width)))
    edges = [span.start_s + i * width for i in range(bins + 1)]
    shown = plotted(ops)
    for ax, outcomes in ((ok_ax, (OK,)), (bad_ax, (FAIL, INFO))):
        bands(ax, faults, numbers=numbers and ax is ok_ax)
        for f in sorted({d.f for d in shown}):
            for outcome in outcomes:
                counts = [0] * bins
                for d in shown:
                    if d.f == f and d.outcome == outcome:
                        counts[min(bins - 1, max(0, int((d.end_s - span.start_s) // width)))] += 1
                if not any(counts):
                    continue
                rates = [c / width for c in counts]
                # fail and info are rare: seconds without any are gaps, not a line along zero hiding another
                drawn = rates if outcome == OK else [r if r else math.nan for r in rates]
                ax.stairs(drawn, edges, color=op_colour(f), linestyle=OUTCOME_LINE[outcome],
                          linewidth=2.0 if outcome != OK else 1.6, zorder=3 if outcome != OK else 2,
                          label=f"{f} {outcome}", gid=f"{f} {outcome}")
                if outcome != OK:  # a marker on every second that had one, so a single failure shows
                    marker, filled = OUTCOME_MARKER[outcome]
                    xs = [edges[i] + width / 2 for i, c in enumerate(counts) if c]
                    ys = [rates[i] for i, c in enumerate(counts) if c]
                    ax.scatter(xs, ys, marker=marker, s=48, zorder=4, linewidths=1.6,
                               **({"color": op_colour(f)} if filled else
                                  {"facecolors": "white", "edgecolors": op_colour(f)}))
        ax.set_xlim(span.start_s, span.end_s)
        ax.set_ylim(bottom=0)
        ax.grid(True, axis="both", color="0.88", linewidth=0.6)
        ax.set_axisbelow(True)
    ok_ax.set_ylabel("ok / s")
    bad_ax.set_ylabel("fail, info / s")
    if not any(d.outcome != OK for d in shown):
        bad_ax.text(0.5, 0.5, "no fail or info operations", transform=bad_ax.transAxes, ha="center", va="center",
                    color="0.35")
        bad_ax.set_ylim(0, 1)


def bands(ax: Any, faults: list[Fault], numbers: bool) -> None:
    for f in faults:
        ax.axvspan(f.start_s, f.end_s, color=fault_colour(f.name), zorder=0, linewidth=0)
        if numbers:
            ax.text(f.start_s, 0.985, f" {f.number}", transform=ax.get_xaxis_transform(), va="top", ha="left",
                    fontsize=FONT_PT - 1, color="0.2", fontweight="bold", zorder=6)


def legend(fig: Any, ops: list[Drawn], faults: list[Fault], lines: bool) -> Any:
    """One legend right of the axes: operations by colour, outcomes by marker (and line), faults by band."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(visible=False, label="operation (colour)")]
    counts = {}
    for d in plotted(ops):
        counts.setdefault(d.f, {o: 0 for o in OUTCOMES})[d.outcome] += 1
    for f in sorted(counts):
        c = counts[f]
        handles.append(Line2D([], [], color=op_colour(f), marker="s", linestyle="", markersize=9,
                              label=f"{f}  {c[OK]}/{c[FAIL]}/{c[INFO]}"))
    handles.append(Patch(visible=False, label="outcome (ok/fail/info)"))
    for o in OUTCOMES:
        marker, filled = OUTCOME_MARKER[o]
        handles.append(Line2D([], [], color="0.2", marker=marker, markersize=8,
                              markerfacecolor="0.2" if filled else "none", markeredgewidth=1.5,
                              linestyle=OUTCOME_LINE[o] if lines else "", label=OUTCOME_WORDS[o]))
    if faults:
        handles.append(Patch(visible=False, label="fault (numbered band)"))
        seen: dict[str, list[int]] = {}
        for f in faults:
            seen.setdefault(f.name, []).append(f.number)
        for name, numbers in seen.items():
            handles.append(Patch(color=fault_colour(name), label=f"{name}: {', '.join(map(str, numbers))}"))
    box = fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(MARGIN_RIGHT + 0.01, 0.92),
                     fontsize=FONT_PT - 1, frameon=False, handlelength=2.2)
    for handle, text in zip(box.legend_handles, box.get_texts()):
        if not handle.get_visible():
            text.set_fontweight("bold")
    return box


def _title(what: str, ops: list[Drawn]) -> str:
    watches = len(ops) - len(plotted(ops))
    return what + (f" ({watches} watch streams not drawn: each lasts the run)" if watches else "")
