"""Straightforward eager Frozen BN: the speed baseline of the fast path.

Plain differentiable tensor ops: BN's inference function with the layer's fixed statistics,
y = (x − running_mean) / sqrt(running_var + eps) · weight + bias.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def eager_frozen_batch_norm(module: Any, x: Tensor) -> Tensor:
    """``module``'s forward on (N, C, *S) ``x`` from arithmetic on its buffers."""
    view = (1, -1) + (1,) * (x.dim() - 2)
    mean = module.running_mean.view(view)
    std = torch.sqrt(module.running_var.view(view) + module.eps)
    y = (x - mean) / std
    if module.weight is not None:
        y = y * module.weight.view(view) + module.bias.view(view)
    return y
