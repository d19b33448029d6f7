"""Float64 references for Virtual Batch Normalization, written from the paper's equations.

Salimans et al. 2016 (arXiv:1606.03498), METHODS.md section 17: a reference batch R of N_R
examples is normalized with its own statistics (mean μ_R and mean of squares m2_R over
(N_R, *S) per channel); every other example x with the statistics of R ∪ {x}, weighted by
examples:

    μ(x) = (μ_x + N_R·μ_R)/(N_R + 1),   m2(x) = (m2_x + N_R·m2_R)/(N_R + 1),
    y = γ (x − μ(x)) / sqrt(ε + m2(x) − μ(x)²) + β,

μ_x and m2_x over *S of that one example. Loops over examples and channels, plain sums;
independent of normlab. The stored reference variance σ²_R is biased: m2_R = σ²_R + μ_R².
"""

from __future__ import annotations

import torch
from torch import Tensor

F64 = torch.float64


def _cf(x: Tensor, channel_dim: int) -> Tensor:
    return x.to(F64).movedim(channel_dim, 1).clone()


def _vec(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.to(F64)


def reference_stats_ref(x_ref: Tensor, channel_dim: int = 1) -> tuple[Tensor, Tensor, Tensor, int]:
    """(μ_R, m2_R, σ²_R, N_R): mean, mean of squares and biased variance over (N_R, *S)."""
    xc = _cf(x_ref, channel_dim)
    c = xc.shape[1]
    mean, m2, var = (torch.empty(c, dtype=F64) for _ in range(3))
    for k in range(c):
        values = xc[:, k].reshape(-1)
        count = values.numel()
        mean[k] = values.sum() / count
        m2[k] = (values * values).sum() / count
        var[k] = ((values - mean[k]) ** 2).sum() / count
    return mean, m2, var, xc.shape[0]


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    view = (1, y.shape[1]) + (1,) * (y.dim() - 2)
    if weight is not None:
        y = y * _vec(weight).reshape(view)
    if bias is not None:
        y = y + _vec(bias).reshape(view)
    return y


def reference_output_ref(
    x_ref: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    """R normalized with its own statistics: γ (x − μ_R)/sqrt(ε + m2_R − μ_R²) + β."""
    xc = _cf(x_ref, channel_dim)
    mean, m2, _, _ = reference_stats_ref(x_ref, channel_dim)
    y = torch.empty_like(xc)
    for k in range(xc.shape[1]):
        y[:, k] = (xc[:, k] - mean[k]) / torch.sqrt(eps + m2[k] - mean[k] ** 2)
    return _affine(y, weight, bias).movedim(1, channel_dim)


def virtual_batch_norm_ref(
    x: Tensor,
    reference_mean: Tensor,
    reference_var: Tensor,
    reference_size: int | Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    """Every example of ``x`` normalized with the statistics of R ∪ {that example}."""
    xc = _cf(x, channel_dim)
    n_ref = int(reference_size)
    mu_r = _vec(reference_mean)
    m2_r = _vec(reference_var) + mu_r**2
    y = torch.empty_like(xc)
    for n in range(xc.shape[0]):
        for k in range(xc.shape[1]):
            values = xc[n, k]
            flat = values.reshape(-1)
            mu_x = flat.sum() / flat.numel()
            m2_x = (flat * flat).sum() / flat.numel()
            mu = (mu_x + n_ref * mu_r[k]) / (n_ref + 1)
            m2 = (m2_x + n_ref * m2_r[k]) / (n_ref + 1)
            y[n, k] = (values - mu) / torch.sqrt(eps + m2 - mu**2)
    return _affine(y, weight, bias).movedim(1, channel_dim)


def paper_layer(
    h_ref: Tensor, h: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5
) -> tuple[Tensor, Tensor]:
    """One VBN layer as a differentiable graph (as in the reference TF code), float64.

    Returns (R's output, the minibatch's output). μ_R and m2_R are computed from ``h_ref``
    with autograd history, so gradients reach whatever produced ``h_ref``. Channels at dim 1.
    """
    view = (1, -1) + (1,) * (h.dim() - 2)
    ref_dims = (0, *range(2, h.dim()))
    spatial = tuple(range(2, h.dim()))
    n_ref = h_ref.shape[0]
    mu_r = h_ref.mean(ref_dims, keepdim=True)
    m2_r = (h_ref * h_ref).mean(ref_dims, keepdim=True)
    g, b = gamma.reshape(view), beta.reshape(view)
    ref_out = g * (h_ref - mu_r) / torch.sqrt(eps + m2_r - mu_r**2) + b
    mu_x = h.mean(spatial, keepdim=True) if spatial else h
    m2_x = (h * h).mean(spatial, keepdim=True) if spatial else h * h
    mu = (mu_x + n_ref * mu_r) / (n_ref + 1)
    m2 = (m2_x + n_ref * m2_r) / (n_ref + 1)
    return ref_out, g * (h - mu) / torch.sqrt(eps + m2 - mu**2) + b
