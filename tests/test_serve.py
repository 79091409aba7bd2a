"""`recs serve`: every endpoint on a tiny trained bundle, 422s, reload, live inventory, filters, fallbacks."""
from __future__ import annotations

import random
import shutil

import pytest
from fastapi.testclient import TestClient

from recs.bundle import export_bundle
from recs.serving.app import create_app
from recs.serving.runtime import Runtime
from recs.serving.served import ServeConfig, load_served
from _serve_fixtures import build_tiny_bundle

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("serve"))


def _client(built, cfg: ServeConfig | None = None) -> TestClient:
    # no degrading because the machine is slow
    cfg = cfg or ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0)
    served = load_served(built["bundle"], built["pub"], cfg)
    return TestClient(create_app(Runtime(served, cfg), built["pub"], TOKEN))


@pytest.fixture()
def client(built):
    with _client(built) as c:
        yield c


def _ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [i["item_id"] for i in resp.json()["items"]]


def _known_user(client) -> str:
    return next(iter(client.app.state.runtime.current.pipeline.histories))


def test_recommendations_and_suggestions_shape(client):
    r = client.get("/v1/recommendations", params={"user_id": _known_user(client), "session_id": "s1", "k": 7})
    body = r.json()
    assert r.status_code == 200 and len(body["items"]) == 7
    assert set(body) == {"items", "bundle_version", "stages", "fallback", "latency_ms", "request_id"}
    again = client.get("/v1/recommendations", params={"user_id": _known_user(client), "k": 7}).json()
    assert body["request_id"].startswith("r") and again["request_id"] != body["request_id"]
    assert body["stages"][:2] == ["retrieve", "rank"] and body["fallback"] is False
    assert body["bundle_version"] == client.app.state.runtime.current.version
    s = client.get("/v1/suggestions", params={"q": "a", "session_id": "s1", "k": 4}).json()
    assert len(s["items"]) == 4 and isinstance(s["completions"], list) and "fallback" in s
    for c in s["completions"]:
        assert set(c) == {"query", "score"}


def test_openapi_health_ready_metrics(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/recommendations", "/v1/suggestions", "/v1/events", "/v1/inventory", "/admin/reload"} <= set(
        spec["paths"])
    params = {p["name"]: p for p in spec["paths"]["/v1/suggestions"]["get"]["parameters"]}
    assert params["q"]["required"] is True and params["k"]["schema"]["maximum"] == 100
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/readyz").json()["ready"] is True
    client.get("/v1/recommendations", params={"session_id": "m"})
    text = client.get("/metrics").text
    assert 'recs_stage_duration_seconds_bucket{stage="retrieve",le="+Inf"}' in text
    assert "recs_cache_hit_ratio" in text and "recs_requests_total" in text


@pytest.mark.parametrize("path,params,field", [
    ("/v1/recommendations", {"k": 0}, "k"),
    ("/v1/recommendations", {"k": 101}, "k"),
    ("/v1/recommendations", {"k": "ten"}, "k"),
    ("/v1/recommendations", {"colour": "red"}, "colour"),
    ("/v1/suggestions", {"q": "x" * 101}, "q"),
    ("/v1/suggestions", {}, "q"),
    ("/v1/suggestions", {"q": "a", "page": 2}, "page"),
    ("/v1/recommendations", {"user_id": "u" * 200}, "user_id"),
    ("/v1/recommendations", [("k", "3"), ("k", "4")], "k"),
    ("/v1/recommendations", {"k": "1_0"}, "k"),
    ("/v1/recommendations", {"k": "+5"}, "k"),
    ("/v1/suggestions", {"q": "a", "session_id": ""}, "session_id"),
])
def test_bad_requests_get_422_json(client, path, params, field):
    r = client.get(path, params=params)
    assert r.status_code == 422
    assert field in r.json()["error"]


