"""The house's shape, read from the source: imports run downward only, no import loops.

    deploy -> api -> service -> consistency, world_model

`api` talks to `service` alone (the stores' and the model's errors reach it
re-exported by `service.errors`); `consistency` and `world_model` import
nothing of the project; `jepsen_like` drives the system as an outside tester,
through the launcher and the sabotage names. Every import counts, those inside
functions and under TYPE_CHECKING too: a lazy import still ties two modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("deploy", "api", "service", "consistency", "world_model", "jepsen_like", "bench", "client", "rpc", "edge",
            "learn")

# package -> module prefixes of other packages it may import
ALLOWED: dict[str, tuple[str, ...]] = {
    "deploy": ("api", "service", "consistency", "world_model", "client", "edge", "learn"),  # the CLI: SDK verbs, edge, learn
    # an edge node is a small node of its own: the core's problem types, schemas and model queries
    # over its own copy of the state, fed by the SDK's event-stream parser
    "edge": ("api", "service", "consistency", "world_model", "client._sse"),
    # the learning loop reads a replica's stream and the world's physics, trains the world model,
    # and publishes through the API as any client does
    "learn": ("consistency", "world_model", "client"),
    # api starts the gRPC server beside HTTP (app.py's lifespan), and imports nothing else of rpc
    "api": ("service", "rpc.server"),
    # gRPC is HTTP's twin: the same rule table (api.auth), problem types (api.problems) and
    # request schemas (api.schemas) decide both
    "rpc": ("service", "api.auth", "api.problems", "api.schemas"),
    "service": ("consistency", "world_model"),
    "consistency": (),
    "world_model": (),
    "client": (),  # the SDK talks HTTP only: it ships none of the server
    # the sdk- and grpc-observations workloads drive the service as its users' clients do
    # (and, to count training samples against what was acknowledged, the learner's own grid and shard reader)
    "jepsen_like": ("deploy.launcher", "deploy.processes", "service.sabotage", "edge.sabotage", "client", "rpc.channel",
                    "rpc.values", "rpc.worldstate_pb2", "rpc.worldstate_pb2_grpc", "learn.trajectories",
                    "learn.shards"),
    # benchmarks measure the service against its raw backends in one run
    # (and gRPC through its client channel and generated stubs, as any gRPC client does)
    "bench": ("deploy.launcher", "deploy.redis_cluster", "consistency", "world_model", "jepsen_like", "rpc", "learn"),
}
# A file longer than this needs a line here saying why.
MAX_LINES = 420
LONG_FILES: dict[str, str] = {
    "rpc/worldstate_pb2_grpc.py": "generated from rpc/worldstate.proto (python -m rpc.generate)",
}


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, resolved to the longest known module name."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            parts = target.split(".")
            for cut in range(len(parts), 0, -1):
                candidate = ".".join(parts[:cut])
                if candidate in known:
                    if candidate != name:
                        out.add(candidate)
                    break
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


def test_imports_run_downward() -> None:
    wrong = []
    for module, targets in graph().items():
        pkg = _package(module)
        for target in sorted(targets):
            if _package(target) == pkg:
                continue
            if not any(target == p or target.startswith(p + ".") for p in ALLOWED[pkg]):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against deploy -> api -> service -> consistency, world_model:\n" + "\n".join(wrong)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_no_import_loops() -> None:
    g = graph()
    # A package's __init__ that re-exports its modules is not a loop with them.
    for name, path in modules().items():
        if path.name == "__init__.py":
            g = {m: (t - {name} if m.startswith(name + ".") else t) for m, t in g.items()}
    assert cycles(g) == []


def test_the_checks_can_fail() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    sample = ROOT / "api" / "app.py"
    assert "service.node" in imports_of("api.app", sample, set(modules()))


@pytest.mark.parametrize("path", sorted(p for p in modules().values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_readable(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES or rel in LONG_FILES, f"{rel}: {lines} lines; split it or say why in LONG_FILES"
