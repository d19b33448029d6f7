"""Catalogue cases of Streaming Normalization (collected by catalogue.py).

Its buffers follow the method's own law (oracles_streaming.streaming_step_ref: the long-term
EMA of every step, the window's equal-weight average), run by test_state at momenta 0.1, 1
and None. Momentum 0 is left out: the short-term statistics move whatever
the momentum, so "nothing moves at momentum 0" does not apply. Training output depends on the
batch (per_sample=False); eval on the last training input reproduces its output exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_streaming as ref
from catalogue import Case

_BUFFERS = (
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "short_mean",
    "short_var",
    "short_steps",
)


def _state(m: Any) -> dict[str, Tensor]:
    return {k: getattr(m, k).detach().clone() for k in _BUFFERS}  # the forward writes them


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.streaming_norm_ref(
        x,
        m.weight,
        m.bias,
        _state(m),
        training=m.training,
        alpha=m.alpha,
        window=m.window,
        momentum=m.momentum,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.streaming_norm(
        x,
        m.running_mean,
        m.running_var,
        m.short_mean,
        m.short_var,
        m.short_steps,
        m.num_batches_tracked,
        m.weight,
        m.bias,
        training=m.training,
        alpha=m.alpha,
        momentum=m.momentum,
        window=m.window,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _streaming(variant: str = "", **kwargs: Any) -> Case:
    alpha, window = kwargs.get("alpha", 0.5), kwargs["window"]

    def step(state: Mapping[str, Tensor], x: Tensor, momentum: Any) -> dict[str, Tensor]:
        return ref.streaming_step_ref(dict(state), x, alpha=alpha, window=window, momentum=momentum)

    affine = kwargs.get("affine", True)
    return Case(
        name="streaming_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        has_running_stats=True,
        train_eval_differ=False,  # eval on the last input reproduces training (the point)
        per_sample=False,
        running_step=step,
        momenta=(0.1, 1.0, None),
        state_keys=frozenset(_BUFFERS) | ({"weight", "bias"} if affine else set()),
    )


# The contract battery gradchecks training mode through the module, whose every forward moves
# its buffers: the cases therefore use window=1 (the short term is the batch alone, whatever
# came before) and a tiny momentum (the long term moves by 1e-12 per forward, as Batch Renorm's
# cases do); test_state still runs the law at momenta 0.1, 1 and None. Windows of several
# steps are replayed against the oracle in test_streaming_norm.py.
_STILL = {"window": 1, "momentum": 1e-12}

CASES: tuple[Case, ...] = (
    _streaming(**_STILL),
    _streaming("alpha_0_9", alpha=0.9, **_STILL),
    _streaming("affine_false", affine=False, **_STILL),
    _streaming("short_only", alpha=0.0, **_STILL),
)
