"""What every checker answers: one `Verdict` (as Porcupine's CheckResult), and the result shapes that carry it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


class Verdict(str, Enum):
    """A checker's answer about a history.

    - OK: the history keeps the promise the checker guards.
    - ILLEGAL: it does not; the result names the violations (or the anomaly).
    - UNKNOWN: the checker stopped before deciding because it ran out of
      time or budget (linearizability: the search bound, `--check-time-limit`).
      Read it as "not checked", neither a pass nor a failure: the history may
      be fine or not. Give the checker more time on the stored history, or
      make the history easier to search (fewer concurrent clients per key,
      fewer operations of unknown outcome).

    ILLEGAL outranks UNKNOWN, which outranks OK (`worst`): one proven
    violation makes a run invalid whatever the undecided parts would say.
    """

    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value  # "ok", not "Verdict.OK", in f-strings and printed tables

    @property
    def valid(self) -> bool | None:
        """The three-valued `valid` of results.json and the runner's Outcome: True, False, None (unknown)."""
        return _VALID[self]


_VALID: dict[Verdict, bool | None] = {Verdict.OK: True, Verdict.ILLEGAL: False, Verdict.UNKNOWN: None}
_RANK = {Verdict.OK: 0, Verdict.UNKNOWN: 1, Verdict.ILLEGAL: 2}


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """ILLEGAL if any verdict is, else UNKNOWN if any is, else OK (also when there are none)."""
    return max(verdicts, key=_RANK.__getitem__, default=Verdict.OK)


class CheckerResult(Protocol):
    """What a checker returns: a verdict, and an account of it for people."""

    @property
    def verdict(self) -> Verdict: ...

    @property
    def valid(self) -> bool | None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Violation:
    kind: str                      # short machine-readable tag, e.g. "lost-write"
    message: str                   # one readable line
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """The result of a checker that lists violations (every one but linearizability).

    These checkers always finish, so their verdict is OK or ILLEGAL, never UNKNOWN.
    """

    checker: str
    violations: list[Violation] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        return Verdict.ILLEGAL if self.violations else Verdict.OK

    @property
    def valid(self) -> bool | None:
        return self.verdict.valid

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}

    def describe(self, limit: int = 20) -> str:
        head = f"{self.checker}: {'valid' if self.valid else f'{len(self.violations)} violation(s)'}"
        lines = [head] + [f"  [{v.kind}] {v.message}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... {len(self.violations) - limit} more")
        return "\n".join(lines)
