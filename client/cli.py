"""`worldstate params|physics|observe|entity|predict|surprise|plan|model|worlds`: the SDK
from a shell. Answers are JSON on stdout (streams: one JSON document a line); errors are
problem JSON on stderr, and the exit status says which outcome it was (`EXIT_CODES`).

The node and key: --url / --key, else $WORLDSTATE_URL (or $WORLDSTATE_API, which
`worldstate keys` reads) and $WORLDSTATE_KEY.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from client import _calls as calls
from client.errors import (ChangesTrimmed, Compacted, Conflict, Forbidden, InvalidRequest, NotFound,
                           NotYetConsistent, OutcomeUnknown, RateLimited, SlowConsumer, Unauthorized, Unavailable,
                           WorldstateError)
from client.sync import Client

VERBS = ("params", "physics", "observe", "entity", "predict", "surprise", "plan", "model", "worlds")
OK, ERROR, USAGE = 0, 1, 2
# Exit status by outcome, looked up along the exception's class hierarchy.
EXIT_CODES: dict[type[BaseException], int] = {
    NotFound: 3,                          # 404
    Conflict: 4,                          # 412: a compare-and-swap or create-only write lost
    Unavailable: 5, RateLimited: 5,       # 503, 429: nothing changed; retry later
    NotYetConsistent: 5,                  # 504 not-yet-consistent: a read; retry later
    OutcomeUnknown: 6,                    # 504 outcome-unknown: read before writing again
    Unauthorized: 7, Forbidden: 7,        # 401, 403
    InvalidRequest: 8,                    # other 4xx: the request is wrong as sent
    Compacted: 9, ChangesTrimmed: 9, SlowConsumer: 9,  # a stream cannot go on: read again, then watch
    WorldstateError: ERROR,
}


def exit_code(exc: BaseException) -> int:
    """The exit status for an error the command ended with."""
    return next((EXIT_CODES[c] for c in type(exc).__mro__ if c in EXIT_CODES), ERROR)


class UsageError(Exception):
    """Input the command cannot use (a bad JSON argument or line): exit status 2."""


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise UsageError(f"{what} is not JSON: {e}") from e


def _body(arg: str | None, what: str) -> Any:
    """A JSON document from the argument, or from stdin when it is omitted or '-'."""
    return _json(sys.stdin.read() if arg in (None, "-") else arg, what)


def _plain(x: Any) -> Any:
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) and not isinstance(x, type) else x


def _out(x: Any) -> None:
    print(json.dumps(_plain(x)), flush=True)


def _lines(items: Iterator[Any], count: int | None) -> None:
    for n, item in enumerate(items, 1):
        _out(item)
        if count is not None and n >= count:
            return


# -- the verbs: each takes the parsed arguments and a Client --------------------------------

def _params(a: argparse.Namespace, ws: Client) -> None:
    if a.action == "get":
        p = ws.get_param(a.world, a.param, serializable=a.serializable)
        _out({"world": a.world, "key": a.param, **dataclasses.asdict(p)})
    elif a.action == "put":
        rev = ws.put_param(a.world, a.param, _body(a.value, "the value"), if_revision=a.if_revision,
                           create_only=a.create_only)
        _out({"world": a.world, "key": a.param, "revision": rev})
    elif a.action == "list":
        _out(ws.list_params(a.world, a.prefix, serializable=a.serializable))
    elif a.action == "delete":
        ws.delete_param(a.world, a.param, if_revision=a.if_revision)
        _out({"world": a.world, "key": a.param, "deleted": True})
    else:
        _lines(ws.watch(a.world, a.prefix, a.start_revision), a.count)


def _physics(a: argparse.Namespace, ws: Client) -> None:
    if a.action == "get":
        _out(ws.get_physics(a.world, serializable=a.serializable))
    else:
        rev = ws.put_physics(a.world, _body(a.doc, "the physics document"), if_revision=a.if_revision,
                             create_only=a.create_only)
        _out({"world": a.world, "revision": rev})


def _observe(a: argparse.Namespace, ws: Client) -> None:
    w = ws.observer(a.world, a.batch, a.source)
    try:
        for n, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            obs = _json(line, f"line {n}")
            if not isinstance(obs, dict) or "entity" not in obs:
                raise UsageError(f"line {n}: an observation is an object with an entity and its fields")
            w.add(obs["entity"], obs.get("fields", {}), event_id=obs.get("event_id"),
                  observed_at=obs.get("observed_at"), source=obs.get("source"))
        w.flush()
    finally:  # what was posted is said even when an error stops the rest
        _out({"accepted": w.accepted, "duplicates": w.duplicates,
              "token": w.receipts[-1].token if w.receipts else None, "batches": len(w.receipts)})


def _entity(a: argparse.Namespace, ws: Client) -> None:
    ws.token = getattr(a, "token", None)
    if a.action == "get":
        _out(ws.entity(a.world, a.entity, wait_ms=a.wait_ms).doc)
    elif a.action == "list":
        _out({"world": a.world, "items": [e.doc for e in ws.entities(a.world, limit=a.limit)]})
    elif a.action == "delete":
        _out(ws.delete_entity(a.world, a.entity, event_id=a.event_id))
    else:
        _lines(ws.subscribe(a.world, a.entity, a.prefix, a.after), a.count)


def _query(a: argparse.Namespace, ws: Client) -> None:
    # The body goes to the node as given: the node validates it, and its 422 names what is wrong.
    call = {"predict": calls.predict, "surprise": calls.surprise, "plan": calls.plan}[a.verb]
    _out(ws.call(call(a.world, _body(a.body, "the request body"), a.serializable)))


def _model(a: argparse.Namespace, ws: Client) -> None:
    if a.action == "current":
        _out(ws.serving() if a.serving else ws.manifest(serializable=a.serializable))
    else:
        rev = ws.publish(_body(a.manifest, "the manifest"), if_revision=a.if_revision, create_only=a.create_only)
        _out({"revision": rev})


def _worlds(a: argparse.Namespace, ws: Client) -> None:
    if a.action == "list":
        _out({"worlds": ws.worlds()})
    else:
        meta = _body(a.meta, "the metadata") if a.meta is not None else {}
        _out({"world": a.world, "revision": ws.create_world(a.world, meta)})


# -- the parsers ----------------------------------------------------------------------------

def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=None, help="a node's URL ($WORLDSTATE_URL, or $WORLDSTATE_API)")
    p.add_argument("--key", default=None, help="an API key ($WORLDSTATE_KEY)")
    return p


def _conditional(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--if-revision", type=int, default=None, help="write only if still at this revision (412 if not)")
    g.add_argument("--create-only", action="store_true", help="write only if absent (412 if it exists)")


def _serializable(p: argparse.ArgumentParser) -> None:
    p.add_argument("--serializable", action="store_true", help="read from any live etcd member (maybe stale)")


def _actions(sub: Any, verb: str, text: str, func: Callable[..., None]) -> Any:
    p = sub.add_parser(verb, help=text, description=text)
    p.set_defaults(func=_run, verb_func=func, verb=verb)
    return p.add_subparsers(dest="action", required=True)


def add_parsers(sub: Any) -> None:
    """The verbs, as subcommands of `worldstate` (deploy/cli.py)."""
    c = [_common()]
    params = _actions(sub, "params", "CP params: get, put, list, watch, delete", _params)
    p = params.add_parser("get", parents=c)
    p.add_argument("world"), p.add_argument("param", metavar="key"), _serializable(p)
    p = params.add_parser("put", parents=c, help="VALUE is JSON (stdin if omitted or -)")
    p.add_argument("world"), p.add_argument("param", metavar="key"), p.add_argument("value", nargs="?"), _conditional(p)
    p = params.add_parser("list", parents=c)
    p.add_argument("world"), p.add_argument("--prefix", default=""), _serializable(p)
    p = params.add_parser("watch", parents=c, help="one JSON line per change; resumes across dropped connections")
    p.add_argument("world"), p.add_argument("--prefix", default="")
    p.add_argument("--start-revision", type=int, default=0, help="0: from now")
    p.add_argument("--count", type=int, default=None, help="stop after this many changes")
    p = params.add_parser("delete", parents=c)
    p.add_argument("world"), p.add_argument("param", metavar="key")
    p.add_argument("--if-revision", type=int, default=None)

    physics = _actions(sub, "physics", "a world's physics constants: get, put", _physics)
    p = physics.add_parser("get", parents=c)
    p.add_argument("world"), _serializable(p)
    p = physics.add_parser("put", parents=c, help="DOC is JSON (stdin if omitted or -)")
    p.add_argument("world"), p.add_argument("doc", nargs="?"), _conditional(p)

    p = sub.add_parser("observe", parents=c, help="post observations, one JSON object a line on stdin, batched")
    p.add_argument("world"), p.add_argument("--batch", type=int, default=500)
    p.add_argument("--source", default="cli", help="the source of lines that name none")
    p.set_defaults(func=_run, verb_func=_observe, verb="observe")

    entity = _actions(sub, "entity", "AP entities: get, list, watch, delete", _entity)
    p = entity.add_parser("get", parents=c)
    p.add_argument("world"), p.add_argument("entity")
    p.add_argument("--token", default=None, help="a write's token (observe prints it): read that write")
    p.add_argument("--wait-ms", type=int, default=None)
    p = entity.add_parser("list", parents=c)
    p.add_argument("world"), p.add_argument("--limit", type=int, default=None)
    p.add_argument("--token", default=None)
    p = entity.add_parser("watch", parents=c, help="one JSON line per merged change")
    p.add_argument("world"), p.add_argument("--entity", default=None), p.add_argument("--prefix", default=None)
    p.add_argument("--after", default=None, help="a change's id: resume right after it")
    p.add_argument("--count", type=int, default=None, help="stop after this many changes")
    p = entity.add_parser("delete", parents=c)
    p.add_argument("world"), p.add_argument("entity")
    p.add_argument("--event-id", default=None, help="default: a new one (resent as is after 429/503/504)")

    for verb in ("predict", "surprise", "plan"):
        p = sub.add_parser(verb, parents=c, help=f"POST .../{verb}; BODY is JSON (stdin if omitted or -)")
        p.add_argument("world"), p.add_argument("body", nargs="?"), _serializable(p)
        p.set_defaults(func=_run, verb_func=_query, verb=verb)

    model = _actions(sub, "model", "the model manifest: current, publish", _model)
    p = model.add_parser("current", parents=c, help="the published manifest (--serving: what this node serves)")
    p.add_argument("--serving", action="store_true"), _serializable(p)
    p = model.add_parser("publish", parents=c, help="MANIFEST is JSON (stdin if omitted or -)")
    p.add_argument("manifest", nargs="?"), _conditional(p)

    worlds = _actions(sub, "worlds", "worlds: list, create", _worlds)
    worlds.add_parser("list", parents=c)
    p = worlds.add_parser("create", parents=c, help="META is JSON (default {})")
    p.add_argument("world"), p.add_argument("meta", nargs="?")


def _problem(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, WorldstateError):
        return {"status": exc.status, **exc.body} if "status" not in exc.body else dict(exc.body)
    return {"type": "about:blank", "title": "Bad command-line input", "status": 0, "detail": str(exc)}


def _run(args: argparse.Namespace) -> int:
    """Run a verb; an error ends it as problem JSON on stderr and its exit status."""
    try:
        with Client(args.url, args.key) as ws:
            args.verb_func(args, ws)
    except (WorldstateError, UsageError, ValueError) as e:
        print(json.dumps(_problem(e)), file=sys.stderr, flush=True)
        return exit_code(e) if isinstance(e, WorldstateError) else USAGE
    except KeyboardInterrupt:
        return 130
    return OK
