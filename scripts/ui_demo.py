#!/usr/bin/env python3
"""Bodies moving in a world, posted as observations, to watch in the live view (/ui).

    export WORLDSTATE_URL=http://127.0.0.1:43629 WORLDSTATE_KEY=wsk_...   # what `worldstate up` printed
    .venv/bin/python scripts/ui_demo.py --world demo

creates the world (and its physics, if it has none), prints the address of its live view,
then moves a few bodies with the simulator the model was trained on (world_model/simulator.py)
and posts every body's state each --interval seconds, as a camera would. Bodies that come
to rest are thrown again; --surprise-every S moves one body elsewhere every S seconds,
which no physics does, so the view marks it as surprising.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

import torch  # noqa: E402

from client import Client  # noqa: E402
from client.errors import Conflict  # noqa: E402
from world_model.config import MASS, OBS_DIM, RADIUS  # noqa: E402
from world_model.simulator import step  # noqa: E402

BOX = 10.0  # the shipped model's box (its manifest's config.sim.box)
PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}


def start_state(bodies: int, rng: random.Random) -> torch.Tensor:
    """(1, bodies, OBS_DIM): bodies spread across the box, thrown in random directions."""
    state = torch.zeros(1, bodies, OBS_DIM)
    for i in range(bodies):
        radius = rng.uniform(0.3, 0.6)
        x = (i + 0.5) * BOX / bodies
        state[0, i] = torch.tensor([x, rng.uniform(3.0, 8.0), rng.uniform(-3, 3), rng.uniform(2, 6),
                                    radius, rng.uniform(0.5, 2.0), 1.0])
    return state


def observations(state: torch.Tensor, run: str, n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"{run}-{n}-{i}", "entity": f"ball-{i + 1}", "source": "ui-demo",
             "fields": {"x": round(float(s[0]), 4), "y": round(float(s[1]), 4), "vx": round(float(s[2]), 4),
                        "vy": round(float(s[3]), 4), "radius": round(float(s[RADIUS]), 3),
                        "mass": round(float(s[MASS]), 3)}}
            for i, s in enumerate(state[0])]


def at_rest(state: torch.Tensor) -> bool:
    """Every body nearly still (on the floor, or on another body)."""
    return bool(state[0, :, 2:4].abs().max() < 0.3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an API node (default: $WORLDSTATE_URL)")
    p.add_argument("--key", help="an API key with admin scope on the world, or observe if it exists with physics "
                                 "(default: $WORLDSTATE_KEY)")
    p.add_argument("--world", default="demo")
    p.add_argument("--bodies", type=int, default=3)
    p.add_argument("--interval", type=float, default=0.25, help="seconds between posts")
    p.add_argument("--rounds", type=int, default=0, help="posts to make, then exit (default: until Ctrl-C)")
    p.add_argument("--surprise-every", type=float, default=0.0, help="seconds between surprises (0: none)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    with Client(args.url, args.key, source="ui-demo") as ws:
        try:
            ws.create_world(args.world, {"description": "bodies posted by scripts/ui_demo.py"}, create_only=True)
        except Conflict:
            pass  # it exists: keep it
        try:
            ws.put_physics(args.world, PHYSICS, create_only=True)
        except Conflict:
            pass  # it has physics: move the bodies under them
        physics = ws.get_physics(args.world)
        phys = torch.tensor([[physics.gravity, physics.restitution, physics.drag, physics.time_step]])
        url = str(ws.http.base_url).rstrip("/")
        print(f"live view: {url}/ui/worlds/{args.world}#key=<your key>", flush=True)
        # Simulated time keeps up with the clock: each post is --interval seconds of physics later.
        steps = max(1, round(args.interval / physics.time_step))
        state = start_state(args.bodies, rng)
        run = uuid.uuid4().hex[:8]
        last_surprise = time.monotonic()
        n = 0
        try:
            while not args.rounds or n < args.rounds:
                ws.observe(args.world, observations(state, run, n))
                n += 1
                time.sleep(args.interval)
                for _ in range(steps):
                    state = step(state, phys, None, BOX)
                if at_rest(state):
                    state[0, :, 2] = torch.tensor([rng.uniform(-4, 4) for _ in range(args.bodies)])
                    state[0, :, 3] = torch.tensor([rng.uniform(6, 11) for _ in range(args.bodies)])
                if args.surprise_every and time.monotonic() - last_surprise >= args.surprise_every:
                    last_surprise = time.monotonic()
                    i = rng.randrange(args.bodies)
                    r = float(state[0, i, RADIUS])  # half the box across, at least 3.8 m: a jump no physics makes
                    state[0, i, 0] = r + (float(state[0, i, 0]) - r + BOX / 2) % (BOX - 2 * r)
        except KeyboardInterrupt:
            pass
        print(f"posted {n} rounds of {args.bodies} bodies", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
