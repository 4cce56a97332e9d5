"""How stale an edge's answer may be, measured on the edge's own clock only.

Every `probe_s` the edge asks the core for its positions (GET /v1/worlds/{w}/positions):
the CP revision and the heads of the region's changes logs (a vector, one position per
partition: consistency/ap_positions.py), both read after the request was sent at time t. Every
CP write the core acknowledged before t has a revision at or below the first, every observation
the region acknowledged before t a position at or below the second in its partition. Once the edge has applied everything up to both (the streams' events and their
progress comments say how far that is), it reflects the core as of t: `as_of` moves to t.
The staleness of an answer is now - as_of: every write acknowledged longer ago than that is
in it. No clock of the core is read, so skew between the two cannot make the label lie;
a delay anywhere (a slow link, a paused core) only makes the edge more stale, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consistency.ap_positions import at_least, format_vector, merged, parse_vector


def positions_of(stored: object) -> str | None:
    """A changes position kept by an edge, or None for one it cannot resume from: none, or the single
    stream id of an older core's unpartitioned log (the edge then reads its entities again)."""
    return stored if isinstance(stored, str) and stored.startswith("v2") else None


@dataclass(frozen=True)
class Probe:
    sent: float  # edge wall clock, seconds
    cp_revision: int
    changes: str
    manifest_revision: int  # 0: no manifest


@dataclass
class Freshness:
    as_of: float | None = None  # the edge reflects every write acknowledged by then
    cp_applied: int = 0  # every change of the world's params up to this revision is applied
    changes_applied: str | None = None  # every entity change up to this position (a vector) is applied
    manifest_applied: int = 0  # the manifest at this revision is loaded, or was refused
    region: str | None = None  # whose changes log the positions are of
    pending: list[Probe] = field(default_factory=list)

    def probed(self, p: Probe) -> None:
        self.pending.append(p)
        del self.pending[:-64]  # unanswered for long: the newest ones are enough
        self._settle()

    def cp(self, revision: int) -> None:
        if revision > self.cp_applied:
            self.cp_applied = revision
            self._settle()

    def changes(self, position: str) -> None:
        if self.changes_applied is None:
            self.changes_applied = position
        else:
            now = merged(parse_vector(self.changes_applied), parse_vector(position))
            if at_least(parse_vector(self.changes_applied), now):
                return
            self.changes_applied = format_vector(now)
        self._settle()

    def manifest(self, revision: int) -> None:
        if revision > self.manifest_applied:
            self.manifest_applied = revision
            self._settle()

    def new_region(self, region: str) -> None:
        """The positions now come from another region's log: none of the old ones mean anything."""
        self.region = region
        self.changes_applied = None
        self.pending.clear()

    def _settle(self) -> None:
        if self.changes_applied is None:
            return
        done = [p for p in self.pending if p.cp_revision <= self.cp_applied and p.manifest_revision <= max(
            self.manifest_applied, 0) and at_least(parse_vector(self.changes_applied), parse_vector(p.changes))]
        if done:
            newest = max(p.sent for p in done)
            self.as_of = newest if self.as_of is None else max(self.as_of, newest)
            self.pending = [p for p in self.pending if p.sent > newest]

    def stale_s(self, now: float) -> float | None:
        """None: never in step with the core yet."""
        return None if self.as_of is None else max(0.0, now - self.as_of)
