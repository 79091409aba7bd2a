"""The reference HTTP server: a FastAPI app over a `Runtime` (see serving/runtime.py for the request path).

Handlers are `async` and compute inline on the event loop: one worker is one core, requests run in arrival order
with no thread hand-off, and every write to the online state is serialised with the reads. A small ASGI
middleware counts requests in flight and stamps their arrival, which drives load shedding, (with `--workers N`)
first applies the writes other workers journaled (serving/journal.py), and answers valid GET requests of the two
serving endpoints without routing (serving/fastpath.py). Only reload runs off-loop (verification and loading take
seconds) and is swapped in on the loop (serving/reload.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal

from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from recs.serving.fastpath import ENDPOINTS, FastGet, parse_query
from recs.serving.journal import JOURNAL_NAME, Journal, JournalWriteError
from recs.serving.metrics import Gauge
from recs.serving.reload import Reloader, journal_loop
from recs.serving.runtime import Runtime
from recs.serving.served import HOME, SEARCH, ServeConfig, limit_native_threads, settle_heap, startup_served


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
    request_id: str


class SuggestResponse(RecsResponse):
    completions: list[Completion]


class EventIn(BaseModel):
    """A session event (anonymous users get in-session personalisation from these)."""

    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    user_id: str | None = Field(default=None, min_length=1, max_length=128)
    kind: Literal["click", "add_to_cart", "purchase"] = "click"


class NewItemAttrs(BaseModel):
    """Catalog attributes of a `new_item` (required when the item id is not in the catalog yet)."""

    model_config = ConfigDict(extra="forbid")
    category: str = Field(min_length=1, max_length=128)
    subcategory: str = Field(min_length=1, max_length=128)
    seller_id: str = Field(min_length=1, max_length=128)
    brand: str = Field(min_length=1, max_length=128)
    title: str = Field(min_length=1, max_length=512)
    price: float = Field(gt=0, allow_inf_nan=False)
    stock: int = Field(default=0, ge=0)
    restricted: bool = False
    created_at: datetime | None = None


class InventoryIn(BaseModel):
    """A live inventory update. `blocked_seller` takes `seller_id` (blocked from `ts`, or at once without one)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["stock", "price", "restricted", "new_item", "blocked_seller"]
    item_id: str | None = Field(default=None, min_length=1, max_length=128)
    seller_id: str | None = Field(default=None, min_length=1, max_length=128)
    value: float = Field(default=0.0, allow_inf_nan=False)
    ts: datetime | None = None
    attrs: NewItemAttrs | None = None


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bundle: str = Field(min_length=1, max_length=4096)


