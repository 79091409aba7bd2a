"""Off-policy evaluation: estimate a target policy's value from logs collected under another (logging) policy.

Public surface: `build_inputs` (align logs with target probabilities), the estimators (`IPS`, `ClippedIPS`,
`SNIPS`, `DM`, `DR`, `SNDR`, `SwitchDR`, `PseudoInverse`), `run_ope` with `OPEConfig`, and
`target_probs_from_policy` (any `Policy` -> target probabilities on logged requests). See docs/OPE.md.
"""
from recs.evaluators.ope.align import build_inputs
from recs.evaluators.ope.base import Decomposition
from recs.evaluators.ope.diagnostics import DiagnosticThresholds, diagnose
from recs.evaluators.ope.direct import DM, RewardModelConfig, RewardPredictions, fit_reward_model
from recs.evaluators.ope.doubly_robust import DR, SNDR, SwitchDR
from recs.evaluators.ope.evaluate import DEFAULT_ESTIMATORS, ESTIMATORS, OPEConfig, OPEReport, run_ope
from recs.evaluators.ope.inputs import OPEInputError, OPEInputs, open_frame, read_frame
from recs.evaluators.ope.ips import IPS, SNIPS, ClippedIPS
from recs.evaluators.ope.slate import PseudoInverse
from recs.evaluators.ope.target import (plackett_luce_marginals, requests_from_impressions,
                                      sampled_target_from_policy, target_probs_from_policy)

__all__ = [
    "Decomposition", "DiagnosticThresholds", "diagnose", "DM", "RewardModelConfig", "RewardPredictions",
    "fit_reward_model", "DR", "SNDR", "SwitchDR", "DEFAULT_ESTIMATORS", "ESTIMATORS", "OPEConfig", "OPEReport",
    "run_ope", "OPEInputError", "OPEInputs", "build_inputs", "open_frame", "read_frame", "IPS", "SNIPS",
    "ClippedIPS", "PseudoInverse", "plackett_luce_marginals", "requests_from_impressions",
    "sampled_target_from_policy", "target_probs_from_policy",
]
