"""Straightforward eager composition of Batch-Instance Norm (speed baseline for the benchmarks).

Batch statistics over (N, *S) and instance statistics over *S, each from its own reduction of
the input, both normalizations, the gate mix and the shared affine, written with plain
differentiable tensor operations: the training-mode forward of `normlab.BatchInstanceNorm`
(channels at dim 1, biased variances; running statistics are not updated).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def eager_batch_instance_norm(module: nn.Module, x: Tensor) -> Tensor:
    spatial = tuple(range(2, x.dim()))
    view = (1, -1) + (1,) * (x.dim() - 2)
    var_b, mean_b = torch.var_mean(x, dim=(0, *spatial), correction=0, keepdim=True)
    var_i, mean_i = torch.var_mean(x, dim=spatial, correction=0, keepdim=True)
    x_b = (x - mean_b) / torch.sqrt(var_b + module.eps)
    x_i = (x - mean_i) / torch.sqrt(var_i + module.eps)
    rho = module.gate.view(view)
    y = rho * x_b + (1 - rho) * x_i
    if module.weight is not None:
        y = y * module.weight.view(view) + module.bias.view(view)
    return y
