"""Contract cases of weight normalization (collected by weight_catalogue.py).

The oracle is the paper's equation in float64, written with explicit loops over the output
units: w_o = g_o · v_o / ‖v_o‖₂, the norm over the unit's whole fan-in (Salimans & Kingma 2016,
§2), read from ``parametrizations.weight.original0`` (g) and ``original1`` (v).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

import normlab
from oracles_weight_norm import weight_norm_oracle
from weight_catalogue import WeightCase


def _oracle(dim: int | None, eps: float | None = None) -> Callable[[nn.Module], Tensor]:
    def oracle(module: nn.Module) -> Tensor:
        chain = module.parametrizations.weight
        return weight_norm_oracle(chain.original0, chain.original1, dim, eps)

    return oracle


def _builder(make: Callable[[], nn.Module], **kwargs: object) -> Callable[..., nn.Module]:
    def build(dtype: torch.dtype = torch.float32) -> nn.Module:
        module = normlab.weight_norm(make().to(dtype), **kwargs)
        with torch.no_grad():  # g away from ‖v‖, so a wrong g or norm shows
            g = module.parametrizations.weight.original0
            g.copy_(torch.rand(g.shape, dtype=dtype) * 1.5 + 0.5)
        return module

    return build


CASES: tuple[WeightCase, ...] = (
    WeightCase("weight_norm", _builder(lambda: nn.Linear(5, 4)), (3, 5), _oracle(0)),
    WeightCase(
        "weight_norm",
        _builder(lambda: nn.Conv2d(3, 4, 3)),
        (2, 3, 6, 6),
        _oracle(0),
        variant="conv2d",
    ),
    WeightCase(  # output units at dim 1 of (C_in, C_out, kh, kw)
        "weight_norm",
        _builder(lambda: nn.ConvTranspose2d(3, 4, 2)),
        (2, 3, 4, 4),
        _oracle(1),
        variant="conv_transpose2d",
    ),
    WeightCase(
        "weight_norm",
        _builder(lambda: nn.Conv1d(3, 4, 3), dim=None),
        (2, 3, 7),
        _oracle(None),
        variant="global",
    ),
    WeightCase(
        "weight_norm",
        _builder(lambda: nn.Linear(5, 4), dim=-1),
        (3, 5),
        _oracle(1),
        variant="last_dim",
    ),
    WeightCase(
        "weight_norm",
        _builder(lambda: nn.Conv2d(3, 4, 3), eps=1e-6),
        (2, 3, 6, 6),
        _oracle(0, 1e-6),
        variant="eps",
    ),
)
