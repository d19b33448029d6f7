"""Straightforward eager compositions of EvoNorm-B0 and EvoNorm-S0 (speed baselines).

Training-mode forward of the module's configuration with plain differentiable tensor ops
(``var``, ``sqrt``, ``sigmoid``, ``maximum``, arithmetic); autograd provides the backward. No
running-statistics update. Importing this file has no side effects.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _channel(t: Tensor, ndim: int) -> Tensor:
    return t.view(1, -1, *([1] * (ndim - 2)))


def _affine(module: Any, y: Tensor) -> Tensor:
    if module.weight is not None:
        y = y * _channel(module.weight, y.dim())
    if module.bias is not None:
        y = y + _channel(module.bias, y.dim())
    return y


def eager_evo_norm_b0(module: Any, x: Tensor) -> Tensor:
    """y = x / max(sqrt(s²_batch + ε), v·x + sqrt(s²_inst + ε)) · γ + β, batch statistics."""
    if module.channel_dim == -1:
        return eager_evo_norm_b0_channels_first(module, x.movedim(-1, 1)).movedim(1, -1)
    return eager_evo_norm_b0_channels_first(module, x)


def eager_evo_norm_b0_channels_first(module: Any, x: Tensor) -> Tensor:
    if module.v is None:
        return _affine(module, x)
    spatial = tuple(range(2, x.dim()))
    batch_var = x.var(dim=(0, *spatial), unbiased=False, keepdim=True)
    inst_var = x.var(dim=spatial, unbiased=False, keepdim=True)
    left = torch.sqrt(batch_var + module.eps)
    right = _channel(module.v, x.dim()) * x + torch.sqrt(inst_var + module.eps)
    return _affine(module, x / torch.maximum(left, right))


def eager_evo_norm_s0(module: Any, x: Tensor) -> Tensor:
    """y = x · sigmoid(v·x) / sqrt(s²_group + ε) · γ + β."""
    if module.channel_dim == -1:
        return eager_evo_norm_s0_channels_first(module, x.movedim(-1, 1)).movedim(1, -1)
    return eager_evo_norm_s0_channels_first(module, x)


def eager_evo_norm_s0_channels_first(module: Any, x: Tensor) -> Tensor:
    if module.v is None:
        return _affine(module, x)
    n, groups = x.shape[0], module.num_groups
    grouped_var = x.reshape(n, groups, -1).var(dim=-1, unbiased=False, keepdim=True)
    std = torch.sqrt(grouped_var + module.eps)
    swish = x * torch.sigmoid(_channel(module.v, x.dim()) * x)
    y = (swish.reshape(n, groups, -1) / std).reshape(x.shape)
    return _affine(module, y)
