"""Float64 reference of Divisive Normalization, written from the paper's unified formula.

Ren, Liao, Urtasun, Sinz & Zemel 2017 (arXiv:1611.04520), eqs. 1–3:

    v_j = z_j − (1/|A_j|) Σ_{i∈A_j} z_i,   ŷ_j = v_j / sqrt(σ² + (1/|B_j|) Σ_{i∈B_j} v_i²)

with A_j, B_j the summation and suppression fields of unit j: within its sample, the channels
at distance <= k_c // 2 (all channels when None) times the positions at distance <= k_d // 2
along every spatial dim d (all positions when None), clipped at the borders. Independent of
normlab: each field is an explicit slice of the input, averaged with ``mean()``, unit by unit.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor


def _span(i: int, k: int | None, length: int) -> slice:
    if k is None:
        return slice(0, length)
    return slice(max(i - k // 2, 0), min(i + k // 2, length - 1) + 1)


def _sizes(window: int | tuple[int, ...] | None, spatial: int) -> tuple[int | None, ...]:
    if window is None or isinstance(window, int):
        return (window,) * spatial
    return window


def _field_means(t: Tensor, channels: int | None, window: object) -> Tensor:
    """For every unit of the channels-first float64 ``t``, the mean of ``t`` over its field."""
    out = torch.empty_like(t)
    spatial = t.shape[2:]
    sizes = _sizes(window, len(spatial))  # type: ignore[arg-type]
    for n in range(t.shape[0]):
        for c in range(t.shape[1]):
            for pos in itertools.product(*(range(s) for s in spatial)):
                box = (
                    n,
                    _span(c, channels, t.shape[1]),
                    *(_span(p, k, s) for p, k, s in zip(pos, sizes, spatial, strict=True)),
                )
                out[(n, c, *pos)] = t[box].mean()
    return out


def divisive_norm_ref(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    sum_window: int | tuple[int, ...] | None = 3,
    sup_window: int | tuple[int, ...] | None = 3,
    sum_channels: int | None = None,
    sup_channels: int | None = None,
    sigma2: Tensor | float = 0.25,
    center: bool = True,
    channel_dim: int = 1,
) -> Tensor:
    z = x.to(torch.float64).movedim(channel_dim, 1)
    v = z - _field_means(z, sum_channels, sum_window) if center else z
    y = v / torch.sqrt(_field_means(v * v, sup_channels, sup_window) + sigma2)
    view = (1, -1) + (1,) * (y.dim() - 2)
    if weight is not None:
        y = y * weight.to(torch.float64).reshape(view)
    if bias is not None:
        y = y + bias.to(torch.float64).reshape(view)
    return y.movedim(1, channel_dim)


def l1_penalty_ref(
    x: Tensor,
    *,
    sum_window: int | tuple[int, ...] | None = 3,
    sum_channels: int | None = None,
    channel_dim: int = 1,
) -> Tensor:
    """mean_j |z_j − mean over A_j| (the paper's sparse L1 regularizer, before its α)."""
    z = x.to(torch.float64).movedim(channel_dim, 1)
    return (z - _field_means(z, sum_channels, sum_window)).abs().mean()