def test_events_personalise_anonymous_session(client):
    rt = client.app.state.runtime
    before = client.get("/v1/recommendations", params={"session_id": "sess-ev", "k": 10}).json()
    item = rt.current.pipeline.fallback["__global__"][0]
    assert client.post("/v1/events", json={"session_id": "sess-ev", "item_id": item}).json() == {"ok": True}
    req = rt.build_request(rt.current, "home", None, "sess-ev", None, "x")
    assert req.recent_items == (item,)
    after = client.get("/v1/recommendations", params={"session_id": "sess-ev", "k": 10}).json()
    assert "cache" not in after["stages"]          # a session with history is never served from the cache
    assert len(after["items"]) == 10 and len(before["items"]) == 10
    assert client.post("/v1/events", json={"session_id": "s", "item_id": "nope"}).status_code == 422
    assert client.post("/v1/events", json={"session_id": "s", "item_id": item, "x": 1}).status_code == 422
    assert client.post("/v1/events", json={"session_id": "s", "item_id": item, "kind": "like"}).status_code == 422


def _ids_list(body) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_anonymous_cache_hit_and_invalidation_on_stock_zero(client):
    p = {"session_id": "anon-1", "k": 10}
    first = client.get("/v1/recommendations", params=p).json()
    second = client.get("/v1/recommendations", params={"session_id": "anon-2", "k": 10}).json()
    assert second["stages"][0] == "cache" and _ids_list(second) == _ids_list(first)
    victim = _ids_list(second)[0]
    r = client.post("/v1/inventory", json={"kind": "stock", "item_id": victim, "value": 0})
    assert r.status_code == 200 and r.json()["ok"]
    third = client.get("/v1/recommendations", params={"session_id": "anon-3", "k": 10}).json()
    assert victim not in _ids_list(third) and third["stages"][0] != "cache"
    user = _known_user(client)
    assert victim not in _ids(client.get("/v1/recommendations", params={"user_id": user, "k": 50}))


def test_cache_invalidation_is_per_item(client):
    """An update drops exactly the cached answers holding the item; a blocked seller clears the cache."""
    rt = client.app.state.runtime
    p = {"session_id": "c1", "k": 5}
    cached = _ids(client.get("/v1/recommendations", params=p))
    st = rt.current.state
    other = next(i for i in st.item_ids if i not in cached)
    assert client.post("/v1/inventory", json={"kind": "price", "item_id": other, "value": 3.0}).status_code == 200
    hit = client.get("/v1/recommendations", params=p).json()
    assert hit["stages"][0] == "cache" and _ids_list(hit) == cached          # untouched by another item's update
    assert client.post("/v1/inventory", json={"kind": "price", "item_id": cached[2], "value": 3.0}).status_code == 200
    assert client.get("/v1/recommendations", params=p).json()["stages"][0] != "cache"   # held that item: dropped
    assert client.get("/v1/recommendations", params=p).json()["stages"][0] == "cache"
    seller = st.seller_id[st.index[other]]
    client.post("/v1/inventory", json={"kind": "blocked_seller", "seller_id": seller})
    assert len(rt.current.caches["home"]) == 0 and len(rt.current.caches["search"]) == 0


def test_queue_pressure_skips_the_ranker_before_shedding(built):
    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=5)
    with _client(built, cfg) as c:
        rt = c.app.state.runtime
        user = _known_user(c)
        assert "rank" in c.get("/v1/recommendations", params={"user_id": user, "k": 5}).json()["stages"]
        rt.service_ewma_s, rt.in_flight = 0.004, 2     # + this one: two others at 4 ms each, 8 ms > 5 ms
        r = c.get("/v1/recommendations", params={"user_id": user, "k": 5}).json()
        assert r["fallback"] is True and "retrieval_order" in r["stages"] and "rank" not in r["stages"]
        assert len(r["items"]) == 5 and rt.metrics.fallbacks.get("home", "load_ranker_skipped") == 1
        rt.in_flight = 0
        rt.cfg.rank_skip_ms = 0                          # 0: never skipped for load
        rt.service_ewma_s = 1.0
        assert not rt.pressed(1.0)


