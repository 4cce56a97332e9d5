"""worldstate over gRPC against a real deployment: the same semantics as HTTP, by gRPC's conventions."""

from __future__ import annotations

import asyncio
import filecmp
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from deploy.launcher import Deployment, wait_until
from rpc import generate
from rpc import worldstate_pb2 as pb
from rpc.channel import aconnect, channel, connect
from rpc.status import status_of
from rpc.values import from_struct, to_struct, to_value
from service.errors import NotYetConsistent, QuotaExceeded, store
from tests.conftest import auth_headers, repo_root
from tests.scrape import scrape, value
from tests.up_output import admin_key, auth, grpc_targets, until_up

PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}


@pytest.fixture(scope="module")
def http(cluster: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.api["r1"].url, timeout=30, headers=auth_headers(cluster)) as c:
        yield c


@pytest.fixture(scope="module")
def stub(cluster: Deployment) -> Iterator[Any]:
    with connect(cluster.api["r1"].grpc, cluster.admin_key) as (_, s):
        yield s


@pytest.fixture(scope="module")
def stub2(cluster: Deployment) -> Iterator[Any]:
    with connect(cluster.api["r2"].grpc, cluster.admin_key) as (_, s):
        yield s


@pytest.fixture(scope="module")
def made_world(http: httpx.Client) -> str:
    world = "grpc-" + uuid.uuid4().hex[:8]
    assert http.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    return world


def _error(e: grpc.RpcError) -> tuple[grpc.StatusCode, dict[str, Any]]:
    """The code of a failed call and its details by kind: error_info, retry_info, bad_request."""
    status = rpc_status.from_call(e)  # type: ignore[arg-type]
    assert status is not None, f"{e.code()} without rich status details: {e.details()}"
    found: dict[str, Any] = {}
    for detail in status.details:
        for name, cls in (("error_info", error_details_pb2.ErrorInfo), ("retry_info", error_details_pb2.RetryInfo),
                          ("bad_request", error_details_pb2.BadRequest)):
            if detail.Is(cls.DESCRIPTOR):
                found[name] = cls()
                detail.Unpack(found[name])
    assert found["error_info"].domain == "worldstate"
    return e.code(), found


def _observation(event_id: str, entity: str, **fields: Any) -> pb.Observation:
    return pb.Observation(event_id=event_id, entity=entity, source="grpc-test",
                          fields={k: to_value(v) for k, v in fields.items()})


def test_put_get_round_trip_and_a_lost_compare_and_swap_is_aborted(stub: Any, http: httpx.Client,
                                                                    made_world: str) -> None:
    put = stub.PutParam(pb.PutParamRequest(world=made_world, key="cfg/speed", value=to_value({"max": 3.5}),
                                           create_only=True))
    assert put.created and put.revision > 0
    got = stub.GetParam(pb.GetParamRequest(world=made_world, key="cfg/speed"))
    assert got.value.struct_value.fields["max"].number_value == 3.5 and got.revision == put.revision
    assert got.consistency == pb.LINEARIZABLE
    assert stub.GetParam(pb.GetParamRequest(world=made_world, key="cfg/speed", consistency=pb.SERIALIZABLE)
                         ).consistency == pb.SERIALIZABLE
    second = stub.PutParam(pb.PutParamRequest(world=made_world, key="cfg/speed", value=to_value({"max": 4.0}),
                                              if_revision=put.revision))
    with pytest.raises(grpc.RpcError) as lost:
        stub.PutParam(pb.PutParamRequest(world=made_world, key="cfg/speed", value=to_value({"max": 9.0}),
                                         if_revision=put.revision))
    code, details = _error(lost.value)
    assert code == grpc.StatusCode.ABORTED
    assert details["error_info"].reason == "PRECONDITION_FAILED"
    assert details["error_info"].metadata["current_revision"] == str(second.revision)
    # The HTTP twin reads what gRPC wrote, at the same revision.
    doc = http.get(f"/v1/worlds/{made_world}/params/cfg/speed").json()
    assert doc["value"] == {"max": 4.0} and doc["revision"] == second.revision


