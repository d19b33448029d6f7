"""Catalogue cases of Switchable Normalization (collected by catalogue.py).

The BN branch's running statistics follow torch BatchNorm's law (batch over (N, *S), unbiased
variance stored, PyTorch momentum), so the cases use the default running-statistics oracle.
Cases with the IN branch take inputs with positions (*S); the (N, C) shape appears only in the
cases without it (the reference's SwitchNorm1d mixes LN and BN).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_mixed_stats as ref
from catalogue import Case

_SPATIAL = ((3, 6, 5), (2, 6, 4, 3), (2, 6, 3, 2, 3))


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.switchable_norm_ref(
        x, m.mean_weight, m.var_weight, m.weight, m.bias, m.running_mean, m.running_var,
        branches=m.branches, training=m.training, eps=m.eps, channel_dim=m.channel_dim,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.switchable_norm(
        x, m.mean_weight, m.var_weight, m.running_mean, m.running_var, m.weight, m.bias,
        branches=m.branches, training=m.training, eps=m.eps, channel_dim=m.channel_dim,
    )


def _sn(variant: str = "", **kwargs: Any) -> Case:
    branches = kwargs.get("branches", ("in", "ln", "bn"))
    tracking = kwargs.get("track_running_stats", True) and "bn" in branches
    keys = {"mean_weight", "var_weight"}
    if kwargs.get("affine", True):
        keys |= {"weight", "bias"}
    if tracking:
        keys |= {"running_mean", "running_var", "num_batches_tracked"}
    return Case(
        name="switchable_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        shapes=_SPATIAL if "in" in branches else ((4, 6), *_SPATIAL),
        has_running_stats=tracking,
        train_eval_differ=tracking,
        per_sample="bn" not in branches,
        state_keys=frozenset(keys),
    )


CASES: tuple[Case, ...] = (
    _sn(),
    _sn("affine_false", affine=False),
    _sn("momentum_none", momentum=None),
    _sn("no_tracking", track_running_stats=False),
    _sn("ln_bn", branches=("ln", "bn")),  # the reference's SwitchNorm1d; (N, C) input too
    _sn("in_ln", branches=("in", "ln")),  # the reference's using_bn=False
    _sn("bn_only", branches=("bn",), eps=1e-3),
)
