"""timeline.html: Jepsen's timeline, with a time axis, named columns and pages.

One column per client (grouped by region, see columns.py), time running
down in seconds on the history's clock, one box per operation from its
invocation to its completion: tinted by outcome, its left border the
operation's colour (style.py), and a hover title with everything the
history says about it. Fault windows are numbered bands across every
column, and a nemesis column on the left says what each did.

Static HTML with inline CSS: no script, nothing fetched. A browser slows
down past a few thousand absolutely positioned boxes, so a long history is
cut into pages of at most PAGE_OPS operations by time (timeline.html,
timeline-2.html, ...), each saying which seconds and how many operations it
holds; past MAX_PAGES the page says what was left out.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from typing import Any

from ..history import FAIL, INFO, OK
from .columns import Layout, layout
from .ops import Drawn, Fault, TimeRange
from .style import OUTCOME_FILL, OUTCOME_WORDS, fault_colour, op_colour

PAGE_OPS = 4000
MAX_PAGES = 40
COLUMN_PX = 74
AXIS_PX = 52        # the time axis, left of the nemesis column
NEMESIS_PX = 104
HEAD_PX = 58        # the sticky header: group names above column names
MAX_PAGE_PX = 16000  # the scale shrinks so a page is at most this tall, but never below MIN_PX_PER_S
MAX_PX_PER_S, MIN_PX_PER_S = 400.0, 40.0
MIN_BOX_PX = 3
TEXT_CHARS = 300     # of a value in a hover title


@dataclass(frozen=True)
class Page:
    number: int           # 1-based
    start_s: float
    end_s: float
    ops: list[Drawn]      # every operation overlapping [start_s, end_s), drawn clipped to it

    @property
    def file(self) -> str:
        return page_file(self.number)


def page_file(number: int) -> str:
    return "timeline.html" if number == 1 else f"timeline-{number}.html"


def pages(ops: list[Drawn], span: TimeRange) -> tuple[list[Page], int]:
    """Pages cut at whole seconds, each with at most about PAGE_OPS invocations; and how many were left out.

    A page holds every operation overlapping its seconds, so one that spans a cut
    (a watch, a slow write) shows on both pages, clipped.
    """
    cuts = [span.start_s]
    on_page: list[float] = []
    for d in sorted(ops, key=lambda d: d.start_s):
        on_page.append(d.start_s)
        if len(on_page) > PAGE_OPS and (cut := float(math.floor(d.start_s))) > cuts[-1]:
            cuts.append(cut)
            on_page = [t for t in on_page if t >= cut]
    cuts.append(span.end_s)
    if ops:  # the first page opens on the first operation: a whole second of nothing was the blank screen
        cuts[0] = max(cuts[0], round(min(d.start_s for d in ops) - 0.05, 2))
    windows = list(zip(cuts, cuts[1:]))[:MAX_PAGES]
    last = len(windows) - 1
    out = [Page(i + 1, s, e, [d for d in ops if (s <= d.start_s < e or (i == last and d.start_s == e))
                              or (d.start_s < s < d.end_s)])
           for i, (s, e) in enumerate(windows)]
    drawn = {d.op.id for p in out for d in p.ops}
    return out, sum(1 for d in ops if d.op.id not in drawn)


def render(ops: list[Drawn], faults: list[Fault], span: TimeRange, title: str) -> dict[str, str]:
    """File name -> HTML of every timeline page."""
    lay = layout(ops)
    all_pages, left_out = pages(ops, span)
    return {p.file: _page(p, all_pages, lay, faults, title, len(ops), left_out) for p in all_pages}


def _page(page: Page, all_pages: list[Page], lay: Layout, faults: list[Fault], title: str, total: int,
          left_out: int) -> str:
    secs = page.end_s - page.start_s
    px = max(MIN_PX_PER_S, min(MAX_PX_PER_S, MAX_PAGE_PX / max(secs, 1e-9)))

    def y(t: float) -> float:
        return (min(max(t, page.start_s), page.end_s) - page.start_s) * px

    width = AXIS_PX + NEMESIS_PX + COLUMN_PX * len(lay.columns)
    height = secs * px
    out = [_head(title, page, all_pages, total, left_out, lay)]
    out.append(f"<div class=grid style='width:{width}px'>")
    out.append(_header(lay, width))
    out.append(f"<div class=body style='height:{height:.0f}px'>")
    step = _tick_step(px)
    for i in range(math.ceil(page.start_s / step), math.floor(page.end_s / step) + 1):
        t = round(i * step, 3)
        whole = " whole" if t == int(t) else ""
        out.append(f"<div class='tick{whole}' style='top:{y(t):.0f}px;width:{width}px'><span>{t:g} s</span></div>")
    for f in faults:
        if f.end_s < page.start_s or f.start_s > page.end_s:
            continue
        top, h = y(f.start_s), max(2.0, y(f.end_s) - y(f.start_s))
        tip = _attr(f"fault {f.number}: {f.name} {f.start_s:.2f} s – {f.end_s:.2f} s\n{f.detail}")
        out.append(f"<div class=band title=\"{tip}\" style='top:{top:.0f}px;height:{h:.0f}px;"
                   f"left:{AXIS_PX}px;width:{width - AXIS_PX}px;background:{fault_colour(f.name)}'></div>")
        out.append(f"<div class=fault title=\"{tip}\" style='top:{top:.0f}px;height:{h:.0f}px;left:{AXIS_PX + 2}px;"
                   f"width:{NEMESIS_PX - 6}px'><b>{f.number} {html.escape(f.name)}</b><br>"
                   f"{html.escape(f.detail[:120])}</div>")
    for d in page.ops:
        out.append(_box(d, lay, y))
    out.append("</div></div>")
    out.append(_nav(page, all_pages))
    return "\n".join(out)


def _tick_step(px_per_s: float) -> float:
    """Seconds between labelled ticks, at least 60 px apart."""
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300):
        if step * px_per_s >= 60:
            return float(step)
    return 600.0


def _box(d: Drawn, lay: Layout, y: Any) -> str:
    col = lay.column_of[d.op.id]
    top = y(d.start_s)
    h = max(MIN_BOX_PX, y(d.end_s) - top)
    cls = {OK: "ok", FAIL: "fail", INFO: "info"}.get(d.outcome, "info")
    text = html.escape(d.f) if h >= 13 else ""
    return (f"<div class='op {cls}' data-op={d.op.id} title=\"{_attr(_tip(d, lay))}\" style='top:{top:.0f}px;height:{h:.0f}px;"
            f"left:{AXIS_PX + NEMESIS_PX + col * COLUMN_PX}px;border-left-color:{op_colour(d.f)}'>{text}</div>")


def _tip(d: Drawn, lay: Layout) -> str:
    op = d.op
    col = lay.columns[lay.column_of[op.id]]
    lines = [f"{col.label} ({col.group}) · process {op.process}",
             f"{op.f} {'' if op.key is None else op.key} {_short(op.value)}".rstrip()]
    if d.outcome == OK:
        lines.append(f"→ ok {_short(op.output)}")
    else:
        lines.append(f"→ {OUTCOME_WORDS[d.outcome]}")
    lines.append(f"invoked {d.start_s:.3f} s, {'completed' if d.completed else 'never completed by'} "
                 f"{d.end_s:.3f} s ({d.latency_ms:.1f} ms)")
    for name in ("error", "node", "region", "consistency", "revision", "via"):
        v = op.get(name)
        if v is not None:
            lines.append(f"{name}: {_short(v)}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…"


def _attr(text: str) -> str:
    return html.escape(text, quote=True).replace("\n", "&#10;")


def _header(lay: Layout, width: int) -> str:
    out = [f"<div class=head style='width:{width}px'>",
           f"<div class=colhead style='left:0;width:{AXIS_PX - 4}px'><b>time</b><br>(s)</div>",
           f"<div class=colhead style='left:{AXIS_PX}px;width:{NEMESIS_PX - 4}px'><b>nemesis</b><br>faults</div>"]
    groups: list[tuple[str, int, int]] = []
    for i, c in enumerate(lay.columns):
        if groups and groups[-1][0] == c.group:
            groups[-1] = (c.group, groups[-1][1], i)
        else:
            groups.append((c.group, i, i))
    for name, first, last in groups:
        left = AXIS_PX + NEMESIS_PX + first * COLUMN_PX
        words = f"{name} · api-{name}" if name.startswith("r") and name[1:].isdigit() else name
        out.append(f"<div class=group style='left:{left}px;width:{(last - first + 1) * COLUMN_PX - 4}px'>"
                   f"{html.escape(words)}</div>")
    for i, c in enumerate(lay.columns):
        left = AXIS_PX + NEMESIS_PX + i * COLUMN_PX
        out.append(f"<div class=colhead title=\"{_attr(c.label + ' · ' + c.detail)}\" style='left:{left}px;"
                   f"width:{COLUMN_PX - 4}px;top:20px'><b>{html.escape(c.label)}</b><br>{html.escape(c.detail)}</div>")
    out.append("</div>")
    return "\n".join(out)


def _head(title: str, page: Page, all_pages: list[Page], total: int, left_out: int, lay: Layout) -> str:
    legend = " ".join(f"<span class='key {k}'>{html.escape(w)}</span>" for k, w in
                      (("ok", "ok"), ("fail", "fail: did not happen"), ("info", "info: outcome unknown")))
    ops_key = " ".join(f"<span class=opkey style='border-left-color:{op_colour(f)}'>{html.escape(f)}</span>"
                       for f in sorted({d.f for d in page.ops}))
    where = (f"page {page.number} of {len(all_pages)}: {page.start_s:g}–{page.end_s:g} s, "
             f"{len(page.ops)} of {total} operations (at most {PAGE_OPS} begin on a page)" if len(all_pages) > 1
             else f"{total} operations, {page.start_s:.1f}–{page.end_s:.1f} s")
    cut = (f"<p class=warn>{left_out} operations after {all_pages[-1].end_s:g} s are not drawn "
           f"(at most {MAX_PAGES} pages); history.jsonl has them all.</p>" if left_out else "")
    slots = f"{lay.slots} client slots" if lay.slots else "one column per process"
    return f"""<!doctype html><meta charset=utf-8><title>timeline {html.escape(title)}</title>
