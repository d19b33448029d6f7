"""Straightforward eager Ghost BN (Hoffer et al. 2017): the speed baseline of the fast path.

Plain differentiable tensor ops, training-mode forward only (running statistics are not
updated): the batch is cut into consecutive ghost batches of ``module.ghost_batch_size``
samples, as the reference code slices it, and each chunk is normalized with its own
``mean`` / ``var``. A last chunk holding one value per statistic is merged into the previous
one (normlab's documented policy).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def eager_ghost_batch_norm(module: Any, x: Tensor) -> Tensor:
    """``module``'s training forward on (N, C, *S) ``x`` from ``mean`` / ``var`` / arithmetic."""
    dims = [0, *range(2, x.dim())]
    view = (1, -1) + (1,) * (x.dim() - 2)
    chunks = list(x.split(module.ghost_batch_size))
    if len(chunks) > 1 and chunks[-1][:, 0].numel() == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    outputs = []
    for chunk in chunks:
        mean = chunk.mean(dims, keepdim=True)
        var = chunk.var(dims, correction=0, keepdim=True)
        outputs.append((chunk - mean) / torch.sqrt(var + module.eps))
    y = torch.cat(outputs)
    if module.weight is not None:
        y = y * module.weight.view(view) + module.bias.view(view)
    return y
