"""`recs serve` under load: a 100K-item bundle, `recs loadtest` rate sweep, then 2x the best rate with live updates.

Per run: latency percentiles, errors, fallback share, the machine's load average before/after (the machine is
shared) and the server's CPU time per request (all its processes; far less sensitive to neighbours than latency).
Then twice the highest rate whose median p99 stayed under 120 ms, while stock-0 / restricted updates for items
the server is recommending are POSTed every 0.5 s: every served slate in the server's audit log (all workers) is
checked against the updates acknowledged before it started. The dataset, model and bundle are cached in
`RECS_BENCH_SERVE_DIR` (default /tmp/recs_bench_serve).

Run: `.venv/bin/python -m benchmarks.run serve`, or
`.venv/bin/python -m benchmarks.bench_serve [build | profile] [--workers N] [--rates 100,200] [--repeat R]
[--duration S] [--rank-skip-ms X] [--no-2x] [--clickmodel | --full]` (`profile`: in-process CPU time per stage of
the full path; `--clickmodel`: a second model and bundle that also hold the click-model retriever, same dataset;
`--full`: a third with every retriever of `recs train all`'s default set, the RecBole embedding one included), and
`... bench_serve ranker-variants --model M --dataset D [--variants trees=150,cap=100] [--requests dev|eval]
[--dev-seed 17]`: true CTR of cheaper ranker stages (`benchmarks/ranker_variants.py`). A cached model whose ranker
settings are no longer the code's is retrained.

Retrievers of the benchmark bundle: popularity, covisit, content, suggest (`RETRIEVERS`). The default
`recs train all` set also holds `clickmodel` (measured with `--clickmodel`) and `embedding` (RecBole BPR and a
faiss HNSW index; both measured with `--full`, whose first build trains BPR on the 100K-item dataset; see
docs/SERVING.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(os.environ.get("RECS_BENCH_SERVE_DIR", "/tmp/recs_bench_serve"))
RECS = str(Path(sys.executable).with_name("recs"))
P99_BUDGET_MS = 120.0
SWEEP = (100, 200, 300, 400, 600, 800)
RETRIEVERS = ("popularity", "covisit", "content", "suggest")


def _variant(clickmodel: bool, full: bool) -> tuple[str, tuple[str, ...]]:
    """(file suffix, retrievers) of a benchmark bundle."""
    from recs.models.train import TrainConfig

    if clickmodel and full:
        raise ValueError("--clickmodel and --full are two different bundles; give one")
    if full:
        return "_full", tuple(TrainConfig().retrievers)
    return ("_cm", RETRIEVERS + ("clickmodel",)) if clickmodel else ("", RETRIEVERS)


def _stale_settings(model: Path) -> list[str]:
    """Ranker settings of a cached benchmark model that differ from the code's defaults (empty: up to date)."""
    from dataclasses import asdict

    from recs.models.ranker import RankerConfig

    meta = model / "model.json"
    try:
        saved = json.loads(meta.read_text()).get("ranker", {}).get("config", {})
    except json.JSONDecodeError as e:
        raise SystemExit(f"{meta}: not valid JSON ({e}); delete {model} to retrain it") from None
    now = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(RankerConfig()).items()}
    return sorted(k for k in now if k != "base_feature" and saved.get(k) != now[k])   # base: set by the retrievers


def build(log=print, clickmodel: bool = False, full: bool = False) -> tuple[Path, Path]:
    """Dataset (100K items), a model (four retrievers; `clickmodel`: and the click model; `full`: every default
    retriever, embedding included), keys and a signed folder bundle; cached on disk, retrained when the cached
    model's ranker settings are no longer the code's."""
    from recs.bundle import export_bundle, generate_keypair
    from recs.models.train import TrainConfig, train_all
    from recs.sim import SimConfig, generate_dataset

    suffix, retrievers = _variant(clickmodel, full)
    ds, model, keys, bundle = ROOT / "data", ROOT / f"model{suffix}", ROOT / "keys", ROOT / f"bundle{suffix}"
    ROOT.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not (ds / "catalog.parquet").is_file():
        generate_dataset(SimConfig(n_users=20_000, n_items=100_000, days=4, requests_per_day=20_000, seed=7), ds,
                         overwrite=True)
        log(f"dataset: {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    stale = _stale_settings(model) if (model / "model.json").is_file() else []
    if stale:
        log(f"{model}: ranker settings {stale} differ from the code's; retraining")
        shutil.rmtree(bundle, ignore_errors=True)
    if stale or not (model / "model.json").is_file():
        train_all(ds, model, TrainConfig(retrievers=retrievers,
                                         max_ranker_requests=3000, holdout_days=0, ranker_days=1),
                  overwrite=True, log=log)
        log(f"training: {time.perf_counter() - t:.0f} s")
    if not (keys / "signing_key.pub.pem").is_file():
        generate_keypair(keys)
    if not (bundle / "manifest.sig").is_file():
        export_bundle(model, bundle, keys / "signing_key.pem", overwrite=True)
    users = ROOT / "users.txt"
    if not users.is_file():
        import polars as pl

        users.write_text("\n".join(pl.read_parquet(ds / "users.parquet")["user_id"].to_list()) + "\n")
    return bundle, keys / "signing_key.pub.pem"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, workers: int, timeout_s: float = 600.0) -> None:
    """Until /readyz answers and (several workers) every worker process is up."""
    end = time.time() + timeout_s
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"recs serve exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                up = len(psutil.Process(proc.pid).children()) >= workers if workers > 1 else True
                if r.status == 200 and up:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("recs serve did not become ready")


