"""Straightforward eager Batch Renorm (Ioffe 2017, Alg. 1): the speed baseline of the fast path.

Plain differentiable tensor ops, training-mode forward only (the moving averages are not
updated). r and d are detached, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def eager_batch_renorm(module: Any, x: Tensor) -> Tensor:
    """``module``'s training forward on (N, C, *S) ``x`` from ``mean`` / ``var`` / arithmetic."""
    dims = [0, *range(2, x.dim())]
    view = (1, -1) + (1,) * (x.dim() - 2)
    rmax, dmax = module.clip_limits()
    mean = x.mean(dims, keepdim=True)
    std_b = torch.sqrt(x.var(dims, correction=0, keepdim=True) + module.eps)
    std = torch.sqrt(module.running_var + module.eps).view(view)
    r = torch.clamp(std_b.detach() / std, 1 / rmax, rmax)
    d = torch.clamp((mean.detach() - module.running_mean.view(view)) / std, -dmax, dmax)
    y = (x - mean) / std_b * r + d
    if module.weight is not None:
        y = y * module.weight.view(view) + module.bias.view(view)
    return y
