"""Filter Response Norm (+ TLU) on memory whose channels are innermost, without layout copies.

channels_last images and (N, *S, C) input (``channel_dim=-1``) keep C contiguous: x is then
the (N, L, C) tensor of its memory, ν² a reduction over the middle dim (vectorized along C), and
every per-(n, c) factor broadcasts along rows. The math is `filter_response_norm._FRN`'s, with
r = (ν² + ε)^(-1/2), s = γ r, dz = dy·[s x + β > τ] and K = Σ_L dz·x per (n, c):

$$ ∂x = s\\,dz − \\frac{s r^2 K}{L} x,\\quad ∂γ = Σ_n r K,\\quad ∂β = Σ dz,
   \\quad ∂τ = Σ dy − Σ dz,\\quad ∂ε_l = −\\tfrac12 \\operatorname{sign}(ε_l) Σ_{n,c} γ r^3 K. $$

Per-(n, c) sums Σ_L dz and Σ_L dz·x come from ATen's batch-norm backward kernel on each
sample's (L, C) matrix (mean 0, 1/σ = 1: column sums in one fused read). Forward: one reduction,
then ``mul``, ``add_``, ``clamp_``; backward: the mask (``mul``, ``gt_``, ``mul_``) in ∂x's
buffer, the sums, ``mul_`` and ``addcmul_``. Saves x and r. The layout-generic path copied x to
NCHW and y (and ∂x) back, which cost more than the layer itself. Double backward
(``create_graph=True``) differentiates `frn_composed` on the channels-first view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from normlab.core.tracing import compiling
from normlab.norms._double_backward import recomputed_grads

Optional = Tensor | None


def rows_of(x: Tensor) -> Tensor | None:
    """The (N, L, C) tensor of a channels-first x's memory when channels are innermost (and x
    is not plain contiguous), else None."""
    if x.dim() < 3 or x.is_contiguous():
        return None
    moved = x.movedim(1, -1)
    return moved.reshape(x.shape[0], -1, x.shape[1]) if moved.is_contiguous() else None


def applies(x: Tensor, *params: Optional) -> bool:
    """float32/float64 x with channels innermost in memory, parameters of x's dtype, eager."""
    return (x.dtype in (torch.float32, torch.float64) and x.numel() > 0 and not compiling()
            and all(p is None or p.dtype == x.dtype for p in params)
            and rows_of(x) is not None)


def _column_sums(g3: Tensor, x3: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ_L g, Σ_L g·x) per (n, c) of two (N, L, C) tensors, each (N, C)."""
    c = x3.shape[2]
    zero, one = x3.new_zeros(c), x3.new_ones(c)
    found = [torch.ops.aten.native_batch_norm_backward(
        g, x, None, None, None, zero, one, True, 0.0, [False, True, True])
        for g, x in zip(g3, x3, strict=True)]
    return torch.stack([f[2] for f in found]), torch.stack([f[1] for f in found])


class _FRNRows(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any, x3: Tensor, weight: Optional, bias: Optional, tau: Optional,
        eps_l: Optional, eps: float, eager: Callable[..., Tensor],
    ) -> Tensor:
        length = x3.shape[1]
        total = eps if eps_l is None else eps_l.abs() + eps
        r = (torch.linalg.vector_norm(x3, dim=1).square_().div_(length) + total).rsqrt_()
        scale = r if weight is None else r * weight
        y = torch.mul(x3, scale.unsqueeze(1))
        if bias is not None:
            y.add_(bias)
        if tau is not None:
            y.clamp_(min=tau)
        ctx.save_for_backward(x3, weight, bias, tau, eps_l, r)
        ctx.eager = eager
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional, ...]:
        x3, weight, bias, tau, eps_l, r = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:5]
        if torch.is_grad_enabled():  # create_graph=True: differentiate a recomputation
            grads = recomputed_grads(ctx.eager, (x3, weight, bias, tau, eps_l), wanted, grad)
            return (*grads, None, None)
        g3 = grad.contiguous()
        length = x3.shape[1]
        scale = (r if weight is None else r * weight).unsqueeze(1)
        if tau is not None:  # dz = dy·[s x > τ − β], built in ∂x's buffer
            dz = torch.mul(x3, scale)
            dz.gt_(tau if bias is None else tau - bias).mul_(g3)
        else:
            dz = g3
        sum_dz, k = _column_sums(dz, x3)
        dx = dz.mul_(scale) if tau is not None else torch.mul(g3, scale)
        dx.addcmul_(x3, (-scale.squeeze(1) * r * r * k / length).unsqueeze(1))
        d_beta = sum_dz.sum(0)
        d_eps = None
        if eps_l is not None and wanted[4]:
            cubes = k * r.pow(3)
            total = (cubes.sum(0) * weight).sum() if weight is not None else cubes.sum()
            d_eps = (-0.5 * total * torch.sign(eps_l)).reshape(eps_l.shape)
        d_tau = g3.sum((0, 1)) - d_beta if tau is not None and wanted[3] else None
        return (
            dx if wanted[0] else None,
            (r * k).sum(0) if weight is not None and wanted[1] else None,
            d_beta if bias is not None and wanted[2] else None,
            d_tau, d_eps, None, None,
        )


def frn_rows(
    x: Tensor, weight: Optional, bias: Optional, tau: Optional, eps_l: Optional, eps: float,
    composed: Callable[..., Tensor],
) -> Tensor:
    """FRN (+ TLU) of a channels-first x that `applies` takes, returned with x's strides;
    ``composed(x, weight, bias, tau, eps_l)`` is the channels-first eager form."""
    x3 = rows_of(x)
    assert x3 is not None  # `applies` checked it

    def eager(x3_: Tensor, *params: Optional) -> Tensor:
        return composed(x3_.movedim(-1, 1), *params).movedim(1, -1)

    y3 = _FRNRows.apply(x3, weight, bias, tau, eps_l, eps, eager)
    return y3.view(x.movedim(1, -1).shape).movedim(-1, 1)


__all__ = ["applies", "frn_rows"]
