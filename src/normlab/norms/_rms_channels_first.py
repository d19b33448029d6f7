"""RMSNorm over C on contiguous (N, C, *S) input: an autograd Function built from GEMVs.

Zhang & Sennrich 2019 (arXiv:1910.07467). On channels-first memory the statistic of a position
is a *strided* reduction over C, which ATen's reductions (``vector_norm(dim=1)``, ``var``) walk
slowly. Seen as (N, C, L) matrices, though, every sum over C is a row vector times a matrix, a
batched GEMV that reads its operand once at memory speed:

$$ m_{n,p} = \\tfrac1C\\,\\mathbf 1^\\top (x_n \\odot x_n),\\qquad r = (m + ε)^{-1/2},
   \\qquad y = γ_c\\, x\\, r_{n,p}. $$

Backward, with g = ∂L/∂y and s_{n,p} = Σ_c γ_c g x (a GEMV of γ against g ⊙ x):

$$ ∂x = γ_c\\, r\\, g - x\\, \\frac{r^3 s}{C},\\qquad ∂γ_c = Σ_{n,p} g\\, x\\, r. $$

Forward: one squaring pass, one GEMV, one output pass and an in-place γ pass; backward: one
product pass, one GEMV, and ∂x built in that product's buffer (three passes, two in place).
Every pass runs over cache-sized chunks of a few samples (`normlab.norms._chunked`), so only
the first read of x (and of g) and the last write of the output come from memory. It saves x
and r (1/C of x). For ``create_graph=True`` the backward differentiates a recomputation
from differentiable operations (normlab.norms._double_backward).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab.norms._chunked import Chunks
from normlab.norms._double_backward import recomputed_grads

FAST_DTYPES = (torch.float32, torch.float64)


def applies(x: Tensor, dim: int) -> bool:
    """Whether the GEMV path serves this call: channels at dim 1 of contiguous fp32/fp64."""
    return (x.dim() >= 2 and dim % x.dim() == 1 and x.dtype in FAST_DTYPES
            and x.is_contiguous() and x.numel() > 0)


def _differentiable(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """y = γ x (mean_C x² + ε)^{-1/2} in plain operations (the double backward's recomputation)."""
    y = x * (x.square().mean(1, keepdim=True) + eps).rsqrt()
    return y if weight is None else y * weight.view(1, -1, *([1] * (x.dim() - 2)))


class RMSChannelsFirst(torch.autograd.Function):
    """See the module docstring; x is (N, C, *S) contiguous, γ is (C,) or None."""

    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any, x: Tensor, weight: Tensor | None, eps: float
    ) -> Tensor:
        n, c = x.shape[:2]
        x3 = x.view(n, c, -1)
        y = torch.empty_like(x3)
        r = x.new_empty(n, 1, x3.shape[2])
        mean_row = torch.full((1, 1, c), 1.0 / c, dtype=x.dtype, device=x.device)
        for a, b in Chunks(x3, x.dtype).ranges:  # a few samples at a time, in cache
            xc, yc, rc = x3[a:b], y[a:b], r[a:b]
            torch.square(xc, out=yc)  # the output's chunk holds x² until the statistic is read
            torch.bmm(mean_row.expand(b - a, 1, c), yc, out=rc).add_(eps).rsqrt_()
            torch.mul(xc, rc, out=yc)
            if weight is not None:
                yc.mul_(weight.view(1, c, 1))
        ctx.save_for_backward(x, weight, r)
        ctx.eps = eps
        return y.view(x.shape)

    @staticmethod
    def backward(  # type: ignore[override]  # see forward
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight, r = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate a recomputation
            gx, gw = recomputed_grads(lambda a, w: _differentiable(a, w, ctx.eps), [x, weight],
                                      list(ctx.needs_input_grad[:2]), grad)
            return gx, gw, None
        n, c = x.shape[:2]
        x3, g3 = x.view(n, c, -1), grad.reshape(n, c, -1)
        row = (torch.ones(1, 1, c, dtype=x.dtype, device=x.device) if weight is None
               else weight.to(x.dtype).view(1, 1, c))
        want_w = weight is not None and ctx.needs_input_grad[1]
        grad_weight = x.new_zeros(c) if want_w else None
        grad_x = torch.empty_like(x3) if ctx.needs_input_grad[0] else None
        chunks = Chunks(x3, x.dtype)
        (spare,) = chunks.buffers(1) if grad_x is None else (None,)
        for a, b in chunks.ranges:
            xc, gc, rc = x3[a:b], g3[a:b], r[a:b]
            # q = g·x in ∂x's own chunk; s = Σ_c γ_c q by a batched GEMV
            q = torch.mul(gc, xc, out=spare[: b - a] if grad_x is None else grad_x[a:b])
            # −r³ s / C, (k, 1, L); bmm, not matmul: matmul may fold q into a transposed copy
            coef = torch.bmm(row.expand(b - a, 1, c), q).mul_(rc.square().mul_(rc)).div_(-c)
            if grad_weight is not None:
                grad_weight += q.mul_(rc).sum((0, 2))
            if grad_x is None:
                continue
            dxc = torch.mul(gc, rc, out=q)  # q is spent: ∂x = γ r g − x r³ s / C
            if weight is not None:
                dxc.mul_(weight.view(1, c, 1))
            dxc.addcmul_(xc, coef)
        return (None if grad_x is None else grad_x.view(x.shape),
                None if grad_weight is None else grad_weight.to(weight.dtype), None)


__all__ = ["RMSChannelsFirst", "applies"]
