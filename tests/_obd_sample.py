"""The Open Bandit Dataset sample (10,000 rows a policy), shipped inside the `obp` wheel, fetched once into a cache.

`obp` does not install here (its pins conflict), but its wheel is a zip holding
`obp/dataset/obd/<policy>/<campaign>/<campaign>.csv`. `pip download obp==0.4.1 --no-deps --only-binary=:all:`
fetches it from the package index (the one network access CI allows) and the CSVs are unpacked to
`$RECS_OBD_CACHE` (default `~/.cache/recs/obd-0.4.1/`), never into the repository. Also usable as a script
(`python tests/_obd_sample.py`, run by `make obd-sample`): prints the path of the random/all sample or the reason
it is missing, and exits 1 on failure.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

OBP_VERSION = "0.4.1"  # the newest obp release published as a wheel (later ones are source-only)
MEMBER = "obp/dataset/obd/"
POLICIES = ("random", "bts")
CAMPAIGN = "all"


def cache_dir() -> Path:
    """Where the unpacked sample lives (`RECS_OBD_CACHE`, else the user's cache folder)."""
    if os.environ.get("RECS_OBD_CACHE"):
        return Path(os.environ["RECS_OBD_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "recs" / f"obd-{OBP_VERSION}"


def _installed_obp() -> Path | None:
    spec = importlib.util.find_spec("obp")
    if spec and spec.origin:
        root = Path(spec.origin).parent / "dataset" / "obd"
        if (root / "random" / CAMPAIGN / f"{CAMPAIGN}.csv").is_file():
            return root
    return None


def _download(dest: Path) -> None:
    """pip-download the obp wheel and unpack the OBD CSVs under `dest` (atomically: temp folder, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"obp=={OBP_VERSION}", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--timeout", "20", "--retries", "1", "-q", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("obp-*.whl"))
        if done.returncode != 0 or not wheels:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"pip download obp=={OBP_VERSION} failed: {lines[-1] if lines else done.returncode}")
        out = Path(tmp) / "obd"
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                parts = name[len(MEMBER):].split("/")
                if name.startswith(MEMBER) and name.endswith(".csv") and parts[0] in POLICIES:
                    target = out.joinpath(*parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
        if not (out / "random" / CAMPAIGN / f"{CAMPAIGN}.csv").is_file():
            raise RuntimeError(f"obp {OBP_VERSION} wheel holds no {MEMBER}random/{CAMPAIGN}/{CAMPAIGN}.csv")
        shutil.rmtree(dest, ignore_errors=True)
        out.rename(dest)


@functools.lru_cache(maxsize=None)  # one attempt per process, whatever its outcome
def obd_root() -> tuple[Path | None, str]:
    """(`.../obd` folder holding `<policy>/all/all.csv`, "") or (None, why it is unavailable)."""
    root = _installed_obp()
    if root is not None:
        return root, ""
    dest = cache_dir() / "obd"
    if not (dest / "random" / CAMPAIGN / f"{CAMPAIGN}.csv").is_file():
        try:
            _download(dest)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            return None, f"OBD sample unavailable: {e}"
    return dest, ""


def obd_csv(policy: str = "random") -> tuple[Path | None, str]:
    """(path of the `<policy>/all/all.csv` sample, "") or (None, the reason it is unavailable).

    `RECS_OBD_CSV` names the random-policy sample by hand (no download).
    """
    if os.environ.get("RECS_OBD_CSV") and policy == "random":
        p = Path(os.environ["RECS_OBD_CSV"])
        return (p, "") if p.is_file() else (None, f"RECS_OBD_CSV={p} does not exist")
    root, why = obd_root()
    if root is None:
        return None, why
    p = root / policy / CAMPAIGN / f"{CAMPAIGN}.csv"
    return (p, "") if p.is_file() else (None, f"{p} is missing")


if __name__ == "__main__":
    path, reason = obd_csv()
    print(path if path else reason)
    sys.exit(0 if path else 1)
