"""Catalogue cases of Batch Renormalization (collected by catalogue.py).

The contract tests gradcheck every case in training mode. Batch Renorm's r and d are
stop-gradient functions of the batch, so its analytic gradient differs from the numerical one
wherever r or d is inside its clip range: gradcheck holds only where r and d are locally
constant. The cases therefore either run the paper's warm-up (r = 1, d = 0: BN) or clip with
limits so tight that every channel of the test data saturates (r = r_max^±1, d = ±d_max, still
different from BN), with a small momentum so that the thousands of forwards of gradgradcheck
cannot pull the moving statistics inside the limits. test_batch_renorm.py checks that the
saturation holds, and covers unsaturated clipping (the stop-gradient) against the float64 oracle.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_batch_renorm as ref
from catalogue import Case

# clipping active from step 0: the schedule switched off
NO_SCHEDULE = {"warmup_steps": 0, "rmax_ramp_end": 0, "dmax_ramp_end": 0}
# limits every channel of the contract tests' data saturates
SATURATED = {"rmax": 1.01, "dmax": 0.01, "momentum": 1e-4}


def _reference(m: Any, x: Tensor) -> Tensor:
    rmax, dmax = ref.module_limits_ref(m)
    return ref.batch_renorm_ref(
        x, m.weight, m.bias, m.running_mean, m.running_var, training=m.training, rmax=rmax,
        dmax=dmax, eps=m.eps, channel_dim=m.channel_dim,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    rmax, dmax = m.clip_limits()
    return NF.batch_renorm(
        x, m.running_mean, m.running_var, m.weight, m.bias, training=m.training, rmax=rmax,
        dmax=dmax, eps=m.eps, channel_dim=m.channel_dim,
    )


def _brn(variant: str = "", **kwargs: Any) -> Case:
    return Case(
        name="batch_renorm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        has_running_stats=True,
        train_eval_differ=True,
        per_sample=False,
        running_step=functools.partial(ref.running_step_ref, eps=kwargs.get("eps", 1e-5)),
        momenta=(0.0, 0.01, 0.5, 1.0, None),
    )


CASES: tuple[Case, ...] = (
    _brn(),  # the paper's schedule: the tests run inside its warm-up, where BRN is BN
    _brn("clipped", **NO_SCHEDULE, **SATURATED),
    _brn("clipped_affine_false", **NO_SCHEDULE, **SATURATED, affine=False),
    _brn("clipped_eps", **NO_SCHEDULE, **SATURATED, eps=1e-3),
)
