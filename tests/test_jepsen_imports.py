"""The harness's imports: no loops, and the checkers never reach for the live system."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "jepsen_like"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports by name, anywhere in the file (function bodies too).

    ``from .pkg import mod`` counts as importing ``pkg.mod`` when that is a module,
    else ``pkg``; the parent packages Python initialises on the way are not counted
    (a package importing its own modules would otherwise always close a loop).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source not in known:
                continue
            subs = {f"{source}.{a.name}" for a in node.names} & known.keys()
            out |= subs or {source}
            if len(subs) < len(node.names):
                out.add(source)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_import_graph_is_read() -> None:
    graph = _graph()
    assert "jepsen_like.netns" in graph["jepsen_like.cluster"]
    assert "jepsen_like.checkers.wgl" in graph["jepsen_like.checkers.linearizability"]
    assert "jepsen_like.checkers.causal" in graph["jepsen_like.workloads.observations"]


def test_no_import_loops() -> None:
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_checkers_and_models_never_import_the_live_system() -> None:
    """Checkers are pure functions of a history: re-checking a stored run needs no cluster."""
    graph = _graph()
    live = {f"{PACKAGE}.{m}" for m in ("cluster", "nemesis", "schedule", "netns", "proxy", "runner", "client", "workloads")}
    pure = [n for n in graph if n.startswith(f"{PACKAGE}.checkers") or n in (f"{PACKAGE}.models", f"{PACKAGE}.history")]

    def reach(n: str, seen: set[str]) -> set[str]:
        for m in graph[n] - seen:
            seen.add(m)
            reach(m, seen)
        return seen

    for n in pure:
        bad = {m for m in reach(n, set()) if m in live or m.startswith(f"{PACKAGE}.workloads.")}
        assert not bad, f"{n} reaches {sorted(bad)}"
