"""Open Bandit Pipeline (obp) on the same arrays as our OPE, in its own interpreter (used by `bench_ope`).

obp is not a dependency of recs and does not install into our venv: its latest release (0.5.7) requires
Python < 3.11 (we run 3.11), and 0.4.1, the newest that accepts 3.11, depends on torch, matplotlib and seaborn.
So it lives in a throwaway venv (`OBP_VENV`, default /tmp/obpvenv) that sees our venv's packages (torch, numpy,
scipy, pandas, scikit-learn, ...) through a .pth file and gets `pip install --no-deps obp==0.4.1` plus the two
packages ours lacks (matplotlib, seaborn). `OBP_PYTHON` points at another interpreter with obp instead.

obp wants dense (rounds, actions, positions) arrays. IPW, SNIPW and DR only read the target's probability and
q_hat of the logged action, and DR the target-weighted q_hat of the round's position, so each logged impression
becomes one round with two actions, "the logged item" (target probability pi, q_hat q) and "anything else"
(1 - pi, with q_hat chosen so that pi q + (1 - pi) q_rest = sum_a pi(a) q_hat(a) at that slot): the exact same
estimator arithmetic as on the full arrays, in (rounds, 2, 1) arrays that fit in memory at 10M rounds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._child import run_measured

OBP_VERSION = "0.4.1"
EXTRA_DEPS = ("matplotlib", "seaborn")

OBP_SCRIPT = r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
from obp.ope import DoublyRobust, InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting
a = np.load(sys.argv[1])
n_boot = int(sys.argv[2])
n = len(a["reward"])
zeros = np.zeros(n, dtype=int)
ad = np.stack([a["pi"], 1.0 - a["pi"]], axis=1)[:, :, None]
q = np.stack([a["q"], a["q_rest"]], axis=1)[:, :, None]
kw = dict(reward=a["reward"], action=zeros, position=zeros, pscore=a["pscore"], action_dist=ad)
out = {}
for name, est, extra in (("ips", InverseProbabilityWeighting(), {}),
                         ("snips", SelfNormalizedInverseProbabilityWeighting(), {}),
                         ("dr", DoublyRobust(), {"estimated_rewards_by_reg_model": q})):
    t = time.perf_counter()
    v = float(est.estimate_policy_value(**kw, **extra))
    res = {"value": v, "seconds": time.perf_counter() - t}
    if n_boot:
        t = time.perf_counter()
        ci = est.estimate_interval(**kw, **extra, n_bootstrap_samples=n_boot, random_state=0)
        res["interval_seconds"] = time.perf_counter() - t
        res["ci"] = [float(x) for k, x in ci.items() if "CI" in k]
    out[name] = res
print(json.dumps(out))
"""


def _works(py: str) -> tuple[bool, str]:
    if not Path(py).is_file():
        return False, f"no interpreter at {py}"
    r = subprocess.run([py, "-c", "import obp.ope, obp; print(obp.__version__)"], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        return False, (r.stderr.strip().splitlines() or ["import obp.ope failed"])[-1]
    return True, r.stdout.strip()


def obp_python() -> tuple[str | None, str]:
    """An interpreter that imports obp (setting up the side venv if needed), or None and the reason."""
    if os.environ.get("OBP_PYTHON"):
        py = os.environ["OBP_PYTHON"]
        ok, msg = _works(py)
        return (py, msg) if ok else (None, f"OBP_PYTHON={py}: {msg}")
    venv = Path(os.environ.get("OBP_VENV", "/tmp/obpvenv"))
    py = str(venv / "bin" / "python")
    ok, msg = _works(py)
    if ok:
        return py, msg
    steps = []
    if not Path(py).is_file():
        steps.append([sys.executable, "-m", "venv", str(venv)])
    steps += [[py, "-m", "pip", "install", "-q", "--no-deps", f"obp=={OBP_VERSION}"],
              [py, "-m", "pip", "install", "-q", *EXTRA_DEPS]]
    print(f"obp: setting up {venv} (obp {OBP_VERSION} --no-deps, {', '.join(EXTRA_DEPS)}; our venv's packages "
          "through a .pth file)", flush=True)
    for i, cmd in enumerate(steps):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            return None, f"`{' '.join(cmd[-3:])}` failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
        if cmd[1:3] == ["-m", "venv"]:
            site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       capture_output=True, text=True).stdout.strip())
            (site / "zz_mainvenv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    ok, msg = _works(py)
    return (py, msg) if ok else (None, f"obp installed into {venv} but does not import: {msg}")


def obp_arrays(inp, q) -> dict[str, np.ndarray]:
    """Per-impression arrays for obp's two-action form (see the module docstring)."""
    P = int(max(inp.position.max(), inp.t_position.max(initial=0))) + 1
    cell_dm = np.bincount(inp.t_req_idx * P + inp.t_position, weights=inp.t_prob * q.target,
                          minlength=inp.n_requests * P)
    dm = cell_dm[inp.req_idx * P + inp.position]
    pi, ql = inp.target_prob, q.logged.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_rest = np.where(pi < 1, (dm - pi * ql) / (1 - pi), 0.0)
    return {"reward": inp.reward, "pscore": inp.pscore, "pi": pi, "q": ql, "q_rest": q_rest}


def run_obp(py: str, npz: Path, n_boot: int) -> tuple[dict | None, str, dict]:
    """obp's IPW / SNIPW / DR (and, with n_boot, their bootstrap intervals) on the arrays in `npz`, in a subprocess.

    Returns (results or None, error, {"wall": s, "rss": peak MiB of that process})."""
    with tempfile.TemporaryDirectory(prefix="bench-ope-obp-") as tmp:
        out, err = Path(tmp) / "out.json", Path(tmp) / "err.txt"
        with open(out, "w") as fo, open(err, "w") as fe:
            m = run_measured([py, "-c", OBP_SCRIPT, str(npz), str(n_boot)], fo, fe)
        r = {"wall": m["wall"], "rss": m["peak_rss"] / 2**20}
        if m["returncode"] != 0:
            lines = err.read_text().strip().splitlines()
            return None, lines[-1] if lines else f"exit code {m['returncode']}", r
        return json.loads(out.read_text().strip().splitlines()[-1]), "", r
