"""Catalogue cases of Filter Response Normalization + TLU (collected by catalogue.py).

The float64 oracle (oracles_filter_response_norm.py) is written from the paper (Singh & Krishnan
2020, arXiv:1911.09737, eq. 1-2 and its TF snippet) with explicit loops over (n, c) slices,
independent of normlab:

    ν² = Σ_S x² / |S|,  x̂ = x / sqrt(ν² + |ε|),  y = γ x̂ + β,  z = max(y, τ)
    learned ε: ε = eps + |ε_l|

ν² is a mean of squares (no centering). Rank-2 input (N, C) has |S| = 1, so ν² = x². The TLU
max sends the gradient of a tie to τ (``torch.where(y > τ, y, τ)``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_filter_response_norm as ref
from catalogue import Case


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.frn_ref(x, m.weight, m.bias, m.tau, m.eps_l, eps=m.eps, channel_dim=m.channel_dim)


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.filter_response_norm(
        x, m.weight, m.bias, m.tau, m.eps_l, eps=m.eps, channel_dim=m.channel_dim
    )


def _frn(variant: str = "", **kwargs: Any) -> Case:
    keys = {"weight", "bias"} if kwargs.get("affine", True) else set()
    if kwargs.get("tlu", True):
        keys.add("tau")
    if kwargs.get("learn_eps", False):
        keys.add("eps_l")
    return Case(
        name="filter_response_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        state_keys=frozenset(keys),
    )


CASES: tuple[Case, ...] = (
    _frn(),
    _frn("no_tlu", tlu=False),
    _frn("learn_eps", learn_eps=True),
    _frn("affine_false", affine=False),
    _frn("eps", eps=1e-3),
)
