"""The reference HTTP server: a FastAPI app over a `Runtime` (see serving/runtime.py for the request path).

Handlers are `async` and compute inline on the event loop: one worker is one core, requests run in arrival order
with no thread hand-off, and every write to the online state is serialised with the reads. A small ASGI
middleware counts requests in flight and stamps their arrival, which drives load shedding. Only reload runs
off-loop (verification and loading take seconds) and is swapped in on the loop.
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import os
import time
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal
from urllib.parse import parse_qsl

from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from recs.bundle.errors import BundleVerificationError
from recs.serving.metrics import Gauge
from recs.serving.runtime import HOME, SEARCH, Result, Runtime, ServeConfig, load_served

_ENDPOINTS = {"/v1/recommendations": HOME, "/v1/suggestions": SEARCH}
HOME_PARAMS = frozenset({"user_id", "session_id", "k"})
SEARCH_PARAMS = frozenset({"q", "user_id", "session_id", "k"})


class Item(BaseModel):
    item_id: str
    score: float


class Completion(BaseModel):
    query: str
    score: float


class RecsResponse(BaseModel):
    items: list[Item]
    bundle_version: str
    stages: list[str]
    fallback: bool
    latency_ms: float


class SuggestResponse(RecsResponse):
    completions: list[Completion]


class EventIn(BaseModel):
    """A session event (anonymous users get in-session personalisation from these)."""

    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    user_id: str | None = Field(default=None, min_length=1, max_length=128)
    kind: Literal["click", "add_to_cart", "purchase"] = "click"


class InventoryIn(BaseModel):
    """A live inventory update. `blocked_seller` takes `seller_id` (blocked from `ts`, or at once without one)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["stock", "price", "restricted", "new_item", "blocked_seller"]
    item_id: str | None = Field(default=None, min_length=1, max_length=128)
    seller_id: str | None = Field(default=None, min_length=1, max_length=128)
    value: float = 0.0
    ts: datetime | None = None
    attrs: dict[str, Any] | None = None


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bundle: str = Field(min_length=1, max_length=4096)


