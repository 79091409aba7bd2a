"""How much of a registered user's taste the training logs reveal, with every item's true parameters given; and
the informed policy with those estimates in place of the true tastes, over every request (`learnable_bound`).

Uses the demo's dataset when present (`demo_out/dataset`, from `make demo`), else simulates the demo-scale
marketplace (`RECS_LEARNABILITY_DATASET` points elsewhere). See `recs.scenarios.learnability`.

    .venv/bin/python -m benchmarks.run learnability
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from recs.scenarios.learnability import user_learnability
from recs.scenarios.learnable_bound import learnable_bound


def main() -> None:
    ds = Path(os.environ.get("RECS_LEARNABILITY_DATASET", "demo_out/dataset"))
    tmp = None
    if not (ds / "truth").is_dir():
        from recs.sim import SimConfig, generate_dataset

        tmp = tempfile.TemporaryDirectory()
        ds = Path(tmp.name) / "ds"
        print("simulating the demo-scale marketplace ...", flush=True)
        generate_dataset(SimConfig.for_scale("small"), ds)
    out = user_learnability(ds)
    print(f"logged-in home requests: {out['n_requests']}; training impressions of registered users: "
          f"{out['n_impressions']:,} ({ds})")
    u = out["per_user"]
    print(f"{out['n_users']:,} users with impressions; per user: mean {u['mean_impressions']:.0f} impressions and "
          f"{u['mean_clicks']:.0f} clicks, median {u['median_impressions']:.0f} and {u['median_clicks']:.0f}")
    base = out["ctr"]["logging"]
    print(f"{'ranking by':<22} {'true CTR':>9} {'x logging':>10} {'% oracle':>9}")
    for name, v in out["ctr"].items():
        print(f"{name:<22} {v:>9.3f} {v / base:>10.2f} {100 * v / out['ctr']['oracle']:>8.0f}%")
    b = learnable_bound(ds)
    print(f"\nthe informed policy with registered users' tastes from the logs (true items; `recs evaluate`'s "
          f"{b['n_requests']:,} requests), true CTR:")
    segs = ("all", "anonymous", "logged_in", "home", "search")
    print(f"{'policy':<26}" + "".join(f"{s:>11}" for s in segs) + f"{'x logging':>11}{'% oracle':>10}")
    for name, v in b["ctr"].items():
        print(f"{name:<26}" + "".join(f"{v.get(s, float('nan')):>11.3f}" for s in segs)
              + f"{v['all'] / b['ctr']['logging']['all']:>11.2f}{100 * v['all'] / b['ctr']['oracle']['all']:>9.1f}%")
    print(f"best estimate: {b['best']} ({b['best_vs_logging']:.3f}x logging, {100 * b['best_vs_oracle']:.1f}% "
          "of the oracle; chosen on these requests, which favours the bound)")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
