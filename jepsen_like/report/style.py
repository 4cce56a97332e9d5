"""One visual language for every report: what a colour, a fill or a band means is decided here.

- Hue is the operation (`f`), the same in latency.png, rate.png and the
  timeline (a box's left border). No operation is red or orange: those
  are the outcomes' in the timeline, so a colour never means two things.
- The outcome is the fill: ok filled, fail hollow (a dashed box in the
  timeline), info (outcome unknown: a 504, a timeout) an `x` (an orange
  striped box). The timeline also tints boxes by outcome, Jepsen's way.
- Faults are light bands behind everything, one tint per fault family,
  named in each plot's legend and on the band in the timeline.
"""

from __future__ import annotations

from ..history import FAIL, INFO, OK

# tab10's hues without its red, orange and grey (kept for outcomes and the axes).
OP_COLOURS = {"read": "#1f77b4", "write": "#9467bd", "cas": "#8c564b", "post": "#2ca02c",
              "read-entity": "#17becf", "watch": "#7f7f7f"}
_SPARE = ("#bcbd22", "#e377c2", "#393b79", "#637939", "#843c39", "#5254a3")

# Timeline fills by outcome: Jepsen's palette, which a Jepsen reader already knows.
OUTCOME_FILL = {OK: "#d7e9fb", FAIL: "#fcd5e8", INFO: "#ffcf85"}
OUTCOME_WORDS = {OK: "ok", FAIL: "fail (did not happen)", INFO: "info (outcome unknown)"}
# Plot markers by outcome: (marker, filled).
OUTCOME_MARKER = {OK: ("o", True), FAIL: ("o", False), INFO: ("x", True)}
OUTCOME_LINE = {OK: "-", FAIL: "--", INFO: ":"}

FAULT_COLOURS = {"partition": "#e4d7f5", "kill": "#f2d6c9", "pause": "#d2ecf4", "clock": "#f4efc4",
                 "net": "#d6efd6"}
_SPARE_FAULTS = ("#e8e8e8", "#f0dcea", "#dde4f0")

# Verdicts on the index and store pages.
VERDICT_COLOURS = {"ok": "#1a7f37", "illegal": "#cf222e", "unknown": "#9a6700", None: "#57606a"}
VERDICT_WORDS = {"ok": "valid", "illegal": "INVALID", "unknown": "unknown", None: "no verdict"}

# Plots: 10 pt or more at 100 dpi, and the same width and margins for every figure, so that
# latency.png and rate.png line up when stacked (their x-axes are the same range, too).
FONT_PT = 11
DPI = 100
FIG_WIDTH_IN = 13.0
MARGIN_LEFT, MARGIN_RIGHT = 0.07, 0.78   # the legend lives right of the axes, never over the points


def op_colour(f: str) -> str:
    if f in OP_COLOURS:
        return OP_COLOURS[f]
    return _SPARE[sum(map(ord, f)) % len(_SPARE)]  # stable across runs, not by order of appearance


def fault_colour(name: str) -> str:
    if name in FAULT_COLOURS:
        return FAULT_COLOURS[name]
    return _SPARE_FAULTS[sum(map(ord, name)) % len(_SPARE_FAULTS)]
