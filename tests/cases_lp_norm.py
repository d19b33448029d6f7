"""Catalogue cases of Lp Normalization (collected by catalogue.py): per-sample sets, the same
function in training and eval, no running statistics. The oracle loops over every set
(oracles_streaming.lp_norm_ref)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_streaming as ref
from catalogue import Case


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.lp_norm_ref(
        x,
        m.weight,
        m.bias,
        p=m.p,
        reduce=m.axes.reduce,
        groups=m.axes.groups,
        center=m.center,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.lp_norm(
        x,
        m.weight,
        m.bias,
        p=m.p,
        over=m.axes,
        center=m.center,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


_SPATIAL = ((3, 6, 5), (2, 6, 4, 3), (2, 6, 3, 2, 3))


def _lp(variant: str = "", **kwargs: Any) -> Case:
    spatial_only = kwargs.get("over") == "instance"
    return Case(
        name="lp_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        shapes=_SPATIAL if spatial_only else ((4, 6), *_SPATIAL),
        state_keys=frozenset({"weight", "bias"}) if kwargs.get("affine", True) else frozenset(),
    )


CASES: tuple[Case, ...] = (
    _lp(),  # p = 1 over (C, *S)
    _lp("p2", p=2),
    _lp("p3_instance", p=3, over="instance"),
    _lp("inf_group", p=math.inf, over="group", num_groups=3),
    _lp("position", p=1.5, over="position"),
    _lp("uncentered_affine_false", center=False, affine=False),
)
