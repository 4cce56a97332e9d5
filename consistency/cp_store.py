"""The CP tier: JSON values in etcd, linearizable, compare-and-swap on revision.

Reads are linearizable unless a caller asks for `serializable` by name; then
the answer is marked as such. Writes are single etcd transactions and are
never retried here: a write whose answer was lost raises OutcomeUnknown and
the caller decides, after reading, whether to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aetcd
from aetcd import rpc

from consistency.cp_auth import AuthedStub, AuthFailed, EtcdAuth, token_refused
from consistency.cp_codec import REQUIRE_LEADER, WatchEvent, decode, encode, prefix_end
from consistency.cp_members import Members, hedge, hedge_delay
from consistency.cp_watch import MAX_REVISION, watch_prefix
from consistency.errors import Compacted, Conflict, NotFound, OutcomeUnknown, StorageFull, StoreError, Unavailable

__all__ = ["MAX_REVISION", "AuthFailed", "CPStore", "Consistency", "Entry", "FutureRevision", "Listing",
           "WatchEvent", "WriteResult", "encode", "store_error"]

Consistency = Literal["linearizable", "serializable"]
# Told of every get, list, put and delete: (operation, outcome, seconds). The service counts them
# (worldstate_cp_requests_total); the store stays free of any metrics library.
CallObserver = Callable[[str, str, float], None]


def outcome(e: BaseException | None) -> str:
    """A call's outcome as a metric label: ok, or the kind of refusal."""
    if e is None:
        return "ok"
    for cls, name in ((Conflict, "conflict"), (NotFound, "not-found"), (OutcomeUnknown, "outcome-unknown"),
                      (Unavailable, "unavailable"), (StorageFull, "storage-full"), (Compacted, "compacted")):
        if isinstance(e, cls):
            return name
    if isinstance(e, asyncio.CancelledError):
        return "cancelled"
    return "refused" if isinstance(e, StoreError) else "error"

class FutureRevision(StoreError, ValueError):
    """A read at a revision the store has not reached yet; `current_revision` is where it is."""

    def __init__(self, revision: int, current_revision: int) -> None:
        super().__init__(f"revision {revision} is ahead of the store, which is at revision {current_revision}")
        self.revision, self.current_revision = revision, current_revision

# Errors that prove a request never reached raft, so even a write is safely "unavailable".
_NOT_SENT = ("no leader", "failed to connect", "connection refused",
             "not capable", "Connection refused", "DNS resolution failed")

_NO_ANSWER = (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED, rpc.StatusCode.CANCELLED)
# etcd hands a server-side timeout or cancellation back as the Go context's error,
# which gRPC reports as UNKNOWN: a linearizable read whose ReadIndex outlived its
# deadline (seen under partitions and pauses) means what DEADLINE_EXCEEDED does.
_CONTEXT_ERRORS = {"context deadline exceeded": rpc.StatusCode.DEADLINE_EXCEEDED,
                   "context canceled": rpc.StatusCode.CANCELLED}


def store_error(code: rpc.StatusCode, details: str, write: bool) -> StoreError:
    """What a failed etcd call means to the caller; `write`: whether it could have changed state."""
    if "compacted" in details:
        return Compacted(0)
    if code == rpc.StatusCode.UNKNOWN:
        code = _CONTEXT_ERRORS.get(details.strip(), code)
    if code == rpc.StatusCode.RESOURCE_EXHAUSTED and "space exceeded" in details:
        # NOSPACE. etcd checks the quota twice: as the request arrives (refused whole) and as it
        # applies it, where a write that passed the first check is applied and *then* answered
        # NOSPACE (quotaApplierV3). Either way the alarm it raises refuses every later write, on
        # every member, until an operator disarms it.
        return StorageFull(f"etcd is out of space: {details}; the write that crossed the quota may have been "
                           "applied, later ones are refused whole")
    if code == rpc.StatusCode.RESOURCE_EXHAUSTED:  # "too many requests"
        return Unavailable(f"etcd refused the request before proposing it ({code.name}: {details})")
    if code in _NO_ANSWER:
        if write and not any(s in details for s in _NOT_SENT):
            return OutcomeUnknown(f"etcd did not answer the write ({code.name}: {details})")
        return Unavailable(f"etcd has no quorum or is unreachable ({code.name}: {details})")
    return StoreError(f"etcd refused the request ({code.name}: {details})")


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    mod_revision: int
    create_revision: int
    version: int
    revision: int  # the store revision the answer reflects
    consistency: Consistency = "linearizable"


