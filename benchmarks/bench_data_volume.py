"""Does more data per user or per item lift the pipeline? (`recs.scenarios.data_volume`, simulator truth.)

Generates, trains (`recs train all` defaults) and evaluates one simulated world per line: 14.8 minutes on two
cores for the five default worlds with nothing else running (sixth session; 28.6 in the fifth, beside other jobs).
`RECS_DATA_VOLUME_WORLDS=demo,users_500` picks some of them. `make bench` without `BENCH` skips it:

    make bench BENCH=data_volume
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from recs.scenarios.data_volume import WORLDS, data_volume

RUN_BY_DEFAULT = False      # 15-30 minutes: `make bench` runs it only when named


def main() -> None:
    pick = os.environ.get("RECS_DATA_VOLUME_WORLDS")
    names = pick.split(",") if pick else list(WORLDS)
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        raise SystemExit(f"RECS_DATA_VOLUME_WORLDS: unknown world(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(WORLDS)}")
    worlds = {n: WORLDS[n] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        out = data_volume(Path(tmp), worlds, log=lambda m: print(f"  {m}", flush=True))
    print(f"{'world':<22} {'imp/user':>8} {'imp/item':>8} {'pipeline':>8} {'x logging':>9} {'% oracle':>8} "
          f"{'anon x':>6} {'logged-in x':>11} {'learnable x':>11}")
    for name, r in out.items():
        t, s, v = r["true_ctr"], r["true_ctr_segments"], r["volume"]
        print(f"{name:<22} {v['user_impressions']:>8.0f} {v['item_impressions']:>8.0f} {t['pipeline']:>8.3f} "
              f"{t['pipeline_vs_logging']:>9.2f} {100 * t['pipeline_vs_oracle']:>7.0f}% "
              f"{s['anonymous']['pipeline'] / s['anonymous']['logging']:>6.2f} "
              f"{s['logged_in']['pipeline'] / s['logged_in']['logging']:>11.2f} "
              f"{r['learnability_vs_logging']['learnt_from_clicks']:>11.2f}")
    print("imp/user, imp/item: median training impressions per registered user and per item shown; x: true CTR over "
          "the logging policy's on the same requests; learnable x: users' tastes fitted from clicks given the TRUE "
          "items, logged-in home requests (scenarios.learnability)")


if __name__ == "__main__":
    main()
