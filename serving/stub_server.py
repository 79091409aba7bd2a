"""A stand-in server speaking the recs serving API, for testing and calibrating `recs loadtest`.

It answers `GET /v1/recommendations` and `GET /v1/suggestions` with `{"items": [...], "fallback": bool}` after a
configurable artificial delay; every `slow_every`-th request is slower and every `error_every`-th returns 500.
`serial=True` processes one request at a time (a saturated single worker), so queueing shows in latency.
It is not the reference server; it only exists so the load generator can be checked against known behaviour.

Run standalone: `python -m recs.serving.stub_server --port 8765 --delay-ms 2`.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class StubConfig:
    delay_ms: float = 0.0
    slow_every: int = 0
    slow_ms: float = 0.0
    error_every: int = 0
    serial: bool = False

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.slow_ms < 0 or self.slow_every < 0 or self.error_every < 0:
            raise ValueError("StubConfig: delays and periods must be >= 0")


def make_app(cfg: StubConfig | None = None) -> Starlette:
    """The stub ASGI app. Anonymous requests (no user_id) get `fallback: true`."""
    cfg = cfg or StubConfig()
    counter = itertools.count(1)
    lock = asyncio.Lock()
    stats = {"requests": 0}

    async def _respond(request: Request, kind: str) -> Response:
        n = next(counter)
        stats["requests"] = n
        delay = cfg.delay_ms + (cfg.slow_ms if cfg.slow_every and n % cfg.slow_every == 0 else 0.0)
        if cfg.serial:
            async with lock:
                if delay:
                    await asyncio.sleep(delay / 1000)
        elif delay:
            await asyncio.sleep(delay / 1000)
        if cfg.error_every and n % cfg.error_every == 0:
            return JSONResponse({"error": "injected"}, status_code=500)
        user = request.query_params.get("user_id")
        k = int(request.query_params.get("k", "10"))
        items = [f"i{(hash((user, j)) & 0xFFFFFF):06x}" for j in range(k)]
        return JSONResponse({"kind": kind, "items": items, "fallback": user is None})

    async def recommendations(request: Request) -> Response:
        return await _respond(request, "home")

    async def suggestions(request: Request) -> Response:
        return await _respond(request, "search")

    app = Starlette(routes=[Route("/v1/recommendations", recommendations), Route("/v1/suggestions", suggestions)])
    app.state.stats = stats
    return app


def free_loopback_socket() -> socket.socket:
    """A listening-ready TCP socket bound to 127.0.0.1 on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running_server(app: Starlette, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread on a free loopback port; yield its base URL."""
    import uvicorn

    sock = free_loopback_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        for _ in range(int(timeout_s / 0.01)):
            if server.started:
                break
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("stub server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description="recs loadtest stub server (loopback only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--slow-every", type=int, default=0)
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--error-every", type=int, default=0)
    p.add_argument("--serial", action="store_true")
    a = p.parse_args(argv)
    cfg = StubConfig(a.delay_ms, a.slow_every, a.slow_ms, a.error_every, a.serial)
    uvicorn.run(make_app(cfg), host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
