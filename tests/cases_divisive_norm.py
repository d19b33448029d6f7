"""Catalogue cases of Divisive Normalization (collected by catalogue.py).

Fields of every kind: the CNN reference's (all channels × a spatial window), local channel
windows (the RNN / FC reference's), different summation and suppression fields, "whole layer"
fields (LayerNorm with ε = σ²), no centering, a learned σ, affine. Spatial extents are >= 3
so that the default 3-wide windows fit (a larger field is an error, test_divisive_norm.py).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_divisive_norm as ref
from catalogue import Case

_SHAPES = ((4, 6), (3, 6, 5), (2, 6, 4, 3), (2, 6, 3, 4, 3))


def _sigma2(m: Any) -> Any:
    return m.eps if m.sigma is None else m.sigma.square()


def _fields(m: Any) -> dict[str, Any]:
    return {
        "sum_window": m.sum_window,
        "sup_window": m.sup_window,
        "sum_channels": m.sum_channels,
        "sup_channels": m.sup_channels,
        "center": m.center,
        "channel_dim": m.channel_dim,
    }


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.divisive_norm_ref(x, m.weight, m.bias, sigma2=_sigma2(m), **_fields(m))


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.divisive_norm(x, m.weight, m.bias, eps=_sigma2(m), **_fields(m))


def _dn(variant: str = "", **kwargs: Any) -> Case:
    keys = {"weight", "bias"} if kwargs.get("affine", False) else set()
    if kwargs.get("learn_sigma", False):
        keys.add("sigma")
    return Case(
        name="divisive_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        shapes=_SHAPES,
        state_keys=frozenset(keys),
    )


CASES: tuple[Case, ...] = (
    _dn(),
    _dn("windows_3_1_channels_3_5", sum_window=3, sup_window=1, sum_channels=3, sup_channels=5),
    _dn("whole_layer", sum_window=None, sup_window=None, eps=1e-5),
    _dn("whole_layer_affine", sum_window=None, sup_window=None, affine=True),
    _dn("no_center", center=False, sup_channels=3),
    _dn("learn_sigma_affine", learn_sigma=True, affine=True, eps=1.0),
)