@dataclass(frozen=True)
class Listing:
    entries: list[Entry]
    revision: int
    more: bool
    consistency: Consistency = "linearizable"


@dataclass(frozen=True)
class WriteResult:
    key: str
    revision: int  # mod revision of the key after the write (the store revision for deletes)


def _resolve(endpoints: Sequence[str]) -> str:
    """A gRPC target over every member, so a dead member is skipped before a request is sent."""
    addrs = []
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        ip = socket.getaddrinfo(host or "127.0.0.1", int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        addrs.append(f"{ip}:{port}")
    return "ipv4:" + ",".join(addrs)


class CPStore:
    _members: Members | None = None  # a channel per member, for serializable reads (cp_members.py)

    def __init__(self, endpoints: Sequence[str], timeout_s: float = 2.0,
                 username: str | None = None, password: str | None = None) -> None:
        """`username` and `password`: an etcd user (a cluster with auth enabled); None for none."""
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s
        self.auth = EtcdAuth(username, password)
        self._client: aetcd.Client | None = None
        self.on_call: CallObserver | None = None

    async def connect(self) -> None:
        if self._client is not None:
            return
        target = _resolve(self.endpoints)
        host, _, port = target.rpartition(":")
        # aetcd joins host and port into the gRPC target; handing it a multi-address
        # target split at its last colon makes it a round-robin channel over all members.
        client = aetcd.Client(host=host, port=int(port), timeout=self.timeout_s, options={
            "grpc.lb_policy_name": "round_robin",
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.min_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 1000,
            # A member that stops answering (paused, partitioned away) is noticed within ~3 s and
            # skipped; etcd must allow it with --grpc-keepalive-min-time below 2 s (the launcher does).
            "grpc.keepalive_time_ms": 2000,
            "grpc.keepalive_timeout_ms": 1000,
        })
        # The token is ours, not aetcd's: aetcd takes one at connect and never renews it (cp_auth.py).
        await client.connect()
        self._client = client
        try:
            await self.auth.authenticate(client.channel, self.timeout_s)
        except Unavailable:
            pass  # etcd unreachable now: the first call refused for want of a token takes one
        except AuthFailed:
            await self.close()
            raise
        # Serializable reads: a channel per member beside the round-robin one, with the same
        # options (aetcd keeps the ones it was given), calls wrapped as the round-robin stub's are.
        self._members = Members(target.removeprefix("ipv4:").split(","), client._options, self.authed)

    def metadata(self, require_leader: bool) -> tuple[tuple[str, str], ...] | None:
        """What a call made on a raw stub sends: REQUIRE_LEADER if asked, and the auth token.

        A stub wrapped by `authed` adds the token itself (and renews it when refused)."""
        return self.auth.metadata(REQUIRE_LEADER if require_leader else ())

    def authed(self, stub: Any) -> Any:
        """`stub` (on this store's channel or a member's) with the token added and renewed."""
        return AuthedStub(stub, self.auth, self.channel) if self.auth.enabled else stub

    async def renew_token(self, refusal: str) -> None:
        """After etcd refused a call with `refusal` (a watch's cancel reason): renew the token
        if that is what it refused. A renewal that fails is left to the next call."""
        if self.auth.enabled and token_refused(refusal):
            with contextlib.suppress(Unavailable):
                await self.auth.renew(self.auth.token, self.channel, self.timeout_s)

    async def close(self) -> None:
        if self._members is not None:
            members, self._members = self._members, None
            await members.close()
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def _kv(self) -> Any:
        if self._client is None:
            raise RuntimeError("CPStore.connect() was not awaited")
        return self.authed(self._client.kvstub)

    @property
    def channel(self) -> Any:
        if self._client is None:
            raise RuntimeError("CPStore.connect() was not awaited")
        return self._client.channel

    # -- error mapping -------------------------------------------------------

    def _failure(self, e: rpc.AioRpcError, write: bool) -> StoreError:
        return store_error(e.code(), e.details() or "", write)

    async def _read(self, request: Any, serializable: bool) -> Any:
        """A Range with retries until the bound: reads are idempotent, so retrying is safe.

        A serializable one is answered by any live member (`_serializable_range`); a
        linearizable one only through a member with a leader (REQUIRE_LEADER)."""
        deadline = time.monotonic() + self.timeout_s
        metadata = None if serializable else REQUIRE_LEADER
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                if serializable and self._members is not None:
                    return await self._serializable_range(request, deadline)
                return await self._kv.Range(request, timeout=max(remaining, 0.01), metadata=metadata)
            except rpc.AioRpcError as e:
                err = self._failure(e, write=False)
                if not isinstance(err, Unavailable) or deadline - time.monotonic() <= delay:
                    raise err from e
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _serializable_range(self, request: Any, deadline: float) -> Any:
        """One Range answered by any live member: the round-robin channel's pick first, then,
        after a short delay or its failure, every member at once (a paused member never answers)."""
        members = self._members
        assert members is not None

        def attempt(kv: Any) -> Any:
            return lambda timeout: kv.Range(request, timeout=timeout, metadata=None)

        return await hedge(attempt(self._kv), [attempt(kv) for kv in members.kv], deadline=deadline,
                           delay_s=hedge_delay(self.timeout_s), unanswered=self._unanswered)

    def _unanswered(self, e: BaseException) -> bool:
        """Whether another member might answer what this error says one did not."""
        if isinstance(e, rpc.AioRpcError):
            e = self._failure(e, write=False)
        return isinstance(e, Unavailable)

    async def _write(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._kv, method)(request, timeout=self.timeout_s, metadata=REQUIRE_LEADER)
        except rpc.AioRpcError as e:
            raise self._failure(e, write=True) from e

    async def _counted(self, op: str, call: Awaitable[Any]) -> Any:
        if self.on_call is None:
            return await call
        start = time.perf_counter()
        failure: BaseException | None = None
        try:
            return await call
        except BaseException as e:
            failure = e
            raise
        finally:
            self.on_call(op, outcome(failure), time.perf_counter() - start)

    # -- reads ---------------------------------------------------------------

    async def get(self, key: str, consistency: Consistency = "linearizable") -> Entry:
        return await self._counted("get", self._get(key, consistency))  # type: ignore[no-any-return]

    async def _get(self, key: str, consistency: Consistency) -> Entry:
        serializable = consistency == "serializable"
        resp = await self._read(rpc.RangeRequest(key=key.encode(), serializable=serializable), serializable)
        if not resp.kvs:
            raise NotFound(key)
        return self._entry(resp.kvs[0], resp.header.revision, consistency)

    async def list(self, prefix: str, *, consistency: Consistency = "linearizable", limit: int = 0,
                   start_after: str | None = None, revision: int = 0) -> Listing:
        """One Range over the prefix: every entry reflects the same store revision.

        Pass back `revision` and the last key as `start_after` to page through
        the same snapshot.
        """
        return await self._counted(  # type: ignore[no-any-return]
            "list", self._list(prefix, consistency, limit, start_after, revision))

    async def _list(self, prefix: str, consistency: Consistency, limit: int, start_after: str | None,
                    revision: int) -> Listing:
        if not 0 <= revision <= MAX_REVISION:
            raise ValueError(f"revision {revision} outside 0..{MAX_REVISION}")
        serializable = consistency == "serializable"
        start = prefix.encode() if start_after is None else start_after.encode() + b"\0"
        req = rpc.RangeRequest(key=start, range_end=prefix_end(prefix.encode()), limit=limit,
                               revision=revision, serializable=serializable,
                               sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY)
        try:
            resp = await self._read(req, serializable)
        except Compacted:
            raise Compacted(await self._compact_revision()) from None
        except StoreError as e:
            # etcd answers OUT_OF_RANGE ("required revision is a future revision"); its text is
            # etcd's, so the caller gets the revisions instead.
            if revision and isinstance(e.__cause__, rpc.AioRpcError) and \
                    e.__cause__.code() == rpc.StatusCode.OUT_OF_RANGE:
                raise FutureRevision(revision, await self.current_revision()) from None
            raise
        entries = [self._entry(kv, resp.header.revision, consistency) for kv in resp.kvs]
        return Listing(entries, revision or resp.header.revision, resp.more, consistency)

    async def next_key(self, start: str, end: str, revision: int = 0) -> tuple[str | None, int]:
        """The first key in [start, end) at `revision` (0: now), or None, and the revision read;
        keys only, so a skip-scan over a tree (the worlds) reads no values."""
        req = rpc.RangeRequest(key=start.encode(), range_end=end.encode(), limit=1, keys_only=True,
                               revision=revision, sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY)
        resp = await self._read(req, False)
        return (resp.kvs[0].key.decode() if resp.kvs else None), revision or resp.header.revision

    async def current_revision(self) -> int:
        resp = await self._read(rpc.RangeRequest(key=b"\0", count_only=True), False)
        return resp.header.revision

    async def _compact_revision(self) -> int:
        # etcd reports the compaction point only through a watch; ask for revision 1.
        try:
            async for _ in self.watch("\0", start_revision=1):
                break
        except Compacted as c:
            return c.compact_revision
        return 0

    @staticmethod
    def _entry(kv: Any, revision: int, consistency: Consistency) -> Entry:
        return Entry(kv.key.decode(), decode(kv.value), kv.mod_revision, kv.create_revision,
                     kv.version, revision, consistency)

    # -- writes --------------------------------------------------------------

    async def put(self, key: str, value: Any, *, if_revision: int | None = None,
                  create_only: bool = False, must_exist: bool = False,
                  also: Sequence[tuple[str, Any]] = ()) -> WriteResult:
        """Unconditional, create-only, update-only or compare-and-swap on mod_revision.

        `also`: more (key, value) puts made in the same transaction, under the same
        condition and at the same revision (the record of who wrote `key`)."""
        raw = encode(value)
        k = key.encode()
        compare = []
        if create_only:
            compare.append(rpc.Compare(key=k, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0))
        if must_exist:
            compare.append(rpc.Compare(key=k, target=rpc.Compare.VERSION, result=rpc.Compare.GREATER, version=0))
        if if_revision is not None:
            compare.append(rpc.Compare(key=k, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                                       mod_revision=if_revision))
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=raw))
        op = "cas" if if_revision is not None else "create" if create_only else "put"
        return await self._counted(op, self._txn(key, compare, [put, *self._puts(also)]))  # type: ignore[no-any-return]

    @staticmethod
    def _puts(also: Sequence[tuple[str, Any]]) -> list[Any]:
        return [rpc.RequestOp(request_put=rpc.PutRequest(key=k.encode(), value=encode(v))) for k, v in also]

    async def delete(self, key: str, *, if_revision: int | None = None,
                     also: Sequence[tuple[str, Any]] = ()) -> WriteResult:
        k = key.encode()
        compare = [rpc.Compare(key=k, target=rpc.Compare.VERSION, result=rpc.Compare.GREATER, version=0)]
        if if_revision is not None:
            compare.append(rpc.Compare(key=k, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                                       mod_revision=if_revision))
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))
        return await self._counted(  # type: ignore[no-any-return]
            "delete", self._txn(key, compare, [op, *self._puts(also)], missing_is_not_found=if_revision is None))

    async def _txn(self, key: str, compare: list[Any], ops: list[Any],
                   missing_is_not_found: bool = False) -> WriteResult:
        # The failure branch reads the key in the same transaction, so a Conflict
        # carries the revision that beat us without a second round trip.
        failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=key.encode()))]
        resp = await self._write("Txn", rpc.TxnRequest(compare=compare, success=ops, failure=failure))
        if resp.succeeded:
            return WriteResult(key, resp.header.revision)
        kvs = resp.responses[0].response_range.kvs
        if not kvs and missing_is_not_found:
            raise NotFound(key)
        raise Conflict(key, kvs[0].mod_revision if kvs else 0)

    # -- watch ---------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int, *, max_backoff_s: float = 1.0,
                    progress_s: float | None = None) -> AsyncIterator[WatchEvent]:
        """Every change under `prefix` from `start_revision` on, in revision order.

        A broken stream (member restart, leader loss) is reopened from the
        revision after the last event delivered, so nothing is skipped or
        repeated. A start revision older than the compaction point raises
        Compacted: the caller must re-read and watch from a newer revision.
        With `progress_s`, "progress" events too (consistency/cp_watch.py).
        """
        async for event in watch_prefix(self, prefix, start_revision, max_backoff_s, progress_s):
            yield event

    # -- cluster -------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Whether a linearizable read succeeds now, and at which revision."""
        try:
            return {"state": "ok", "revision": await self.current_revision()}
        except Unavailable as e:
            return {"state": "unavailable", "error": str(e)}