def _error(status: int, msg: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": msg}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


class InFlight:
    """ASGI middleware: counts HTTP requests in flight, stamps their arrival (`scope['state']['t_in']`), runs
    `before` (with a journal: apply other workers' writes), answers what `fast` answers (valid GET /v1/*), and
    counts exceptions that escape the app (a 500) in `recs_errors_total{stage="unhandled"}`."""

    def __init__(self, app, runtime: Runtime, fast: Callable[[dict, float], bytes | None] | None = None,
                 before: Callable[[], None] | None = None) -> None:
        self.app, self.runtime, self.fast, self.before = app, runtime, fast, before

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t_in = time.perf_counter()
        scope.setdefault("state", {})["t_in"] = t_in
        self.runtime.in_flight += 1
        try:
            await asyncio.sleep(0)  # let requests that arrived together all register before any computes
            if self.before is not None:
                self.before()
            body = self.fast(scope, t_in) if self.fast is not None else None
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await self.app(scope, receive, send)
        except Exception:
            self.runtime.metrics.errors.inc("unhandled")
            raise
        finally:
            self.runtime.in_flight -= 1


class AuditLog:
    """Optional JSON-lines record of every served slate: `t` (wall time the request started computing), `endpoint`,
    `items`, `v` (bundle version), `request_id`, `stages`."""

    def __init__(self, path: str | Path | None) -> None:
        self._f = open(path, "a", buffering=1 << 16, encoding="utf-8") if path else None

    def write(self, t: float, endpoint: str, items: list[str], version: str, request_id: str = "",
              stages: list[str] | None = None) -> None:
        if self._f is not None:
            self._f.write(json.dumps({"t": t, "endpoint": endpoint, "items": items, "v": version,
                                      "request_id": request_id, "stages": stages or []}) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def create_app(runtime: Runtime, public_key: Any, admin_token: str | None = None,
               audit_log: str | Path | None = None, workers: int = 1) -> FastAPI:
    """The FastAPI app serving `runtime`; `/admin/reload` verifies new bundles with `public_key`.

    `workers`: how many processes share `runtime.journal` (a reload waits for that many to swap)."""
    cfg: ServeConfig = runtime.cfg
    m = runtime.metrics
    audit = AuditLog(audit_log)
    reloader = Reloader(runtime, public_key, workers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        limit_native_threads()
        settle_heap()
        poller = None
        if runtime.journal is not None:
            runtime.publish_status()   # this worker is up: /admin/reload on any worker now waits for it too
            poller = asyncio.create_task(journal_loop(runtime, reloader))
        yield
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        audit.close()

    app = FastAPI(title="recs reference server", version="1", description=__doc__, lifespan=lifespan)
    app.state.runtime = runtime
    fast = FastGet(runtime, audit)

    def catch_up() -> None:
        """Other workers' inventory updates, events and reloads, before this request computes anything."""
        runtime.sync()
        reloader.poll()

    def _histories() -> dict:
        st = runtime.current.state       # the same two objects across reloads (Runtime.adopt hands them on)
        return {"session": st.session_history, "user": st.user_history}

    app.add_middleware(InFlight, runtime=runtime, fast=fast.answer,
                       before=catch_up if runtime.journal is not None else None)
    m.extra = [
        Gauge("recs_in_flight", "Requests in flight", (), lambda: {(): runtime.in_flight}),
        Gauge("recs_cache_hit_ratio", "Cache hits / lookups since start", ("cache",),
              lambda: {(k,): c.stats.hit_ratio for k, c in runtime.current.caches.items()}),
        Gauge("recs_cache_entries", "Entries held", ("cache",),
              lambda: {(k,): len(c) for k, c in runtime.current.caches.items()}),
        Gauge("recs_state_version", "Online state version", (), lambda: {(): runtime.current.state.version}),
        Gauge("recs_bundle_info", "The bundle serving", ("version",), lambda: {(runtime.current.version,): 1}),
        Gauge("recs_inventory_log_dropped", "Inventory updates dropped from the replay log: a reload will not "
              "re-apply them (ServeConfig.inventory_log)", (), lambda: {(): runtime.inventory_dropped}),
        Gauge("recs_journal_corrupt_lines", "Journal lines skipped because they did not parse", (),
              lambda: {(): runtime.journal.corrupt if runtime.journal is not None else 0}),
        Gauge("recs_histories", "Session / user histories held (bounded: ServeConfig.max_sessions, max_users)",
              ("history",), lambda: {(k,): len(h) for k, h in _histories().items()}),
        Gauge("recs_history_evictions_total", "Histories dropped: capacity (the least recently written, beyond the "
              "bound) or idle (no event for session_idle_s)", ("history", "reason"),
              lambda: {(k, r): n for k, h in _histories().items() for r, n in h.evicted.items()}, kind="counter"),
    ]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        m.requests.inc(ENDPOINTS.get(request.url.path, request.url.path), "422")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}",
                      [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errs])

    def _journal_failed(e: JournalWriteError) -> JSONResponse:
        """--workers N: the write's journal record could not be appended, so no worker applied it (retry later)."""
        m.errors.inc("journal_write")
        logging.getLogger("recs.serve").error("worker %s: %s", runtime.worker_name, e)
        return _error(503, "update not applied: the shared write journal could not be written (retry later)")

    def _check_params(request: Request, allowed: frozenset[str]) -> None:
        unknown = sorted(set(request.query_params.keys()) - allowed)
        if unknown:
            raise RequestValidationError([{"loc": ("query", unknown[0]), "msg": "unknown query parameter",
                                           "type": "extra_forbidden"}])

    def _get(request: Request, surface: str) -> Response:
        """A GET the middleware declined: answer 422 for the first problem (or serve it, if it is valid)."""
        parsed = parse_query(request.query_params.multi_items(), surface, cfg)
        if len(parsed) == 2:
            name, msg = parsed
            m.requests.inc(surface, "422")
            return _error(422, f"query.{name}: {msg}", [{"loc": ["query", name], "msg": msg}])
        t_in = request.scope.get("state", {}).get("t_in", time.perf_counter())
        return Response(fast.serve(surface, parsed, t_in), media_type="application/json")

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
        return _get(request, HOME)

    @app.get("/v1/suggestions", response_model=SuggestResponse, tags=["serving"],
             openapi_extra=_doc_params(True, 5))
    async def suggestions(request: Request) -> Response:
        """Search-bar query completions and product suggestions for a typed prefix. Unknown parameters: 422."""
        return _get(request, SEARCH)

    @app.post("/v1/events", tags=["online state"])
    async def events(request: Request, event: EventIn) -> Response:
        """Record a session event; the next request of that session is personalised with it."""
        _check_params(request, frozenset())
        try:
            runtime.record_event(event.user_id, event.session_id, event.item_id, event.kind)
        except KeyError as e:
            return _error(422, str(e.args[0]))
        except JournalWriteError as e:
            return _journal_failed(e)
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
            attrs = update.attrs.model_dump() if update.attrs is not None else None
            version = runtime.apply_inventory(update.kind, key, update.value, update.ts, attrs)
        except KeyError as e:
            return _error(422, f"body.{field_name}: {e.args[0]}")
        except JournalWriteError as e:
            return _journal_failed(e)
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
        status, out = await reloader.reload(body.bundle)
        return JSONResponse(out, status_code=status)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        cur = runtime.current
        return JSONResponse({"ready": True, "bundle_version": cur.version, "items": len(cur.state),
                             "state_version": cur.state.version, "worker": runtime.worker_name,
                             "journal_offset": runtime.journal.offset if runtime.journal is not None else None})

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return PlainTextResponse(m.render(), media_type="text/plain; version=0.0.4")

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for `--workers N`: each worker verifies and loads the bundle itself, then joins the journal.

    A worker started late (uvicorn restarts one that died) loads the bundle of the journal's last reload (if that
    path still holds the reloaded version: `startup_served`) and replays every inventory update and event, so it
    serves the same state as the others."""
    cfg = ServeConfig(**json.loads(os.environ.get("RECS_SERVE_CONFIG", "{}")))
    key = os.environ["RECS_SERVE_PUBLIC_KEY"]
    bundle = os.environ["RECS_SERVE_BUNDLE"]
    run_dir = os.environ.get("RECS_SERVE_RUN_DIR")
    journal = Journal(Path(run_dir) / JOURNAL_NAME) if run_dir else None
    last = journal.last_reload() if journal is not None else None
    served, why = startup_served(last[1] if last else None, bundle, key, cfg)
    if why is not None:
        logging.getLogger("recs.serve").error("worker %d: %s; serving %s (%s)", os.getpid(), why, bundle,
                                              served.version)
    runtime = Runtime(served, cfg)
    if journal is not None:
        runtime.attach_journal(journal, run_dir, last[0] if last else 0)
    audit = os.environ.get("RECS_SERVE_AUDIT") or None
    if audit:
        audit = f"{audit}.{os.getpid()}"
    return create_app(runtime, key, os.environ.get("RECS_ADMIN_TOKEN") or None, audit,
                      int(os.environ.get("RECS_SERVE_WORKERS", "1")))
