"""Float64 reference of AdaIN, written from the paper and the reference Torch code.

Huang & Belongie 2017 (arXiv:1703.06868), eq. 8; ``xunhuang1995/AdaIN-style``,
``lib/AdaptiveInstanceNormalization.lua``. Independent of normlab: every statistic is a
two-pass mean / biased variance over an explicitly selected 1-D set of values (loops and
boolean indexing).

    AdaIN(x, y) = σ(y)·(x − μ(x))/sqrt(σ²(x) + ε) + μ(y),   t = α·AdaIN(x, y) + (1 − α)·x

μ, σ per (n, c) over the (masked) positions; σ(y) is the population std with no ε (Torch
``std(…, true)``); with a content mask, positions outside it keep x. The optional
per-channel affine (normlab's addition for converted layers) maps t to γ·t + β.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mean_var(values: Tensor) -> tuple[Tensor, Tensor]:
    """Two-pass mean and biased variance of a 1-D float64 tensor."""
    n = values.numel()
    mean = values.sum() / n
    return mean, ((values - mean) ** 2).sum() / n


def _positions(mask: Tensor | None, n: int, spatial: tuple[int, ...]) -> Tensor:
    """The (N, *S) bool selection of a mask broadcastable to (N, 1, *S) (all when None)."""
    if mask is None:
        return torch.ones((n, *spatial), dtype=torch.bool)
    return torch.broadcast_to(mask, (n, 1, *spatial))[:, 0]


def style_stats_ref(
    style: Tensor, mask: Tensor | None = None, channel_dim: int = 1
) -> tuple[Tensor, Tensor]:
    """(μ(y), σ(y)) of shape (N_s, C): mean and population std per (n, c), no ε."""
    yc = style.to(torch.float64).movedim(channel_dim, 1)
    sel = _positions(mask, yc.shape[0], tuple(yc.shape[2:]))
    means = torch.empty(yc.shape[:2], dtype=torch.float64)
    stds = torch.empty(yc.shape[:2], dtype=torch.float64)
    for n in range(yc.shape[0]):
        for c in range(yc.shape[1]):
            mu, var = mean_var(yc[n, c][sel[n]])
            means[n, c], stds[n, c] = mu, torch.sqrt(var)
    return means, stds


def adain_ref(
    content: Tensor,
    style_mean: Tensor,
    style_std: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    alpha: float = 1.0,
    eps: float = 1e-5,
    content_mask: Tensor | None = None,
    channel_dim: int = 1,
) -> Tensor:
    """t for content (N, C, *S) and style statistics of shape (C,) or (N or 1, C)."""
    xc = content.to(torch.float64).movedim(channel_dim, 1)
    n_samples, channels = xc.shape[:2]
    s_mean = style_mean.to(torch.float64).reshape(-1, channels)
    s_std = style_std.to(torch.float64).reshape(-1, channels)
    sel = _positions(content_mask, n_samples, tuple(xc.shape[2:]))
    out = xc.clone()
    for n in range(n_samples):
        k = n if s_mean.shape[0] > 1 else 0
        for c in range(channels):
            values = xc[n, c]
            mu, var = mean_var(values[sel[n]])
            stylized = s_std[k, c] * (values - mu) / torch.sqrt(var + eps) + s_mean[k, c]
            blended = alpha * stylized + (1.0 - alpha) * values
            if weight is not None:
                blended = blended * weight[c].to(torch.float64)
            if bias is not None:
                blended = blended + bias[c].to(torch.float64)
            out[n, c] = torch.where(sel[n], blended, values)
    return out.movedim(1, channel_dim)
