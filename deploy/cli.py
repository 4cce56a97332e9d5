"""The `worldstate` command: up, serve, edge, keys, publish-default (and the world model's train/eval/learn),
and the SDK's verbs (params, physics, observe, entity, predict, surprise, plan, model, worlds:
client/cli.py)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client import cli as client_cli
from deploy import keys_cli
from edge import cli as edge_cli


def _up(args: argparse.Namespace) -> int:
    from deploy.launcher import Deployment, Topology

    topo = Topology(etcd_members=args.etcd_members, regions=args.regions, run_dir=args.run_dir,
                    cp_timeout_s=args.cp_timeout, backend_auth=args.backend_auth, edges=args.edges,
                    edge_world=args.edge_world, learn=args.learn, learn_world=args.learn_world,
                    learn_every_s=args.learn_every, learner_args=args.learner_args,
                    aggregator_args=args.aggregator_args, ap_shards=args.ap_shards, ap_replicas=args.ap_replicas)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    deployment = Deployment(topo)
    try:
        deployment.start()
        info = deployment.describe()
        print(f"worldstate is up (run dir {info['run_dir']})")
        for name, url in info["etcd"].items():  # type: ignore[union-attr]
            print(f"  etcd    {name:<10} {url}")
        for region, url in info["redis"].items():  # type: ignore[union-attr]
            print(f"  redis   {region:<10} {url}")
        for region, c in info["redis_clusters"].items():  # type: ignore[union-attr]
            for n in c["nodes"]:
                print(f"  shard   {n['name']:<10} redis://127.0.0.1:{n['port']}  ({n['role']}, {n['slots']} slots)")
        for region, url in info["api"].items():  # type: ignore[union-attr]
            print(f"  api     {region:<10} {url}")
        for region, target in info["grpc"].items():  # type: ignore[union-attr]
            print(f"  grpc    {region:<10} {target}")
        for region, url in info["api"].items():  # type: ignore[union-attr]
            print(f"  ui      {region:<10} {url}/ui/")
        for name, e in info["edges"].items():  # type: ignore[union-attr]
            print(f"  edge    {name:<10} {e['url']}  (world {e['world']}, follows {e['region']})")
        for name, role in info["learn"].items():  # type: ignore[union-attr]
            what = f"region {role['region']}" if role["region"] else "every region"
            print(f"  learn   {name:<10} world {role['world']}, {what}, every {role['every_s']:g} s; "
                  f"log {role['log']}")
        print(f"  state   {deployment.run_dir / 'deployment.json'}")
        if deployment.admin_key:
            print(f"  admin key {deployment.admin_key}")
            print(f"            (kept in {deployment.run_dir / 'admin.key'}; export WORLDSTATE_KEY=<it>)")
        else:
            print("  admin key made at this cluster's first start, in another run directory", flush=True)
        if args.default_model:
            _publish_default(deployment.publish_default_model)
        print("Ctrl-C stops everything.", flush=True)
        reported: set[str] = set()
        while not stop.wait(1.0):
            for p in deployment.processes():
                if not p.running and p.name not in reported:
                    reported.add(p.name)
                    print(f"warning: {p.name} exited; log: {p.log_path}", file=sys.stderr, flush=True)
    finally:
        deployment.stop()
    print("worldstate stopped", flush=True)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text!r}")
    return value


def _world(text: str) -> str:
    from consistency.cp_keys import check_world
    from consistency.errors import InvalidKey

    try:
        return check_world(text)
    except InvalidKey as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _publish_default(publish: Callable[[], tuple[str, dict[str, Any]]]) -> bool:
    """Publish the packaged model and say what happened in one line; a failure is
    reported, not fatal: the deployment still serves state, only model queries 503."""
    try:
        outcome, m = publish()
    except Exception as e:  # noqa: BLE001 - any failure here leaves a working deployment
        print(f"warning: the default model was not published: {e}", file=sys.stderr, flush=True)
        return False
    what = "published the default model" if outcome == "published" else "kept the published model"
    print(f"  model   {what} {m['hash'][:12]} (version {m['version']})", flush=True)
    return True


def _publish_default_cmd(args: argparse.Namespace) -> int:
    from deploy.first_start import publish_default_model

    urls = [u.rstrip("/") for u in args.api]
    key = args.key_file.read_text().strip() if args.key_file else args.key
    return 0 if _publish_default(lambda: publish_default_model(urls, args.checkpoint_dir, args.timeout, key)) else 1


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from deploy import connection_limits as cl
    from service import logs
    from service.config import Settings

    settings = Settings.from_env()
    settings.grpc_host = settings.grpc_host or args.host  # gRPC binds where HTTP does unless told
    # The connection cap must bind before the descriptor table fills (20,000 held connections
    # once used up every descriptor): raise the soft open-file limit, then fit the cap under it.
    limits = cl.ConnectionLimits(cl.fit_connections(settings.max_connections, cl.raise_fd_limit()),
                                 settings.header_timeout_s, settings.body_timeout_s, settings.max_header_bytes)
    # uvicorn's access log stays off (a world-state node answers thousands of requests a second);
    # api/request_ids.py logs slow and failed requests, or all with WORLDSTATE_ACCESS_LOG=1.
    # On SIGTERM a request in flight gets its CP bound and a second more to finish; then
    # what still runs is cancelled. A watch stream never finishes by itself, and without
    # the bound one connected watcher kept the node from ever exiting; its client resumes
    # elsewhere with Last-Event-ID.
    # limit_concurrency: the protocol's cap keeps connections at or under max_connections, so one
    # more means uvicorn's own check (connections or requests in flight >= it: 503) answers only
    # when requests outlive their clients past the cap.
    log_config = logs.log_config(args.log_level, settings.log_format, settings.access_log)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                log_config=log_config,
                timeout_graceful_shutdown=math.ceil(settings.cp_timeout_s) + 1, http=cl.limited(limits),
                limit_concurrency=limits.max_connections + 1,
                timeout_keep_alive=settings.keep_alive_s)  # typed int; a float works (call_later)
    return 0


def _train(args: argparse.Namespace) -> int:
    from world_model import train

    return train.main(args.rest)


def _eval(args: argparse.Namespace) -> int:
    from world_model import evaluate

    return evaluate.main(args.rest)


def _learn(args: argparse.Namespace) -> int:
    from learn import loop  # the one-shot learner, or with --every its long-lived role

    return loop.main("learn", args.rest)


def _aggregate(args: argparse.Namespace) -> int:
    from learn import loop

    return loop.main("aggregate", args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldstate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start etcd, one Redis and one API node per region, locally")
    up.add_argument("--etcd-members", type=int, choices=(1, 3, 5), default=3)
    up.add_argument("--regions", type=int, default=2)
    up.add_argument("--run-dir", type=Path, default=None, help="data and logs (default: a new temp dir)")
    up.add_argument("--cp-timeout", type=float, default=2.0, help="seconds a CP call waits for quorum")
    up.add_argument("--backend-auth", action="store_true",
                    help="etcd with auth on and Redis with an ACL user; passwords generated into the run dir")
    up.add_argument("--edges", type=int, default=0, help="edge nodes to start, following the regions in turn")
    up.add_argument("--edge-world", default="lab", help="the world the edges hold (default lab)")
    up.add_argument("--learn", action="store_true", help="also start a learner per region and an aggregator "
                    "(worldstate learn/aggregate --every), logs under the run dir")
    up.add_argument("--learn-world", default="lab", type=_world, help="the world they learn (default lab)")
    up.add_argument("--learn-every", type=_seconds, default=300.0, help="seconds between rounds (default 300)")
    up.add_argument("--learner-args", type=shlex.split, default=[], metavar="'ARGS'",
                    help="appended to each learner's command line, e.g. '--steps 20 --min-new-samples 64'")
    up.add_argument("--aggregator-args", type=shlex.split, default=[], metavar="'ARGS'",
                    help="appended to the aggregator's command line, e.g. '--suite-cases 4'")
    up.add_argument("--ap-shards", type=int, default=1, metavar="N",
                    help="each region's AP replica as a Redis Cluster of N masters (default 1: one plain Redis)")
    up.add_argument("--ap-replicas", type=int, default=0, metavar="R",
                    help="replicas per master of that cluster; writes then wait for one (default 0)")
    up.add_argument("--no-default-model", dest="default_model", action="store_false",
                    help="do not publish the packaged model when no model manifest exists")
    up.set_defaults(func=_up)

    pub = sub.add_parser("publish-default", help="publish the packaged model unless a model manifest exists")
    pub.add_argument("--api", action="append", required=True,
                     help="an API node's URL (repeat for each node to wait for; the first publishes)")
    pub.add_argument("--checkpoint-dir", type=Path, required=True, help="the checkpoint directory the nodes read")
    pub.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every node to serve it")
    pub.add_argument("--key", default=os.environ.get("WORLDSTATE_KEY"), help="an admin key ($WORLDSTATE_KEY)")
    pub.add_argument("--key-file", type=Path, default=None, help="a file holding an admin key")
    pub.set_defaults(func=_publish_default_cmd)

    serve = sub.add_parser("serve", help="run one API node (configured by WORLDSTATE_* variables)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="warning")
    serve.set_defaults(func=_serve)

    keys_cli.add_parser(sub)
    edge_cli.add_parser(sub)
    client_cli.add_parsers(sub)
    # The world model's own parsers own their options: `worldstate train --help`.
    for name, func, text in (("train", _train, "train the JEPA world model"),
                             ("eval", _eval, "evaluate a trained world model"),
                             ("learn", _learn, "fine-tune the serving model on a world's trajectories; "
                                               "publish only if the gate says yes"),
                             ("aggregate", _aggregate, "combine the regions' updates of a world (federated round); "
                                                       "publish only if the gate says yes")):
        sp = sub.add_parser(name, help=text, add_help=False)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
        sp.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # argparse would eat options meant for their own parsers
    if argv[:1] in (["train"], ["eval"], ["learn"], ["aggregate"]):
        return int(build_parser().parse_args(argv[:1]).func(argparse.Namespace(rest=argv[1:])))
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
