"""Lp normalization with p = 1 over GroupNorm's sets, in few passes and an analytic backward.

For a set of M values (the sample's (C, *S), a group's (C/G, *S) or a channel's *S):

$$ y = \\gamma \\frac{x - \\mu}{d} + \\beta, \\quad
   d = \\tfrac{1}{M}\\textstyle\\sum_j |x_j - \\mu| + \\epsilon. $$

Forward, per chunk of a few samples (`normlab.norms._chunked`, the chunk stays in cache):
Σx → μ, t = x − μ (scratch), Σ|t| → d (``abs_``, sum), y = x·(γ/d) + (β − μγ/d)
(``mul`` into the output, ``add_``).

Backward with g = dy·γ, u = sign(x − μ), S = Σ_j g_j (x_j − μ), bars the set means:

$$ \\frac{\\partial L}{\\partial x} = \\frac{1}{d}\\Big[g - \\bar g
   - \\frac{S}{M d}\\,(u - \\bar u)\\Big], \\quad
   \\frac{\\partial L}{\\partial \\gamma_c} = \\sum_{n, s} dy\\,\\frac{x - \\mu}{d}, \\quad
   \\frac{\\partial L}{\\partial \\beta_c} = \\sum_{n, s} dy, $$

(∂d/∂x_j = (u_j − ū)/M; u = 0 where x = μ, the subgradient autograd takes for |·|),
i.e. dx = dy·(γ/d) + K·u + c per set, K = −S/(M d²), c = −ḡ/d + ū S/(M d²). Per chunk,
in the chunk of dx itself: t = x − μ, per-(n, c) Σdy and Σdy·t in one read (`Sums`),
t ← sign(t), Σu, t ← t·K + c, t += dy·(γ/d) (``addcmul_``). Saves x and the (N, G) μ, d.
Double backward (``create_graph=True``) differentiates the caller's eager forward
(`normlab.norms._double_backward`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from normlab.core.tracing import compiling
from normlab.norms._base import dense, in_layout
from normlab.norms._chunked import Chunks, Sums, per_row
from normlab.norms._double_backward import recomputed_grads

Optional = Tensor | None


def _sets(t: Tensor, groups: int) -> Tensor:
    """A (k, C, L) tensor viewed as (k, G, C/G·L)."""
    return t.view(t.shape[0], groups, -1)


def _per_channel(t: Tensor, channels: int) -> Tensor:
    """A per-set (k, G) tensor expanded to (k, C)."""
    k, groups = t.shape
    return t.unsqueeze(-1).expand(k, groups, channels // groups).reshape(k, channels)


class _L1NormFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any,
        x: Tensor,
        weight: Optional,
        bias: Optional,
        eps: float,
        groups: int,
        reference: Callable[..., Tensor],
    ) -> Tensor:
        n, c = x.shape[:2]
        x3 = x.view(n, c, -1)
        chunks = Chunks(x3, x.dtype)
        (t_buf,) = chunks.buffers(1)
        size = x3.shape[2] * (c // groups)
        mean = x.new_empty(n, groups)
        d = x.new_empty(n, groups)
        y3 = torch.empty_like(x3)
        for a, b in chunks.ranges:
            xs = _sets(x3[a:b], groups)
            mu = torch.sum(xs, -1, out=mean[a:b]).div_(size)
            t = torch.sub(xs, mu.unsqueeze(-1), out=_sets(t_buf[: b - a], groups))
            inv = torch.sum(t.abs_(), -1, out=d[a:b]).div_(size).add_(eps).reciprocal()
            scale = _per_channel(inv, c) if weight is None else _per_channel(inv, c) * weight
            shift = -(_per_channel(mu, c) * scale)
            if bias is not None:
                shift.add_(bias)
            torch.mul(x3[a:b], per_row(scale), out=y3[a:b]).add_(per_row(shift))
        ctx.save_for_backward(x, weight, bias, mean, d)
        ctx.config = (groups, reference)
        return y3.view(x.shape)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Optional, ...]:  # type: ignore[override]
        x, weight, bias, mean, d = ctx.saved_tensors
        groups, reference = ctx.config
        wanted = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: differentiable recomputation
            grads = recomputed_grads(reference, (x, weight, bias), wanted, dy)
            return (*grads, None, None, None)
        n, c = x.shape[:2]
        x3, dy3 = x.view(n, c, -1), dy.contiguous().view(n, c, -1)
        chunks = Chunks(x3, x.dtype)
        sums = Sums.for_chunks(chunks)
        size = x3.shape[2] * (c // groups)
        dx3 = torch.empty_like(x3)
        dw = x.new_zeros(c) if weight is not None and wanted[1] else None
        db = x.new_zeros(c) if bias is not None and wanted[2] else None
        for a, b in chunks.ranges:
            k = b - a
            out = dx3[a:b]  # holds x − μ, then u = sign(x − μ), then dx
            t = torch.sub(_sets(x3[a:b], groups), mean[a:b].unsqueeze(-1),
                          out=_sets(out, groups))
            sum_dy, sum_dyt = sums(dy3[a:b], out)  # (k, C) each
            inv = d[a:b].reciprocal()  # (k, G)
            if dw is not None:
                dw += (sum_dyt * _per_channel(inv, c)).sum(0)
            if db is not None:
                db += sum_dy.sum(0)
            if weight is not None:
                sum_dy, sum_dyt = sum_dy * weight, sum_dyt * weight
            g_sum = sum_dy.view(k, groups, -1).sum(-1)  # Σg per set
            s = sum_dyt.view(k, groups, -1).sum(-1)  # S = Σ g·(x − μ)
            u_sum = t.sign_().sum(-1)  # Σu
            coef = s * inv.square() / size  # S/(M d²)
            shift = _per_channel(coef * u_sum / size - g_sum * inv / size, c)
            scale = _per_channel(inv, c)
            if weight is not None:
                scale = scale * weight
            out.mul_(per_row(_per_channel(-coef, c))).add_(per_row(shift))  # K·u + c
            out.addcmul_(dy3[a:b], per_row(scale))
        dx = dx3.view(x.shape) if wanted[0] else None
        return dx, dw, db, None, None, None


def l1_norm(
    x: Tensor,
    weight: Optional,
    bias: Optional,
    eps: float,
    groups: int,
    reference: Callable[..., Tensor],
) -> Tensor:
    """The p = 1 layer of a channels-first float32/float64 x (N, C, *S), sets of G groups;
    ``reference(x, weight, bias)`` is the eager forward that double backward differentiates."""
    if compiling():  # graph capture differentiates the eager forward (normlab.core.tracing)
        return reference(x, weight, bias)
    xd, layout = dense(x)
    return in_layout(_L1NormFunction.apply(xd, weight, bias, eps, groups, reference), layout)


__all__ = ["l1_norm"]
