"""Raw per-(sample, channel) kernels that the mixed-statistics methods are built from.

Switchable Norm, Batch-Instance Norm, Virtual BN and EvoNorm-B0 all start from the moments of
each (n, c) slice over the positions *S, merge them on the tiny (N, C) tensors, and end with
one affine pass y = x·A[n, c] + B[n, c]. The three steps map onto native ATen kernels:

* moments: ``native_group_norm`` with one group per channel returns the mean and 1/σ of every
  (n, c) slice, and x̂, which the affine step can overwrite in place;
* affine: the inference batch-norm kernel on the (1, N·C, |S|) view, with mean 0, variance 1 and
  ε = 0, computes exactly x·A + B (about 4x faster than a broadcasting ``addcmul``);
* sums for the backward pass: ``native_group_norm_backward`` with mean 0 and 1/σ = 1 returns
  Σ_S dy·x and Σ_S dy for every slice in one fused read.

None of these functions records autograd history; `normlab.norms._instance_affine` adds it.
Inputs are channels-first, contiguous (N, C, *S) tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normlab.core.moments import accumulation_dtype
from normlab.norms._base import channel_scale_shift


def _slices(x: Tensor) -> tuple[int, int]:
    """(N·C, |S|): the number of (n, c) slices and the positions in each."""
    n, c = x.shape[:2]
    return n * c, x.numel() // max(n * c, 1)


def _group_norm_per_slice(x: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """ATen's group norm with one group per channel: x̂, and mean and 1/σ of shape (N, C)."""
    n, c = x.shape[:2]
    acc = accumulation_dtype(x.dtype)
    weight = None if acc == x.dtype else torch.ones(c, dtype=acc, device=x.device)
    bias = None if weight is None else torch.zeros_like(weight)
    x_hat, mean, rstd = torch.ops.aten.native_group_norm(
        x.detach(), weight, bias, n, c, _slices(x)[1], c, eps
    )
    return x_hat, mean.view(n, c), rstd.view(n, c)


def instance_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over *S of every (n, c) slice, each of shape (N, C).

    Two-pass accuracy (the kernel's contiguous path) and float32 statistics for fp16/bf16 input.
    σ² is recovered as (1/σ)⁻² from a kernel run with ε = 0: a constant slice gives 1/σ = inf and
    σ² = 0 exactly; otherwise the round trip costs about two ulps of relative error.
    """
    _, mean, rstd = _group_norm_per_slice(x, 0.0)
    return mean, rstd.pow(-2)


def normalize_instances(x: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x̂ = (x − μ)/sqrt(σ² + ε) per (n, c) slice, with μ, σ² and 1/sqrt(σ² + ε).

    Returns (x̂, mean, var, rstd). The methods built on `instance_affine` turn x̂ into their
    output in place (y = x̂·A/r + (B + A·μ) = x·A + B), which saves the fresh full-size buffer
    whose page faults cost more than a kernel on small CPUs. σ² = r⁻² − ε (clamped at 0) is exact
    to about ulp(σ² + ε), which is all that the methods' σ² + ε needs. ``eps`` must be > 0 (it
    keeps x̂ finite on constant slices); use the method's own ε.
    """
    x_hat, mean, rstd = _group_norm_per_slice(x, eps)
    return x_hat, mean, (rstd.pow(-2) - eps).clamp_min_(0.0), rstd


def channel_affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """x·scale[n, c] + shift[n, c] in one pass; ``scale`` and ``shift`` have shape (N, C).

    The result has x's dtype; scale and shift may be float32 for fp16/bf16 input.
    """
    slices, positions = _slices(x)
    flat = x.detach().reshape(1, slices, positions)  # each (n, c) slice a channel
    return channel_scale_shift(flat, scale.reshape(slices), shift.reshape(slices)).view(x.shape)


def instance_sums(grad: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ_S grad, Σ_S grad·x) for every (n, c) slice, each of shape (N, C), in float32 or wider."""
    n, c = x.shape[:2]
    slices, positions = _slices(x)
    acc = accumulation_dtype(x.dtype)
    zero = torch.zeros(1, slices, dtype=acc, device=x.device)
    one = torch.ones(1, slices, dtype=acc, device=x.device)
    _, sum_grad_x, sum_grad = torch.ops.aten.native_group_norm_backward(
        grad.reshape(1, slices, positions).contiguous(),
        x.reshape(1, slices, positions),
        zero,
        one,
        torch.ones(slices, dtype=acc, device=x.device),
        1,
        slices,
        positions,
        slices,
        [False, True, True],
    )
    return sum_grad.view(n, c), sum_grad_x.view(n, c)
