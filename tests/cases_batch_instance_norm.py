"""Catalogue cases of Batch-Instance Normalization (collected by catalogue.py).

``randomize_`` draws the gate ρ uniformly in [0, 1] (a state outside it cannot be loaded), so
every generic test runs at a genuine mix of BN and IN, and the generic training loops clip it
after each optimizer step as the paper does (the class's ``training_hooks.after_step``); the
extremes ρ = 0 and ρ = 1 and values outside [0, 1] are tested in test_batch_instance_norm.py.
The running statistics follow torch BatchNorm's law (the default oracle). (N, C) input — where
the reference failed — is included.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_mixed_stats as ref
from catalogue import Case


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.batch_instance_norm_ref(
        x, m.gate, m.weight, m.bias, m.running_mean, m.running_var, training=m.training,
        eps=m.eps, channel_dim=m.channel_dim,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.batch_instance_norm(
        x, m.gate, m.running_mean, m.running_var, m.weight, m.bias, training=m.training,
        eps=m.eps, channel_dim=m.channel_dim,
    )


def _bin(variant: str = "", **kwargs: Any) -> Case:
    tracking = kwargs.get("track_running_stats", True)
    keys = {"gate"}
    if kwargs.get("affine", True):
        keys |= {"weight", "bias"}
    if tracking:
        keys |= {"running_mean", "running_var", "num_batches_tracked"}
    return Case(
        name="batch_instance_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        has_running_stats=tracking,
        train_eval_differ=tracking,
        per_sample=False,
        state_keys=frozenset(keys),
        unit_params=frozenset({"gate"}),  # ρ ∈ [0, 1]
    )


CASES: tuple[Case, ...] = (
    _bin(),
    _bin("affine_false", affine=False),
    _bin("momentum_none", momentum=None),
    _bin("no_tracking", track_running_stats=False),
    _bin("eps", eps=1e-3, momentum=0.3),
)