def test_observe_acks_each_batch_and_a_replayed_batch_is_all_duplicates(stub: Any, cluster: Deployment,
                                                                        made_world: str) -> None:
    first = [_observation("obs-1", "rover", x=1.0, y=2.0), _observation("obs-2", "rover", x=1.5)]
    second = [_observation("obs-3", "drone", x=7.0, label="scout")]
    batches = [pb.ObserveRequest(world=made_world, observations=b) for b in (first, second, first)]
    before = scrape(cluster.api["r1"].url)
    acks = list(stub.Observe(iter(batches)))
    after = scrape(cluster.api["r1"].url)
    assert [a.accepted for a in acks] == [2, 1, 0]
    # Counted as HTTP's posts are, on the node's /metrics.
    assert {o: value(after, "worldstate_observations_total", outcome=o)
            - value(before, "worldstate_observations_total", outcome=o) for o in ("accepted", "duplicate")} \
        == {"accepted": 3, "duplicate": 2}
    assert list(acks[2].duplicates) == ["obs-1", "obs-2"] and not acks[0].duplicates
    assert all(a.replica == "r1" and a.token.startswith("r1:") for a in acks)
    got = stub.GetEntity(pb.GetEntityRequest(world=made_world, entity="rover", token=acks[0].token))
    assert got.fields["x"].value.number_value == 1.5 and got.observations_total == 2


def test_an_asyncio_channel_sends_its_key_on_streams_too(cluster: Deployment, made_world: str) -> None:
    """aconnect's key reaches every kind of call: grpc.aio files an interceptor under one kind
    only, and a key that reached unary calls alone once left Observe UNAUTHENTICATED."""

    async def go() -> tuple[int, int]:
        async with aconnect(cluster.api["r1"].grpc, cluster.admin_key) as (_, s):
            async def one():  # type: ignore[no-untyped-def]
                yield pb.ObserveRequest(world=made_world, observations=[_observation("aio-1", "kite", x=3.0)])

            acks = [a async for a in s.Observe(one())]
            got = await s.GetEntity(pb.GetEntityRequest(world=made_world, entity="kite", token=acks[0].token))
            return acks[0].accepted, int(got.fields["x"].value.number_value)

    assert asyncio.run(go()) == (1, 3)


def test_get_entity_on_the_other_region_reads_the_write_its_token_names(stub: Any, stub2: Any,
                                                                         made_world: str) -> None:
    at_ms = 1_700_000_000_123
    ob = pb.Observation(event_id="ryw-1", entity="probe", source="grpc-test", observed_at_ms=at_ms,
                        fields={"x": to_value(4.25), "ok": to_value(True)})
    ack = next(iter(stub.Observe(iter([pb.ObserveRequest(world=made_world, observations=[ob])]))))
    got = stub2.GetEntity(pb.GetEntityRequest(world=made_world, entity="probe", token=ack.token, wait_ms=10_000))
    assert got.reflects.replica == "r2"
    assert got.fields["x"].value.number_value == 4.25 and got.fields["ok"].value.bool_value is True
    assert got.fields["x"].observed_at_ms == at_ms and got.fields["x"].event_id == "ryw-1"


def test_watch_delivers_a_put_from_its_revision(stub: Any, made_world: str) -> None:
    put = stub.PutParam(pb.PutParamRequest(world=made_world, key="watched/a", value=to_value(7)))
    call = stub.Watch(pb.WatchRequest(world=made_world, prefix="watched/", start_revision=put.revision))
    try:
        change = next(call)
        assert dict(call.initial_metadata())["worldstate-start-revision"] == str(put.revision)
    finally:
        call.cancel()
    assert (change.type, change.key, change.revision) == (pb.ParamChange.PUT, "watched/a", put.revision)
    assert change.value.number_value == 7


