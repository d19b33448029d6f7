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
from normlab.norms._base import channel_scale_shift, kernel_params
from normlab.norms._chunked import Sums


def _slices(x: Tensor) -> tuple[int, int]:
    """(N·C, |S|): the number of (n, c) slices and the positions in each."""
    n, c = x.shape[:2]
    return n * c, x.numel() // max(n * c, 1)


def group_statistics(x: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """ATen's group norm of a contiguous channels-first x (no autograd history; the layouts
    `normlab.norms._base.group_norm_kernel` handles are the caller's business): x̂, and mean
    and 1/sqrt(σ² + ε) of shape (N, G) — one group per channel (G = C) gives the per-(n, c)
    moments. Two-pass statistics, float32 for fp16/bf16 x. x̂ is a fresh buffer of x's shape
    and dtype that callers overwrite with their output."""
    n, c = x.shape[:2]
    weight, bias = kernel_params(x, None, None, c)
    x_hat, mean, rstd = torch.ops.aten.native_group_norm(
        x.detach(), weight, bias, n, c, x.numel() // max(n * c, 1), groups, eps
    )
    return x_hat, mean.view(n, groups), rstd.view(n, groups)


def broadcast(t: Tensor, ndim: int) -> Tensor:
    """A per-channel (C,) or per-(n, c) (N, C) tensor shaped to broadcast over (N, C, *S)."""
    if t.dim() == 1:
        return t.view(1, -1, *([1] * (ndim - 2)))
    return t.view(*t.shape, *([1] * (ndim - 2)))


def instance_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over *S of every (n, c) slice, each of shape (N, C).

    Two-pass accuracy (the kernel's contiguous path) and float32 statistics for fp16/bf16 input.
    σ² is recovered as (1/σ)⁻² from a kernel run with ε = 0: a constant slice gives 1/σ = inf and
    σ² = 0 exactly; otherwise the round trip costs about two ulps of relative error.
    """
    _, mean, rstd = group_statistics(x, x.shape[1], 0.0)
    return mean, rstd.pow(-2)


def normalize_instances(x: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x̂ = (x − μ)/sqrt(σ² + ε) per (n, c) slice, with μ, σ² and 1/sqrt(σ² + ε).

    Returns (x̂, mean, var, rstd). The methods built on `instance_affine` turn x̂ into their
    output in place (y = x̂·A/r + (B + A·μ) = x·A + B), which saves the fresh full-size buffer
    whose page faults cost more than a kernel on small CPUs. σ² = r⁻² − ε (clamped at 0) is exact
    to about ulp(σ² + ε), which is all that the methods' σ² + ε needs. ``eps`` must be > 0 (it
    keeps x̂ finite on constant slices); use the method's own ε.
    """
    x_hat, mean, rstd = group_statistics(x, x.shape[1], eps)
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
    return Sums(n * c, accumulation_dtype(x.dtype), x.device)(grad, x)
