"""The Python SDK (sync) against the real deployment; test_client_async.py holds the async client's."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import aetcd
import httpx
import pytest

from client import Client, Compacted, Conflict, NotFound, OutcomeUnknown, Unauthorized
from client.cli import exit_code
from deploy.launcher import Deployment, wait_until
from tests.client_cuts import Cutting, Losing
from tests.conftest import etcd_revision

ROOT = Path(__file__).resolve().parent.parent
# The README section the SDK's examples live in: from this heading to the next "## " heading.
README_HEADING = "## The Python client"


@pytest.fixture
def ws(cluster: Deployment) -> Client:
    with Client(cluster.api["r1"].url, cluster.admin_key) as c:
        yield c  # type: ignore[misc]


def test_params_compare_and_swap_and_update_loses_no_increment(cluster: Deployment, ws: Client, world: str) -> None:
    ws.create_world(world)
    rev = ws.put_param(world, "counter", 0)
    with pytest.raises(Conflict) as lost:
        ws.put_param(world, "counter", 5, if_revision=rev - 1)
    assert lost.value.current_revision == rev
    with pytest.raises(Conflict):
        ws.put_param(world, "counter", 5, create_only=True)

    failures: list[BaseException] = []

    def bump(url: str) -> None:
        try:
            with Client(url, cluster.admin_key) as c:
                for _ in range(15):
                    c.update(world, "counter", lambda v: v + 1)
        except BaseException as e:  # raised in the test below, not lost in the thread
            failures.append(e)

    threads = [threading.Thread(target=bump, args=(cluster.api[r].url,)) for r in ("r1", "r2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert ws.get_param(world, "counter").value == 30  # 30 read-modify-writes, none lost
    ws.delete_param(world, "counter")
    with pytest.raises(NotFound):
        ws.get_param(world, "counter")


def test_observe_is_safe_to_resend_and_reads_follow_the_write_across_regions(cluster: Deployment, ws: Client,
                                                                             world: str) -> None:
    ws.create_world(world)
    batch = [{"entity": "ball", "fields": {"x": 1.0, "y": 2.0}}, {"entity": "arm", "fields": {"angle": 0.3}}]
    first = ws.observe(world, batch)
    assert first.accepted == 2 and first.duplicates == []
    with Client(cluster.api["r2"].url, cluster.admin_key) as other:
        other.token = ws.token  # the session's token, handed to a reader in the other region
        assert other.entity(world, "arm").fields["angle"].value == 0.3
    assert ws.entity(world, "ball").values() == {"x": 1.0, "y": 2.0}
    assert world in ws.worlds()


def test_errors_are_named_for_their_problem_types(cluster: Deployment) -> None:
    with Client(cluster.api["r1"].url, "wsk_0123456789abcdef_" + "x" * 43) as bad:
        with pytest.raises(Unauthorized) as e:
            bad.get_param("lab", "k")
    assert e.value.status == 401 and e.value.type == "/problems/unauthorized"


def test_observe_resends_the_same_ids_after_a_429(cluster: Deployment, ws: Client, world: str) -> None:
    ws.create_world(world)
    made = ws.http.post("/v1/keys", json={"name": "sdk-slow", "scopes": ["observe", "read"], "worlds": [world],
                                          "quotas": {"observations_per_s": 2}}).json()
    with Client(cluster.api["r1"].url, made["token"]) as slow:
        assert slow.observe(world, [{"entity": f"e{i}", "fields": {"x": 1.0}} for i in range(2)]).accepted == 2
        second = slow.observe(world, [{"entity": f"f{i}", "fields": {"x": 1.0}} for i in range(2)])  # 429 first
        assert second.accepted == 2 and second.duplicates == []
        again = [{"entity": "g", "event_id": "g-1", "fields": {"x": 2.0}}]
        slow.observe(world, again)
        assert slow.observe(world, again).duplicates == ["g-1"]


def test_watch_resumes_after_cut_connections_without_gaps_or_duplicates(cluster: Deployment, world: str) -> None:
    """Five connections cut mid-stream (inside the first comment, inside events, between them):
    the iterator reconnects with Last-Event-ID and yields each change once, in order."""
    cut = Cutting("/watch", [20, 150, 260, 75, 400])
    with Client(cluster.api["r1"].url, cluster.admin_key, transport=cut) as ws:
        ws.create_world(world)
        written = [ws.put_param(world, f"sim/k{i % 3}", i) for i in range(24)]
        ws.delete_param(world, "sim/k0")
        seen = []
        for change in ws.watch(world, "sim/", start_revision=written[0]):
            seen.append(change)
            if len(seen) == 25:
                break
    assert [c.revision for c in seen[:24]] == written
    assert [c.value for c in seen[:24]] == list(range(24))
    assert (seen[24].type, seen[24].key, seen[24].value) == ("delete", "sim/k0", None)
    assert not cut.cuts and len(cut.resumed_from) == 6, cut.resumed_from
    assert [r for r in cut.resumed_from[1:] if r is not None], "later connections resumed by Last-Event-ID"


def _compact(cluster: Deployment) -> int:
    now = etcd_revision(cluster)

    async def compact() -> None:
        async with aetcd.Client(*cluster.etcd_endpoints[0].split(":")) as raw:
            await raw.compact(now)

    asyncio.run(compact())
    return now


def test_watch_from_a_compacted_revision_raises_compacted(cluster: Deployment, ws: Client, world: str) -> None:
    ws.create_world(world)
    first = ws.put_param(world, "k", 0)
    ws.put_param(world, "k", 1)
    now = _compact(cluster)
    with pytest.raises(Compacted) as gone:
        next(iter(ws.watch(world, start_revision=first)))
    assert gone.value.compact_revision >= now and exit_code(gone.value) == 9


def test_observer_batches_and_a_replay_finds_only_duplicates(cluster: Deployment, world: str) -> None:
    """The first batch's answer is lost after the node applied it: the observer resends the
    same ids, which come back as duplicates. Replaying everything applies nothing again."""
    lose = Losing("POST", "/observations")
    with Client(cluster.api["r1"].url, cluster.admin_key, transport=lose) as ws:
        ws.create_world(world)
        with ws.observer(world, batch=3, source="cam") as w:
            ids = [w.add(f"ball-{i}", {"x": float(i)}) for i in range(7)]
        assert lose.seen == 4  # batches of 3, 3, 1, and the first one resent
        assert w.accepted == 4 and sorted(w.duplicates) == sorted(ids[:3])
        with ws.observer(world, batch=5, source="cam") as again:
            for i, event_id in enumerate(ids):
                again.add(f"ball-{i}", {"x": float(i)}, event_id=event_id)
        assert again.accepted == 0 and sorted(again.duplicates) == sorted(ids)
        counts = [ws.entity(world, f"ball-{i}").observations for i in range(7)]
    assert counts == [1] * 7  # each event applied once


def test_a_write_whose_answer_is_lost_is_not_resent(cluster: Deployment, world: str) -> None:
    lose = Losing("PUT", "/params/k")
    with Client(cluster.api["r1"].url, cluster.admin_key, transport=lose) as ws:
        ws.create_world(world)
        with pytest.raises(OutcomeUnknown):
            ws.put_param(world, "k", 1)
        assert lose.seen == 1 and exit_code(OutcomeUnknown(504, {})) == 6
        assert ws.get_param(world, "k").value == 1  # it was applied: reading tells


def test_params_list_physics_and_the_model(cluster: Deployment, ws: Client, world: str) -> None:
    cluster.publish_default_model()  # kept if another test published one first
    ws.create_world(world)
    for i in range(3):
        ws.create_param(world, f"cfg/{i}", {"i": i})
    listed = ws.list_params(world, "cfg/")
    assert [(i.key, i.value) for i in listed.items] == [(f"cfg/{i}", {"i": i}) for i in range(3)]
    rev = ws.put_physics(world, {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05})
    physics = ws.get_physics(world)
    assert (physics.gravity, physics.revision) == (9.81, rev)
    with pytest.raises(Conflict):
        ws.put_physics(world, physics, if_revision=rev - 1)
    ws.observe(world, [{"entity": "b1", "fields": {"x": 2.0, "y": 5.0, "vx": 1.0, "vy": 0.0}},
                       {"entity": "b2", "fields": {"x": 7.0, "y": 5.0, "vx": -1.0, "vy": 0.0}}])
    p = ws.predict(world, 5, actions={"b1": [[0.5, 0.0]]})
    assert len(p.trajectories["b1"].positions) == 5 and p.provenance["physics_revision"] == rev
    s = ws.surprise(world, {"b1": [{"x": 2.05, "y": 5.0, "vx": 1.0, "vy": 0.0}]})
    assert s.most_surprising == "b1" and isinstance(s.surprising, bool)
    plan = ws.plan(world, "b1", {"x": 5, "y": 5, "radius": 1}, 5, budget=64)
    assert len(plan.actions) == 5 and sorted(plan.bodies) == ["b1", "b2"]
    m = ws.manifest()
    assert ws.serving()["hash"] == m.manifest["hash"]


def readme_section(text: str) -> str:
    start = text.index(README_HEADING)
    end = text.find("\n## ", start + len(README_HEADING))
    return text[start:end if end != -1 else len(text)]


# Each curl of the README must answer 2xx: the body goes to stderr, the status is checked.
CURL_MUST_SUCCEED = """curl() {
  local code
  code=$(command curl -sS -o /dev/stderr -w '%{http_code}' "$@")
  [[ $code == 2* ]] || { echo "curl $* answered $code" >&2; return 1; }
}
"""


def run_examples(section: str, cluster: Deployment) -> str:
    """Every python and sh block of `section`, in order (python in one namespace, the URL and key
    the README shows replaced by the deployment's; sh under bash -e, with $API and the key set
    and the venv's `worldstate` on PATH). Returns what the sh blocks printed."""
    blocks = re.findall(r"```(python|sh)\n(.*?)```", section, re.S)
    assert any(lang == "python" for lang, _ in blocks), f"no python examples under {README_HEADING!r}"
    url, key = cluster.api["r1"].url, cluster.admin_key or ""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WORLDSTATE_")}, "API": url,
           "WORLDSTATE_KEY": key, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    namespace: dict[str, object] = {}
    printed = ""
    for lang, code in blocks:
        if lang == "python":
            code = code.replace('"http://127.0.0.1:43629"', repr(url)).replace('"wsk_..."', repr(key))
            exec(compile(code, "README.md", "exec"), namespace)
        else:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", CURL_MUST_SUCCEED + code], env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{code}\nexited {done.returncode}\n{done.stdout}\n{done.stderr}"
            printed += done.stdout
    return printed


def test_the_readme_client_examples_run(cluster: Deployment) -> None:
    cluster.publish_default_model()  # `worldstate up` publishes it; the examples ask the model
    section = readme_section((ROOT / "README.md").read_text())
    printed = run_examples(section, cluster)
    if 'echo "exit $?"' in section:
        assert "exit 4" in printed  # the create-only write that lost: exit status 4


def test_delete_and_a_subscription_that_resumes_after_cuts(cluster: Deployment, world: str) -> None:
    """An entity subscription from now, its connections cut twice (inside the first event, then
    later): every merged change of the prefix arrives once, each entity's in order, the delete
    included; a delete resent with its event id is a duplicate."""
    with Client(cluster.api["r1"].url, cluster.admin_key) as ws:
        ws.create_world(world)
        # The stream opens with `: subscribed after <position>`, a vector as long as the partitions
        # that have moved (up to ~1.5 kB): the cuts are counted past it, as they were when it was 40 bytes.
        head = httpx.get(f"{cluster.api['r1'].url}/v1/worlds/{world}/positions",
                         headers={"Authorization": f"Bearer {cluster.admin_key}"}).json()["changes"]
    opening = len(f": subscribed after {head}\n\n")
    cut = Cutting("/entities/stream", [opening + 23, opening + 133])
    with Client(cluster.api["r1"].url, cluster.admin_key, transport=cut) as ws:
        receipts: list[object] = []

        def write() -> None:
            assert wait_until(lambda: bool(cut.resumed_from), 30)  # answered: the start position is fixed
            with Client(cluster.api["r1"].url, cluster.admin_key) as w:
                for entity, x in (("ball-1", 1.0), ("ball-2", 2.0), ("other-1", 3.0), ("ball-1", 4.0)):
                    w.observe(world, [{"entity": entity, "fields": {"x": x}}])
                receipts.append(w.delete_entity(world, "ball-2", event_id="del-1"))
                receipts.append(w.delete_entity(world, "ball-2", event_id="del-1"))
                w.observe(world, [{"entity": "ball-end", "fields": {"x": 0.0}}])  # the last one

        writer = threading.Thread(target=write)
        writer.start()
        seen = []
        for change in ws.subscribe(world, prefix="ball-"):
            seen.append(change)
            if len(seen) == 5:
                break
        writer.join(30)
    # entities of different partitions have no order between them; each entity's changes do
    by_entity: dict[str, list[tuple[object, ...]]] = {}
    for c in seen:
        by_entity.setdefault(c.entity, []).append((c.fields, c.deleted, c.origin))
    assert by_entity == {"ball-1": [({"x": 1.0}, False, "r1"), ({"x": 4.0}, False, "r1")],
                         "ball-2": [({"x": 2.0}, False, "r1"), ({}, True, "r1")],
                         "ball-end": [({"x": 0.0}, False, "r1")]}
    assert len({c.id for c in seen}) == 5 and len(cut.resumed_from) == 3 and not cut.cuts
    first, again = receipts
    assert (first.duplicate, again.duplicate) == (False, True)  # type: ignore[attr-defined]
