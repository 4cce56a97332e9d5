"""httpx transports that break real connections to a real node, for the SDK's tests.

`Cutting` ends chosen streams after a number of bytes with a ReadError, as a dropped
connection does mid-stream (often mid-event). `Losing` sends chosen requests, lets the
node apply them, then loses the answer: the client sees a write whose outcome is unknown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx


class _CutSync(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, after: int) -> None:
        self.inner, self.after = inner, after

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            if sent + len(chunk) >= self.after:
                yield chunk[: self.after - sent]
                raise httpx.ReadError("connection cut by the test")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _CutAsync(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, after: int) -> None:
        self.inner, self.after = inner, after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self.inner:
            if sent + len(chunk) >= self.after:
                yield chunk[: self.after - sent]
                raise httpx.ReadError("connection cut by the test")
            sent += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class Cutting(httpx.HTTPTransport):
    """Streams whose path ends with `suffix`: the i-th is cut after cuts[i] bytes (then none);
    `resumed_from` records each one's Last-Event-ID header."""

    def __init__(self, suffix: str, cuts: list[int]) -> None:
        super().__init__()
        self.suffix, self.cuts = suffix, list(cuts)
        self.resumed_from: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not request.url.path.endswith(self.suffix):
            return response
        self.resumed_from.append(request.headers.get("last-event-id"))
        if not self.cuts:
            return response
        stream = _CutSync(response.stream, self.cuts.pop(0))  # type: ignore[arg-type]
        return httpx.Response(response.status_code, headers=response.headers, stream=stream,
                              extensions=response.extensions)


class AsyncCutting(httpx.AsyncHTTPTransport):
    """`Cutting`, for the async client."""

    def __init__(self, suffix: str, cuts: list[int]) -> None:
        super().__init__()
        self.suffix, self.cuts = suffix, list(cuts)
        self.resumed_from: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not request.url.path.endswith(self.suffix):
            return response
        self.resumed_from.append(request.headers.get("last-event-id"))
        if not self.cuts:
            return response
        stream = _CutAsync(response.stream, self.cuts.pop(0))  # type: ignore[arg-type]
        return httpx.Response(response.status_code, headers=response.headers, stream=stream,
                              extensions=response.extensions)


class Losing(httpx.HTTPTransport):
    """The first `times` requests of `method` whose path ends with `suffix` reach the node and
    are answered, but the answer is lost on the way back. `seen` counts every such request."""

    def __init__(self, method: str, suffix: str, times: int = 1) -> None:
        super().__init__()
        self.method, self.suffix, self.times = method, suffix, times
        self.seen = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == self.method and request.url.path.endswith(self.suffix):
            self.seen += 1
            if self.times > 0:
                self.times -= 1
                response.read()  # the node finished with it: applied
                response.close()
                raise httpx.ReadError("answer lost by the test")
        return response
