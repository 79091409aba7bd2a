"""The load generator's raw HTTP/1.1 client: framing (length, chunked, close), keep-alive reuse, pool bound."""
from __future__ import annotations

import asyncio

import pytest

from recs.serving.http_client import ProtocolError, RawPool


async def _serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return head.split(b"\r\n", 1)[0]


def test_content_length_keepalive_chunked_and_close() -> None:
    conns = {"n": 0}

    async def handler(reader, writer):
        conns["n"] += 1
        while (line := await _read_request(reader)) is not None:
            path = line.split(b" ")[1]
            if path == b"/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n")
            elif path == b"/close":
                writer.write(b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno")
                await writer.drain()
                writer.close()
                return
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"fallback\":1}\n")
            await writer.drain()
        writer.close()

    async def main():
        server, port = await _serve(handler)
        pool = RawPool("127.0.0.1", port, max_connections=4)
        assert await pool.get("/a") == (200, b'{"fallback":1}\n')
        assert await pool.get("/b") == (200, b'{"fallback":1}\n')
        assert pool.opened_total == 1  # keep-alive reuse
        assert await pool.get("/chunked") == (200, b"hello, world")
        assert await pool.get("/close") == (503, b"no")
        assert await pool.get("/c") == (200, b'{"fallback":1}\n')  # a fresh connection after close
        assert pool.opened_total == 2 and pool.open == 1
        await pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_idle_connection_closed_by_server_is_retried_once() -> None:
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # closes keep-alive without saying so

    async def main():
        server, port = await _serve(handler)
        pool = RawPool("127.0.0.1", port, max_connections=2)
        assert await pool.get("/1") == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await pool.get("/2") == (200, b"ok")
        assert pool.opened_total == 2
        server.close()

    asyncio.run(main())


def test_bad_status_line_is_a_protocol_error() -> None:
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main():
        server, port = await _serve(handler)
        pool = RawPool("127.0.0.1", port, max_connections=1)
        with pytest.raises(ProtocolError, match="bad status line"):
            await pool.get("/")
        assert pool.open == 0
        server.close()

    asyncio.run(main())


def test_pool_never_exceeds_max_connections_and_survives_cancellation() -> None:
    active = {"now": 0, "peak": 0}

    async def handler(reader, writer):
        while await _read_request(reader) is not None:
            active["now"] += 1
            active["peak"] = max(active["peak"], active["now"])
            await asyncio.sleep(0.05)
            active["now"] -= 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def main():
        server, port = await _serve(handler)
        pool = RawPool("127.0.0.1", port, max_connections=2)
        # some requests time out while waiting for a connection; the pool must not leak slots
        async def one(t):
            try:
                async with asyncio.timeout(t):
                    return await pool.get("/")
            except TimeoutError:
                return None

        peak_open = 0

        async def watch():
            nonlocal peak_open
            while True:
                peak_open = max(peak_open, pool.open)
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        res = await asyncio.gather(*[one(0.02 if i % 3 == 0 else 5) for i in range(12)])
        watcher.cancel()
        assert pool.opened_total >= 2 and peak_open <= 2
        assert sum(r is not None for r in res) == 8
        assert pool.open <= 2
        assert await pool.get("/") == (200, b"")  # still usable
        await pool.close()
        server.close()

    asyncio.run(main())
