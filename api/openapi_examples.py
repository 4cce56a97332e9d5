"""An example per operation for the OpenAPI document: its request body (where it has one) and
its success answer, as a node sends them. api/openapi.py adds them; tests/test_openapi.py
checks every operation has one."""

from __future__ import annotations

from typing import Any

_H = "9f2c1e4a7b3d5f60" * 4  # a sha256 as 64 hex characters
_REV = {"revision": 42, "create_revision": 40, "version": 3, "store_revision": 57, "consistency": "linearizable"}
_PROV = {"model": {"hash": _H, "version": 1}, "physics_revision": 40, "store_revision": 57,
         "consistency": "linearizable", "replica": "r1"}
_FIELD = {"value": 1.5, "hlc": "0193a7c2d4e8-0000", "node": "api-r1", "source": "cam-1", "event_id": "e-1001",
          "observed_at_ms": 1732170000000}
_ENTITY = {"entity": "ball-1", "fields": {"x": _FIELD},
           "counters": {"observations": {"by_source": {"cam-1": 4}, "total": 4}}}
_REFLECTS = {"replica": "r1", "watermark": {"r2": "1732170000000-0"}, "hlc": "0193a7c2d4e8-0000", "behind": [],
             "replication": {"r2": {"state": "ok", "lag_ms": 12}}}
_PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}
_MANIFEST = {"hash": _H, "version": 1, "config": {}, "metrics": {}, "physics_revision": None}
_OBS = {"event_id": "e-1001", "entity": "ball-1", "source": "cam-1", "observed_at": 1732170000.25,
        "fields": {"x": 1.5, "y": 2.0, "vx": 0.5, "vy": 0.0, "color": "red"}}