def _server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of the server process and all its children so far."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def _loadtest(url: str, rate: float, duration: float, out: Path, server_pid: int) -> dict:
    cmd = [RECS, "loadtest", "--url", url, "--rate", str(rate), "--duration", str(duration), "--warmup", "2",
           "--users-file", str(ROOT / "users.txt"),
           "--timeout", "5", "--server-cores", "1", "--save", str(out), "--json"]
    load0, cpu0 = os.getloadavg()[0], _server_cpu_s(server_pid)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    cpu1, load1 = _server_cpu_s(server_pid), os.getloadavg()[0]
    r = json.loads(out.read_text())
    sent = r["requests"] + int(round(rate * 2))          # measured requests + the 2 s warm-up
    r.update(load_before=load0, load_after=load1, server_cpu_ms_per_request=(cpu1 - cpu0) * 1000 / max(sent, 1))
    return r


def _post(url: str, body: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5):
        pass


def _row(r: dict) -> str:
    return (f"{r['target_rps']:>6.0f} rps  achieved {r['achieved_rps']:7.1f}  p50 {r['p50_ms']:7.2f}  "
            f"p90 {r['p90_ms']:7.2f}  p99 {r['p99_ms']:8.2f}  p99.9 {r['p999_ms']:8.2f} ms  "
            f"errors {r['errors']:>4}  fallback {r['fallback_share']:.3f}  "
            f"cpu/req {r['server_cpu_ms_per_request']:.2f} ms  client_limited {r.get('client_limited')}  "
            f"load {r['load_before']:.1f}->{r['load_after']:.1f}")