def test_subscribe_streams_merged_changes_and_resumes_after_an_id(stub: Any, stub2: Any, made_world: str) -> None:
    call = stub2.Subscribe(pb.SubscribeRequest(world=made_world, prefix="sub-"))
    try:
        assert dict(call.initial_metadata())["worldstate-position"]  # open before anything is written
        list(stub.Observe(iter([
            pb.ObserveRequest(world=made_world, observations=[_observation("sub-1", "sub-a", x=1.0),
                                                              _observation("sub-0", "other", x=0.0)]),
            pb.ObserveRequest(world=made_world, observations=[_observation("sub-2", "sub-b", x=2.0)])])))
        first, second = next(call), next(call)
    finally:
        call.cancel()
    # Two entities live in two partitions: their changes' order is not promised (README), each one's is.
    assert sorted((c.entity, c.fields["x"].number_value, c.origin) for c in (first, second)) == \
        [("sub-a", 1.0, "r1"), ("sub-b", 2.0, "r1")]
    resumed = stub2.Subscribe(pb.SubscribeRequest(world=made_world, prefix="sub-", after=first.id))
    try:
        again = next(resumed)
    finally:
        resumed.cancel()
    assert (again.id, again.entity) == (second.id, second.entity)
    with pytest.raises(grpc.RpcError) as bad:
        next(stub2.Subscribe(pb.SubscribeRequest(world=made_world, after="not-a-position")))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_no_key_or_a_bad_one_is_unauthenticated_and_a_narrow_key_is_denied(cluster: Deployment, http: httpx.Client,
                                                                           made_world: str) -> None:
    read_only = http.post("/v1/keys", json={"name": "grpc-reader", "scopes": ["read"], "worlds": [made_world]})
    assert read_only.status_code == 201, read_only.text
    target = cluster.api["r1"].grpc
    request = pb.PutParamRequest(world=made_world, key="auth/k", value=to_value(1))
    for key in (None, "wsk_0000000000000000_" + "x" * 43):
        with connect(target, key) as (_, anon), pytest.raises(grpc.RpcError) as refused:
            anon.PutParam(request)
        assert _error(refused.value)[0] == grpc.StatusCode.UNAUTHENTICATED
    with connect(target, read_only.json()["token"]) as (_, reader):
        with pytest.raises(grpc.RpcError) as denied:
            reader.PutParam(request)
        code, details = _error(denied.value)
        assert code == grpc.StatusCode.PERMISSION_DENIED and details["error_info"].metadata["scope"] == "params:write"
        with pytest.raises(grpc.RpcError) as observe:
            list(reader.Observe(iter([pb.ObserveRequest(world=made_world, observations=[
                _observation("denied-1", "nobody", x=1.0)])])))
        assert observe.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as missing:  # but it reads: the key is absent, not refused
            reader.GetParam(pb.GetParamRequest(world=made_world, key="auth/k"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_invalid_arguments_are_refused_and_change_nothing(stub: Any, made_world: str) -> None:
    batch = [_observation("bad-1", "valid-entity", x=1.0), _observation("not an id!", "valid-entity", x=2.0)]
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Observe(iter([pb.ObserveRequest(world=made_world, observations=batch)])))
    code, details = _error(refused.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details["error_info"].reason == "VALIDATION_ERROR"
    assert [v.field for v in details["bad_request"].field_violations] == ["1.event_id"]
    with pytest.raises(grpc.RpcError) as absent:
        stub.GetEntity(pb.GetEntityRequest(world=made_world, entity="valid-entity"))
    assert absent.value.code() == grpc.StatusCode.NOT_FOUND  # the valid half was not applied either
    for request, reason in [
        (pb.PutParamRequest(world=made_world, key="a//b", value=to_value(1)), "INVALID_KEY"),
        (pb.PutParamRequest(world=made_world, key="nan", value=to_value(float("nan"))), "VALIDATION_ERROR"),
        (pb.PutParamRequest(world=made_world, key="both", value=to_value(1), if_revision=1, create_only=True),
         "INVALID_PRECONDITION"),
        (pb.PutParamRequest(world=made_world, key="physics/constants", value=to_value({**PHYSICS, "wind": 1.0})),
         "VALIDATION_ERROR"),
    ]:
        with pytest.raises(grpc.RpcError) as bad:
            stub.PutParam(request)
        code, details = _error(bad.value)
        assert (code, details["error_info"].reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), request
    with pytest.raises(grpc.RpcError) as huge:  # a message is bounded as an HTTP body is (max_body_bytes)
        stub.PutParam(pb.PutParamRequest(world=made_world, key="huge", value=to_value("x" * (1 << 20))))
    assert huge.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for key in ("nan", "both", "physics/constants", "huge"):
        with pytest.raises(grpc.RpcError) as nothing:
            stub.GetParam(pb.GetParamRequest(world=made_world, key=key))
        assert nothing.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_serving_and_reflection_lists_the_service(cluster: Deployment) -> None:
    with channel(cluster.api["r1"].grpc) as ch:  # neither needs a key, as grpc_health_probe sends none
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "worldstate.v1.Worldstate"):
            assert wait_until(lambda: health.Check(health_pb2.HealthCheckRequest(service=service)).status
                              == health_pb2.HealthCheckResponse.SERVING, 30), service
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert {"worldstate.v1.Worldstate", "grpc.health.v1.Health"} <= services


def test_the_generated_modules_match_the_proto(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    for name in generate.OUTPUTS:
        assert filecmp.cmp(tmp_path / name, repo_root() / name, shallow=False), \
            f"{name} is stale: run python -m rpc.generate"


def test_up_prints_each_nodes_grpc_target_which_predicts_with_the_default_model(tmp_path: Path) -> None:
    """As a user would: `worldstate up` (its own deployment, so the session's stays without a model),
    then the target it printed, the key it printed and the model it published."""
    proc = subprocess.Popen([sys.executable, "-m", "deploy", "up", "--etcd-members", "1", "--regions", "1",
                             "--run-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo_root())
    try:
        out = until_up(proc)
        targets, key = grpc_targets(out), admin_key(out)
        assert list(targets) == ["r1"], out
        api = json.loads((tmp_path / "deployment.json").read_text())["api"]["r1"]
        world = "grpc-model"
        assert httpx.put(f"{api}/v1/worlds/{world}", json={}, headers=auth(out)).status_code in (200, 201)
        assert httpx.put(f"{api}/v1/worlds/{world}/physics", json=PHYSICS, headers=auth(out)).status_code == 200
        with connect(targets["r1"], key) as (_, s):
            ack = next(s.Observe(iter([pb.ObserveRequest(world=world, observations=[
                _observation("ball-0", "ball", x=2.0, y=5.0, vx=1.0, vy=0.5)])])))
            s.GetEntity(pb.GetEntityRequest(world=world, entity="ball", token=ack.token))
            answer = s.Predict(pb.ModelQuery(world=world, query=to_struct({"horizon": 3, "entities": ["ball"]})))
        doc = from_struct(answer.answer)
        assert len(doc["trajectories"]["ball"]["positions"]) == 3 and doc["horizon"] == 3
        assert doc["provenance"]["model"]["hash"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_watch_ends_unauthenticated_when_its_key_is_revoked(cluster: Deployment, http: httpx.Client,
                                                              made_world: str) -> None:
    made = http.post("/v1/keys", json={"name": "grpc-watcher", "scopes": ["read"], "worlds": [made_world]}).json()
    with connect(cluster.api["r2"].grpc, made["token"]) as (_, watcher):
        call = watcher.Watch(pb.WatchRequest(world=made_world, prefix="revoked/"))
        call.initial_metadata()  # the stream is open
        assert http.delete(f"/v1/keys/{made['id']}").status_code == 200
        with pytest.raises(grpc.RpcError) as cut:
            next(call)
    assert _error(cut.value)[0] == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("exc, code, reason, retry", [
    (store.Conflict("k", 12), grpc.StatusCode.ABORTED, "PRECONDITION_FAILED", False),
    (store.OutcomeUnknown("sent, not answered"), grpc.StatusCode.UNKNOWN, "OUTCOME_UNKNOWN", False),
    (store.Unavailable("no quorum", 2.0), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", True),
    (store.ReplicaFull("maxmemory"), grpc.StatusCode.UNAVAILABLE, "REPLICA_FULL", True),
    (QuotaExceeded("over", "observations_per_s", 10.0, 1.0), grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", True),
    (store.Compacted(40), grpc.StatusCode.OUT_OF_RANGE, "COMPACTED", False),
    (store.UnknownWorld("w"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_WORLD", False),
    (NotYetConsistent("later", "r2:1-0", ["r2"]), grpc.StatusCode.UNAVAILABLE, "NOT_YET_CONSISTENT", False),
    (store.StorageFull("nospace"), grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL", False),
    (RuntimeError("a bug"), grpc.StatusCode.INTERNAL, "INTERNAL", False),
])
def test_errors_map_to_grpc_codes_with_their_details(exc: Exception, code: grpc.StatusCode, reason: str,
                                                     retry: bool) -> None:
    status = status_of(exc)
    assert status.code == code
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    proto = status_pb2.Status.FromString(details)
    kinds = {d.TypeName(): d for d in proto.details}
    info = error_details_pb2.ErrorInfo()
    kinds["google.rpc.ErrorInfo"].Unpack(info)
    assert (info.reason, info.domain) == (reason, "worldstate")
    assert ("google.rpc.RetryInfo" in kinds) == retry
    if isinstance(exc, store.Conflict):
        assert info.metadata["current_revision"] == "12"
