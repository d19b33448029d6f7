"""The only code in normlab that writes running statistics.

Convention (PyTorch's): with momentum m, the weight of the *new* batch,

$$ \\hat μ ← (1 - m)\\,\\hat μ + m\\,μ_B, \\qquad
   \\hat σ^2 ← (1 - m)\\,\\hat σ^2 + m\\,σ^2_B \\frac{n}{n - 1}, $$

where σ²_B is the biased batch variance used to normalize and n the number of values per
statistic: layers normalize with the biased variance and store the unbiased one. With
``momentum=None`` the factor is 1/t at step t (``num_batches_tracked`` after the increment), an
equal-weight cumulative average of the batch statistics. TF/Keras' decay d is m = 1 − d.

A batch whose statistics are not finite leaves every buffer, ``num_batches_tracked`` included,
unchanged: one overflowing batch must not poison the statistics of a whole training run. The
update is branch-free (``torch.where``), so it neither synchronizes with the GPU nor breaks a
``torch.compile`` graph.

This module owns the guard, the counter and the factor (m, or 1/t for ``momentum=None``); a
method supplies only its *update law*. Most methods move each buffer toward a batch value
(`update_running_ema_`; `update_running_stats_` for a `Moments`); a method with another law
(Batch Renorm's law on σ, Ghost BN's closed form over its ghost batches) passes it to
`update_running_` as a function of the factor.

Cost matters: a BatchNorm training step runs this once per call. The guard is one reduction
(Σ 0·s is 0 when every s is finite and NaN otherwise, and never overflows), the counter one
in-place add, and the EMA one ``torch.where`` per buffer plus one fused ``_foreach_lerp_``; no
dtype conversion runs unless the dtypes differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from normlab.core.moments import Moments

Factor = float | Tensor
Law = Callable[[Factor], Sequence[Tensor]]


def all_finite(*tensors: Tensor) -> Tensor:
    """A 0-dim bool tensor: every element of every tensor is finite (no sync, no overflow)."""
    total = tensors[0].mul(0).sum()
    for t in tensors[1:]:
        total = total + t.mul(0).sum()
    return total == 0


def _step(num_batches_tracked: Tensor | None, momentum: float | None, finite: Tensor,
          dtype: torch.dtype) -> Factor:
    """Count the batch (when finite) and return the weight of the new batch."""
    if num_batches_tracked is not None:
        num_batches_tracked.add_(finite)
    if momentum is not None:
        return momentum
    if num_batches_tracked is None:
        raise ValueError("momentum=None (cumulative average) needs num_batches_tracked.")
    return num_batches_tracked.clamp(min=1).to(dtype).reciprocal_()


@torch.no_grad()
def update_running_ema_(
    buffers: Sequence[Tensor],
    targets: Sequence[Tensor],
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    *,
    finite: Tensor | None = None,
) -> None:
    """``buffer ← (1 − f)·buffer + f·target`` for each pair, in place, f = momentum or 1/t.

    ``finite`` (a 0-dim bool tensor) may be given when the caller has it cheaper than
    `all_finite` of the targets; otherwise it is computed from them.
    """
    # no torch.no_grad() here (entering it costs more than the update): a target that
    # carries autograd history is detached instead, so no buffer ever joins a graph
    targets = [t.detach() if t.requires_grad else t for t in targets]
    if finite is None:
        finite = all_finite(*targets)
    factor = _step(num_batches_tracked, momentum, finite, buffers[0].dtype)
    ends = [
        torch.where(finite, t if t.dtype == b.dtype else t.to(b.dtype), b)
        for b, t in zip(buffers, targets, strict=True)
    ]
    # a rejected batch lerps each buffer toward itself: b + f·(b − b) is b exactly
    torch._foreach_lerp_(list(buffers), ends, factor)


@torch.no_grad()
def update_running_(
    buffers: Sequence[Tensor],
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    law: Law,
    *,
    watch: Sequence[Tensor],
) -> None:
    """``buffers ← law(f)``, in place, when every tensor in ``watch`` is finite.

    ``law`` receives the weight f of the new batch (momentum, or 1/t as a 0-dim tensor with
    ``momentum=None``) and returns the new value of each buffer; it must not write them.
    """
    finite = all_finite(*watch)
    factor = _step(num_batches_tracked, momentum, finite, buffers[0].dtype)
    for b, new in zip(buffers, law(factor), strict=True):
        b.copy_(torch.where(finite, new, b))


def update_running_stats_(
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor | None,
    batch: Moments,
    momentum: float | None,
) -> None:
    """Fold one batch's moments into the running buffers, in place (mean and unbiased var)."""
    update_running_ema_(
        (running_mean, running_var), (batch.mean, batch.unbiased_var), num_batches_tracked,
        momentum, finite=all_finite(batch.mean, batch.var),
    )
