"""Catalogue cases of Frozen Batch Normalization (collected by catalogue.py).

Its statistics are fixed buffers that no forward pass writes, so the cases declare no *running*
statistics (``has_running_stats=False``: nothing changes in training) and the same function in
train and eval. torch.nn parity (bitwise against BatchNorm2d.eval()) is in
test_frozen_batch_norm.py: the generic parity test would put the torch twin in training mode.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_batch_family_bn as ref
from catalogue import Case


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.frozen_batch_norm_ref(
        x, m.weight, m.bias, m.running_mean, m.running_var, eps=m.eps, channel_dim=m.channel_dim
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.frozen_batch_norm(
        x, m.running_mean, m.running_var, m.weight, m.bias, eps=m.eps, channel_dim=m.channel_dim
    )


STATS = frozenset({"running_mean", "running_var", "num_batches_tracked"})


def _frozen(variant: str = "", **kwargs: Any) -> Case:
    affine = kwargs.get("affine", True)
    return Case(
        name="frozen_batch_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        has_running_stats=False,
        train_eval_differ=False,
        per_sample=True,
        # fixed statistics, never updated, under torch.nn BatchNorm's names
        state_keys=STATS | {"weight", "bias"} if affine else STATS,
    )


CASES: tuple[Case, ...] = (
    _frozen(),
    _frozen("affine_false", affine=False),
    _frozen("trainable_affine", trainable_affine=True),
    _frozen("eps", eps=1e-3),
)
