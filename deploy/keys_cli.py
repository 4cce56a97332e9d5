"""`worldstate keys create|list|revoke`: API keys through a node's HTTP API, with an admin key.

Where the node and the admin key come from, first found: --api / --key; the
WORLDSTATE_API / WORLDSTATE_KEY variables; the run directory of `worldstate up`
(--run-dir: its deployment.json and admin.key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SCOPES = ("read", "observe", "predict", "params:write", "admin")


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys (needs an admin key)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", default=os.environ.get("WORLDSTATE_API"), help="a node's URL ($WORLDSTATE_API)")
    common.add_argument("--key", default=os.environ.get("WORLDSTATE_KEY"), help="an admin key ($WORLDSTATE_KEY)")
    common.add_argument("--run-dir", type=Path, default=None, help="the run directory of `worldstate up`")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    create = ks.add_parser("create", parents=[common], help="make a key; its token is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, choices=SCOPES, help="repeat for several")
    create.add_argument("--world", action="append", required=True, help="a world, or '*' for all; repeatable")
    create.add_argument("--observations-per-s", type=float, default=None, help="rate quota (default: none)")
    create.add_argument("--queries-per-s", type=float, default=None, help="rate quota (default: none)")
    create.set_defaults(func=_create)
    ls = ks.add_parser("list", parents=[common], help="every key: id, name, scopes, worlds (never tokens)")
    ls.set_defaults(func=_list)
    revoke = ks.add_parser("revoke", parents=[common], help="revoke a key on every node (within a second)")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_revoke)
    boot = ks.add_parser("bootstrap", help="make the first admin key in etcd, once per cluster (compose's keys-init)")
    boot.add_argument("--etcd-endpoints", required=True, help="host:port,... (credentials: WORLDSTATE_ETCD_USERNAME, "
                                                              "WORLDSTATE_ETCD_PASSWORD)")
    boot.add_argument("--out", type=Path, required=True, help="file the token is written to (mode 0600)")
    boot.add_argument("--timeout", type=float, default=60.0)
    boot.set_defaults(func=_bootstrap)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    api, key = args.api, args.key
    if args.run_dir is not None:
        if api is None:
            api = next(iter(json.loads((args.run_dir / "deployment.json").read_text())["api"].values()))
        if key is None and (args.run_dir / "admin.key").exists():
            key = (args.run_dir / "admin.key").read_text().strip()
    if not api or not key:
        raise SystemExit("worldstate keys: give --api and --key (or WORLDSTATE_API, WORLDSTATE_KEY, or --run-dir)")
    return api.rstrip("/"), key


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    api, key = _target(args)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(api + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _fail(status: int, answer: Any) -> int:
    detail = answer.get("detail") if isinstance(answer, dict) else answer
    print(f"worldstate keys: {status} {detail}", file=sys.stderr)
    return 1


def _create(args: argparse.Namespace) -> int:
    quotas = {k: v for k, v in (("observations_per_s", args.observations_per_s),
                                ("queries_per_s", args.queries_per_s)) if v is not None}
    body: dict[str, Any] = {"name": args.name, "scopes": args.scope, "worlds": args.world}
    if quotas:
        body["quotas"] = quotas
    status, answer = _call(args, "POST", "/v1/keys", body)
    if status != 201:
        return _fail(status, answer)
    print(answer["token"])
    print(f"key {answer['id']} ({answer['name']}): scopes {', '.join(answer['scopes'])} on "
          f"{', '.join(answer['worlds'])}; the token above is shown only now", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    status, answer = _call(args, "GET", "/v1/keys")
    if status != 200:
        return _fail(status, answer)
    print(f"{'ID':<17} {'NAME':<20} {'SCOPES':<32} WORLDS")
    for k in answer["keys"]:
        print(f"{k['id']:<17} {k['name']:<20} {','.join(k['scopes']):<32} {','.join(k['worlds'])}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    status, answer = _call(args, "DELETE", f"/v1/keys/{args.key_id}")
    if status != 200:
        return _fail(status, answer)
    print(f"revoked {args.key_id}")
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from consistency.cp_store import CPStore
    from deploy.first_start import admin_key

    endpoints = [e.strip() for e in args.etcd_endpoints.split(",") if e.strip()]
    user, password = os.environ.get("WORLDSTATE_ETCD_USERNAME"), os.environ.get("WORLDSTATE_ETCD_PASSWORD")
    token = admin_key(lambda: CPStore(endpoints, 5.0, user, password), args.out, args.timeout)
    if token is None:
        print("an admin key was made at this cluster's first start; it is not in " + str(args.out))
    else:
        print(f"admin key in {args.out}")
    return 0
