"""Float64 reference of Dynamic Tanh, written from the paper.

It is the paper's formula (Zhu et al. 2025, arXiv:2503.10622, eq. 1 and its
Algorithm 1), y = γ·tanh(α·x) + β, written with ``torch.tanh`` elementwise: independent of the
layer, which evaluates tanh as 2·sigmoid(2u) − 1. No statistics: train = eval, per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dyt_ref(
    x: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None, *, channel_dim: int = 1
) -> Tensor:
    """γ·tanh(α·x) + β in float64, γ and β along ``channel_dim``."""
    x64 = x.to(torch.float64)
    y = torch.tanh(alpha.to(torch.float64).reshape(()) * x64)
    view = [1] * x64.dim()
    view[channel_dim] = x64.shape[channel_dim]
    if weight is not None:
        y = y * weight.to(torch.float64).reshape(view)
    if bias is not None:
        y = y + bias.to(torch.float64).reshape(view)
    return y
