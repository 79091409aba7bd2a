"""The one compatibility shim for RecBole 1.2.1 on numpy 2 / torch >= 2.6: import it before any `recbole` import.

What it changes, and only this:
- restores the numpy aliases RecBole's `Config.compatibility_settings` reads (`np.float_`, `np.complex_`,
  `np.unicode_`), which numpy 2 removed;
- inside `recbole.trainer.trainer` only, `torch.load` defaults to `weights_only=False`, because RecBole's own
  checkpoints pickle its `Config` object (torch >= 2.6 defaults to `weights_only=True` and refuses them);
- inside `recbole.trainer.trainer` only, the TensorBoard writer is a no-op, so training never writes
  `log_tensorboard/` into the current directory;
- RecBole's SINE module turns on torch's autograd anomaly detection for the whole process when
  `recbole.model.sequential_recommender` is imported; we import it here and turn it back off (left on, it made every
  later torch training in the process, e.g. the click model, about 10x slower).
The rest of the process keeps torch's safe `torch.load` default.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

_NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
for _name, _value in _NUMPY_ALIASES.items():
    if not hasattr(np, _name):
        setattr(np, _name, _value)

_anomaly = torch.is_anomaly_enabled()
import recbole.model.sequential_recommender  # noqa: E402,F401  (its SINE module enables anomaly detection)
import recbole.trainer.trainer as _recbole_trainer  # noqa: E402  (needs the aliases above)

torch.autograd.set_detect_anomaly(_anomaly)


class _TorchWithTrustedLoad:
    """`torch`, except that `load` unpickles RecBole's own checkpoints (weights_only=False unless told)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


class _NullSummaryWriter:
    """Accepts every TensorBoard call and writes nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


if not isinstance(_recbole_trainer.torch, _TorchWithTrustedLoad):
    _recbole_trainer.torch = _TorchWithTrustedLoad()
    _recbole_trainer.get_tensorboard = lambda logger: _NullSummaryWriter()

PATCHED = True
