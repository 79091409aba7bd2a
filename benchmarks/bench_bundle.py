"""Signed bundle throughput: export (folder, .tar.gz), verify (folder, archive) and load_verified, in MB/s."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from recs.bundle import check_bundle, export_bundle, generate_keypair, load_verified

SIZES_MB = {"retrieval/items.faiss": 96, "ranker/lgbm.txt": 24, "fallback/popular.parquet": 6, "model.json": 0}


def _model(root: Path) -> tuple[Path, int]:
    m = root / "model"
    total = 0
    for rel, mb in SIZES_MB.items():
        p = m / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = b'{"dataset_fingerprint": "bench"}' if mb == 0 else os.urandom(mb * 1024 * 1024)
        p.write_bytes(data)
        total += len(data)
    return m, total


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    try:
        keys = generate_keypair(root / "keys")
        model, total = _model(root)
        mb = total / 1024**2
        print(f"model folder: {len(SIZES_MB)} files, {mb:.0f} MiB (random bytes: incompressible, worst case for gzip)")

        def timed(label: str, fn) -> None:
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            print(f"{label:<40} {dt:7.2f} s  {mb / dt:8.1f} MiB/s", flush=True)

        timed("export-bundle (folder)", lambda: export_bundle(model, root / "b", keys.private_key))
        timed("export-bundle --tar", lambda: export_bundle(model, root / "b.tar.gz", keys.private_key, tar=True))
        timed("verify-bundle (folder)", lambda: check_bundle(root / "b", keys.public_key))
        timed("verify-bundle (.tar.gz)", lambda: check_bundle(root / "b.tar.gz", keys.public_key))
        timed("load_verified (.tar.gz: verify+extract)",
              lambda: load_verified(root / "b.tar.gz", keys.public_key).close())
        print(f"archive size: {(root / 'b.tar.gz').stat().st_size / 1024**2:.1f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
