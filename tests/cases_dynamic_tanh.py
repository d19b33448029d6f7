"""Catalogue cases of Dynamic Tanh (collected by catalogue.py).

The float64 oracle is the paper's formula (Zhu et al. 2025, arXiv:2503.10622, eq. 1 and its
Algorithm 1), y = γ·tanh(α·x) + β, written with ``torch.tanh`` elementwise: independent of the
layer, which evaluates tanh as 2·sigmoid(2u) − 1. No statistics: train = eval, per sample.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_dynamic_tanh as ref
from catalogue import Case


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.dyt_ref(x, m.alpha, m.weight, m.bias, channel_dim=m.channel_dim)


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.dynamic_tanh(x, m.alpha, m.weight, m.bias, channel_dim=m.channel_dim)


def _dyt(variant: str = "", **kwargs: Any) -> Case:
    keys = {"alpha", "weight", "bias"} if kwargs.get("affine", True) else {"alpha"}
    return Case(
        name="dynamic_tanh",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        state_keys=frozenset(keys),
    )


CASES: tuple[Case, ...] = (
    _dyt(),
    _dyt("affine_false", affine=False),
    _dyt("alpha_init", alpha_init=1.5),
)
