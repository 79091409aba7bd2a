"""Off-policy evaluation at scale: `recs replay --counterfactual` on 10M logged impressions, IPS + SNIPS + DR with
200 bootstrap resamples, and Open Bandit Pipeline's IPW / SNIPW / DR on the same arrays.

1. Logs and target probabilities of a known bandit (`SyntheticBandit`: 1M requests x 10 slots, 200 items, a
   sparse stochastic target, so 20M target rows) are written to Parquet chunk by chunk in a temporary folder.
2. `recs replay --counterfactual --logs L --target-probs T --estimators ips,snips,dr --bootstrap 200 --json` runs
   as a subprocess; printed: its wall time (interpreter start and imports included), impressions/s, CPU (user,
   sys) and peak RSS of that process alone (`os.wait4`), the per-stage times from its JSON, and the estimates
   against the generator's true value. The 1-minute load average is printed too: other jobs share the 2 cores.
3. obp (see `ope_obp.py`): the same aligned arrays and q_hat; obp's estimate_policy_value and estimate_interval
   (BENCH_OPE_OBP_BOOT resamples, default 20, as obp needs ~1.1 s per resample at 10M rounds) against our
   estimator step and 200-resample bootstrap on the same arrays. If obp cannot be set up, the reason is printed.

Every heavy step runs in its own subprocess (generate, replay, prepare the arrays for obp, obp), started from this
small parent: on Linux a child's peak RSS includes its parent's high-water mark at spawn, so only a small parent
gives each step's own figure.

    .venv/bin/python -m benchmarks.run ope
    BENCH_OPE_N=2000000 BENCH_OPE_OBP_BOOT=0 .venv/bin/python -m benchmarks.bench_ope   # smaller, no obp intervals
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._child import run_measured
from recs.evaluators.ope import OPEConfig, RewardModelConfig, build_inputs, fit_reward_model, open_frame
from recs.evaluators.ope.evaluate import decompositions
from recs.evaluators.ope.intervals import bootstrap
from recs.evaluators.ope.synthetic import SyntheticBandit

N_IMPRESSIONS = int(os.environ.get("BENCH_OPE_N", 10_000_000))
OBP_BOOT = int(os.environ.get("BENCH_OPE_OBP_BOOT", 20))  # obp needs ~1.1 s per resample at 10M
N_BOOT = 200
ESTIMATORS = ("ips", "snips", "dr")
BANDIT = SyntheticBandit(n_items=200, k=10, n_groups=16, target_kind="sparse", support=2, seed=0)
MIB = 1024 ** 2
_CHILD_FLAG = "--child"


def _spawn(cmd: list[str], out: Path, err: Path) -> dict:
    """Run `cmd` (stdout to `out`, stderr to `err`); its wall time and own rusage."""
    with open(out, "w") as fo, open(err, "w") as fe:
        m = run_measured(cmd, fo, fe)
    if m["returncode"] != 0:
        raise RuntimeError(f"bench_ope: {' '.join(cmd[:4])} ... failed ({m['returncode']}): "
                           f"{err.read_text().strip()[-800:]}")
    return {"wall": m["wall"], "user": m["user"], "sys": m["sys"], "rss": m["peak_rss"] / 2**20,
            "load_before": m["load_before"], "load_after": m["load_after"]}


def _child(cmd: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.bench_ope", _CHILD_FLAG, cmd, *args]


def _replay(logs: Path, target: Path, tmp: Path) -> dict:
    """Run the CLI in a subprocess; its JSON plus wall time and the process's own rusage."""
    recs = Path(sys.executable).with_name("recs")
    cmd = [str(recs), "replay", "--counterfactual", "--logs", str(logs), "--target-probs", str(target),
           "--estimators", ",".join(ESTIMATORS), "--bootstrap", str(N_BOOT), "--json"]
    r = _spawn(cmd, tmp / "replay.json", tmp / "replay.err")
    return {**r, "json": json.loads((tmp / "replay.json").read_text())}


