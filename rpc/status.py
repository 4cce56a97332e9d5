"""Errors as gRPC statuses, mapped in one place from the problem types HTTP answers.

An exception is first classified exactly as HTTP classifies it (`api.problems.problem_of`:
one table along the class hierarchy), then its problem becomes a status:

- the code, by the problem's HTTP status, except where a problem type names its own;
- a google.rpc.ErrorInfo on every error: domain "worldstate", reason the problem type in
  UPPER_SNAKE_CASE (precondition-failed -> PRECONDITION_FAILED), metadata `type` (its HTTP
  type URI) and the problem's members (current_revision, limit, ...; lists as JSON);
- a google.rpc.RetryInfo when HTTP would send Retry-After;
- a google.rpc.BadRequest with one field violation per invalid field.

Outcome unknown (HTTP 504) is UNKNOWN, not DEADLINE_EXCEEDED: gRPC clients and proxies
read DEADLINE_EXCEEDED as "the caller's deadline passed", and some retry it; a write whose
outcome is unknown must never be retried blindly, and UNKNOWN is the code gRPC itself uses
for "may or may not have happened". The ErrorInfo reason OUTCOME_UNKNOWN says which case.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from api.problems import Problem, problem_of

__all__ = ["CODE_OF_STATUS", "CODE_OF_TYPE", "DOMAIN", "abort", "code_of", "reason", "status_of"]

log = logging.getLogger("worldstate.rpc")
DOMAIN = "worldstate"
C = grpc.StatusCode

# HTTP status of a problem type -> gRPC code.
CODE_OF_STATUS: dict[int, grpc.StatusCode] = {
    400: C.INVALID_ARGUMENT, 413: C.INVALID_ARGUMENT, 415: C.INVALID_ARGUMENT, 422: C.INVALID_ARGUMENT,
    401: C.UNAUTHENTICATED, 403: C.PERMISSION_DENIED, 404: C.NOT_FOUND,
    408: C.DEADLINE_EXCEEDED, 409: C.FAILED_PRECONDITION, 410: C.OUT_OF_RANGE,
    412: C.ABORTED,  # a lost compare-and-swap: restart the read-modify-write
    429: C.RESOURCE_EXHAUSTED, 507: C.RESOURCE_EXHAUSTED,
    500: C.INTERNAL, 503: C.UNAVAILABLE, 504: C.UNKNOWN,
}
# Problem types whose code is not their HTTP status's.
CODE_OF_TYPE: dict[str, grpc.StatusCode] = {
    # A read's causal token not yet honoured: nothing was changed and the read is safe to
    # repeat, which UNAVAILABLE says (and gRPC retry policies act on); 504 alone says UNKNOWN.
    "not-yet-consistent": C.UNAVAILABLE,
    # A snapshot the store has not reached yet: valid later, as OUT_OF_RANGE means.
    "future-revision": C.OUT_OF_RANGE,
}


def reason(slug: str) -> str:
    """ErrorInfo.reason of a problem type: UPPER_SNAKE_CASE, as google.rpc asks."""
    return slug.upper().replace("-", "_")


def code_of(p: Problem) -> grpc.StatusCode:
    return CODE_OF_TYPE.get(p.type.slug) or CODE_OF_STATUS.get(p.status, C.UNKNOWN)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_of(exc: BaseException) -> grpc.Status:
    """The status an error stands for, with its details (see the module docstring)."""
    p = problem_of(exc)
    if p.type.slug == "internal":
        log.error("internal error in a gRPC call", exc_info=exc)
    meta = {"type": f"/problems/{p.type.slug}", **{k: _text(v) for k, v in p.extra.items() if k != "errors"}}
    details = [error_details_pb2.ErrorInfo(reason=reason(p.type.slug), domain=DOMAIN, metadata=meta)]
    retry = p.headers.get("Retry-After")
    if retry is not None:
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry))))
    errors = p.extra.get("errors")
    if errors:
        violations = [error_details_pb2.BadRequest.FieldViolation(
            field=".".join(str(part) for part in e.get("loc", ())), description=str(e.get("msg", "")))
            for e in errors]
        details.append(error_details_pb2.BadRequest(field_violations=violations))
    code = code_of(p)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=p.detail,
                               details=[_packed(d) for d in details])
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """End the call with the status of `exc` (raises, as context.abort does)."""
    await context.abort_with_status(status_of(exc))