def test_inventory_updates_all_kinds_and_bad_input(client):
    rt = client.app.state.runtime
    st = rt.current.state
    ids = _ids(client.get("/v1/recommendations", params={"user_id": _known_user(client), "k": 20}))
    restricted, blocked_item = ids[0], ids[1]
    seller = st.seller_id[st.index[blocked_item]]
    assert client.post("/v1/inventory",
                       json={"kind": "restricted", "item_id": restricted, "value": 1}).status_code == 200
    assert client.post("/v1/inventory", json={"kind": "blocked_seller", "seller_id": seller}).status_code == 200
    assert client.post("/v1/inventory", json={"kind": "price", "item_id": ids[2], "value": 9.5}).status_code == 200
    assert st.price[st.index[ids[2]]] == 9.5
    again = _ids(client.get("/v1/recommendations", params={"user_id": _known_user(client), "k": 20}))
    assert restricted not in again
    assert all(st.seller_id[st.index[i]] != seller for i in again)
    bad = [{"kind": "stock", "item_id": "nope", "value": 0}, {"kind": "price", "item_id": ids[3], "value": -1},
           {"kind": "melt", "item_id": ids[3]}, {"kind": "stock", "value": 1},
           {"kind": "stock", "item_id": ids[3], "value": 1, "extra": True}]
    for b in bad:
        r = client.post("/v1/inventory", json=b)
        assert r.status_code == 422 and "error" in r.json(), b


def test_no_filtered_item_ever_served_under_random_updates(client):
    """Property: across many requests interleaved with random inventory updates, every slate is eligible."""
    rt = client.app.state.runtime
    rng = random.Random(11)
    users = list(rt.current.pipeline.histories)[:30]
    pool: list[str] = []
    for _ in range(300):
        st = rt.current.state
        if pool and rng.random() < 0.4:
            iid = rng.choice(pool)
            kind = rng.choice(["stock", "stock", "restricted", "blocked_seller"])
            if kind == "blocked_seller":
                client.post("/v1/inventory", json={"kind": kind, "seller_id": st.seller_id[st.index[iid]]})
            else:
                client.post("/v1/inventory", json={"kind": kind, "item_id": iid, "value": 0 if kind == "stock" else 1})
        if rng.random() < 0.2:
            client.post("/v1/inventory", json={"kind": "stock", "item_id": rng.choice(pool or [st.item_ids[0]]),
                                               "value": 5})
        user = rng.choice(users + [None, None])
        params = {"session_id": f"p{rng.randrange(20)}", "k": rng.choice([5, 10, 30])}
        if user:
            params["user_id"] = user
        if rng.random() < 0.4:
            r = client.get("/v1/suggestions", params={**params, "q": rng.choice(["a", "s", "su", "ko", ""])})
        else:
            r = client.get("/v1/recommendations", params=params)
        ids = _ids(r)
        assert st.is_eligible(ids, None).all(), (r.json()["stages"], ids)
        pool.extend(ids[:3])


def test_ranker_exception_falls_back_to_retrieval_order(client):
    rt = client.app.state.runtime

    def boom(*a, **k):
        raise RuntimeError("ranker down")

    rt.current.pipeline.ranker.predict = boom
    r = client.get("/v1/recommendations", params={"user_id": _known_user(client), "k": 10}).json()
    assert r["fallback"] is True and "retrieval_order" in r["stages"] and len(r["items"]) == 10
    assert rt.metrics.errors.get("rank") >= 1


def test_retrieval_exception_and_shedding_serve_filtered_popular(built):
    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0)
    with _client(built, cfg) as c:
        rt = c.app.state.runtime
        top = rt.current.pipeline.fallback["__global__"][0]
        c.post("/v1/inventory", json={"kind": "stock", "item_id": top, "value": 0})
        rt.current.pipeline.candidates = lambda *a, **k: (_ for _ in ()).throw(ValueError("index gone"))
        r = c.get("/v1/recommendations", params={"user_id": _known_user(c), "k": 10}).json()
        assert r["fallback"] is True and r["stages"] == ["fallback"] and len(r["items"]) == 10
        assert top not in _ids_list(r)
        rt.cfg.shed_in_flight = 1
        rt.in_flight = 5  # pretend we are overloaded
        r = c.get("/v1/recommendations", params={"session_id": "x", "k": 10}).json()
        assert r["fallback"] is True and r["stages"][0] == "shed" and top not in _ids_list(r)
        assert len(r["items"]) == 10 and rt.metrics.fallbacks.get("home", "shed") >= 1
        second = rt.current.pipeline.fallback["__global__"][1]
        c.post("/v1/inventory", json={"kind": "restricted", "item_id": second, "value": 1})
        r = c.get("/v1/suggestions", params={"q": "a", "k": 10}).json()
        assert r["stages"][0] == "shed" and second not in _ids_list(r) and r["completions"] == []
        assert c.get("/v1/recommendations", params={"k": 0}).status_code == 422   # still validated
        rt.cfg.shed_in_flight, rt.in_flight = 64, 0
        assert not rt.overloaded(0.0)
        rt.in_flight, rt.service_ewma_s = 3, 6.0   # two requests ahead at 6 s each: past the 10 s deadline
        assert rt.overloaded(0.0)


