"""The verdict shape shared by the non-search checkers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Violation:
    kind: str                      # short machine-readable tag, e.g. "lost-write"
    message: str                   # one readable line
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    checker: str
    violations: list[Violation] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.violations

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}

    def describe(self, limit: int = 20) -> str:
        head = f"{self.checker}: {'valid' if self.valid else f'{len(self.violations)} violation(s)'}"
        lines = [head] + [f"  [{v.kind}] {v.message}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... {len(self.violations) - limit} more")
        return "\n".join(lines)
