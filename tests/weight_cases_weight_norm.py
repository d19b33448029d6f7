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
from weight_catalogue import WeightCase


def weight_norm_oracle(g: Tensor, v: Tensor, dim: int | None, eps: float | None = None) -> Tensor:
    """w = g·v/‖v‖ per slice of v along ``dim`` (one global norm for None), in float64."""
    v, g = v.detach().to(torch.float64), g.detach().to(torch.float64)
    if dim is None:
        norm = torch.sqrt((v * v).sum())
        return g * v / (norm if eps is None else max(norm, torch.tensor(eps)))
    w = torch.empty_like(v)
    gs = g.reshape(-1)
    for o in range(v.shape[dim]):
        unit = v.select(dim, o)
        norm = torch.sqrt((unit * unit).sum())
        if eps is not None:
            norm = torch.clamp(norm, min=eps)
        w.select(dim, o).copy_(gs[o] * unit / norm)
    return w


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
        "weight_norm", _builder(lambda: nn.Conv2d(3, 4, 3)), (2, 3, 6, 6), _oracle(0),
        variant="conv2d",
    ),
    WeightCase(  # output units at dim 1 of (C_in, C_out, kh, kw)
        "weight_norm", _builder(lambda: nn.ConvTranspose2d(3, 4, 2)), (2, 3, 4, 4), _oracle(1),
        variant="conv_transpose2d",
    ),
    WeightCase(
        "weight_norm", _builder(lambda: nn.Conv1d(3, 4, 3), dim=None), (2, 3, 7), _oracle(None),
        variant="global",
    ),
    WeightCase(
        "weight_norm", _builder(lambda: nn.Linear(5, 4), dim=-1), (3, 5), _oracle(1),
        variant="last_dim",
    ),
    WeightCase(
        "weight_norm", _builder(lambda: nn.Conv2d(3, 4, 3), eps=1e-6), (2, 3, 6, 6),
        _oracle(0, 1e-6), variant="eps",
    ),
)
