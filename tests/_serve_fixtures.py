"""A tiny trained, signed bundle for the server tests (built once per test module)."""
from __future__ import annotations

from pathlib import Path


def build_tiny_bundle(root: Path) -> dict[str, Path]:
    """Dataset (800 items) -> fast model -> key pair -> signed folder bundle under `root`."""
    from recs.bundle import export_bundle, generate_keypair
    from recs.models.train import TrainConfig, train_all
    from recs.sim import SimConfig, generate_dataset

    ds, model = root / "ds", root / "model"
    generate_dataset(SimConfig(n_users=300, n_items=800, days=5, requests_per_day=1500, seed=3), ds)
    train_all(ds, model, TrainConfig(retrievers=("popularity", "covisit", "content", "suggest"),
                                     max_ranker_requests=800, holdout_days=1, ranker_days=2))
    keys = generate_keypair(root / "keys")
    export_bundle(model, root / "bundle", keys.private_key)
    return {"root": root, "model": model, "bundle": root / "bundle",
            "pub": root / "keys" / "signing_key.pub.pem", "priv": root / "keys" / "signing_key.pem"}
