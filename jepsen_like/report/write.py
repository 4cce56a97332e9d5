"""Write a run's pictures and pages: timeline pages, latency.png, rate.png, plot.png, index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..history import Event
from . import index, plots, timeline
from .ops import drawn_ops, faults, time_range


def write_all(out: Path, events: list[Event], results: dict[str, Any]) -> None:
    """Every report of a run into `out`, the run's directory; index.html last, as it lists the rest."""
    ops = drawn_ops(events)
    windows = faults(results.get("nemesis_windows", []), events)
    span = time_range(ops, windows)
    name = results.get("test", {}).get("name", "")
    for old in out.glob("timeline-*.html"):  # a rewrite may need fewer pages than before
        old.unlink()
    for file, page in timeline.render(ops, windows, span, name).items():
        (out / file).write_text(page)
    plots.write(out, ops, windows, span)
    write_index(out, results)


def write_index(out: Path, results: dict[str, Any]) -> None:
    (out / "index.html").write_text(index.render(out, results))
