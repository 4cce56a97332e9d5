"""Command line: run a test, or re-check a stored one.

    python -m jepsen_like run --workload register,observations,watch \\
        --nemesis partition,kill,pause,clock --time-limit 60 --seed 7
    python -m jepsen_like check store/<test>/<time>
    python -m jepsen_like serve store/        # browse the runs: http://127.0.0.1:8080/

`run` exits 0 when every checker is valid, 1 when one found a violation,
2 when the verdict is unknown (a checker ran out of time), 3 when `--net netns`
cannot run here or cannot run the nemeses asked for (nothing was started).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from . import nemesis, netns, report, runner, store_browser  # noqa: E402
from .checkers.result import Verdict  # noqa: E402
from .client import Api  # noqa: E402
from .history import read_jsonl  # noqa: E402
from .recorder import Recorder  # noqa: E402
from .workloads import WORKLOADS, Context  # noqa: E402
from edge.sabotage import SABOTAGES as EDGE_SABOTAGES  # noqa: E402
from service.sabotage import SABOTAGES  # noqa: E402


# The exit status of `run` and `check` for the run's verdict; 3 is `--net netns` refusing to start.
EXIT_STATUS = {Verdict.OK: 0, Verdict.ILLEGAL: 1, Verdict.UNKNOWN: 2}
NETNS_UNAVAILABLE = 3


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]


def _skews(value: str) -> dict[str, int]:
    out = {}
    for item in _list(value):
        region, _, ms = item.partition("=")
        out[region] = int(ms)
    return out


def _pair(value: str) -> tuple[float, float]:
    lo, _, hi = value.partition(",")
    return float(lo), float(hi or lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jepsen_like", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a test against a fresh local cluster")
    r.add_argument("--workload", type=_list, default=["register", "observations", "watch"],
                   help=f"comma list of {', '.join(WORKLOADS)}")
    r.add_argument("--nemesis", type=_list, default=["partition", "kill", "pause", "clock"],
                   help=f"comma list of {', '.join(nemesis.FAMILIES)} (or none)")
    r.add_argument("--time-limit", type=float, default=60.0, help="seconds of load and faults")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--store", type=Path, default=Path("store"))
    r.add_argument("--name", default=None, help="test name (default: from workloads and nemeses)")
    r.add_argument("--sabotage", type=_list, default=[],
                   help=f"FOR TESTS ONLY: plant bugs ({', '.join([*SABOTAGES, *EDGE_SABOTAGES])})")
    r.add_argument("--clock-skew", type=_skews, default={}, help="hold skews for the whole run: r1=-5000,r2=300")
    targets = f"{', '.join(nemesis.TARGETS)}, or one process by name (api-r1, etcd2)"
    r.add_argument("--kill-targets", type=_list, default=list(nemesis.TARGETS), help=targets)
    r.add_argument("--pause-targets", type=_list, default=list(nemesis.TARGETS), help=targets)
    r.add_argument("--net", choices=("proxy", "netns"), default="proxy",
                   help="links through TCP proxies (default), or namespaces + iptables (root)")
    r.add_argument("--regions", type=int, default=3)
    r.add_argument("--etcd-members", type=int, default=3)
    r.add_argument("--cp-timeout", type=float, default=3.0, help="the API nodes' CP timeout (s)")
    r.add_argument("--client-timeout", type=float, default=6.0, help="a client gives up after this (s): info")
    r.add_argument("--think", type=float, default=0.05, help="mean pause between a client's operations (s)")
    r.add_argument("--quiet", type=float, default=5.0, help="seconds between heal and final reads")
    r.add_argument("--final-wait", type=float, default=15.0, help="most seconds final reads wait for agreement")
    r.add_argument("--gap", type=_pair, default=(1.0, 3.0), help="seconds between faults: lo,hi")
    r.add_argument("--hold", type=_pair, default=(3.0, 6.0), help="seconds a fault lasts: lo,hi")
    r.add_argument("--order", choices=("random", "cycle"), default="random",
                   help="draw each fault's family at random, or take them in turn")
    r.add_argument("--check-time-limit", type=float, default=60.0, help="linearizability search bound (s)")
    r.add_argument("--clients", type=int, default=None, help="clients per register and observations workload")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--keep-data", action="store_true", help="keep the etcd and Redis data directories")
    r.add_argument("--edges", type=int, default=None,
                   help="edge nodes, following the regions in turn (default 2 with --workload edge, else 0)")
    r.add_argument("--ap-shards", type=int, default=1,
                   help="each region's AP store a Redis Cluster of N masters (default 1: one Redis)")
    r.add_argument("--ap-replicas", type=int, default=0, help="replicas per cluster master (default 0)")
    r.add_argument("--ap-ack-replicas", type=int, default=None,
                   help="replicas a write waits for before it is acknowledged (WORLDSTATE_AP_ACK_REPLICAS; "
                        "default: 1 when there are replicas, else 0)")
    c = sub.add_parser("check", help="re-run the checkers on a stored history")
    c.add_argument("dir", type=Path)
    s = sub.add_parser("serve", help="browse stored runs in a web browser")
    s.add_argument("dir", type=Path, nargs="?", default=Path("store"), help="the store (default: store)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    s.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed)")
    args = ap.parse_args(argv)

    if args.cmd == "check":
        return _recheck(args.dir)
    if args.cmd == "serve":
        return store_browser.serve(args.dir, args.host, args.port)
    per = ({w: {"clients": args.clients} for w in ("register", "observations", "sdk-observations",
                                                    "grpc-observations")} if args.clients else {})
    o = runner.Options(workloads=args.workload, nemeses=args.nemesis, time_limit_s=args.time_limit, seed=args.seed,
                       store=args.store, name=args.name, sabotage=args.sabotage, clock_skew=args.clock_skew,
                       kill_targets=args.kill_targets, pause_targets=args.pause_targets, regions=args.regions,
                       etcd_members=args.etcd_members, net=args.net,
                       cp_timeout_s=args.cp_timeout, client_timeout_s=args.client_timeout, think_s=args.think,
                       quiet_s=args.quiet, final_wait_s=args.final_wait, gap_s=args.gap, hold_s=args.hold,
                       order=args.order,
                       check_time_limit_s=args.check_time_limit, workload_options=per, plots=not args.no_plots,
                       keep_data=args.keep_data, edges=args.edges, ap_shards=args.ap_shards,
                       ap_replicas=args.ap_replicas, ap_ack_replicas=args.ap_ack_replicas)
    if not runner.edge_count(o) and any(n.startswith("edge-") for n in o.nemeses):
        ap.error("the edge-cut and edge-kill nemeses need edge nodes: --workload edge, or --edges N")
    if o.ap_shards < 1 or o.ap_replicas < 0 or (o.ap_ack_replicas is not None and o.ap_ack_replicas < 0):
        ap.error("--ap-shards must be at least 1, --ap-replicas and --ap-ack-replicas 0 or more")
    if {"shard", "shard-behind", "shard-cut"} & set(o.nemeses) and o.ap_shards <= 1 and o.ap_replicas <= 0:
        ap.error(runner.SHARD_NEEDS_CLUSTER)
    if o.net == "netns":
        signal.signal(signal.SIGTERM, _terminate)
    try:
        out = runner.run(o)
    except netns.Unavailable as e:
        print(f"python -m jepsen_like: {e}", file=sys.stderr)
        return NETNS_UNAVAILABLE
    print(out.summary)
    return EXIT_STATUS[out.verdict]


def _terminate(sig: int, _frame: object) -> None:
    """SIGTERM in netns mode: kill what runs in the namespaces, delete them and the bridge, exit at once.

    The default action would leave the namespaces and bridge behind (children get
    SIGTERM by PR_SET_PDEATHSIG, but names and links stay). Raising SystemExit
    instead is not reliable: a handler that fires inside a weakref callback has its
    exception swallowed and the run goes on. Exiting at once is what proxy mode does.
    """
    netns.close_all()
    os._exit(128 + sig)


def _recheck(d: Path) -> int:
    events = read_jsonl(str(d / "history.jsonl"))
    finals = json.loads((d / "final.json").read_text())
    old = json.loads((d / "results.json").read_text())
    opts = old["test"]["options"]
    ctx = Context(Api({}, 1.0), Recorder(None), [f"r{i + 1}" for i in range(opts["regions"])], runner.WORLD,
                  asyncio.Event())
    workloads = [WORKLOADS[n](ctx, **opts.get("workload_options", {}).get(n, {})) for n in opts["workloads"]]
    results = runner.check(events, workloads, finals, {}, etcd_members=opts.get("etcd_members", 3))
    results["test"] = old["test"]
    print(report.summary(results))
    return EXIT_STATUS[Verdict(results["verdict"])]


if __name__ == "__main__":
    sys.exit(main())
