"""Autograd for methods whose output is a per-(sample, channel) affine map of the input.

Switchable Norm, Batch-Instance Norm and Virtual BN all compute

    y[n, c, s] = x[n, c, s] · A[n, c] + B[n, c],   (A, B) = f(μ, σ², θ)

where μ[n, c], σ²[n, c] are the mean and biased variance of the slice x[n, c, :] over the
positions *S and θ are small tensors (parameters, running or reference statistics). The method
only writes f, a few operations on (N, C) tensors. Given dy, the chain rule through the moments
(∂μ/∂x = 1/|S|, ∂σ²/∂x = 2(x − μ)/|S|) gives

    ∂L/∂A = Σ_S dy·x,   ∂L/∂B = Σ_S dy,   (g_μ, g_σ², g_θ) = VJP of f at (∂L/∂A, ∂L/∂B),
    dx = dy·A + x·P + Q,   P = 2·g_σ²/|S|,   Q = (g_μ − 2·g_σ²·μ)/|S|.

So the backward pass reads x and dy once for the two sums, back-propagates through f on the tiny
tensors, and writes dx in two affine passes. Only x and the (N, C) statistics are saved. For
double backward (``create_graph=True``) the forward is recomputed from differentiable operations
and autograd differentiates that.

The forward pass writes y into the x̂ that `normalize_instances` returned with the moments:
y = x̂·(A/r) + (B + A·μ), in place. A coefficient function may carry its own vector-Jacobian
product as a ``vjp(mean, var, params, g_scale, g_shift)`` method returning (A, [g_μ, g_σ², g_θ…]);
otherwise autograd differentiates it (the Python cost of autograd through a few dozen tiny
operations is measurable next to the data passes on a small CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from normlab.core.moments import Moments, accumulation_dtype, merge_equal_counts
from normlab.core.tracing import compiling
from normlab.norms._analytic_coefficients import AnalyticCoefficients
from normlab.norms._base import dense, from_channels_first, in_layout, to_channels_first
from normlab.norms._double_backward import recomputed_grads
from normlab.norms._per_instance import (
    SMALL_INPUT,
    broadcast,
    channel_affine,
    instance_moments,
    instance_sums,
    normalize_instances,
)

# (mean, var, *params) -> (A, B), all of shape (N, C) (or broadcastable to it)
Coefficients = Callable[..., tuple[Tensor, Tensor]]


def _full(t: Tensor, like: Tensor) -> Tensor:
    return t.expand_as(like).contiguous() if t.shape != like.shape else t


class _Normalized:
    """x̂ and 1/σ from `normalize_instances`, handed to the Function as an opaque argument (x̂ is
    scratch memory that becomes the output)."""

    def __init__(self, x_hat: Tensor, rstd: Tensor) -> None:
        self.x_hat, self.rstd = x_hat, rstd


class _InstanceAffine(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        coefficients: Coefficients,
        normalized: _Normalized | None,
        mean: Tensor,
        var: Tensor,
        *params: Tensor,
    ) -> Tensor:
        scale, shift = coefficients(mean, var, *params)
        scale, shift = _full(scale, mean), _full(shift, mean)
        ctx.coefficients = coefficients
        ctx.save_for_backward(x, mean, var, *params)
        if normalized is None:
            return channel_affine(x, scale, shift)
        n, c = mean.shape
        view = (n, c) + (1,) * (x.dim() - 2)
        y = normalized.x_hat.mul_((scale / normalized.rstd).view(view))
        return y.add_(torch.addcmul(shift, scale, mean).view(view))

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, mean, var, *params = ctx.saved_tensors
        wanted = [ctx.needs_input_grad[5 + i] for i in range(len(params))]
        if torch.is_grad_enabled():
            grads = recomputed_affine_grads(ctx.coefficients, x, params, wanted, dy)
        else:
            grads = _analytic_grads(ctx.coefficients, x, mean, var, params, wanted, dy)
        dx, *param_grads = grads
        return (dx if ctx.needs_input_grad[0] else None, None, None, None, None, *param_grads)


def _analytic_grads(
    coefficients: Coefficients,
    x: Tensor,
    mean: Tensor,
    var: Tensor,
    params: list[Tensor],
    wanted: list[bool],
    dy: Tensor,
) -> list[Tensor | None]:
    # one contiguous copy for both reads: a channels_last output hands back a channels_last dy,
    # which the sums would copy anyway and the strided addcmul_ below read 5x slower (2.8 ms
    # vs ~0.5 ms at (32, 64, 32, 32) fp32, 1 thread)
    dy = dy.contiguous()
    sum_dy, sum_dy_x = instance_sums(dy, x)
    vjp = getattr(coefficients, "vjp", None)
    if vjp is not None:
        scale, found = vjp(mean, var, tuple(params), sum_dy_x, sum_dy)
        found = [g if w else None for g, w in zip(found, [True, True, *wanted], strict=True)]
    else:
        scale, found = _autograd_vjp(coefficients, mean, var, params, wanted, sum_dy_x, sum_dy)
    scale = _full(scale.detach(), mean)
    g_mean = torch.zeros_like(mean) if found[0] is None else found[0]
    g_var = torch.zeros_like(var) if found[1] is None else found[1]
    n, c = mean.shape
    dx = moments_grad(x, mean, g_mean, g_var, x.numel() // max(mean.numel(), 1))
    # in place: a second full-size temporary costs more in page faults than the slower kernel
    dx.view(n, c, -1).addcmul_(dy.reshape(n, c, -1), scale.reshape(n, c, 1))
    return [dx, *found[2:]]


def moments_grad(x: Tensor, mean: Tensor, g_mean: Tensor, g_var: Tensor, count: int) -> Tensor:
    """dx = x·P + Q for cotangents (g_μ, g_σ²) of the mean μ and biased variance σ² of
    ``count`` values each, one per (n, c) slice or (shape (C,)) per channel: ∂μ/∂x = 1/count,
    ∂σ²/∂x = 2(x − μ)/count, so P = 2·g_σ²/count and Q = (g_μ − count·P·μ)/count.

    Small input of the statistics' dtype (≤ `SMALL_INPUT` elements) takes one broadcasting
    ``addcmul``: the per-element speed of the batch-norm kernel does not pay for its extra ATen
    calls there."""
    p = g_var * (2.0 / count)
    q = torch.addcmul(g_mean, p, mean, value=-count).div_(count)
    if x.numel() <= SMALL_INPUT and x.dtype == p.dtype:
        return torch.addcmul(broadcast(q, x.dim()), x, broadcast(p, x.dim()))
    if p.dim() == 1:  # per channel
        n, c = x.shape[:2]
        p, q = p.expand(n, c).contiguous(), q.expand(n, c).contiguous()
    return channel_affine(x, p, q)


def _autograd_vjp(
    coefficients: Coefficients,
    mean: Tensor,
    var: Tensor,
    params: list[Tensor],
    wanted: list[bool],
    g_scale: Tensor,
    g_shift: Tensor,
) -> tuple[Tensor, list[Tensor | None]]:
    """A, and (g_μ, g_σ², g_θ…) (None where not wanted) by autograd through ``coefficients``."""
    with torch.enable_grad():
        m = mean.detach().requires_grad_()
        v = var.detach().requires_grad_()
        leaves = [p.detach().requires_grad_(w) for p, w in zip(params, wanted, strict=True)]
        scale, shift = coefficients(m, v, *leaves)
        scale, shift = _full(scale, m), _full(shift, m)  # cotangents are (N, C)
        inputs = [m, v, *(leaf for leaf in leaves if leaf.requires_grad)]
        outputs = [t for t in (scale, shift) if t.requires_grad]
        cotangents = [c for t, c in ((scale, g_scale), (shift, g_shift)) if t.requires_grad]
        found = list(torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True))
    extra = iter(found[2:])
    return scale, [found[0], found[1], *(next(extra) if w else None for w in wanted)]


def recomputed_affine_grads(
    coefficients: Coefficients, x: Tensor, params: list[Tensor], wanted: list[bool], dy: Tensor
) -> list[Tensor | None]:
    """(∂L/∂x, ∂L/∂params…; None where not wanted) of y = x·A + B with (A, B) =
    coefficients(μ, σ², *params), recomputed from differentiable operations: used only when
    the backward pass itself is differentiated (partial derivatives, see
    `normlab.norms._double_backward`)."""
    n, c = x.shape[:2]

    def forward(x: Tensor, *params: Tensor) -> Tensor:
        return composed_affine(coefficients, x, *params)

    return recomputed_grads(forward, [x, *params], [True, *wanted], dy.reshape(n, c, -1))


def composed_affine(coefficients: Coefficients, x: Tensor, *params: Tensor) -> Tensor:
    """y = x·A + B of `instance_affine` as (N, C, L) in the accumulation dtype, from
    differentiable operations only (moments included): the double backward's recomputation and
    what torch.compile / torch.export trace."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1).to(accumulation_dtype(x.dtype))
    var, mean = torch.var_mean(flat, dim=-1, correction=0)
    scale, shift = coefficients(mean, var, *params)
    return flat * _full(scale, mean).unsqueeze(-1) + _full(shift, mean).unsqueeze(-1)


