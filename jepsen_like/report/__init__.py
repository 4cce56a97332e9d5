"""What a run leaves behind besides its history: results.json's entries, the summary, and the pages.

- summary.py: each checker's results.json entry and the text `run` prints
- ops.py, columns.py, style.py: what the pictures draw and how (one palette)
- timeline.py (timeline.html), plots.py (latency.png, rate.png, plot.png),
  index.py (index.html, the run at a glance), write.py (all of them);
  screenshot.py: a page in headless chromium, for the README
"""

from __future__ import annotations

from .summary import MAX_VIOLATIONS, SHOWN, detail, result_json, summary
from .write import write_all, write_index

__all__ = ["MAX_VIOLATIONS", "SHOWN", "detail", "result_json", "summary", "write_all", "write_index"]
