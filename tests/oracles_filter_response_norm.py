"""Float64 reference of Filter Response Normalization + TLU, written from the paper.

Written from the paper (Singh & Krishnan 2020, arXiv:1911.09737,
eq. 1-2 and its TF snippet) with explicit loops over (n, c) slices, independent of normlab:

    ν² = Σ_S x² / |S|,  x̂ = x / sqrt(ν² + |ε|),  y = γ x̂ + β,  z = max(y, τ)
    learned ε: ε = eps + |ε_l|

ν² is a mean of squares (no centering). Rank-2 input (N, C) has |S| = 1, so ν² = x². The TLU
max sends the gradient of a tie to τ (``torch.where(y > τ, y, τ)``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.to(torch.float64)  # not detached: gradients are oracles


def frn_ref(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    tau: Tensor | None,
    eps_l: Tensor | None,
    *,
    eps: float,
    channel_dim: int = 1,
) -> Tensor:
    """FRN (+ TLU when ``tau`` is given) in float64, one (n, c) slice at a time."""
    xc = x.to(torch.float64).movedim(channel_dim, 1)
    n_samples, channels = xc.shape[:2]
    total_eps = eps if eps_l is None else eps + _f64(eps_l).abs().reshape(())
    rows = []
    for n in range(n_samples):
        row = []
        for c in range(channels):
            values = xc[n, c]
            nu2 = (values * values).sum() / values.numel()
            z = values / torch.sqrt(nu2 + total_eps)
            if weight is not None:
                z = z * _f64(weight)[c]
            if bias is not None:
                z = z + _f64(bias)[c]
            if tau is not None:
                z = torch.where(z > _f64(tau)[c], z, _f64(tau)[c])
            row.append(z)
        rows.append(torch.stack(row))
    return torch.stack(rows).movedim(1, channel_dim)
