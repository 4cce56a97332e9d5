"""A minimal keep-alive HTTP/1.1 client for benchmarks.

httpx spends more time per request than the whole API does (measured: ~1.5 ms
of a 2.9 ms round trip on the dev machine), which would bury the server's own
cost; this client does only what a benchmark needs: one request at a time per
connection, Content-Length bodies.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson


class Connection:
    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host, self.port = host, port
        self.headers = headers or {}  # sent with every request (an Authorization header, say)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        if self._reader is not None and self._reader.at_eof():
            await self.close()  # the server closed an idle keep-alive connection
        reused = self._writer is not None
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None and self._writer is not None
        payload = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(payload)}"]
        head += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        self._writer.write(message)
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as e:
            if not reused or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                raise
            # The server closed the idle connection as the request went out (its keep-alive timer
            # won the race): no byte of an answer came, so send it again on a new connection, once,
            # as urllib3 does with a stale pooled connection.
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._writer.write(message)
            raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        data = await self._reader.readexactly(int(hdrs.get("content-length", "0")))
        return status, hdrs, orjson.loads(data) if data else None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None