# operationId -> (request body example or None, success status, success body example)
EXAMPLES: dict[str, tuple[Any, str, Any]] = {
    "healthz": (None, "200", {"status": "ok"}),
    "readyz": (None, "200", {"status": "ready", "region": "r1", "node": "api-r1",
                             "tiers": {"cp": {"state": "ok"}, "ap": {"state": "ok"}, "model": {"state": "ok"}}}),
    "metrics": (None, "200", '# HELP worldstate_observations_total Observations posted to this node\n'
                             '# TYPE worldstate_observations_total counter\n'
                             'worldstate_observations_total{outcome="accepted"} 1200.0\n'),
    "get_param": (None, "200", {"world": "lab", "key": "robots/arm-1/speed", "value": 0.75, **_REV}),
    "list_params": (None, "200", {"world": "lab", "prefix": "physics/", "revision": 57, "consistency": "linearizable",
                                  "items": [{"key": "physics/constants", "value": _PHYSICS, "revision": 42,
                                             "create_revision": 40, "version": 3}], "next": None}),
    "put_param": (0.75, "200", {"world": "lab", "key": "robots/arm-1/speed", "revision": 42}),
    "delete_param": (None, "200", {"world": "lab", "key": "robots/arm-1/speed", "deleted": True,
                                   "store_revision": 58}),
    "get_world": (None, "200", {"world": "lab", "meta": {"owner": "team-a"}, **_REV}),
    "list_worlds": (None, "200", {"worlds": ["lab", "lab-2"], "revision": 42, "next": {"after": "lab-2"}}),
    "put_world": ({"owner": "team-a"}, "200", {"world": "lab", "revision": 40}),
    "get_physics": (None, "200", {"world": "lab", "key": "physics/constants", "physics": _PHYSICS, **_REV}),
    "put_physics": (_PHYSICS, "200", {"world": "lab", "key": "physics/constants", "revision": 42}),
    "watch": (None, "200", 'id: 42\nevent: put\ndata: {"key": "physics/constants", "value": {"gravity": 9.81}, '
                           '"revision": 42}\n\n'),
    "post_observations": ([_OBS], "202", {"replica": "r1", "accepted": 1, "duplicate": 0, "duplicates": [],
                                          "hlc": "0193a7c2d4e8-0000", "token": "r1:v2.7-1732170000000-0", "behind": []}),
    "get_entity": (None, "200", {"world": "lab", **_ENTITY, **_REFLECTS}),
    "delete_entity": (None, "202", {"replica": "r1", "hlc": "0193a7c2d4e8-0000", "token": "r1:v2.7-1732170000000-0",
                                    "duplicate": False}),
    "stream_entities": (None, "200", 'id: v2.7-1732170000000-0\nevent: change\ndata: {"entity": "ball-1", "fields": '
                                     '{"x": 1.5}, "deleted": false, "hlc": "0193a7c2d4e8-0000", "node": "api-r1", '
                                     '"origin": "r1"}\n\n'),
    "list_entities": (None, "200", {"world": "lab", "items": [_ENTITY], "next": None, **_REFLECTS}),
    "get_manifest": (None, "200", {"manifest": _MANIFEST, "key": "models/manifest", **_REV}),
    "put_manifest": (_MANIFEST, "200", {"revision": 42, "hash": _H}),
    "current_model": (None, "200", {"state": "ok", "hash": _H, "version": 1, "manifest_revision": 42,
                                    "device": "cpu", "loaded_at": 1732170000.0, "error": None, "batches": 10,
                                    "queries": 12, "torch_threads": 2,
                                    "work": {"admitted": 0, "max_waiting": 8, "done": 5, "refused": 0,
                                             "cancelled": 0}}),
    "get_blob": (None, "200", "<the blob's bytes: a torch.save of the model, whose sha256 is its name>"),
    "get_positions": (None, "200", {"world": "lab", "region": "r1", "cp_revision": 57,
                                    "changes": "v2.7-1732170000000-0.33-1732170000012-0",
                                    "manifest": {"hash": _H, "version": 1, "revision": 42}}),
    "predict": ({"horizon": 2, "entities": ["ball-1"], "actions": {"ball-1": [[0.1, 0.0]]}}, "200",
                {"world": "lab", "horizon": 2, "time_step": 0.05,
                 "trajectories": {"ball-1": {"positions": [[1.53, 2.0], [1.56, 1.99]],
                                             "velocities": [[0.6, 0.0], [0.6, -0.49]]}},
                 "skipped": {}, "provenance": _PROV}),
    "surprise": ({"observed": {"ball-1": [{"x": 1.53, "y": 2.0, "vx": 0.5, "vy": -0.49}]}}, "200",
                 {"world": "lab", "scores": {"ball-1": 0.02}, "most_surprising": "ball-1", "score": 0.02,
                  "threshold": 1.0, "surprising": False, "bodies": ["ball-1"], "skipped": {}, "provenance": _PROV}),
    "plan": ({"entity": "ball-1", "goal": {"x": 5.0, "y": 2.0, "radius": 0.5}, "horizon": 10, "budget": 256},
             "200", {"world": "lab", "entity": "ball-1", "actions": [[0.4, 0.1]], "predicted_path": [[1.6, 2.0]],
                     "final_energy": 0.3, "reaches_goal": True, "bodies": ["ball-1"], "skipped": {},
                     "provenance": _PROV}),
    "create_key": (None, "201", {"id": "7f3a9c2e41d05b68", "name": "robot-7", "scopes": ["observe", "read"],
                                 "worlds": ["lab"], "quotas": {"observations_per_s": 500},
                                 "created_at_ms": 1732170000000, "created_by": "0a1b2c3d4e5f6071",
                                 "token": "wsk_7f3a9c2e41d05b68_Zm9vYmFyYmF6cXV4cXV1eHF1dXhmb29iYXJiYXo"}),
    "list_keys": (None, "200", {"keys": [{"id": "7f3a9c2e41d05b68", "name": "robot-7", "scopes": ["observe", "read"],
                                          "worlds": ["lab"], "quotas": {}, "created_at_ms": 1732170000000,
                                          "created_by": "0a1b2c3d4e5f6071"}]}),
    "revoke_key": (None, "200", {"id": "7f3a9c2e41d05b68", "revoked": True, "store_revision": 58}),
}


def add(name: str, op: dict[str, Any]) -> None:
    """Put the operation's examples into its request body and its success response."""
    if name not in EXAMPLES:
        return
    body, status, answer = EXAMPLES[name]
    if body is not None:
        for media in op.get("requestBody", {}).get("content", {}).values():
            media["example"] = body
    response = op.get("responses", {}).get(status)
    if response is not None:
        for media in response.setdefault("content", {"application/json": {}}).values():
            media["example"] = answer
