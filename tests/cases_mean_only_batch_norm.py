"""Catalogue cases of mean-only batch normalization (collected by catalogue.py).

Its running statistics follow BatchNorm's law exactly (mean and unbiased variance, the default
``running_step``), but eval subtracts the running mean only: the float64 oracle is
tests/oracles_weight_norm.py's ``mean_only_batch_norm_ref``. No torch.nn equivalent exists.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
from catalogue import Case
from oracles_weight_norm import mean_only_batch_norm_ref


def _reference(m: Any, x: Tensor) -> Tensor:
    return mean_only_batch_norm_ref(
        x, m.running_mean, m.bias, m.weight, training=m.training, channel_dim=m.channel_dim
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.mean_only_batch_norm(
        x,
        m.running_mean,
        m.bias,
        weight=m.weight,
        training=m.training,
        channel_dim=m.channel_dim,
    )


STATS = frozenset({"running_mean", "running_var", "num_batches_tracked"})


def _mean_only(variant: str = "", **kwargs: Any) -> Case:
    tracking = kwargs.get("track_running_stats", True)
    params = {"bias"} | ({"weight"} if kwargs.get("affine", False) else set())
    return Case(
        name="mean_only_batch_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        has_running_stats=tracking,
        # momentum=None: after one batch the running mean *is* that batch's mean, and eval
        # subtracts nothing else, so the contract's one-step train-vs-eval check sees no change
        train_eval_differ=tracking and kwargs.get("momentum", 0.1) is not None,
        per_sample=False,
        state_keys=frozenset(params | (STATS if tracking else set())),
    )


CASES: tuple[Case, ...] = (
    _mean_only(),
    _mean_only("affine", affine=True),
    _mean_only("momentum_none", momentum=None),
    _mean_only("no_tracking", track_running_stats=False),
)
