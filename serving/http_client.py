"""Minimal keep-alive HTTP/1.1 GET client on asyncio streams, for the load generator.

Why not only httpx: httpcore's pool scans every pooled connection on each request, so a client holding a few
hundred connections spends most of its CPU on bookkeeping and collapses under the very load it generates
(measured in docs/SERVING.md). This client keeps idle connections on a stack (O(1) acquire/release), sends a
fixed request line and parses only the status, Content-Length / chunked framing and `Connection: close`.
Plain http on loopback only; anything else uses the httpx engine.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Awaitable, Callable

Fetch = Callable[[str], Awaitable[tuple[int, bytes]]]
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ProtocolError(ValueError):
    """The server's response is not valid HTTP/1.1 framing."""


class RawPool:
    """A bounded pool of keep-alive connections to one host:port."""

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host, self.port, self.max = host, port, max_connections
        self.idle: list[_Conn] = []
        self.waiters: deque[asyncio.Future] = deque()
        self.open = 0
        self.opened_total = 0
        host_hdr = f"[{host}]" if ":" in host else host
        self._suffix = f" HTTP/1.1\r\nHost: {host_hdr}:{port}\r\nAccept: application/json\r\n\r\n".encode("ascii")

    async def _acquire(self) -> tuple[_Conn, bool]:
        """(connection, reused?)."""
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn[0].at_eof():
                    return conn, True
                self._discard(conn)
            if self.open < self.max:
                self.open += 1
                try:
                    conn = await asyncio.open_connection(self.host, self.port)
                except BaseException:
                    self.open -= 1
                    self._wake_one(None)
                    raise
                self.opened_total += 1
                return conn, False
            fut: asyncio.Future = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            try:
                got = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.result() is not None:
                    self._release(fut.result(), True)  # handed to us just as we were cancelled: pass it on
                raise
            if got is not None:
                return got, True

    def _wake_one(self, conn: _Conn | None) -> bool:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return True
        return False

    def _discard(self, conn: _Conn) -> None:
        conn[1].close()
        self.open -= 1

    def _release(self, conn: _Conn, reusable: bool) -> None:
        if not reusable:
            self._discard(conn)
            self._wake_one(None)  # a waiter may now open a fresh connection
        elif not self._wake_one(conn):
            self.idle.append(conn)

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET `path`; return (status, body). Retries once if a reused keep-alive connection was found closed."""
        for attempt in (0, 1):
            conn, reused = await self._acquire()
            reusable = False
            try:
                reader, writer = conn
                writer.write(b"GET " + path.encode("ascii") + self._suffix)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if reused and not exc.partial and attempt == 0:
                        continue  # the server closed an idle connection: not the server's failure
                    raise ConnectionError("connection closed before a response") from None
                status, length, chunked, close = _parse_head(head)
                if chunked:
                    body = await _read_chunked(reader)
                elif length is not None:
                    body = await reader.readexactly(length)
                else:
                    body, close = await reader.read(), True
                reusable = not close
                return status, body
            except asyncio.IncompleteReadError:
                raise ConnectionError("connection closed mid-response") from None
            finally:
                self._release(conn, reusable)
        raise ConnectionError("connection closed before a response")  # pragma: no cover

    async def close(self) -> None:
        for _, w in self.idle:
            w.close()
        self.idle.clear()


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0][:60]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise ProtocolError(f"bad status line {lines[0][:60]!r}") from None
    length, chunked, close = None, False, parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            v = value.strip().lower()
            close = v == b"close" or (close and v != b"keep-alive")
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {line[:40]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