def _error(status: int, msg: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": msg}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


class InFlight:
    """ASGI middleware: counts HTTP requests in flight, stamps their arrival (`scope['state']['t_in']`) and, when
    the server is overloaded, answers well-formed GET requests from the shed path before any routing."""

    def __init__(self, app, runtime: Runtime, fast: Callable[[dict, float], bytes | None] | None = None) -> None:
        self.app, self.runtime, self.fast = app, runtime, fast

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t_in = time.perf_counter()
        scope.setdefault("state", {})["t_in"] = t_in
        self.runtime.in_flight += 1
        try:
            await asyncio.sleep(0)  # let requests that arrived together all register before any computes
            body = self.fast(scope, t_in) if self.fast is not None else None
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await self.app(scope, receive, send)
        finally:
            self.runtime.in_flight -= 1


class AuditLog:
    """Optional JSON-lines record of every served slate (`t` = wall time the request started computing)."""

    def __init__(self, path: str | Path | None) -> None:
        self._f = open(path, "a", buffering=1 << 16, encoding="utf-8") if path else None

    def write(self, t: float, endpoint: str, items: list[str], version: str) -> None:
        if self._f is not None:
            self._f.write(json.dumps({"t": t, "endpoint": endpoint, "items": items, "v": version}) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def create_app(runtime: Runtime, public_key: Any, admin_token: str | None = None,
               audit_log: str | Path | None = None) -> FastAPI:
    """The FastAPI app serving `runtime`; `/admin/reload` verifies new bundles with `public_key`."""
    cfg: ServeConfig = runtime.cfg
    m = runtime.metrics
    audit = AuditLog(audit_log)
    counter = itertools.count(1)
    reload_lock = asyncio.Lock()
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        audit.close()

    app = FastAPI(title="recs reference server", version="1", description=__doc__, lifespan=lifespan)
    app.state.runtime = runtime
    def fast_shed(scope: dict, t_in: float) -> bytes | None:
        """Overloaded: answer a valid GET /v1/* with the filtered popular list, skipping routing and validation."""
        surface = _ENDPOINTS.get(scope["path"])
        if surface is None or scope["method"] != "GET" or not runtime.overloaded(time.perf_counter() - t_in):
            return None
        try:
            qp = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True, strict_parsing=True))
            k = int(qp.get("k", 5 if surface == SEARCH else 10))
        except ValueError:
            return None
        allowed = SEARCH_PARAMS if surface == SEARCH else HOME_PARAMS
        if not 1 <= k <= cfg.max_k or not qp.keys() <= allowed or (surface == SEARCH and "q" not in qp):
            return None  # let the normal path produce the 422
        wall = time.time()
        res, version = runtime.shed(surface, k)
        lat = time.perf_counter() - t_in
        body = {"items": [{"item_id": i, "score": s} for i, s in zip(res.item_ids, res.scores)],
                "bundle_version": version, "stages": ["shed", *res.stages], "fallback": True,
                "latency_ms": round(lat * 1000, 3)}
        if surface == SEARCH:
            body["completions"] = []
        m.request_seconds.observe(lat, surface)
        m.requests.inc(surface, "200")
        audit.write(wall, surface, res.item_ids, version)
        return json.dumps(body).encode()

    app.add_middleware(InFlight, runtime=runtime, fast=fast_shed)
    m.extra = [
        Gauge("recs_in_flight", "Requests in flight", (), lambda: {(): runtime.in_flight}),
        Gauge("recs_cache_hit_ratio", "Cache hits / lookups since start", ("cache",),
              lambda: {(k,): c.stats.hit_ratio for k, c in runtime.current.caches.items()}),
        Gauge("recs_cache_entries", "Entries held", ("cache",),
              lambda: {(k,): len(c) for k, c in runtime.current.caches.items()}),
        Gauge("recs_state_version", "Online state version", (), lambda: {(): runtime.current.state.version}),
        Gauge("recs_bundle_info", "The bundle serving", ("version",), lambda: {(runtime.current.version,): 1}),
    ]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        m.requests.inc(_ENDPOINTS.get(request.url.path, request.url.path), "422")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}",
                      [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errs])

    def _check_params(request: Request, allowed: frozenset[str]) -> None:
        unknown = sorted(set(request.query_params.keys()) - allowed)
        if unknown:
            raise RequestValidationError([{"loc": ("query", unknown[0]), "msg": "unknown query parameter",
                                           "type": "extra_forbidden"}])

    def _respond(request: Request, endpoint: str, res: Result, version: str, t_start: float,
                 wall: float) -> JSONResponse:
        lat = (time.perf_counter() - request.scope["state"].get("t_in", t_start))
        body: dict[str, Any] = {
            "items": [{"item_id": i, "score": round(s, 6)} for i, s in zip(res.item_ids, res.scores)],
            "bundle_version": version, "stages": res.stages, "fallback": res.fallback,
            "latency_ms": round(lat * 1000, 3)}
        if endpoint == SEARCH:
            body["completions"] = [{"query": q, "score": round(s, 6)} for q, s in res.completions]
        m.request_seconds.observe(lat, endpoint)
        m.requests.inc(endpoint, "200")
        audit.write(wall, endpoint, res.item_ids, version)
        return JSONResponse(body)

    def _serve(request: Request, surface: str, user_id: str | None, session_id: str | None, q: str | None,
               k: int) -> JSONResponse:
        t_start = time.perf_counter()
        wall = time.time()
        waited = t_start - request.scope["state"].get("t_in", t_start)
        rt = runtime
        req = rt.build_request(rt.current, surface, user_id, session_id, q, f"r{next(counter)}")
        res, version = rt.recommend(req, k, waited)
        return _respond(request, surface, res, version, t_start, wall)

    def _params(request: Request, allowed: frozenset[str], need_q: bool) -> tuple | JSONResponse:
        """Hand-rolled query validation (FastAPI's per-request model solving cost more than the cache hit)."""
        qp = request.query_params
        for name in qp.keys():
            if name not in allowed:
                return _invalid_param(request, name, "unknown query parameter")
        vals = {}
        for name in ("user_id", "session_id"):
            v = qp.get(name)
            if v is not None and not 1 <= len(v) <= cfg.max_id_chars:
                return _invalid_param(request, name, f"length must be 1..{cfg.max_id_chars}")
            vals[name] = v
        raw_k = qp.get("k")
        k = 5 if need_q else 10
        if raw_k is not None:
            try:
                k = int(raw_k)
            except ValueError:
                return _invalid_param(request, "k", "Input should be a valid integer")
            if not 1 <= k <= cfg.max_k:
                return _invalid_param(request, "k", f"Input should be between 1 and {cfg.max_k}")
        q = qp.get("q")
        if need_q:
            if q is None:
                return _invalid_param(request, "q", "Field required")
            if len(q) > cfg.max_query_chars:
                return _invalid_param(request, "q", f"String should have at most {cfg.max_query_chars} characters")
        return vals["user_id"], vals["session_id"], q, k

    def _invalid_param(request: Request, name: str, msg: str) -> JSONResponse:
        m.requests.inc(_ENDPOINTS.get(request.url.path, request.url.path), "422")
        return _error(422, f"query.{name}: {msg}", [{"loc": ["query", name], "msg": msg}])

    def _doc_params(need_q: bool, default_k: int) -> dict:
        ids = {"type": "string", "minLength": 1, "maxLength": cfg.max_id_chars}
        ps = [{"name": "user_id", "in": "query", "required": False, "schema": ids,
               "description": "Logged-in user; omit for anonymous traffic"},
              {"name": "session_id", "in": "query", "required": False, "schema": ids,
               "description": "Session whose /v1/events personalise the answer"},
              {"name": "k", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": cfg.max_k, "default": default_k}}]
        if need_q:
            ps.insert(0, {"name": "q", "in": "query", "required": True,
                          "schema": {"type": "string", "maxLength": cfg.max_query_chars},
                          "description": "Typed prefix"})
        return {"parameters": ps, "responses": {"422": {"description": "Invalid or unknown query parameter"}}}

    @app.get("/v1/recommendations", response_model=RecsResponse, tags=["serving"],
             openapi_extra=_doc_params(False, 10))
    async def recommendations(request: Request) -> Response:
        """Home-page recommendations for a user (or an anonymous session). Unknown parameters: 422."""
        p = _params(request, HOME_PARAMS, False)
        if isinstance(p, JSONResponse):
            return p
        user_id, session_id, _, k = p
        return _serve(request, HOME, user_id, session_id, None, k)

    @app.get("/v1/suggestions", response_model=SuggestResponse, tags=["serving"],
             openapi_extra=_doc_params(True, 5))
    async def suggestions(request: Request) -> Response:
        """Search-bar query completions and product suggestions for a typed prefix. Unknown parameters: 422."""
        p = _params(request, SEARCH_PARAMS, True)
        if isinstance(p, JSONResponse):
            return p
        user_id, session_id, q, k = p
        return _serve(request, SEARCH, user_id, session_id, q, k)

    @app.post("/v1/events", tags=["online state"])
    async def events(request: Request, event: EventIn) -> Response:
        """Record a session event; the next request of that session is personalised with it."""
        _check_params(request, frozenset())
        try:
            runtime.record_event(event.user_id, event.session_id, event.item_id, event.kind)
        except KeyError as e:
            return _error(422, str(e.args[0]))
        return JSONResponse({"ok": True})

    @app.post("/v1/inventory", tags=["online state"])
    async def inventory(request: Request, update: InventoryIn) -> Response:
        """Apply a stock / price / restricted / new item / blocked seller update to the live state."""
        _check_params(request, frozenset())
        key = update.seller_id if update.kind == "blocked_seller" else update.item_id
        field_name = "seller_id" if update.kind == "blocked_seller" else "item_id"
        if key is None:
            return _error(422, f"body.{field_name}: required for kind {update.kind!r}")
        try:
            version = runtime.apply_inventory(update.kind, key, update.value, update.ts, update.attrs)
        except KeyError as e:
            return _error(422, f"body.{field_name}: {e.args[0]}")
        except (ValueError, TypeError) as e:
            return _error(422, f"body: {e}")
        return JSONResponse({"ok": True, "state_version": version})

    @app.post("/admin/reload", tags=["admin"])
    async def reload(body: ReloadIn = Body(...), authorization: str | None = Header(None),
                     x_admin_token: str | None = Header(None)) -> Response:
        """Verify and load a new bundle, then swap it in atomically (token-protected)."""
        if not admin_token:
            return _error(403, "reload is disabled: no admin token configured (RECS_ADMIN_TOKEN / --admin-token)")
        given = x_admin_token or (authorization[7:] if authorization and authorization.startswith("Bearer ")
                                  else None)
        if not given or not hmac.compare_digest(given.encode(), admin_token.encode()):
            m.reloads.inc("unauthorized")
            return _error(401, "missing or wrong admin token")
        if reload_lock.locked():
            return _error(409, "a reload is already in progress")
        async with reload_lock:
            old = runtime.current.version
            try:
                new = await run_in_threadpool(load_served, body.bundle, public_key, cfg)
            except BundleVerificationError as e:
                m.reloads.inc("refused")
                return _error(400, f"bundle refused, still serving {old}: {e}")
            except Exception as e:  # verified but not loadable, or not found
                m.reloads.inc("failed")
                return _error(400, f"bundle not loaded, still serving {old}: {type(e).__name__}: {e}")
            runtime.adopt(new)
            m.reloads.inc("ok")
        return JSONResponse({"ok": True, "previous": old, "bundle_version": new.version})

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        cur = runtime.current
        return JSONResponse({"ready": True, "bundle_version": cur.version, "items": len(cur.state),
                             "state_version": cur.state.version})

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return PlainTextResponse(m.render(), media_type="text/plain; version=0.0.4")

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for `--workers N`: each worker verifies and loads the bundle named in the environment."""
    cfg = ServeConfig(**json.loads(os.environ.get("RECS_SERVE_CONFIG", "{}")))
    key = os.environ["RECS_SERVE_PUBLIC_KEY"]
    served = load_served(os.environ["RECS_SERVE_BUNDLE"], key, cfg)
    audit = os.environ.get("RECS_SERVE_AUDIT") or None
    if audit:
        audit = f"{audit}.{os.getpid()}"
    return create_app(Runtime(served, cfg), key, os.environ.get("RECS_ADMIN_TOKEN") or None, audit)
