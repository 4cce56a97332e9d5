"""The Python SDK against the real deployment."""

from __future__ import annotations

import threading

import pytest

from client import Client, Conflict, NotFound, Unauthorized
from deploy.launcher import Deployment


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
        assert other.entity(world, "arm")["fields"]["angle"]["value"] == 0.3
    assert ws.entity(world, "ball")["fields"]["x"]["value"] == 1.0
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


def test_the_readme_client_example_runs(cluster: Deployment) -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## The Python client\n"):readme.index("## The world model\n")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    shown = 'Client("http://127.0.0.1:43629", key="wsk_...")'
    assert shown in code
    exec(compile(code.replace(shown, f"Client({cluster.api['r1'].url!r}, key={cluster.admin_key!r})"),
                 "README.md", "exec"), {})
