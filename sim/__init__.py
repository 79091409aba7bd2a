"""recs.sim: a seeded marketplace simulator with a known ground truth."""
from recs.sim.config import SimConfig
from recs.sim.run import PolicyValue, RequestRewards, log_policy, request_rewards, run_policy
from recs.sim.world import Context, SlateReward, World


def generate_dataset(cfg: SimConfig, out_dir, overwrite: bool = False, progress=None) -> dict:
    """Generate a simulated dataset under `out_dir` (atomically); returns its summary."""
    from recs.sim.generate import generate_dataset as _gen

    return _gen(cfg, out_dir, overwrite=overwrite, progress=progress)


__all__ = ["SimConfig", "World", "Context", "SlateReward", "PolicyValue", "RequestRewards", "request_rewards",
           "run_policy", "log_policy", "generate_dataset"]
