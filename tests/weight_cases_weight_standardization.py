"""Contract cases of Weight Standardization (Qiao et al. 2019, arXiv:1903.10520).

The oracle is the paper's equation per output unit o, in float64, with explicit sums:
μ_o = Σ_i W_oi / I, σ_o² = Σ_i (W_oi − μ_o)² / (I − 1 or I), Ŵ_o = (W_o − μ_o)/(σ_o + ε) or
(W_o − μ_o)/sqrt(σ_o² + ε).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import normlab
from weight_catalogue import WeightCase


def standardized_oracle(
    weight: Tensor, dim: int = 0, eps: float = 1e-5, unbiased: bool = False, in_sqrt: bool = True
) -> Tensor:
    """Ŵ per output unit along ``dim``, from the paper's sums, in float64."""
    units = weight.detach().to(torch.float64).movedim(dim, 0)
    rows = []
    for w in units.reshape(units.shape[0], -1):
        n = w.numel()
        mu = sum(w.tolist()) / n
        ss = sum((v - mu) ** 2 for v in w.tolist())
        var = ss / (n - 1 if unbiased else n)
        denom = math.sqrt(var + eps) if in_sqrt else math.sqrt(var) + eps
        rows.append((w - mu) / denom)
    return torch.stack(rows).reshape(units.shape).movedim(0, dim)


def _oracle(dim: int = 0, **kwargs: Any) -> Callable[[nn.Module], Tensor]:
    def oracle(module: nn.Module) -> Tensor:
        return standardized_oracle(module.parametrizations.weight.original, dim, **kwargs)

    return oracle


def _build(make: Callable[..., nn.Module], **kwargs: Any) -> Callable[..., nn.Module]:
    def build(dtype: torch.dtype = torch.float32) -> nn.Module:
        return normlab.weight_standardization(make().to(dtype), **kwargs)

    return build


def _ws_conv(dtype: torch.dtype = torch.float32) -> nn.Module:
    return normlab.WSConv2d(4, 6, 3, padding=1, bias=True, dtype=dtype)


CASES = (
    WeightCase(
        "weight_standardization", _build(lambda: nn.Conv2d(4, 6, 3)), (2, 4, 7, 7), _oracle()
    ),
    WeightCase(
        "weight_standardization",
        _build(lambda: nn.Linear(10, 5)),
        (3, 10),
        _oracle(),
        variant="linear",
    ),
    WeightCase(
        "weight_standardization",
        _build(lambda: nn.ConvTranspose2d(4, 6, 3)),
        (2, 4, 5, 5),
        _oracle(dim=1),
        variant="conv_transpose",
    ),
    WeightCase(
        "weight_standardization",
        _build(lambda: nn.Conv1d(3, 5, 4), unbiased=True, eps_in_sqrt=False, eps=1e-5),
        (2, 3, 9),
        _oracle(unbiased=True, in_sqrt=False, eps=1e-5),
        variant="authors_code",
    ),
    WeightCase(
        "weight_standardization",
        _build(lambda: nn.Conv2d(4, 6, 2, groups=2), unbiased=True, eps=1e-3),
        (2, 4, 5, 5),
        _oracle(unbiased=True, eps=1e-3),
        variant="unbiased_eps_in_sqrt",
    ),
    WeightCase(
        "weight_standardization",
        _build(lambda: nn.ConvTranspose2d(4, 6, 3), eps_in_sqrt=False, eps=1e-2),
        (2, 4, 5, 5),
        _oracle(dim=1, in_sqrt=False, eps=1e-2),
        variant="conv_transpose_tf_form",
    ),
    WeightCase("weight_standardization", _ws_conv, (2, 4, 6, 6), _oracle(), variant="WSConv2d"),
)
