"""`--workers N`: writes reach every worker through the shared journal (serving/journal.py), reloads swap on all."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recs.bundle import export_bundle
from recs.serving.app import create_app
from recs.serving.journal import JOURNAL_NAME, Journal, live_workers
from recs.serving.runtime import Runtime
from recs.serving.served import ServeConfig, load_served, startup_served
from _serve_fixtures import build_tiny_bundle

TOKEN = "tok"
# journal_poll_s=600: the idle poller never runs during a test, so every write must reach the other worker
# through the check at the start of each request
CFG = dict(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0, journal_poll_s=600, reload_wait_s=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("workers"))


def _worker(built, run_dir: Path, name: str, workers: int = 2, **kw) -> TestClient:
    """One in-process 'worker': its own runtime and app, joined to the journal in `run_dir`."""
    cfg = ServeConfig(**{**CFG, **kw})
    rt = Runtime(load_served(built["bundle"], built["pub"], cfg), cfg)
    rt.attach_journal(Journal(run_dir / JOURNAL_NAME), run_dir, worker_name=name)
    return TestClient(create_app(rt, built["pub"], TOKEN, workers=workers))


def _ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [i["item_id"] for i in resp.json()["items"]]


def test_writes_on_one_worker_reach_the_other(built, tmp_path):
    with _worker(built, tmp_path, "a") as a, _worker(built, tmp_path, "b") as b:
        rb = b.app.state.runtime
        home = {"session_id": "anon", "k": 10}
        victim = _ids(b.get("/v1/recommendations", params=home))[0]
        assert b.get("/v1/recommendations", params=home).json()["stages"][0] == "cache"   # B would serve it again
        assert a.post("/v1/inventory", json={"kind": "stock", "item_id": victim, "value": 0}).status_code == 200
        nxt = b.get("/v1/recommendations", params=home).json()                            # the very next request
        assert victim not in [i["item_id"] for i in nxt["items"]] and nxt["stages"][0] != "cache"
        assert rb.current.state.stock[rb.current.state.index[victim]] == 0
        # search bar and a known user on B, and the shed path, all filtered
        user = next(iter(rb.current.pipeline.histories))
        assert victim not in _ids(b.get("/v1/suggestions", params={"q": "a", "user_id": user, "k": 50}))
        seller_item = _ids(b.get("/v1/recommendations", params={"user_id": user, "k": 10}))[0]
        seller = rb.current.state.seller_id[rb.current.state.index[seller_item]]
        assert a.post("/v1/inventory", json={"kind": "blocked_seller", "seller_id": seller}).status_code == 200
        st = rb.current.state
        again = _ids(b.get("/v1/recommendations", params={"user_id": user, "k": 30}))
        assert all(st.seller_id[st.index[i]] != seller for i in again)
        # a session click on B personalises the session's next request on A
        assert b.post("/v1/events", json={"session_id": "s9", "item_id": seller_item}).status_code == 200
        ra = a.app.state.runtime
        a.get("/healthz")
        assert ra.build_request(ra.current, "home", None, "s9", None, "x").recent_items == (seller_item,)
        assert ra.metrics.journal.get("ev") == 1 and rb.metrics.journal.get("inv") == 2


def test_rejected_write_is_not_journaled_and_new_items_propagate(built, tmp_path):
    with _worker(built, tmp_path, "a") as a, _worker(built, tmp_path, "b") as b:
        journal = tmp_path / JOURNAL_NAME
        size = journal.stat().st_size
        assert a.post("/v1/inventory", json={"kind": "stock", "item_id": "nope", "value": 0}).status_code == 422
        assert a.post("/v1/inventory", json={"kind": "new_item", "item_id": "n1", "value": 3,
                                             "attrs": {"category": "x"}}).status_code == 422
        assert b.post("/v1/events", json={"session_id": "s", "item_id": "nope"}).status_code == 422
        assert journal.stat().st_size == size
        st_b = b.app.state.runtime.current.state
        attrs = {"category": st_b.category[0], "subcategory": st_b.subcategory[0], "seller_id": "new-seller",
                 "brand": "b", "title": "fresh thing", "price": 12.5, "stock": 4,
                 "created_at": "2020-01-01T00:00:00Z"}
        r = a.post("/v1/inventory", json={"kind": "new_item", "item_id": "n1", "value": 4, "attrs": attrs})
        assert r.status_code == 200, r.text
        b.get("/healthz")
        st_b = b.app.state.runtime.current.state
        assert "n1" in st_b.index and st_b.stock[st_b.index["n1"]] == 4
        for w in (a, b):  # both workers' content retrievers indexed it (it can be suggested before any refit)
            content = w.app.state.runtime.current.pipeline.retrievers.get("content")
            assert "n1" in content._pos
        assert b.post("/v1/events", json={"session_id": "s", "item_id": "n1"}).status_code == 200


def test_torn_line_is_skipped_and_later_records_apply(built, tmp_path):
    with _worker(built, tmp_path, "a") as a, _worker(built, tmp_path, "b") as b:
        with open(tmp_path / JOURNAL_NAME, "ab") as f:
            f.write(b'{"op":"inv","kind":"sto')          # a writer killed mid-line
        victim = _ids(b.get("/v1/recommendations", params={"k": 5}))[0]
        assert a.post("/v1/inventory", json={"kind": "restricted", "item_id": victim, "value": 1}).status_code == 200
        assert victim not in _ids(b.get("/v1/recommendations", params={"k": 5}))
        assert b.app.state.runtime.journal.corrupt == 1


def test_reload_swaps_every_worker_and_a_late_worker_replays(built, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    new_bundle = tmp_path / "b2"
    export_bundle(built["model"], new_bundle, built["priv"])   # re-signed: another version
    # an idle worker must follow a reload without any request reaching it: the poller
    with _worker(built, run, "a", journal_poll_s=0.02) as a, _worker(built, run, "b", journal_poll_s=0.02) as b:
        old = b.get("/readyz").json()["bundle_version"]
        victim = _ids(a.get("/v1/recommendations", params={"k": 5}))[0]
        a.post("/v1/inventory", json={"kind": "stock", "item_id": victim, "value": 0})
        bad = tmp_path / "bad"
        shutil.copytree(new_bundle, bad)
        (bad / "fallback.json").write_text("{}")
        r = a.post("/admin/reload", json={"bundle": str(bad)}, headers={"X-Admin-Token": TOKEN})
        assert r.status_code == 400 and "refused" in r.json()["error"]
        assert Journal(run / JOURNAL_NAME).last_reload() is None      # a refused bundle is never journaled
        r = a.post("/admin/reload", json={"bundle": str(new_bundle)}, headers={"X-Admin-Token": TOKEN})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["workers"] == {"expected": 2, "live": 2, "swapped": 2, "complete": True}
        new = body["bundle_version"]
        assert new != old and set(live_workers(run).values()) == {new}
        got = b.get("/v1/recommendations", params={"k": 20}).json()
        assert got["bundle_version"] == new and victim not in [i["item_id"] for i in got["items"]]
        assert b.app.state.runtime.metrics.reloads.get("followed") == 1
        b.post("/v1/events", json={"session_id": "late", "item_id": victim})
    # a worker (re)started now loads the journaled bundle and replays every write
    end, rec = Journal(run / JOURNAL_NAME).last_reload()
    assert rec["version"] == new
    cfg = ServeConfig(**CFG)
    rt = Runtime(load_served(rec["bundle"], built["pub"], cfg), cfg)
    rt.attach_journal(Journal(run / JOURNAL_NAME), run, reload_skip_until=end, worker_name="c")
    st = rt.current.state
    assert rt.current.version == new and st.stock[st.index[victim]] == 0 and rt.reload_target is None
    assert [i for i, _ in st.session_history["late"]] == [victim]


# ---- the real thing: `recs serve --workers 2` -------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None,
          headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def _connections_per_worker(port: int, want: int = 2, rounds: int = 8) -> dict[str, http.client.HTTPConnection]:
    """Keep-alive connections until `want` distinct workers are covered. An idle worker tends to win every accept,
    so each round opens a burst of concurrent connections that each send work first: while one worker computes,
    the other accepts."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> tuple[str, http.client.HTTPConnection]:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        _call(c, "GET", "/v1/suggestions?q=a&k=50")
        return _call(c, "GET", "/readyz")[1]["worker"], c

    found: dict[str, http.client.HTTPConnection] = {}
    with ThreadPoolExecutor(24) as pool:
        for _ in range(rounds):
            for w, c in pool.map(one, range(24)):
                if w in found:
                    c.close()
                else:
                    found[w] = c
            if len(found) >= want:
                break
            time.sleep(0.5)
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="needs fork + flock semantics of Linux")
def test_recs_serve_two_workers_end_to_end(built, tmp_path):
    port = _free_port()
    recs = str(Path(sys.executable).with_name("recs"))
    run = tmp_path / "run"
    proc = subprocess.Popen([recs, "serve", "--bundle", str(built["bundle"]), "--public-key", str(built["pub"]),
                             "--port", str(port), "--workers", "2", "--run-dir", str(run),
                             "--deadline-ms", "10000", "--shed-queue-ms", "10000", "--rank-skip-ms", "0"],
                            env=dict(os.environ, RECS_ADMIN_TOKEN=TOKEN))
    try:
        deadline = time.time() + 240
        while len(live_workers(run)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
        conns = _connections_per_worker(port)
        assert len(conns) == 2, f"only reached workers {list(conns)}"
        (wa, a), (wb, b) = conns.items()
        _, first = _call(b, "GET", "/v1/recommendations?k=10")
        victims = [i["item_id"] for i in first["items"]][:3]
        for v in victims:                                  # updates through A, reads through B right after
            assert _call(a, "POST", "/v1/inventory", {"kind": "stock", "item_id": v, "value": 0})[0] == 200
            for conn in (b, a):
                for path in ("/v1/recommendations?k=30", "/v1/suggestions?q=a&k=30"):
                    s, body = _call(conn, "GET", path)
                    assert s == 200 and not set(victims[:victims.index(v) + 1]) & {
                        i["item_id"] for i in body["items"]}, (path, body)
        b2 = tmp_path / "b2"
        export_bundle(built["model"], b2, built["priv"])
        bad = tmp_path / "bad"
        shutil.copytree(b2, bad)
        (bad / "model.json").write_text("{}")
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:                              # requests on both workers during both reloads
            conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(4)]
            while not stop.is_set():
                for conn in conns:
                    statuses.append(_call(conn, "GET", "/v1/suggestions?q=s&k=10")[0])

        th = threading.Thread(target=hammer)
        th.start()
        try:
            s, refused = _call(b, "POST", "/admin/reload", {"bundle": str(bad)}, {"X-Admin-Token": TOKEN})
            assert s == 400 and "refused" in refused["error"]
            s, body = _call(b, "POST", "/admin/reload", {"bundle": str(b2)}, {"X-Admin-Token": TOKEN})
        finally:
            stop.set()
            th.join()
        assert s == 200 and body["workers"]["complete"] is True, body
        assert statuses and set(statuses) == {200}          # no request dropped or failed during the reloads
        s, got = _call(a, "GET", "/v1/recommendations?k=30")
        assert got["bundle_version"] == body["bundle_version"] and not set(victims) & {
            i["item_id"] for i in got["items"]}
        # kill worker A: uvicorn starts a replacement, which loads the journaled bundle and replays the updates
        os.kill(int(wa), signal.SIGKILL)
        deadline = time.time() + 240
        while time.time() < deadline:
            live = live_workers(run)
            if len(live) == 2 and wa not in live:
                break
            time.sleep(0.3)
        assert set(live_workers(run).values()) == {body["bundle_version"]}
        fresh = _connections_per_worker(port)
        assert len(fresh) == 2 and wa not in fresh
        for conn in fresh.values():
            s, got = _call(conn, "GET", "/v1/recommendations?k=30")
            assert s == 200 and not set(victims) & {i["item_id"] for i in got["items"]}
            assert got["bundle_version"] == body["bundle_version"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert (run / JOURNAL_NAME).is_file()   # a given --run-dir is kept


class _FakeServed:
    def __init__(self, path: str, version: str) -> None:
        self.path, self.version, self.closed = path, version, False
        self.bundle = self

    def close(self) -> None:
        self.closed = True


def test_a_starting_worker_serves_the_journaled_bundle_only_if_it_is_still_that_version():
    versions = {"/b/reloaded": "m@222", "/b/startup": "m@111"}
    loaded: list[_FakeServed] = []

    def load(path, key, cfg):
        if path not in versions:
            raise FileNotFoundError(path)
        loaded.append(_FakeServed(path, versions[path]))
        return loaded[-1]

    cfg = ServeConfig(**CFG)
    served, why = startup_served(None, "/b/startup", "key", cfg, load)
    assert served.path == "/b/startup" and why is None
    served, why = startup_served({"bundle": "/b/reloaded", "version": "m@222"}, "/b/startup", "key", cfg, load)
    assert served.path == "/b/reloaded" and why is None
    # the reloaded path was overwritten by another build after the reload: refused, closed, start-up bundle served
    versions["/b/reloaded"] = "m@333"
    served, why = startup_served({"bundle": "/b/reloaded", "version": "m@222"}, "/b/startup", "key", cfg, load)
    assert served.path == "/b/startup" and "m@333" in why and "m@222" in why and loaded[-2].closed
    # the reloaded path is gone
    served, why = startup_served({"bundle": "/b/gone", "version": "m@222"}, "/b/startup", "key", cfg, load)
    assert served.path == "/b/startup" and "not loaded" in why
    # rebuilt in place: the start-up path is the reloaded path, overwritten again; loaded once, served with the reason
    n = len(loaded)
    served, why = startup_served({"bundle": "/b/reloaded", "version": "m@222"}, "/b/reloaded", "key", cfg, load)
    assert served.version == "m@333" and len(loaded) == n + 1 and not served.closed and "no copy" in why


def test_a_write_for_an_item_only_the_new_bundle_has_reaches_a_worker_still_loading_it(built, tmp_path):
    """A serves the reloaded bundle (with item X) and sets X's stock to 0 while B still serves the old one (it is
    loading the new one): B cannot apply the write yet but keeps it for the replay, so after B swaps X is out of
    stock there too."""
    cfg = ServeConfig(**CFG)
    st = load_served(built["bundle"], built["pub"], cfg).state
    attrs = {"category": st.category[0], "subcategory": st.subcategory[0], "seller_id": "s-x", "brand": "b",
             "title": "only in v2", "price": 9.5, "stock": 5}

    def v2():     # stands in for a new bundle whose catalog has X
        s = load_served(built["bundle"], built["pub"], cfg)
        s.state.apply_inventory("new_item", "X", 5, None, attrs)
        return s

    a, b = (Runtime(load_served(built["bundle"], built["pub"], cfg), cfg) for _ in range(2))
    a.attach_journal(Journal(tmp_path / JOURNAL_NAME), tmp_path, worker_name="a")
    b.attach_journal(Journal(tmp_path / JOURNAL_NAME), tmp_path, worker_name="b")
    a.publish_reload(v2(), str(built["bundle"]))
    b.sync()                                   # B sees the reload record and starts loading (here: below)
    assert b.reload_target is not None
    a.apply_inventory("stock", "X", 0, None, None)
    b.sync()
    assert "X" not in b.current.state.index and b.metrics.errors.get("journal") == 1
    assert b.adopt_followed(b.reload_target[0], v2())
    for w in (a, b):
        s = w.current.state
        assert s.stock[s.index["X"]] == 0, w.worker_name
