"""Catalogue cases of Bounded Batch Normalization (collected by catalogue.py).

Its forward pass is BatchNorm's, so the cases are BN's: the float64 BN oracle of oracles.py, the
BN functional, and torch.nn.BatchNorm as the parity twin. The scale projection that makes it
Bounded BN is tested against its own oracle in test_bounded_batch_norm.py.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles
from catalogue import Case, _torch_bn


def _reference(m: Any, x: Tensor) -> Tensor:
    return oracles.batch_norm_ref(
        x,
        m.weight,
        m.bias,
        m.running_mean,
        m.running_var,
        training=m.training,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.batch_norm(
        x,
        m.running_mean,
        m.running_var,
        m.weight,
        m.bias,
        training=m.training,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _bbn(variant: str = "", **kwargs: Any) -> Case:
    tracking = kwargs.get("track_running_stats", True)
    return Case(
        name="bounded_batch_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        has_running_stats=tracking,
        train_eval_differ=tracking,
        per_sample=False,
        torch_equivalent=_torch_bn,
    )


CASES: tuple[Case, ...] = (
    _bbn(),
    _bbn("affine_false", affine=False),
    _bbn("momentum_none", momentum=None),
    _bbn("no_tracking", track_running_stats=False),
)
