"""Training-mode BN of a large contiguous channels-first tensor from per-(n, c) kernels.

On the CPU torch's native batch-norm kernel reads a contiguous (N, C, *S) tensor channel by
channel across the batch, which for image-sized maps costs about twice what the per-(sample,
channel) kernels cost for the same passes (DESIGN.md section 3). So, for x of shape (N, C, *S)
with M = N·|S| values per channel:

* moments: ``native_group_norm`` with one group per channel gives the two-pass mean μ_nc and
  1/σ_nc of every (n, c) slice (ε = 0, so σ²_nc = (1/σ_nc)⁻²), merged exactly over the batch
  (equal counts, `normlab.core.moments.merge_equal_counts`):
  $$ μ_c = \\frac{1}{N}\\sum_n μ_{nc},\\quad
     σ^2_c = \\frac{1}{N}\\sum_n \\left(σ^2_{nc} + (μ_{nc} − μ_c)^2\\right); $$
* output: one affine pass y = x·A_c + B_c with A = γ/sqrt(σ² + ε), B = β − μA, written into the
  group-norm kernel's spare x̂ buffer (no fresh full-size buffer);
* backward: Σdy and Σdy·x per (n, c) slice in one fused read (`normlab.norms._chunked.Sums`),
  summed over n; with Σdy·x̂ = r(Σdy·x − μΣdy), r = 1/sqrt(σ² + ε),
  $$ \\frac{\\partial L}{\\partial x} = A\\,dy + P\\,x + Q,\\quad
     P = −\\frac{A\\,r}{M}\\sum dy\\,\\hat x,\\quad Q = −\\frac{A}{M}\\sum dy − Pμ, $$
  ∂L/∂γ = Σdy·x̂, ∂L/∂β = Σdy: one BN-inference pass for x·P + Q and one ``addcmul_``.

Saves x and per-channel vectors only. Double backward (``create_graph=True``) differentiates
the eager composition (`normlab.norms._double_backward`). Rounding: the moments are two-pass;
the forward is a fold x·A + B, as torch's kernel's is; the backward's Σdy·x − μΣdy is not
centered, so its error grows like u·|μ|/σ (measured (32, 64, 16, 16) fp32, |μ|/σ = 1e4: input
gradient error 6e-5 of its largest entry, against torch's 8e-6; at |μ|/σ ≤ 1: equal).

Where it pays (measured on the project's 2-core CPU, 1 thread, process time, fp32 forward +
backward, ratio to ``torch.nn.BatchNorm2d``): (32, 64, 32, 32) 0.54x, (32, 64, 16, 16) and
(32, 256, 8, 8) 0.6x, but (16, 64, 8, 8) 1.9x and (32, 64, 8, 8) 1.1x: about 25 small ATen calls
and an autograd Function cost a fixed ~0.25 ms that only large tensors amortize; see
`MIN_ELEMENTS` (2^19).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from normlab.core.moments import Moments, merge_equal_counts
from normlab.core.tracing import compiling
from normlab.norms._base import channel_scale_shift
from normlab.norms._batch_affine import eager
from normlab.norms._chunked import Sums
from normlab.norms._double_backward import recomputed_grads

Optional = Tensor | None

# Crossover against torch's kernel (benchmarks/bench_batch_norm_composed.py, results in
# benchmarks/results/issue14_batch_norm.md; 1 thread, process time): the composition's fixed
# cost is about 0.25 ms, its per-element cost about half the kernel's on NCHW. At 2^17 elements
# it loses (1.1-2.2x the kernel's time), at 2^18 the two are even within noise (0.7-1.25x over
# runs and shapes), from 2^19 on it wins ((32, 64, 16, 16): 0.6x, (32, 64, 32, 32): 0.55-0.65x).
# The total size, not the elements per channel, decides: it is what amortizes the fixed cost.
MIN_ELEMENTS = 1 << 19
# Per-slice overhead of the group-norm kernels dominates short slices ((N, C) input: |S| = 1).
MIN_POSITIONS = 32


def applies(x: Tensor, weight: Optional, bias: Optional) -> bool:
    """Whether `batch_norm_composed` takes a channels-first ``x``: eager CPU, contiguous,
    float32 / float64 with weight and bias of x's dtype, at least `MIN_ELEMENTS` elements and
    `MIN_POSITIONS` positions per (sample, channel) slice."""
    return (  # the size first: small input, where each call's overhead counts, stops there
        x.numel() >= MIN_ELEMENTS and x.dim() >= 3
        and x.is_cpu and x.dtype in (torch.float32, torch.float64) and x.is_contiguous()
        and x.numel() // (x.shape[0] * x.shape[1]) >= MIN_POSITIONS
        and (weight is None or weight.dtype == x.dtype)
        and (bias is None or bias.dtype == x.dtype)
        and not compiling()
    )


def _identity(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    return mean, var


class _ComposedBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any, x: Tensor, weight: Optional, bias: Optional, mean: Tensor, var: Tensor,
        eps: float, scratch: list[Tensor],
    ) -> Tensor:
        rstd = (var + eps).rsqrt()
        scale = rstd if weight is None else rstd * weight
        shift = -mean * scale if bias is None else torch.addcmul(bias, mean, scale, value=-1)
        ctx.save_for_backward(x, weight, bias, mean, rstd, scale)
        ctx.eps = eps
        # into the group-norm kernel's spare x̂ buffer (handed over in a list: a tensor argument
        # returned as the output would be a view of an input to autograd, and an in-place op
        # on y, such as ReLU(inplace=True), would then be refused)
        return channel_scale_shift(x, scale, shift, scratch.pop())

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Optional, ...]:  # type: ignore[override]
        x, weight, bias, mean, rstd, scale = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: differentiable recomputation
            eps = ctx.eps

            def forward(x_: Tensor, w_: Optional, b_: Optional) -> Tensor:
                return eager(x_, w_, b_, _identity, eps)

            return (*recomputed_grads(forward, (x, weight, bias), wanted, dy), None, None,
                    None, None)
        n, c = x.shape[:2]
        x3, dy3 = x.view(n, c, -1), dy.contiguous().view(n, c, -1)
        sum_dy, sum_dyx = (t.sum(0) for t in Sums(n * c, x.dtype, x.device)(dy3, x3))
        sum_dyxhat = torch.addcmul(sum_dyx, mean, sum_dy, value=-1).mul_(rstd)
        dx = None
        if wanted[0]:
            inv = -1.0 / (n * x3.shape[2])
            p = scale * rstd * sum_dyxhat * inv
            q = torch.addcmul(scale * sum_dy * inv, p, mean, value=-1)
            dx = channel_scale_shift(x3, p, q).addcmul_(dy3, scale.view(1, -1, 1)).view(x.shape)
        return (dx, sum_dyxhat if wanted[1] else None, sum_dy if wanted[2] else None,
                None, None, None, None)


def batch_norm_composed(
    x: Tensor, weight: Optional, bias: Optional, eps: float
) -> tuple[Tensor, Moments] | None:
    """(y, the batch's detached moments) of a channels-first ``x`` that `applies` takes, or
    None when the batch moments are not finite (non-finite input, or a per-slice variance
    that overflows float32): the caller then runs torch's kernel, which accumulates in
    float64 and owns the non-finite-batch rule of the running statistics."""
    n, c = x.shape[:2]
    with torch.no_grad():
        spare, mean_nc, rstd_nc = torch.ops.aten.native_group_norm(
            x.detach(), None, None, n, c, x.numel() // (n * c), c, 0.0)
        mean, var, _ = merge_equal_counts(
            mean_nc.view(n, c), rstd_nc.view(n, c).pow(-2), 0, keepdim=False)
    if not math.isfinite(float(var.sum())):  # one C-sized read back (CPU only: no sync)
        return None
    y = _ComposedBatchNorm.apply(x, weight, bias, mean, var, eps, [spare])
    return y, Moments(mean, var, x.numel() // c)


__all__ = ["MIN_ELEMENTS", "MIN_POSITIONS", "applies", "batch_norm_composed"]
