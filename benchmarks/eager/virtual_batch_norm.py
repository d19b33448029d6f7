"""Straightforward eager composition of Virtual Batch Norm (speed baseline for the benchmarks).

The forward of `normlab.VirtualBatchNorm` with its reference statistics fixed (the buffers
``reference_mean``, ``reference_var``, ``reference_size``), written with plain differentiable
tensor operations: each example's mean and biased variance over *S, merged with the reference
batch's with example weights 1/(N_R + 1) and N_R/(N_R + 1), then the normalization (channels
at dim 1). ``eager_reference_pass`` is the reference batch's own normalization, keeping μ_R and
σ²_R with their graph, as in the paper's per-step reference pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _channel(t: Tensor, ndim: int) -> Tensor:
    return t.view((1, -1) + (1,) * (ndim - 2))


def eager_virtual_batch_norm(module: nn.Module, x: Tensor) -> Tensor:
    spatial = tuple(range(2, x.dim()))
    var_x, mean_x = torch.var_mean(x, dim=spatial, correction=0, keepdim=True)
    mean_r = _channel(module.reference_mean, x.dim())
    var_r = _channel(module.reference_var, x.dim())
    w = 1.0 / (float(module.reference_size) + 1.0)
    d = mean_x - mean_r
    mean = mean_r + w * d
    var = w * var_x + (1 - w) * var_r + w * (1 - w) * d * d
    y = (x - mean) / torch.sqrt(var + module.eps)
    if module.weight is not None:
        y = y * _channel(module.weight, x.dim()) + _channel(module.bias, x.dim())
    return y


def eager_reference_pass(module: nn.Module, x_ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(R normalized with its own statistics, μ_R, σ²_R), differentiable in ``x_ref``."""
    dims = (0, *range(2, x_ref.dim()))
    var_r, mean_r = torch.var_mean(x_ref, dim=dims, correction=0, keepdim=True)
    y = (x_ref - mean_r) / torch.sqrt(var_r + module.eps)
    if module.weight is not None:
        y = y * _channel(module.weight, x_ref.dim()) + _channel(module.bias, x_ref.dim())
    return y, mean_r.flatten(), var_r.flatten()
