"""The server's request path as the pipeline defines it: its own slates (new-item slot included), the response
cache against the slot decision, request ids and the audit log."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from recs.serving.app import create_app
from recs.serving.runtime import Runtime
from recs.serving.served import ServeConfig, load_served
from _serve_fixtures import build_tiny_bundle

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("serve_requests"))


def test_the_full_path_serves_the_pipelines_own_slates(built):
    """With no deadline pressure the server's full path answers each request exactly as `Pipeline.rank` does, the
    new-item slot included (requests timed at the end of the data, when the catalog has new items)."""
    from dataclasses import replace
    from datetime import timedelta

    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0)
    served = load_served(built["bundle"], built["pub"], cfg)
    rt, p = Runtime(served, cfg), served.pipeline
    p.index_new_items()
    end = datetime.fromtimestamp(int(p.state.created_us.max()) / 1e6, timezone.utc) + timedelta(hours=1)
    users = list(p.histories)[:25] + [None] * 10
    slots = 0
    for j, u in enumerate(users):
        for surface, q in (("home", None), ("search", "a")):
            req = replace(rt.build_request(served, surface, u, f"s{j}", q, f"r{j}{surface}"), ts=end)
            res = rt._full_path(served, req, 10)
            ranked = p.rank(req, 10)
            assert res.item_ids == list(ranked.item_ids) and "rank" in res.stages, (u, surface)
            assert ("new_item_slot" in res.stages) == ("new_item_slot" in ranked.stages)
            slots += "new_item_slot" in res.stages
    assert slots > 5


def test_requests_with_and_without_the_new_item_slot_do_not_share_cached_answers(built):
    """The response cache for context-free requests keys on the slot decision (a hash of the request id), so with a
    share below 1 a cached answer never carries another request's decision."""
    from dataclasses import replace

    from recs.models.rerank import gets_new_item_slot

    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0)
    served = load_served(built["bundle"], built["pub"], cfg)
    rt = Runtime(served, cfg)
    served.pipeline.rerank_cfg = replace(served.pipeline.rerank_cfg, new_item_share=0.5)
    reqs = [rt.build_request(served, "home", None, f"s{j}", None, f"r{j}") for j in range(40)]
    keys = {r.request_id: rt.cache_key(served, r, 10) for r in reqs}
    decided = {r.request_id: gets_new_item_slot(r.request_id, 0.5) for r in reqs}
    assert len(set(decided.values())) == 2
    for a in reqs:
        for b in reqs:
            assert (keys[a.request_id] == keys[b.request_id]) == (decided[a.request_id] == decided[b.request_id])
    # end to end: each answer's stages say whether the slot could fire for that request, cache hits included
    end = datetime.fromtimestamp(int(served.pipeline.state.created_us.max()) / 1e6, timezone.utc)
    for r in reqs:
        res, _ = rt.recommend(replace(r, ts=end), 10)
        assert "new_item_slot" not in res.stages or decided[r.request_id]


def test_the_audit_log_records_each_answer_with_its_request_id_and_stages(built, tmp_path):
    """Every served slate is in the audit log under the request id its response carries, with its stages (how a
    slate came about, the new-item slot included, can be recovered afterwards)."""
    import json as _json

    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0)
    served = load_served(built["bundle"], built["pub"], cfg)
    log = tmp_path / "audit.jsonl"
    with TestClient(create_app(Runtime(served, cfg), built["pub"], TOKEN, log)) as c:
        user = next(iter(served.pipeline.histories))
        bodies = [c.get("/v1/recommendations", params={"user_id": user, "k": 5}).json(),
                  c.get("/v1/recommendations", params={"k": 5}).json(),
                  c.get("/v1/suggestions", params={"q": "a", "k": 4}).json()]
    records = [_json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 3 and len({b["request_id"] for b in bodies}) == 3
    for body, rec in zip(bodies, records):
        assert rec["request_id"] == body["request_id"] and rec["stages"] == body["stages"]
        assert rec["items"] == [i["item_id"] for i in body["items"]]


def test_a_failing_new_item_slot_keeps_the_filtered_slate_uncached(built, monkeypatch):
    """If the slot raises, the answer is the re-ranked slate without it, flagged as degraded, counted as an error,
    and not cached (a later request with the same key gets the full path again)."""
    from dataclasses import replace

    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0)
    served = load_served(built["bundle"], built["pub"], cfg)
    rt, p = Runtime(served, cfg), served.pipeline
    end = datetime.fromtimestamp(int(p.state.created_us.max()) / 1e6, timezone.utc)
    req = replace(rt.build_request(served, "home", None, "s1", None, "r-boom"), ts=end)
    p.rerank_cfg = replace(p.rerank_cfg, new_item_share=0.0)
    plain = rt._full_path(served, req, 10)
    p.rerank_cfg = replace(p.rerank_cfg, new_item_share=1.0)

    def boom(*args, **kwargs):
        raise RuntimeError("slot")

    monkeypatch.setattr(p, "new_item_slot", boom)
    res, _ = rt.recommend(req, 10)
    assert res.item_ids == plain.item_ids and res.reason == "new_item_slot_error" and res.fallback
    assert "new_item_slot" not in res.stages and rt.metrics.errors.get("new_item_slot") == 1
    assert served.caches["home"].get(rt.cache_key(served, req, 10)) is None


def test_search_cache_keys_on_the_query_as_the_pipeline_reads_it(built):
    """"sho " (the whole word "sho") and "sho" (a prefix) are different queries to the suggest retriever, so they are
    two cache entries; leading spaces and case, which no stage distinguishes, share one. The candidate filter
    (`Pipeline.prefix_matches`) reads the prefix with the same normalisation."""
    import numpy as np

    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0)
    served = load_served(built["bundle"], built["pub"], cfg)
    rt, p, cache = Runtime(served, cfg), served.pipeline, served.caches["search"]
    pre = next(w for t in p.state.title for w in str(t).lower().split() if len(w) >= 4 and w.isalpha())[:3]

    def ask(q: str):       # one request id: one new-item slot decision for every query
        return rt.recommend(rt.build_request(served, "search", None, None, q, "r1"), 10)[0]

    fresh = {}
    for q in (pre, pre + " "):
        cache.clear()
        fresh[q] = ask(q)
    cache.clear()
    ask(pre)
    word = ask(pre + " ")
    assert "cache" not in word.stages and word.item_ids == fresh[pre + " "].item_ids
    assert len(cache) == 2
    same = ask("  " + pre.upper())
    assert same.stages[0] == "cache" and same.item_ids == fresh[pre].item_ids and len(cache) == 2
    ids = p.state.item_ids[:400]
    np.testing.assert_array_equal(p.prefix_matches(ids, "  " + pre.upper()), p.prefix_matches(ids, pre))