def _report_replay(r: dict, truth: float) -> None:
    d = r["json"]
    n = d["n_impressions"]
    print(f"recs replay --counterfactual --estimators {','.join(ESTIMATORS)} --bootstrap {N_BOOT} (subprocess):")
    print(f"  wall {r['wall']:.1f} s incl. interpreter start = {n / r['wall']:,.0f} impressions/s; CPU user "
          f"{r['user']:.1f} s + sys {r['sys']:.1f} s; peak RSS {r['rss']:,.0f} MiB")
    print("  stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in d["timings_s"].items()))
    print(f"  load avg (1 min) {r['load_before']:.2f} before, {r['load_after']:.2f} after, on {os.cpu_count()} CPUs")
    for name, e in d["estimates"].items():
        b = e["bootstrap"]
        cov = "covers" if b["ci_low"] <= truth <= b["ci_high"] else "MISSES"
        print(f"  {name:6s} {e['value']:.4f}  normal [{e['ci_low']:.4f}, {e['ci_high']:.4f}]  bootstrap "
              f"[{b['ci_low']:.4f}, {b['ci_high']:.4f}] ({cov} the true {truth:.4f}); lift {e['lift']['value']:.3f}")
    for w in d["warnings"]:
        print(f"  warning: {w}")


def _prepare(logs: str, target: str, npz: str, result: str) -> None:
    """Child: align the files, fit q_hat as the CLI does, time our estimator step and bootstrap on the aligned
    arrays, and save obp's arrays."""
    import numpy as np

    from benchmarks.ope_obp import obp_arrays

    inp = build_inputs(open_frame(logs), open_frame(target))
    q = fit_reward_model(inp, RewardModelConfig())  # the CLI's defaults: the same q_hat as its run
    t0 = time.perf_counter()
    decs, _ = decompositions(inp, OPEConfig(estimators=ESTIMATORS), q)
    t_est = time.perf_counter() - t0
    t0 = time.perf_counter()
    bootstrap(decs, N_BOOT, seed=0)
    t_boot = time.perf_counter() - t0
    np.savez(npz, **obp_arrays(inp, q))
    Path(result).write_text(json.dumps({"estimators_s": t_est, "bootstrap_s": t_boot,
                                        "per_impression": inp.n_requests / inp.n_impressions}))


def _versus_obp(logs: Path, target: Path, ours: dict, tmp: Path) -> None:
    from benchmarks.ope_obp import obp_python, run_obp

    py, msg = obp_python()
    if py is None:
        print(f"obp comparison skipped: {msg}")
        return
    npz, result = tmp / "obp_arrays.npz", tmp / "prepare.json"
    _spawn(_child("prepare", str(logs), str(target), str(npz), str(result)), tmp / "prep.out", tmp / "prep.err")
    mine = json.loads(result.read_text())
    t_est, t_boot, per_imp = mine["estimators_s"], mine["bootstrap_s"], mine["per_impression"]
    res, err, r = run_obp(py, npz, OBP_BOOT)
    if res is None:
        print(f"obp comparison failed: {err}")
        return
    print(f"obp {msg} ({py}) on the same {ours['n_impressions']:,} aligned rounds, q_hat from our cross-fitted "
          f"model (subprocess wall {r['wall']:.1f} s, peak RSS {r['rss']:,.0f} MiB):")
    for name in ESTIMATORS:
        m, theirs = ours["estimates"][name]["value"] * per_imp, res[name]["value"]
        print(f"  {name:6s} per impression: obp {theirs:.10f}, ours {m:.10f} "
              f"(relative difference {abs(theirs - m) / abs(m):.1e})")
    t_obp = sum(x["seconds"] for x in res.values())
    print(f"  point estimates given the arrays: obp {t_obp:.2f} s, ours {t_est:.2f} s (obp/ours {t_obp / t_est:.1f}x)")
    if OBP_BOOT:
        t_obp_b = sum(x["interval_seconds"] for x in res.values())
        print(f"  {OBP_BOOT} bootstrap resamples for the three: obp {t_obp_b:.1f} s (resamples impressions, one "
              f"estimator at a time), ours {t_boot:.2f} s for {N_BOOT} (Poisson weights by request, all three plus "
              f"the logging value at once) (obp/ours {t_obp_b / t_boot * N_BOOT / OBP_BOOT:.0f}x per resample)")
        print("  obp intervals per impression: " + ", ".join(f"{k} [{x['ci'][0]:.4f}, {x['ci'][1]:.4f}]"
                                                          for k, x in res.items()))


def main() -> None:
    R = N_IMPRESSIONS // BANDIT.k
    with tempfile.TemporaryDirectory(prefix="bench-ope-") as d:
        tmp = Path(d)
        logs, target = tmp / "logs.parquet", tmp / "target.parquet"
        g = _spawn(_child("generate", str(logs), str(target), str(R)), tmp / "gen.json", tmp / "gen.err")
        n_imp, n_tgt = json.loads((tmp / "gen.json").read_text())
        print(f"generated {n_imp:,} impressions ({R:,} requests x {BANDIT.k} slots, {BANDIT.n_items} items) and "
              f"{n_tgt:,} target rows in {g['wall']:.1f} s; Parquet "
              f"{logs.stat().st_size / MIB:.0f} + {target.stat().st_size / MIB:.0f} MiB", flush=True)
        r = _replay(logs, target, tmp)
        _report_replay(r, BANDIT.true_value())
        sys.stdout.flush()
        _versus_obp(logs, target, r["json"], tmp)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == _CHILD_FLAG:
        if sys.argv[2] == "generate":
            print(json.dumps(BANDIT.write_parquet(sys.argv[3], sys.argv[4], int(sys.argv[5]), seed=1)))
        else:
            _prepare(*sys.argv[3:7])
    else:
        main()
