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

None of these kernels records autograd history; `normlab.norms._instance_affine` adds it.
Inputs are channels-first, contiguous (N, C, *S) tensors. The merges live here too: over the
batch (`batch_moments`, Batch Renorm) and, differentiably, over chunks of consecutive samples on
the (N, C) tensors (`chunk_moments` and its helpers, Ghost BN's ghost batches).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.backends import cudnn

from normlab.core.moments import Moments, accumulation_dtype, merge_equal_counts
from normlab.core.tracing import eager_lru_cache
from normlab.norms._base import channel_scale_shift, kernel_params
from normlab.norms._chunked import Sums

# Up to this many elements (a (2, 64, 4, 4) map has 2048) fewer ATen calls beat fewer passes;
# at (16, 64, 8, 8) = 65536 the two-pass path was already 1.2x faster (benchmarks/bench_per_call)
SMALL_INPUT = 1 << 14


def batch_norm_with_moments(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Moments]:
    """Training-mode BN of a channels-first ``x``, and the batch moments it normalized with."""
    c = x.shape[1]
    weight, bias = kernel_params(x, weight, bias, c)
    stats_dtype = weight.dtype if weight is not None else accumulation_dtype(x.dtype)
    # Momentum 1 into fresh zeros: the kernel writes the exact batch mean and unbiased
    # variance there, and the caller's buffers are never handed to ATen (pure functional).
    # Measured with alternating order, this is also 3-20 % faster on CPU than the kernel
    # variant without running buffers (whose σ² would have to be recovered from 1/σ).
    mean = torch.zeros(c, dtype=stats_dtype, device=x.device)
    unbiased = torch.zeros(c, dtype=stats_dtype, device=x.device)
    y = torch.batch_norm(x, weight, bias, mean, unbiased, True, 1.0, eps, cudnn.enabled)
    n = x.numel() // c
    return y, Moments(mean, unbiased * ((n - 1) / n), n)



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


@eager_lru_cache(maxsize=32)  # a plain call under graph capture
def _sums_for(rows: int, acc: torch.dtype, device: torch.device) -> Sums:
    with torch.inference_mode(False), torch.no_grad():
        return Sums(rows, acc, device)


def cached_sums(rows: int, acc: torch.dtype, device: torch.device) -> Sums:
    """A `Sums` for up to ``rows`` slices whose constant operands are made once (only ever
    read): two ATen calls fewer per backward pass on small maps. Cached per power of two of
    ``rows`` (a `Sums` serves any smaller count), so varying batch sizes share an entry and
    the cache holds at most twice the largest operands."""
    return _sums_for(1 << max(rows - 1, 0).bit_length(), acc, device)


def instance_sums(grad: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ_S grad, Σ_S grad·x) for every (n, c) slice, each of shape (N, C), in float32 or wider."""
    n, c = x.shape[:2]
    return cached_sums(n * c, accumulation_dtype(x.dtype), x.device)(grad, x)


def batch_moments(x: Tensor, eps: float) -> Moments:
    """Mean and biased variance over (N, *S) of a channels-first ``x``, one per channel: the
    instance moments merged exactly over the batch, or on small input BN's statistics kernel.

    Statistics are float32 for fp16/bf16 input. Nothing here records autograd history.
    """
    return batch_moments_and_scratch(x, eps)[0]


def batch_moments_and_scratch(x: Tensor, eps: float) -> tuple[Moments, Tensor | None]:
    """`batch_moments`, and the fresh buffer of x's shape and dtype that the group-norm path
    wrote its unused x̂ into (None on the other paths): the caller may write its output there
    instead of allocating another full-size tensor."""
    with torch.no_grad():
        if x.is_contiguous() and x.numel() > SMALL_INPUT:
            scratch, mean, rstd = group_statistics(x, x.shape[1], 0.0)
            count = x.numel() // (x.shape[0] * x.shape[1])
            return Moments(mean, rstd.pow(-2), count).reduce(0), scratch
        if accumulation_dtype(x.dtype) == x.dtype:
            # BN's statistics kernel alone (no output); it returns fp16/bf16 statistics for
            # fp16/bf16 input, which therefore take the full kernel's float32 path below
            mean, var = torch.ops.aten.batch_norm_update_stats(x, None, None, 0.0)
            return Moments(mean, var, x.numel() // x.shape[1]), None
        return batch_norm_with_moments(x, None, None, eps)[1], None


# -- chunks of consecutive samples (Ghost BN's ghost batches) ---------------------------------

# A chunk plan (full, size, tail): ``full`` chunks of ``size`` samples, then one chunk of ``tail``
# samples (0: none). Chunks are consecutive slices of the batch.
Plan = tuple[int, int, int]


def chunk_sizes(plan: Plan) -> list[int]:
    """The number of samples of every chunk of ``plan``, in order."""
    full, size, tail = plan
    return [size] * full + ([tail] if tail else [])


def _chunks(t: Tensor, plan: Plan) -> list[Tensor]:
    """(N, C) per-sample values as (chunks, samples, C) blocks: the full chunks, the tail."""
    full, size, tail = plan
    main = t[: full * size].reshape(full, size, t.shape[1])  # -1 is ambiguous when full = 0
    return [main, t[full * size :][None]] if tail else [main] if full else [t[None]]


def cat_chunks(parts: list[Tensor]) -> Tensor:
    """``torch.cat`` of per-chunk parts, without a copy for a single part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def chunk_moments(mean: Tensor, var: Tensor, plan: Plan) -> tuple[Tensor, Tensor]:
    """Per-(chunk, channel) mean and biased variance from the (N, C) per-slice moments.

    Every slice has the same number of values, so a chunk's moments are the equal-count merge
    (`merge_equal_counts`) of its slices'. Differentiable; shapes (number of chunks, C).
    """
    merged = [
        merge_equal_counts(m, v, 1, keepdim=False)[:2]
        for m, v in zip(_chunks(mean, plan), _chunks(var, plan), strict=True)
    ]
    return cat_chunks([mu for mu, _ in merged]), cat_chunks([sigma2 for _, sigma2 in merged])


def chunk_sum(t: Tensor, plan: Plan) -> Tensor:
    """Sum (N, C) per-sample values over each chunk's samples: (chunks, C)."""
    return cat_chunks([block.sum(1) for block in _chunks(t, plan)])


def per_chunk_sample(t: Tensor, plan: Plan) -> Tensor:
    """Expand (chunks, C) per-chunk values to (N, C), one row per sample."""
    full, size, tail = plan
    c = t.shape[1]
    main = t[:full, None].expand(full, size, c).reshape(full * size, c)
    return cat_chunks([main, t[full:].expand(tail, c)]) if tail else main
