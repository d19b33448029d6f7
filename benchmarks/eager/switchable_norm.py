"""Straightforward eager composition of Switchable Norm (speed baseline for the benchmarks).

Three separate reductions of the input (IN over *S, LN over (C, *S), BN over (N, *S)), the
softmax-weighted mix and the normalization, written with plain differentiable tensor operations
as the reference code does: the training-mode forward of `normlab.SwitchableNorm` (channels at
dim 1, biased variances; running statistics are not updated).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def eager_switchable_norm(module: nn.Module, x: Tensor) -> Tensor:
    spatial = tuple(range(2, x.dim()))
    dims = {"in": spatial, "ln": (1, *spatial), "bn": (0, *spatial)}
    w_mean = torch.softmax(module.mean_weight, 0)
    w_var = torch.softmax(module.var_weight, 0)
    mean = 0.0
    var = 0.0
    for k, branch in enumerate(module.branches):
        v, m = torch.var_mean(x, dim=dims[branch], correction=0, keepdim=True)
        mean = mean + w_mean[k] * m
        var = var + w_var[k] * v
    y = (x - mean) / torch.sqrt(var + module.eps)
    if module.weight is not None:
        view = (1, -1) + (1,) * (x.dim() - 2)
        y = y * module.weight.view(view) + module.bias.view(view)
    return y
