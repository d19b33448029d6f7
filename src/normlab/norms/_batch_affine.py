"""Per-channel normalization with statistics that are a differentiable function of the batch's.

Streaming-style layers normalize a channels-first x per channel with (μ, σ²) = F(μ_B, σ²_B),
F mixing the current batch's moments over (N, *S) with constants (accumulated history):

$$ y = x\\,A_c + B_c, \\quad A = \\frac{\\gamma}{\\sqrt{\\sigma^2 + \\epsilon}}, \\quad
   B = \\beta - \\mu A. $$

Forward: the batch moments in one read (`batch_moments`, exact two-pass merge of per-(n, c)
moments), y in one BN-inference pass, written into the statistics kernel's spare x̂ buffer.
Backward: per-(n, c) Σdy and Σdy·x in one read (`Sums`), so ∂L/∂A_c = Σdy·x and
∂L/∂B_c = Σdy; F's vector-Jacobian product (``stats.vjp``, which F must carry) gives
∂L/∂μ_B, ∂L/∂σ²_B (and ∂L/∂γ, ∂L/∂β); with
∂μ_B/∂x = 1/M and ∂σ²_B/∂x = 2(x − μ_B)/M (biased σ²_B),

$$ \\frac{\\partial L}{\\partial x} = dy\\,A + x\\,P + Q, \\quad
   P = \\frac{2}{M}\\frac{\\partial L}{\\partial \\sigma^2_B}, \\quad
   Q = \\frac{1}{M}\\frac{\\partial L}{\\partial \\mu_B} - P\\,\\mu_B, $$

written as x·P + Q (one BN-inference pass) and += dy·A (``addcmul_``). Saves x and C-sized tensors;
double backward (``create_graph=True``) differentiates the eager forward
(`normlab.norms._double_backward`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from normlab.core.moments import Moments
from normlab.core.tracing import compiling
from normlab.norms._base import channel_scale_shift, dense, in_layout, normalize_by_moments
from normlab.norms._chunked import Sums, per_row
from normlab.norms._double_backward import recomputed_grads
from normlab.norms._per_instance import batch_moments_and_scratch

Optional = Tensor | None
# F: (μ_B, σ²_B) -> (μ, σ²), with a method vjp(μ_B, σ²_B, g_μ, g_σ²) -> (g_μ_B, g_σ²_B) and,
# when σ²_B does not reach its output, the attribute ``reads_var = False`` (∂x skips a pass)
Stats = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _analytic_vjp(
    stats: Any, mean_b: Tensor, var_b: Tensor, saved: tuple[Tensor, ...], weight: Optional,
    sum_dy: Tensor, sum_dyx: Tensor,
) -> tuple[Tensor, Tensor, Optional, Tensor]:
    """(∂L/∂μ_B, ∂L/∂σ²_B, ∂L/∂γ, ∂L/∂β) from the per-channel Σdy·x = ∂L/∂A and Σdy = ∂L/∂B,
    written out: with r = (σ² + ε)^(-1/2), A = γr, B = β − μA,
    ∂L/∂μ = −A Σdy, ∂L/∂σ² = −½ A r² (Σdy·x − μ Σdy), ∂L/∂γ = r (Σdy·x − μ Σdy); then
    ``stats.vjp`` takes (∂L/∂μ, ∂L/∂σ²) back to the batch moments."""
    mean, rstd, scale = saved
    centered = sum_dyx - mean * sum_dy
    g_mean = -scale * sum_dy
    g_var = -0.5 * scale * rstd.square() * centered
    g_mb, g_vb = stats.vjp(mean_b, var_b, g_mean, g_var)
    return g_mb, g_vb, None if weight is None else rstd * centered, sum_dy


class _BatchAffine(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any,
        x: Tensor,
        weight: Optional,
        bias: Optional,
        mean_b: Tensor,
        var_b: Tensor,
        stats: Stats,
        eps: float,
        scratch: list[Tensor],
    ) -> Tensor:
        mean, var = stats(mean_b, var_b)
        rstd = (var + eps).rsqrt()
        scale = rstd if weight is None else rstd * weight
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
        ctx.save_for_backward(x, weight, bias, mean_b, var_b, mean, rstd, scale)
        ctx.config = (stats, eps)
        # into the statistics pass's spare x̂ buffer when there is one (no fresh page faults)
        return channel_scale_shift(x, scale, shift, scratch.pop() if scratch else None)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Optional, ...]:  # type: ignore[override]
        x, weight, bias, mean_b, var_b, mean, rstd, scale = ctx.saved_tensors
        stats, eps = ctx.config
        wanted = ctx.needs_input_grad[:3]
        none = (None, None, None, None, None)
        if torch.is_grad_enabled():  # create_graph=True: differentiable recomputation

            def forward(x_: Tensor, w_: Optional, b_: Optional) -> Tensor:
                return eager(x_, w_, b_, stats, eps)

            return (*recomputed_grads(forward, (x, weight, bias), wanted, dy), *none)
        n, c = x.shape[:2]
        x3, dy3 = x.view(n, c, -1), dy.contiguous().view(n, c, -1)
        sum_dy, sum_dyx = (t.sum(0) for t in Sums(n * c, x.dtype, x.device)(dy3, x3))
        g_mean, g_var, g_weight, g_bias = _analytic_vjp(
            stats, mean_b, var_b, (mean, rstd, scale), weight, sum_dy, sum_dyx)
        dx = None
        if wanted[0]:
            count = x3.shape[0] * x3.shape[2]
            if getattr(stats, "reads_var", True):
                p = g_var * (2.0 / count)
                q = g_mean / count - p * mean_b
                # x·P + Q in one BN-inference pass, then += dy·A in place
                dx3 = channel_scale_shift(x3, p, q).addcmul_(dy3, per_row(scale))
            else:  # F ignores σ²_B, so P = 0: dy·A + Q in one pass
                dx3 = channel_scale_shift(dy3, scale, g_mean / count)
            dx = dx3.view(x.shape)
        return (dx, g_weight if wanted[1] else None,
                g_bias if wanted[2] and bias is not None else None, *none)


def eager(x: Tensor, weight: Optional, bias: Optional, stats: Stats, eps: float) -> Tensor:
    """The layer from differentiable eager operations (what double backward differentiates)."""
    batch = Moments.of_batch(x, (0, *range(2, x.dim())))
    mean, var = stats(batch.mean, batch.var)
    return normalize_by_moments(x, Moments(mean, var, 1), weight, bias, eps)


def applies(x: Tensor, *tensors: Optional) -> bool:
    """Whether `batch_affine` takes x (float32/float64, non-empty, every operand x's dtype)."""
    return (x.dtype in (torch.float32, torch.float64) and x.dim() >= 2 and x.numel() > 0
            and all(t is None or t.dtype == x.dtype for t in tensors))


def batch_affine(
    x: Tensor, weight: Optional, bias: Optional, stats: Stats, eps: float
) -> tuple[Tensor, Moments]:
    """(y, the batch's detached moments) of a channels-first x that `applies` takes."""
    xd, layout = dense(x)
    batch, spare = batch_moments_and_scratch(xd, eps)
    if compiling():  # graph capture differentiates the composition (normlab.core.tracing)
        return in_layout(eager(xd, weight, bias, stats, eps), layout), batch
    scratch = [] if spare is None else [spare]  # a list: autograd leaves it alone
    y = _BatchAffine.apply(xd, weight, bias, batch.mean, batch.var, stats, eps, scratch)
    return in_layout(y, layout), batch


__all__ = ["applies", "batch_affine", "eager"]
