"""Checkers: pure functions from a history (and final reads) to a result that carries a `Verdict`.

- `linearizability.check(history, model=KV(), time_limit=None, explain=True)` -> LinearizabilityResult
- `convergence.check(regions, events)` -> Result; `convergence.observations_from_history(history)`
- `watch.check(history)` -> Result
- `causal.check(history, regions)` -> Result: a write made after reading another never loses to it
- `staleness.check(history, allowed=("serializable",))` -> Result
- `availability.check(history, intervals, tier_of=..., minimum=None)` -> Result; `availability.table(result)`
- `edge_staleness.check(history)`, `edge_convergence.check(final)`, `edge_delivery.check(history, final)`
  -> Result: edge nodes' answers within their declared staleness, their views equal to the core's
  after the heal, every observation they acknowledged once in every region

`history` is a list of `history.Event`s or of paired `history.Operation`s.
"""

from . import availability, causal, convergence, edge_convergence, edge_delivery, edge_staleness, linearizability, \
    staleness, watch
from .result import CheckerResult, Result, Verdict, Violation, worst

__all__ = ["availability", "causal", "convergence", "edge_convergence", "edge_delivery", "edge_staleness",
           "linearizability", "staleness", "watch",
           "CheckerResult", "Result", "Verdict", "Violation", "worst"]
