"""Where the pipeline loses true clicks: pipeline vs retrieval, feature and information ceilings (simulator truth).

Uses the demo's dataset and model when present (`demo_out/`, from `make demo`), else simulates the demo-scale
marketplace and trains on it (about 2 minutes). `RECS_CEILING_MODEL` / `RECS_CEILING_DATASET` point elsewhere.

    .venv/bin/python -m benchmarks.run ceilings
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from recs.scenarios.ceilings import ceilings


def main() -> None:
    ds = Path(os.environ.get("RECS_CEILING_DATASET", "demo_out/dataset"))
    model = Path(os.environ.get("RECS_CEILING_MODEL", "demo_out/model"))
    tmp = None
    if not (ds / "truth").is_dir() or not (model / "model.json").is_file():
        from recs.models.train import train_all
        from recs.sim import SimConfig, generate_dataset

        tmp = tempfile.TemporaryDirectory()
        ds, model = Path(tmp.name) / "ds", Path(tmp.name) / "model"
        print("simulating the demo-scale marketplace and training on it ...", flush=True)
        generate_dataset(SimConfig.for_scale("small"), ds)
        train_all(ds, model)
    out = ceilings(model, ds, log=lambda m: print(f"  {m}", flush=True))
    print(f"true CTR on {out['n_requests']} fresh requests ({ds}, {model})")
    print(f"{'policy':<26} {'all':>7} {'anon':>7} {'logged':>7} {'x logging':>10}")
    for name, v in out["ctr"].items():
        print(f"{name:<26} {v['all']:>7.3f} {v.get('anonymous', float('nan')):>7.3f} "
              f"{v.get('logged_in', float('nan')):>7.3f} {out['vs_logging'][name]:>10.2f}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