def run(workers: int = 1, rates: tuple[int, ...] = SWEEP, repeat: int = 1, duration: float = 10.0,
        rank_skip_ms: float | None = None, twice: bool = True, clickmodel: bool = False, full: bool = False) -> None:
    """Start `recs serve`, sweep, then the 2x run with live updates and the audit check."""
    bundle, pub = build(clickmodel=clickmodel, full=full)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    tag = f"w{workers}" + _variant(clickmodel, full)[0]
    audit = ROOT / f"served_audit_{tag}.jsonl"
    for old in ROOT.glob(audit.name + "*"):
        old.unlink()
    env = dict(os.environ, RECS_ADMIN_TOKEN="bench")
    cmd = [RECS, "serve", "--bundle", str(bundle), "--public-key", str(pub), "--port", str(port),
           "--workers", str(workers), "--audit-log", str(audit)]
    if rank_skip_ms is not None:
        cmd += ["--rank-skip-ms", str(rank_skip_ms)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    sent: list[tuple[float, str, str]] | None = None
    try:
        _wait_ready(url, proc, workers)
        print(f"server ready after {time.perf_counter() - t:.1f} s ({workers} worker(s), verify + load of the "
              f"100K-item bundle); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        print("command: " + " ".join(cmd))
        runs: dict[int, list[dict]] = {}
        for j in range(repeat):
            for rate in rates:
                r = _loadtest(url, rate, duration, ROOT / f"lt_{tag}_{rate}_{j}.json", proc.pid)
                runs.setdefault(rate, []).append(r)
                print(_row(r), flush=True)
        med = {rate: statistics.median(r["p99_ms"] for r in rs) for rate, rs in runs.items()}
        ok = [rate for rate, rs in runs.items() if med[rate] < P99_BUDGET_MS and all(r["errors"] == 0 for r in rs)]
        for rate in rates:
            print(f"  {rate} rps: median p99 {med[rate]:.2f} ms over {len(runs[rate])} run(s), median fallback "
                  f"{statistics.median(r['fallback_share'] for r in runs[rate]):.3f}, median cpu/req "
                  f"{statistics.median(r['server_cpu_ms_per_request'] for r in runs[rate]):.2f} ms")
        best = max(ok) if ok else min(rates)
        print(f"highest swept rate with median p99 < {P99_BUDGET_MS:.0f} ms and no errors: "
              f"{best if ok else 'none'} rps")
        if twice:
            sent = _twice(url, 2 * best, duration, tag, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if sent is not None:   # after shutdown: every worker has flushed and closed its audit file
        print(_audit_check(audit, sent))


def _twice(url: str, rate: float, duration: float, tag: str, server_pid: int) -> list[tuple[float, str, str]]:
    """2x the best rate while stock-0 / restricted updates arrive; returns (ack time, kind, item) per update."""
    stop = threading.Event()
    sent: list[tuple[float, str, str]] = []
    ids = _popular_ids(url)

    def updates() -> None:
        j = 0
        while not stop.is_set() and j < len(ids):
            kind = "stock" if j % 2 == 0 else "restricted"
            body = {"item_id": ids[j], "kind": kind, "value": 0 if kind == "stock" else 1}
            try:
                _post(url + "/v1/inventory", body)
                sent.append((time.time(), kind, ids[j]))
            except OSError:
                pass
            j += 1
            stop.wait(0.5)

    th = threading.Thread(target=updates, daemon=True)
    th.start()
    r2 = _loadtest(url, rate, duration, ROOT / f"lt_{tag}_2x.json", server_pid)
    stop.set()
    th.join()
    print("2x: " + _row(r2))
    print(f"inventory updates acknowledged during the 2x run: {len(sent)}")
    return sent


def _popular_ids(url: str) -> list[str]:
    """Items the server is currently recommending (the ones worth filtering out during the run)."""
    out: list[str] = []
    for q in ("/v1/recommendations?session_id=bench&k=50", "/v1/suggestions?q=s&session_id=bench&k=50"):
        with urllib.request.urlopen(url + q, timeout=5) as r:
            out += [i["item_id"] for i in json.loads(r.read())["items"]]
    return list(dict.fromkeys(out))


def _audit_check(audit: Path, sent: list[tuple[float, str, str]]) -> str:
    """Every served item (every worker's audit file) vs the filter updates acknowledged before it was computed."""
    files = sorted(audit.parent.glob(audit.name + "*"))
    if not files:
        return "no audit log written: filtered-item check NOT done"
    filtered_at = {iid: ts for ts, _, iid in sent}
    n = bad = 0
    for f in files:
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:       # the last line of a file still being written
                continue
            n += 1
            for iid in rec["items"]:
                t = filtered_at.get(iid)
                if t is not None and rec["t"] > t:
                    bad += 1
    return (f"served responses audited ({len(files)} audit file(s)): {n:,}; "
            f"items served after being filtered: {bad}")


def profile(n: int = 300, clickmodel: bool = False, full: bool = False) -> None:
    """In-process CPU time per stage of the full path (known users, 60 % home / 40 % search), and two pauses."""
    import gc
    import random

    import numpy as np

    from benchmarks.serve_slot_profile import slot_profile
    from recs.features.compute import compute_features
    from recs.features.online import online_inputs
    from recs.models.base import RetrievalQuery
    from recs.models.rerank import rerank
    from recs.serving.runtime import Runtime
    from recs.serving.served import HOME, SEARCH, ServeConfig, limit_native_threads, load_served

    limit_native_threads()     # as the server does (one BLAS / OpenMP thread)
    bundle, pub = build(clickmodel=clickmodel, full=full)
    cfg = ServeConfig(deadline_ms=1e9, shed_queue_ms=1e9, rank_skip_ms=0)
    served = load_served(bundle, pub, cfg)
    rt, p = Runtime(served, cfg), served.pipeline
    t = time.perf_counter()
    gc.collect()
    print(f"full gc collection after loading: {(time.perf_counter() - t) * 1000:.1f} ms "
          f"({len(gc.get_objects()):,} tracked objects)")
    known = [u for u in (ROOT / "users.txt").read_text().split() if u in p.histories]
    rng = random.Random(1)
    words = ["sh", "a", "ko", "dre", "phone", "s", "bl", "ca", "t", "m"]
    reqs = [rt.build_request(served, HOME if i % 5 < 3 else SEARCH, rng.choice(known), f"s{i}",
                             None if i % 5 < 3 else rng.choice(words), f"r{i}") for i in range(n)]
    cands = [p.candidates(r) for r in reqs]
    xs = [compute_features(online_inputs(r, ids, p.state, f), p.snapshot, p.attrs) for r, (ids, f) in zip(reqs, cands)]

    def cpu_ms(fn) -> float:
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        return (time.process_time() - t0) / n * 1000

    print(f"{len(known):,} of the load test's users have history; {n} full-path requests, "
          f"{np.mean([len(x) for x in xs]):.0f} candidates each on average; CPU ms per request:")
    print(f"  full path (Runtime._full_path)  {cpu_ms(lambda i: rt._full_path(served, reqs[i], 10)):.2f}")
    print(f"  candidates (all retrieval)      {cpu_ms(lambda i: p.candidates(reqs[i])):.2f}")
    for name, r in p.retrievers.items():
        def one(i: int, r=r, name=name) -> None:
            quota = p.blend.quota(name, reqs[i].surface)
            if quota > 0:
                r.retrieve(RetrievalQuery(reqs[i], p.history(reqs[i].user_id), p.state), quota)
        print(f"    retriever {name:<20}  {cpu_ms(one):.2f}")
    def features(i: int) -> None:   # as `Pipeline.score` does: the per-row vocabulary codes cached on the pipeline
        compute_features(online_inputs(reqs[i], cands[i][0], p.state, cands[i][1], None, p.codes), p.snapshot,
                         p.attrs)

    print(f"  features (compute_features)     {cpu_ms(features):.2f}")
    trees = p.ranker.booster.num_trees()
    print(f"  ranker predict ({trees} trees)     {cpu_ms(lambda i: p.ranker.predict(xs[i])):.2f}")
    scores = [p.ranker.predict(x) for x in xs]
    print(f"  re-rank + filters               "
          f"{cpu_ms(lambda i: rerank(cands[i][0], scores[i], p.state, reqs[i].ts, 10, p.rerank_cfg)):.2f}")
    print(slot_profile(p, cands, scores, cpu_ms))
    st = p.state
    st.is_eligible([st.item_ids[0]])
    st.apply_inventory("stock", st.item_ids[1], int(st.stock[1]))
    t = time.perf_counter()
    st.is_eligible([st.item_ids[0]])
    print(f"first eligibility check after an inventory update: {(time.perf_counter() - t) * 1000:.1f} ms "
          f"({len(st.blocked_from_us)} blocked sellers)")


def main() -> None:
    """The default benchmark: one worker, the full sweep, the 2x run."""
    run()


def _cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_serve")
    ap.add_argument("what", nargs="?", choices=["build", "run", "profile", "ranker-variants"], default="run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rates", default=",".join(map(str, SWEEP)))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rank-skip-ms", type=float, default=None)
    ap.add_argument("--no-2x", action="store_true")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--clickmodel", action="store_true", help="the bundle that also holds the click model")
    which.add_argument("--full", action="store_true", help="the bundle with every default retriever (embedding too)")
    ap.add_argument("--model", type=Path, help="ranker-variants: a model folder (e.g. demo_out/model)")
    ap.add_argument("--dataset", type=Path, help="ranker-variants: its simulated dataset")
    ap.add_argument("--variants", default="trees=150,trees=100,cap=100,cap=60")
    ap.add_argument("--requests", choices=["dev", "eval"], default="dev",
                    help="ranker-variants: development requests (choose on these) or recs evaluate's (report only)")
    ap.add_argument("--dev-seed", type=int, default=17, help="ranker-variants: seed of the development requests")
    a = ap.parse_args(argv)
    if a.what == "ranker-variants":
        from benchmarks.ranker_variants import ranker_variants

        ranker_variants(a.model, a.dataset, a.variants.split(","), requests=a.requests, dev_seed=a.dev_seed)
        return
    if a.what == "build":
        build(clickmodel=a.clickmodel, full=a.full)
        return
    if a.what == "profile":
        profile(clickmodel=a.clickmodel, full=a.full)
        return
    run(a.workers, tuple(int(x) for x in a.rates.split(",")), a.repeat, a.duration, a.rank_skip_ms, not a.no_2x,
        a.clickmodel, a.full)


if __name__ == "__main__":
    _cli(sys.argv[1:])