def test_deadline_skips_ranker(built):
    cfg = ServeConfig(deadline_ms=1e-6, shed_queue_ms=10_000, rank_skip_ms=0)
    with _client(built, cfg) as c:
        r = c.get("/v1/recommendations", params={"user_id": _known_user(c), "k": 10}).json()
        assert "retrieval_order" in r["stages"] and "rank" not in r["stages"] and r["fallback"] is True


def test_reload_refuses_tampered_bundle_and_old_keeps_serving(built, client, tmp_path):
    old = client.get("/readyz").json()["bundle_version"]
    bad = tmp_path / "tampered"
    shutil.copytree(built["bundle"], bad)
    (bad / "fallback.json").write_text("{}")
    hdr = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/admin/reload", json={"bundle": str(bad)}).status_code == 401
    assert client.post("/admin/reload", json={"bundle": str(bad)}, headers={"X-Admin-Token": "no"}).status_code == 401
    r = client.post("/admin/reload", json={"bundle": str(bad)}, headers=hdr)
    assert r.status_code == 400 and "refused" in r.json()["error"]
    assert _ids(client.get("/v1/recommendations", params={"k": 5}))
    assert client.get("/readyz").json()["bundle_version"] == old


def test_reload_swaps_and_keeps_live_state(built, client, tmp_path):
    victim = _ids(client.get("/v1/recommendations", params={"user_id": _known_user(client), "k": 5}))[0]
    client.post("/v1/inventory", json={"kind": "stock", "item_id": victim, "value": 0})
    st = client.app.state.runtime.current.state
    attrs = {"category": st.category[0], "subcategory": st.subcategory[0], "seller_id": st.seller_id[0],
             "brand": "b", "title": "fresh reload thing", "price": 9.5, "stock": 3}
    assert client.post("/v1/inventory", json={"kind": "new_item", "item_id": "n-reload", "value": 3,
                                              "attrs": attrs}).status_code == 200
    new_bundle = tmp_path / "b2"
    export_bundle(built["model"], new_bundle, built["priv"])   # re-signed: a different manifest, a new version
    old = client.get("/readyz").json()["bundle_version"]
    r = client.post("/admin/reload", json={"bundle": str(new_bundle)}, headers={"X-Admin-Token": TOKEN})
    assert r.status_code == 200, r.text
    assert r.json()["previous"] == old
    new_version = r.json()["bundle_version"]
    body = client.get("/v1/recommendations", params={"user_id": _known_user(client), "k": 50}).json()
    assert body["bundle_version"] == new_version
    assert victim not in _ids_list(body)   # the stock-0 update was re-applied to the new bundle's state
    # and the item added through the API is in the new bundle's state and its content retriever
    cur = client.app.state.runtime.current
    assert "n-reload" in cur.state.index and "n-reload" in cur.pipeline.retrievers["content"]._pos


def test_nothing_is_unpickled_and_a_bad_bundle_is_never_opened(built, tmp_path, monkeypatch):
    """Verification comes first: a tampered bundle never reaches Pipeline.load; a good one loads with pickle off."""
    import pickle

    from recs.bundle.errors import BundleVerificationError
    from recs.models.pipeline import Pipeline

    opened: list[str] = []
    real_load = Pipeline.load.__func__
    monkeypatch.setattr(Pipeline, "load", classmethod(lambda cls, d, *a, **k: (opened.append(str(d)),
                                                                                real_load(cls, d, *a, **k))[1]))

    def no_pickle(*a, **k):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    bad = tmp_path / "bad"
    shutil.copytree(built["bundle"], bad)
    (bad / "model.json").write_text((bad / "model.json").read_text() + " ")
    with pytest.raises(BundleVerificationError):
        load_served(bad, built["pub"], ServeConfig())
    assert opened == []
    served = load_served(built["bundle"], built["pub"], ServeConfig())
    # a small folder bundle is loaded from its private checked copy (docs/BUNDLE.md), not from the folder itself
    assert opened == [str(served.bundle.path)] and served.bundle.temporary and len(served.state) > 0
    in_place = load_served(built["bundle"], built["pub"], ServeConfig(bundle_copy_max_bytes=0))
    assert opened[-1] == str(built["bundle"]) and not in_place.bundle.temporary


