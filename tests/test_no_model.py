"""Before any model is published, model queries are refused as unavailable, over HTTP and gRPC.

A deployment of its own: the session cluster gets a model from the first test that
publishes one, and a check that skipped whenever one had was never run in the full suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from deploy.launcher import Deployment, Topology
from rpc import worldstate_pb2 as pb
from rpc.channel import connect
from rpc.values import to_struct
from tests.conftest import CP_TIMEOUT_S, auth_headers

WORLD = "lab"


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    run_dir: Path = tmp_path_factory.mktemp("no-model")
    with Deployment(Topology(etcd_members=1, regions=1, run_dir=run_dir, cp_timeout_s=CP_TIMEOUT_S,
                             api_env={"WORLDSTATE_DEVICE": "cpu"})) as d:
        with httpx.Client(base_url=d.api["r1"].url, timeout=30, headers=auth_headers(d)) as api:
            assert api.put(f"/v1/worlds/{WORLD}", json={}).status_code in (200, 201)
            w = api.post(f"/v1/worlds/{WORLD}/observations", json={
                "event_id": "e1", "entity": "ball0", "source": "sim",
                "fields": {"x": 1.0, "y": 2.0, "vx": 0.0, "vy": 0.0, "mass": 1.0, "radius": 0.1}})
            assert w.status_code == 202, w.text
            assert api.get("/v1/models/current").json()["state"] == "none"
        yield d


def test_http_predict_is_503_model_unavailable(bare: Deployment) -> None:
    with httpx.Client(base_url=bare.api["r1"].url, timeout=30, headers=auth_headers(bare)) as api:
        r = api.post(f"/v1/worlds/{WORLD}/predict", json={"horizon": 3, "entities": ["ball0"]})
    assert r.status_code == 503 and r.json()["type"] == "/problems/model-unavailable", r.text
    assert int(r.headers["Retry-After"]) > 0


def test_grpc_predict_is_unavailable_with_retry_info(bare: Deployment) -> None:
    with connect(bare.api["r1"].grpc, bare.admin_key) as (_, stub), pytest.raises(grpc.RpcError) as refused:
        stub.Predict(pb.ModelQuery(world=WORLD, query=to_struct({"horizon": 3, "entities": ["ball0"]})))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert any(d.Unpack(info) for d in status.details) and info.reason == "MODEL_UNAVAILABLE"
    assert any(d.Unpack(retry) for d in status.details) and retry.retry_delay.seconds > 0
