"""Catalogue cases of EvoNorm-B0 and EvoNorm-S0 (collected by catalogue.py).

B0 keeps a moving variance (``running_var``, with ``num_batches_tracked``) but no running mean;
its state law is ``oracles_evo_norm.running_step_ref``, run by test_state at every momentum of
``Case.momenta`` (``None``, the cumulative average, included: a catalogue variant built with
``momentum=None`` would store exactly the batch's biased variance after one step, so its eval
output would equal the training output, which test_train_eval_behaviour rightly rejects).

S0 has no running statistics. Its references get the *requested* number of groups and apply
the reference's decrement rule themselves, so every generic test also checks that rule (C = 6
with the default G = 32 gives 6, G = 4 gives 3).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_evo_norm as ref
from catalogue import Case

_SPATIAL = ((3, 6, 5), (2, 6, 4, 3), (2, 6, 3, 2, 3))


def _b0_reference(m: Any, x: Tensor) -> Tensor:
    return ref.evo_norm_b0_ref(
        x, m.v, m.weight, m.bias, m.running_var, training=m.training, eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _b0_functional(m: Any, x: Tensor) -> Tensor:
    return NF.evo_norm_b0(
        x, m.running_var, m.weight, m.bias, m.v, training=m.training,
        nonlinearity=m.nonlinearity, eps=m.eps, channel_dim=m.channel_dim,
    )


def _state_keys(kwargs: Any, running: bool) -> frozenset[str]:
    keys = {"weight", "bias"} if kwargs.get("affine", True) else set()
    if kwargs.get("nonlinearity", True):
        keys.add("v")
    if running:
        keys |= {"running_var", "num_batches_tracked"}
    return frozenset(keys)


def _b0(variant: str = "", **kwargs: Any) -> Case:
    nonlinear = kwargs.get("nonlinearity", True)
    tracking = nonlinear and kwargs.get("track_running_stats", True)
    return Case(
        name="evo_norm_b0",
        variant=variant,
        kwargs=kwargs,
        reference=_b0_reference,
        functional=_b0_functional,
        has_running_stats=tracking,
        train_eval_differ=tracking,
        per_sample=not nonlinear,
        running_step=ref.running_step_ref,
        state_keys=_state_keys(kwargs, tracking),
    )


def _s0(
    variant: str = "", num_features: int = 6, requested_groups: int = 32, **kwargs: Any
) -> Case:
    def reference(m: Any, x: Tensor) -> Tensor:
        return ref.evo_norm_s0_ref(
            x, m.v, m.weight, m.bias, num_groups=requested_groups, eps=m.eps,
            channel_dim=m.channel_dim,
        )

    def functional(m: Any, x: Tensor) -> Tensor:
        return NF.evo_norm_s0(
            x, requested_groups, m.weight, m.bias, m.v, nonlinearity=m.nonlinearity,
            eps=m.eps, channel_dim=m.channel_dim,
        )

    wide = num_features != 6
    return Case(
        name="evo_norm_s0",
        variant=variant,
        kwargs=kwargs,
        reference=reference,
        functional=functional,
        num_features=num_features,
        shapes=((2, num_features, 3), (2, num_features, 2, 2), (2, num_features, 2, 1, 2))
        if wide else ((4, 6), *_SPATIAL),
        grad_shape=(2, num_features, 2) if wide else (3, 6, 4),
        state_keys=_state_keys(kwargs, running=False),
    )


CASES: tuple[Case, ...] = (
    _b0(),
    _b0("affine_false", affine=False),
    _b0("no_tracking", track_running_stats=False),
    _b0("eps", eps=1e-3),
    _b0("affine_only", nonlinearity=False),
    _s0(),  # C = 6: the default G = 32 is decremented to 6
    _s0("groups_3", requested_groups=3, num_groups=3),
    _s0("groups_4_decremented", requested_groups=4, num_groups=4),  # G = 3
    _s0("group_size_2", requested_groups=3, group_size=2),
    _s0("affine_false", requested_groups=2, num_groups=2, affine=False),
    _s0("affine_only", nonlinearity=False),
    _s0("c40_default_groups", num_features=40),  # G = 32 → 20
)