def test_a_folder_bundle_changed_after_verification_is_not_what_loads(built, tmp_path, monkeypatch):
    """Pipeline.load opens files by path: it reads the private copy checked against the manifest, so a file of the
    folder bundle rewritten after verification (here: just before the load) does not reach the server."""
    import json

    from recs.models.pipeline import Pipeline

    b = tmp_path / "b"
    shutil.copytree(built["bundle"], b)
    verified = json.loads((b / "fallback.json").read_text())
    real_load = Pipeline.load.__func__

    def edit_then_load(cls, d, *a, **k):
        (b / "fallback.json").write_text('{"__global__": ["EVIL"]}')
        return real_load(cls, d, *a, **k)

    monkeypatch.setattr(Pipeline, "load", classmethod(edit_then_load))
    served = load_served(b, built["pub"], ServeConfig())
    assert served.pipeline.fallback == verified and served.bundle.path != b
    served.bundle.close()
    assert not served.bundle.path.exists()


def test_session_histories_are_bounded_and_evictions_counted(built):
    """Every new session id in POST /v1/events used to add a history that was never removed."""
    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0, max_sessions=5, max_users=3)
    with _client(built, cfg) as c:
        item = str(c.app.state.runtime.current.state.item_ids[0])
        for j in range(50):
            ev = {"session_id": f"s{j}", "item_id": item, "user_id": f"u{j}"}
            assert c.post("/v1/events", json=ev).status_code == 200
        st = c.app.state.runtime.current.state
        assert len(st.session_history) == 5 and len(st.user_history) == 3 and "s0" not in st.session_history
        lines = c.get("/metrics").text.splitlines()
    assert 'recs_histories{history="session"} 5' in lines
    assert 'recs_history_evictions_total{history="session",reason="capacity"} 45' in lines
    assert 'recs_history_evictions_total{history="user",reason="capacity"} 47' in lines


def test_reload_disabled_without_token(built):
    cfg = ServeConfig(shed_queue_ms=10_000)
    served = load_served(built["bundle"], built["pub"], cfg)
    with TestClient(create_app(Runtime(served, cfg), built["pub"], None)) as c:
        assert c.post("/admin/reload", json={"bundle": str(built["bundle"])}).status_code == 403


def test_cli_serve_refuses_bad_bundle(built, tmp_path):
    from typer.testing import CliRunner

    from recs.cli.main import app

    bad = tmp_path / "bad"
    shutil.copytree(built["bundle"], bad)
    (bad / "model.json").write_text("{}")
    res = CliRunner().invoke(app, ["serve", "--bundle", str(bad), "--public-key", str(built["pub"])])
    assert res.exit_code == 1 and "refused" in res.output
    res = CliRunner().invoke(app, ["serve", "--bundle", str(tmp_path / "none"), "--public-key", str(built["pub"])])
    assert res.exit_code == 2
    res = CliRunner().invoke(app, ["serve", "--bundle", str(built["bundle"]), "--public-key", str(built["priv"])])
    assert res.exit_code == 2 and "private key" in res.output


def test_metrics_count_inventory_updates_a_reload_would_lose(built):
    """The replay log is bounded; updates it drops are counted in /metrics (a reload would not re-apply them)."""
    cfg = ServeConfig(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0, inventory_log=2)
    with _client(built, cfg) as c:
        items = list(c.app.state.runtime.current.state.item_ids[:3])
        for item in items:
            assert c.post("/v1/inventory", json={"kind": "price", "item_id": item, "value": 5.0}).status_code == 200
        text = c.get("/metrics").text
    assert "recs_inventory_log_dropped 1" in text.splitlines()
    assert "recs_journal_corrupt_lines 0" in text.splitlines()

