"""Float64 oracles for weight normalization and mean-only batch normalization, written from
Salimans & Kingma 2016 (arXiv:1602.07868) with explicit loops; independent of normlab.

- Weight norm (§2): w_o = g_o · v_o / ‖v_o‖₂, the norm over unit o's whole fan-in.
- Mean-only BN (§4): t̃ = t − μ[t] + b, μ over (N, *S) per channel in training (the running
  mean in eval); with the optional scale, γ(t − μ) + b.
"""

from __future__ import annotations

import torch
from torch import Tensor


def weight_norm_oracle(g: Tensor, v: Tensor, dim: int | None, eps: float | None = None) -> Tensor:
    """w = g·v/‖v‖ per slice of v along ``dim`` (one global norm for None), in float64."""
    v, g = v.detach().to(torch.float64), g.detach().to(torch.float64)
    if dim is None:
        norm = torch.sqrt((v * v).sum())
        return g * v / (norm if eps is None else torch.clamp(norm, min=eps))
    w = torch.empty_like(v)
    gs = g.reshape(-1)
    for o in range(v.shape[dim]):
        unit = v.select(dim, o)
        norm = torch.sqrt((unit * unit).sum())
        if eps is not None:
            norm = torch.clamp(norm, min=eps)
        w.select(dim, o).copy_(gs[o] * unit / norm)
    return w


def channel_mean(x: Tensor, c: int) -> Tensor:
    """Mean of channel c (dim 1) over every other position, in float64."""
    values = x.to(torch.float64).select(1, c).reshape(-1)
    return values.sum() / values.numel()


def mean_only_batch_norm_ref(
    x: Tensor,
    running_mean: Tensor | None,
    bias: Tensor | None,
    weight: Tensor | None = None,
    *,
    training: bool,
    channel_dim: int = 1,
) -> Tensor:
    """γ(x − μ) + b per channel: μ the batch mean when training or without a running mean."""
    xc = x.to(torch.float64).movedim(channel_dim, 1)
    y = torch.empty_like(xc)
    for c in range(xc.shape[1]):
        if training or running_mean is None:
            mu = channel_mean(xc, c)
        else:
            mu = running_mean[c].to(torch.float64)
        centered = xc[:, c] - mu
        if weight is not None:
            centered = centered * weight[c].to(torch.float64)
        y[:, c] = centered + (0.0 if bias is None else bias[c].to(torch.float64))
    return y.movedim(1, channel_dim)
