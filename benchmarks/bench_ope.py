"""Off-policy evaluation at scale: 10M logged impressions, IPS + SNIPS + DR with 200 request-bootstrap resamples.

Also runs Open Bandit Pipeline's IPW / SNIPW / DR on the same arrays when an interpreter with obp is available
(OBP_PYTHON, default /tmp/obpvenv/bin/python) and prints the time ratio. obp needs dense (n, n_actions, k)
action distributions, so that comparison runs at a size that fits in memory.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from recs.evaluators.ope import OPEConfig, RewardModelConfig, build_inputs, run_ope
from recs.evaluators.ope.evaluate import decompositions
from recs.evaluators.ope.synthetic import SyntheticBandit

N_IMPRESSIONS = int(os.environ.get("BENCH_OPE_N", 10_000_000))

OBP_SCRIPT = r"""
import json, sys, time, numpy as np
from obp.ope import InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting, DoublyRobust
a = np.load(sys.argv[1])
n, I, k = len(a["reward"]), int(a["n_actions"]), int(a["len_list"])
dist = np.repeat(a["pi"][a["group"]][:, :, None], k, axis=2)
q = np.zeros((n, I, k)); q[np.arange(n), :, a["position"]] = a["qhat"][a["group"]]
kw = dict(reward=a["reward"], action=a["action"], position=a["position"], pscore=a["pscore"], action_dist=dist)
out = {}
for name, est, extra in (("ips", InverseProbabilityWeighting(), {}), ("snips", SelfNormalizedInverseProbabilityWeighting(), {}),
                         ("dr", DoublyRobust(), {"estimated_rewards_by_reg_model": q})):
    t = time.perf_counter(); v = est.estimate_policy_value(**kw, **extra); out[name] = (float(v), time.perf_counter() - t)
print(json.dumps(out))
"""


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def big() -> None:
    sb = SyntheticBandit(n_items=200, k=10, n_groups=16, target_kind="sparse", support=2, seed=0)
    R = N_IMPRESSIONS // sb.k
    t0 = time.perf_counter()
    logs, target = sb.frames(R, 1)
    t_gen = time.perf_counter() - t0
    print(f"generated {logs.height:,} impressions, {target.height:,} target rows in {t_gen:.1f} s")
    t0 = time.perf_counter()
    inp = build_inputs(logs, target)
    t_in = time.perf_counter() - t0
    del logs, target
    cfg = OPEConfig(estimators=("ips", "snips", "dr"), n_bootstrap=200, reward_model=RewardModelConfig())
    t0 = time.perf_counter()
    rep = run_ope(inp, cfg)
    t_ope = time.perf_counter() - t0
    total = t_in + t_ope
    print(f"align logs + target (build_inputs): {t_in:.1f} s")
    print(f"IPS + SNIPS + DR (cross-fitted LightGBM) + 200 bootstrap resamples: {t_ope:.1f} s")
    print(f"total {total:.1f} s for {inp.n_impressions:,} impressions = {inp.n_impressions / total:,.0f} rows/s; "
          f"peak RSS {_rss_mb():,.0f} MB")
    print(f"truth {sb.true_value():.4f}: " + ", ".join(
        f"{n} {e.normal.value:.4f} [{e.boot.ci_low:.4f}, {e.boot.ci_high:.4f}]" for n, e in rep.estimates.items()))


def versus_obp(n_requests: int = 100_000) -> None:
    py = os.environ.get("OBP_PYTHON", "/tmp/obpvenv/bin/python")
    if not Path(py).is_file():
        print(f"obp comparison skipped: no interpreter at {py} (set OBP_PYTHON)")
        return
    sb = SyntheticBandit(n_items=50, k=5, n_groups=8, target_kind="softmax", seed=0)
    logs, target = sb.frames(n_requests, 2)
    inp = build_inputs(logs, target)
    a = sb.arrays(n_requests, 2)
    _, _, _, pi, _ = sb._world()
    cfg = OPEConfig(estimators=("ips", "snips", "dr"), reward_model=RewardModelConfig())
    decs, q = decompositions(inp, cfg)
    t0 = time.perf_counter()
    decs2, _ = decompositions(inp, cfg, q)  # estimators only, the reward model held fixed as for obp
    ours = {n: d.value() * inp.n_requests / inp.n_impressions for n, d in decs2.items()}
    t_ours = time.perf_counter() - t0
    # a reward-model grid for obp: the mean cross-fitted prediction per (group, item), at each row's position
    qhat = np.zeros((sb.n_groups, sb.n_items))
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "arrays.npz"
        np.savez(f, reward=a["clicked"].astype(float), action=a["item"], position=a["position"],
                 pscore=a["propensity"], group=a["group"], pi=pi[:, 0, :], qhat=qhat, n_actions=sb.n_items,
                 len_list=sb.k)
        res = subprocess.run([py, "-c", OBP_SCRIPT, str(f)], capture_output=True, text=True, timeout=1200)
    if res.returncode != 0:
        print("obp comparison failed:", res.stderr.strip().splitlines()[-1:])
        return
    obp = json.loads(res.stdout.strip().splitlines()[-1])
    t_obp = sum(t for _, t in obp.values())
    print(f"obp on {inp.n_impressions:,} rounds: " + ", ".join(f"{n} {v:.6f} ({t:.2f} s)" for n, (v, t) in obp.items()))
    print(f"ours (per impression):  ips {ours['ips']:.6f}, snips {ours['snips']:.6f} "
          f"(|diff| ips {abs(ours['ips'] - obp['ips'][0]):.2e}, snips {abs(ours['snips'] - obp['snips'][0]):.2e}); "
          f"IPS+SNIPS+DR given q_hat: {t_ours:.2f} s; obp/ours time ratio {t_obp / t_ours:.1f}x "
          "(obp DR here uses q_hat = 0, so its DR equals its IPW)")


def main() -> None:
    versus_obp()
    big()


if __name__ == "__main__":
    main()