<style>{CSS}</style>
<div class=top><b>{html.escape(title)}</b> · timeline · {where} · {slots} · <a href=index.html>run index</a>
{_nav_links(page, all_pages)}<br>
outcome: {legend} · operation (left border): {ops_key} · numbered bands: faults · hover a box for details</div>
{cut}"""


def _nav_links(page: Page, all_pages: list[Page]) -> str:
    if len(all_pages) == 1:
        return ""
    links = [f"<a href={p.file}>{p.number}</a>" if p.number != page.number else f"<b>{p.number}</b>"
             for p in all_pages]
    return " · pages " + " ".join(links)


def _nav(page: Page, all_pages: list[Page]) -> str:
    if page.number == len(all_pages):
        return ""
    nxt = all_pages[page.number]
    return f"<p class=next><a href={nxt.file}>next page: {nxt.start_s:g}–{nxt.end_s:g} s →</a></p>"


CSS = f"""
body{{font:12px/1.3 system-ui,sans-serif;margin:0;color:#222}}
.top{{padding:6px 8px;background:#f6f8fa;border-bottom:1px solid #ddd}}
.warn{{margin:4px 8px;color:#9a6700;font-weight:bold}}
.grid{{position:relative}}
.head{{position:sticky;top:0;z-index:10;height:{HEAD_PX}px;background:#fff;border-bottom:1px solid #bbb;
  box-shadow:0 2px 3px #0001}}
.group{{position:absolute;top:2px;height:16px;background:#eaeef2;border-radius:3px;text-align:center;
  font-weight:bold;overflow:hidden;white-space:nowrap}}
.colhead{{position:absolute;top:2px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;font-size:11px}}
.body{{position:relative}}
.tick{{position:absolute;left:0;border-top:1px solid #0000001a;height:0;z-index:1}}
.tick.whole{{border-top-color:#0000004d}}
.tick span{{position:absolute;left:4px;top:-1px;font-size:11px;color:#555}}
.band{{position:absolute;opacity:.75;border-top:1px solid #0003;z-index:0}}
.fault{{position:absolute;z-index:2;overflow:hidden;font-size:11px;padding:1px 2px;border-left:3px solid #888;
  background:#ffffffb0;box-sizing:border-box}}
.op{{position:absolute;width:{COLUMN_PX - 6}px;box-sizing:border-box;overflow:hidden;white-space:nowrap;z-index:3;
  border:1px solid #0004;border-left-width:4px;border-left-style:solid;padding:0 2px;font-size:11px;line-height:12px}}
.op:hover{{outline:2px solid #000;z-index:5}}
.ok{{background:{OUTCOME_FILL[OK]}}}
.fail{{background:{OUTCOME_FILL[FAIL]};border-style:dashed;border-left-style:solid}}
.info{{background:repeating-linear-gradient(135deg,{OUTCOME_FILL[INFO]} 0 4px,#fff3df 4px 8px);border-color:#c77700}}
.key{{padding:0 4px;border:1px solid #0004}}
.opkey{{padding:0 4px;border-left:5px solid;background:#fff}}
.next{{margin:8px}}
"""