def instance_affine(
    x: Tensor,
    coefficients: Coefficients,
    *params: Tensor,
    moments: tuple[Tensor, Tensor],
    normalized: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """y = x·A + B with (A, B) = coefficients(μ, σ², *params), differentiable in x and params.

    ``x`` is channels-first and contiguous; ``moments`` = (μ, σ²) of its (n, c) slices, computed
    by the caller (which usually needs them for running statistics as well). ``normalized`` =
    (x̂, 1/σ) from the same `normalize_instances` call: y is then written into x̂, which the
    caller must not use afterwards (the fast path); without it y is a fresh tensor.
    ``coefficients`` must be built from differentiable torch operations on its (N, C) / (C,)
    arguments (or carry a ``vjp`` method, see the module docstring).
    """
    if compiling():  # graph capture: plain differentiable operations (normlab.core.tracing)
        return composed_affine(coefficients, x, *params).to(x.dtype).view(x.shape)
    mean, var = moments
    carried = None if normalized is None else _Normalized(*normalized)
    return _InstanceAffine.apply(x, coefficients, carried, mean, var, *params)


def normalize_and_apply(
    xc: Tensor, coefficients: Coefficients, *params: Tensor, eps: float
) -> Tensor:
    """`instance_affine` on its fast path: the moments and x̂ from one `normalize_instances`
    call (with the method's ``eps``), y written into x̂."""
    x_hat, mean, var, rstd = normalize_instances(xc, eps)
    return instance_affine(
        xc, coefficients, *params, moments=(mean, var), normalized=(x_hat, rstd)
    )


def contiguous_channels_first(x: Tensor, channel_dim: int) -> tuple[Tensor, torch.memory_format]:
    """A contiguous (N, C, *S) copy or view of ``x`` and the layout to hand the output back in.

    Contiguous slices are what the per-instance kernels read (and torch's channels_last
    group-norm kernel uses a one-pass variance, see `group_norm_kernel`).
    """
    return dense(to_channels_first(x, channel_dim))


def restore_layout(y: Tensor, layout: torch.memory_format, channel_dim: int) -> Tensor:
    """Inverse of `contiguous_channels_first` for the output."""
    return from_channels_first(in_layout(y, layout), channel_dim)


def apply_coefficients(
    x: Tensor,
    coefficients: AnalyticCoefficients,
    params: list[Tensor],
    eps: float,
    channel_dim: int,
) -> tuple[Tensor, Moments | None]:
    """y = x·A + B for any layout, and the batch moments the coefficients merged (if any)."""
    xc, layout = contiguous_channels_first(x, channel_dim)
    y = normalize_and_apply(xc, coefficients, *params, eps=eps)
    batch = None
    if coefficients.batch is not None:
        mu, sigma2 = coefficients.batch
        batch = Moments(mu.view(-1), sigma2.view(-1), x.numel() // mu.numel())
    return restore_layout(y, layout, channel_dim), batch


class ChannelMoments(torch.autograd.Function):
    """μ, σ² over (N, *S) per channel, merged from the per-(n, c) moments of ``x`` (equal
    counts), differentiable in x: the backward is one `moments_grad` pass."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, mean: Tensor, var: Tensor
    ) -> tuple[Tensor, Tensor]:
        channel_mean, channel_var, _ = merge_equal_counts(mean, var, 0, keepdim=False)
        ctx.save_for_backward(x, channel_mean)
        return channel_mean, channel_var

    @staticmethod
    def backward(ctx: Any, g_mean: Tensor, g_var: Tensor) -> tuple[Tensor | None, None, None]:
        x, channel_mean = ctx.saved_tensors
        c = x.shape[1]
        if torch.is_grad_enabled():  # double backward: differentiate a recomputation

            def moments(x: Tensor) -> tuple[Tensor, ...]:
                flat = x.transpose(0, 1).reshape(c, -1).to(channel_mean.dtype)
                return tuple(reversed(torch.var_mean(flat, dim=1, correction=0)))

            (dx,) = recomputed_grads(moments, [x], [True], (g_mean, g_var))
            return dx, None, None
        return moments_grad(x, channel_mean, g_mean, g_var, x.numel() // c), None, None


# -- plain-autograd forms, for the cross-replica paths (`normlab.sync`) ----------------------------
# There the batch moments come from every replica and arrive as ordinary differentiable tensors,
# so the output is composed from autograd operations: gradients flow through the merge.


def instance_moments_autograd(xc: Tensor) -> tuple[Tensor, Tensor]:
    """μ and biased σ² over *S of every (n, c) slice of a channels-first ``xc``, shape (N, C),
    by differentiable operations in the accumulation dtype (float32 for fp16/bf16). Rank-2
    input has one value per slice: μ = x, σ² = 0. An empty batch gives (0, C) tensors."""
    xs = xc.to(accumulation_dtype(xc.dtype))
    var, mean = torch.var_mean(
        xs.flatten(2) if xs.dim() > 2 else xs.unsqueeze(-1), dim=-1, correction=0
    )
    return mean, var


def centered_affine(
    xc: Tensor, terms: Sequence[tuple[Tensor, Tensor]], bias: Tensor | None
) -> Tensor:
    """Σ_k (x − μ_k)·a_k + β for a channels-first ``xc`` by differentiable operations; each
    (μ_k, a_k) pair per channel (C,) or per (n, c) (N, C) (or (N, 1)), in the statistics'
    dtype, β per channel. Centering before scaling keeps float32 accurate when |μ| ≫ σ.
    Returned in ``xc``'s dtype."""
    xs = xc.to(terms[0][0].dtype)
    y: Tensor | None = None
    for mu, a in terms:
        term = (xs - broadcast(mu, xs.dim())) * broadcast(a, xs.dim())
        y = term if y is None else y + term
    assert y is not None  # at least one term
    if bias is not None:
        y = y + broadcast(bias.to(y.dtype), y.dim())
    return y if y.dtype == xc.dtype else y.to(xc.dtype)


__all__ = [
    "ChannelMoments",
    "Coefficients",
    "apply_coefficients",
    "centered_affine",
    "contiguous_channels_first",
    "instance_affine",
    "instance_moments",
    "instance_moments_autograd",
    "moments_grad",
    "normalize_and_apply",
    "normalize_instances",
    "recomputed_affine_grads",
    "restore_layout",
]
