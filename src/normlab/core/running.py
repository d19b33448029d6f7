"""The only code in normlab that writes running statistics.

Convention (PyTorch's): with momentum m, the weight of the *new* batch,

$$ \\hat μ ← (1 - m)\\,\\hat μ + m\\,μ_B, \\qquad
   \\hat σ^2 ← (1 - m)\\,\\hat σ^2 + m\\,σ^2_B \\frac{n}{n - 1}, $$

where σ²_B is the biased batch variance used to normalize and n the number of values per
statistic: layers normalize with the biased variance and store the unbiased one. With
``momentum=None`` the factor is 1/t at step t (``num_batches_tracked`` after the increment), an
equal-weight cumulative average of the batch statistics. TF/Keras' decay d is m = 1 − d.

A batch whose statistics are not finite leaves every buffer, ``num_batches_tracked`` included,
unchanged: one overflowing batch must not poison the statistics of a whole training run. On an
accelerator, or while ``torch.compile`` traces, the update is branch-free (``torch.where``), so
it neither synchronizes with the device nor breaks a graph. In eager mode on the CPU a Python
branch costs nothing (reading a CPU scalar is a memory load, not a device synchronization) and
skips the ``where`` passes: the guard there is one sum, Σ s, read back as a float (finite
unless some s is not finite or the sum overflows; only then is ``isfinite`` run); a short
1-D tensor is summed in Python from ``tolist`` (no ATen call). Not a BLAS dot product: its
thread pool costs about 50 µs a call beside ATen's.

This module owns the guard, the counter and the factor (m, or 1/t for ``momentum=None``); a
method supplies only its *update law*. Most methods move each buffer toward a batch value
(`update_running_ema_`; `update_running_stats_` for a `Moments`); a method with another law
(Batch Renorm's law on σ, Ghost BN's closed form over its ghost batches) passes it to
`update_running_` as a function of the factor.

Cost matters: BatchNorm runs this once per training call. No dtype conversion runs unless the
dtypes differ, and the EMA of all buffers is one fused ``_foreach_lerp_``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

from normlab.core.moments import Moments

Factor = float | Tensor
Law = Callable[[Factor], Sequence[Tensor]]
T = TypeVar("T")


def all_finite(*tensors: Tensor) -> Tensor:
    """A 0-dim bool tensor: every element of every tensor is finite (no sync, no overflow:
    Σ 0·t is 0 when every t is finite and NaN otherwise)."""
    total = tensors[0].mul(0).sum()
    for t in tensors[1:]:
        total = total + t.mul(0).sum()
    return total == 0


def _eager_cpu(t: Tensor) -> bool:
    return t.is_cpu and not torch.compiler.is_compiling()


# Up to this many values a 1-D tensor is summed in Python (``tolist``, no ATen reduction):
# measured in a BatchNorm step on (2, 64, 4, 4), 1 thread, about 10 % of the step faster than
# ``sum().item()``; ``tolist`` costs about 17 ns a value, so large tensors take the reduction.
PYTHON_SUM_MAX = 256


def _finite_now(tensors: Sequence[Tensor]) -> bool:
    """Every element finite, read on the CPU (see the module docstring)."""
    for t in tensors:
        # Σ s is not finite when some s is not, or when it overflows: then check exactly
        # (a Python float sum of float32 values cannot overflow)
        small = t.dim() == 1 and t.numel() <= PYTHON_SUM_MAX
        total = sum(t.tolist()) if small else t.sum().item()
        if not math.isfinite(total) and not bool(torch.isfinite(t).all()):
            return False
    return True


def _counter(num_batches_tracked: Tensor | None) -> Tensor:
    """The counter that ``momentum=None`` (weight 1/t) needs."""
    if num_batches_tracked is None:
        raise ValueError("momentum=None (cumulative average) needs num_batches_tracked.")
    return num_batches_tracked


def _step(num_batches_tracked: Tensor | None, momentum: float | None, finite: Tensor,
          dtype: torch.dtype) -> Factor:
    """Count the batch (when finite) and return the weight of the new batch."""
    if num_batches_tracked is not None:
        num_batches_tracked.add_(finite)
    if momentum is not None:
        return momentum
    return _counter(num_batches_tracked).clamp(min=1).to(dtype).reciprocal_()


def _factor_now(num_batches_tracked: Tensor | None, momentum: float | None, t: int = 0) -> float:
    """On the CPU: the weight of the new batch as a Python float, momentum or 1/t with t the
    counter plus ``t`` (1 before the batch is counted, 0 after)."""
    if momentum is not None:
        return momentum
    return 1.0 / max(int(_counter(num_batches_tracked)) + t, 1)


def _step_now(num_batches_tracked: Tensor | None, momentum: float | None) -> float:
    """`_step` for a batch known to be finite, on the CPU: the factor as a Python float."""
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    return _factor_now(num_batches_tracked, momentum)


def recomputing() -> bool:
    """True while a forward runs inside a backward pass: ``torch.utils.checkpoint`` (reentrant
    or not) recomputing a checkpointed segment. That forward already ran and already updated
    the running statistics; updating them again would count the batch twice (pytorch#96136).
    """
    # a captured graph replays its update; checkpoint it outside the capture. (Asked of torch,
    # not of `compiling`: the eager compositions `eager_composition` times are no capture.)
    if torch.compiler.is_compiling():
        return False
    return torch._C._current_graph_task_id() != -1


def update_running_ema_(
    buffers: Sequence[Tensor],
    targets: Sequence[Tensor],
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    *,
    watch: Tensor | None = None,
) -> None:
    """``buffer ← (1 − f)·buffer + f·target`` for each pair, in place, f = momentum or 1/t.

    ``watch``: one tensor whose finiteness decides for the batch, when the caller holds one
    cheaper to check than all the targets (BatchNorm: the targets are its two rows).
    """
    if recomputing():
        return
    # no torch.no_grad() here (entering it costs more than the update): a target that
    # carries autograd history is detached instead, so no buffer ever joins a graph
    targets = [t.detach() if t.requires_grad else t for t in targets]
    watched = targets if watch is None else [watch]
    targets = [t if t.dtype == b.dtype else t.to(b.dtype) for b, t in zip(buffers, targets,
                                                                          strict=True)]
    if _eager_cpu(buffers[0]):
        if _finite_now(watched):
            torch._foreach_lerp_(list(buffers), targets, _step_now(num_batches_tracked, momentum))
        return
    finite = all_finite(*watched)
    factor = _step(num_batches_tracked, momentum, finite, buffers[0].dtype)
    # a rejected batch lerps each buffer toward itself: b + f·(b − b) is b exactly
    ends = [torch.where(finite, t, b) for b, t in zip(buffers, targets, strict=True)]
    torch._foreach_lerp_(list(buffers), ends, factor)


def native_ema_eligible(buffers: Sequence[Tensor]) -> bool:
    """`update_by_kernel_` applies: eager mode on the CPU (it reads a scalar back)."""
    return _eager_cpu(buffers[0])


def update_by_kernel_(
    buffers: Sequence[Tensor],
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    kernel: Callable[[float], T],
    *,
    watch: int = -1,
) -> T:
    """Let a native kernel apply PyTorch's EMA law to ``buffers`` in place, under this module's
    guard, counter and factor: ``kernel(f)`` runs it with weight f and returns its output.

    The buffers are copied first (one small ``cat``) and put back when ``buffers[watch]`` comes
    out non-finite: BN's variance is non-finite whenever any batch statistic is (a non-finite
    mean makes every (x − μ)² non-finite), and the EMA of finite values stays finite. Only for
    the CPU in eager mode (`native_ema_eligible`): it reads one scalar back. This is how a
    BatchNorm training call costs a few small ATen calls beyond torch.nn's own (23 against 20).
    """
    backup = torch.cat(tuple(buffers))  # one call (stack would add a view per buffer)
    if recomputing():
        try:  # checkpoint's recompute may stop inside the kernel (it raises to end early)
            return kernel(_factor_now(num_batches_tracked, momentum, t=1))
        finally:
            _restore(buffers, backup)
    out = kernel(_factor_now(num_batches_tracked, momentum, t=1))
    if _finite_now((buffers[watch],)):
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
    else:
        _restore(buffers, backup)
    return out


def _restore(buffers: Sequence[Tensor], backup: Tensor) -> None:
    # through .data: the kernel's autograd node saved these buffers (it reads them only in
    # eval mode), and a version bump would fail its backward for nothing
    for b, old in zip(buffers, backup.split([b.numel() for b in buffers]), strict=True):
        b.data.copy_(old.view_as(b))


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

    ``law`` receives the weight f of the new batch (momentum, or 1/t with ``momentum=None``:
    a float on the CPU, a 0-dim tensor elsewhere) and returns the new value of each buffer;
    it must not write them.
    """
    if recomputing():
        return
    if _eager_cpu(buffers[0]):
        if _finite_now(watch):
            factor = _step_now(num_batches_tracked, momentum)
            for b, new in zip(buffers, law(factor), strict=True):
                b.copy_(new)
        return
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
        momentum,
    )
