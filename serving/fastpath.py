"""The two GET endpoints without FastAPI's per-request machinery: query validation, the request path, JSON bytes.

`InFlight` (serving/app.py) hands every `GET /v1/recommendations` and `GET /v1/suggestions` to `FastGet.answer`
before routing. A valid request is answered from here (routing, `Request` objects and response classes cost about
as much as a cache hit); an invalid one returns None and falls through to the FastAPI route, which runs the same
`parse_query` and answers 422 with the JSON error. The routes also carry the OpenAPI schema.
"""
from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from recs.serving.runtime import Result, Runtime
from recs.serving.served import HOME, SEARCH, ServeConfig

ENDPOINTS = {"/v1/recommendations": HOME, "/v1/suggestions": SEARCH}
PARAMS = {HOME: frozenset({"user_id", "session_id", "k"}), SEARCH: frozenset({"q", "user_id", "session_id", "k"})}
DEFAULT_K = {HOME: 10, SEARCH: 5}

Query = tuple[str | None, str | None, str | None, int]   # user_id, session_id, q, k


def parse_query(pairs: list[tuple[str, str]], surface: str, cfg: ServeConfig) -> Query | tuple[str, str]:
    """(user_id, session_id, q, k) of a valid query, else (parameter, message) of the first problem."""
    allowed = PARAMS[surface]
    vals: dict[str, str] = {}
    for name, v in pairs:
        if name not in allowed:
            return name, "unknown query parameter"
        if name in vals:
            return name, "repeated query parameter"
        vals[name] = v
    for name in ("user_id", "session_id"):
        v = vals.get(name)
        if v is not None and not 1 <= len(v) <= cfg.max_id_chars:
            return name, f"length must be 1..{cfg.max_id_chars}"
    k = DEFAULT_K[surface]
    raw_k = vals.get("k")
    if raw_k is not None:
        if not (raw_k.isascii() and raw_k.isdigit()) or len(raw_k) > 6:
            return "k", "Input should be a valid integer"
        k = int(raw_k)
        if not 1 <= k <= cfg.max_k:
            return "k", f"Input should be between 1 and {cfg.max_k}"
    q = vals.get("q")
    if surface == SEARCH:
        if q is None:
            return "q", "Field required"
        if len(q) > cfg.max_query_chars:
            return "q", f"String should have at most {cfg.max_query_chars} characters"
    return vals.get("user_id"), vals.get("session_id"), q, k


def split_query(raw: bytes) -> list[tuple[str, str]] | None:
    """Decoded (name, value) pairs of a raw query string; None if it is malformed."""
    try:
        return parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True) if raw else []
    except (ValueError, UnicodeDecodeError):
        return None


class FastGet:
    """Answers valid GET requests of the two serving endpoints; also used by the FastAPI routes."""

    def __init__(self, runtime: Runtime, audit: Any) -> None:
        self.rt, self.audit = runtime, audit
        self._ids = itertools.count(1)
        # request ids unique across workers and restarts (the new-item slot hashes them; clients join feedback on them)
        self._id_prefix = f"r{os.getpid():x}{secrets.token_hex(8)}-"

    def answer(self, scope: dict, t_in: float) -> bytes | None:
        """Response body for a valid GET /v1/* (None: not one of ours, or invalid -> the route answers 422)."""
        surface = ENDPOINTS.get(scope["path"])
        if surface is None or scope["method"] != "GET":
            return None
        pairs = split_query(scope["query_string"])
        if pairs is None:
            return None
        parsed = parse_query(pairs, surface, self.rt.cfg)
        if len(parsed) == 2:
            return None
        return self.serve(surface, parsed, t_in)

    def serve(self, surface: str, query: Query, t_in: float) -> bytes:
        """Run the request path (or the shed path when overloaded) and render the JSON body."""
        rt, m = self.rt, self.rt.metrics
        user_id, session_id, q, k = query
        wall = time.time()
        waited = time.perf_counter() - t_in
        request_id = f"{self._id_prefix}{next(self._ids)}"
        if rt.overloaded(waited):
            res, version = rt.shed(surface, k)
            stages, fallback = ["shed", *res.stages], True
        else:
            req = rt.build_request(rt.current, surface, user_id, session_id, q, request_id)
            res, version = rt.recommend(req, k, waited)
            stages, fallback = res.stages, res.fallback
        lat = time.perf_counter() - t_in
        body = render(surface, res, version, stages, fallback, lat, request_id)
        m.request_seconds.observe(lat, surface)
        m.requests.inc(surface, "200")
        self.audit.write(wall, surface, res.item_ids, version, request_id, stages)
        return body


def render(surface: str, res: Result, version: str, stages: list[str], fallback: bool, lat_s: float,
           request_id: str = "") -> bytes:
    """The JSON body of a recommendations / suggestions response."""
    body: dict[str, Any] = {
        "items": [{"item_id": i, "score": round(s, 6)} for i, s in zip(res.item_ids, res.scores)],
        "bundle_version": version, "stages": stages, "fallback": fallback, "latency_ms": round(lat_s * 1000, 3),
        "request_id": request_id}
    if surface == SEARCH:
        body["completions"] = [{"query": q, "score": round(s, 6)} for q, s in res.completions]
    return json.dumps(body, separators=(",", ":")).encode()
